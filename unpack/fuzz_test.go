package unpack

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"github.com/dmfexport/dmfexport/store"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzParseManifest(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join(tinyDir, "Manifest.xml")); err == nil {
		f.Add(b)
	}
	std := manifestXML(`<?xml version="1.0" encoding="utf-16"?>`, ` xmlns="`+nsFO+`"`, "", oneEntity)
	f.Add([]byte(std))
	f.Add(utf16Bytes(std, binary.BigEndian, true))
	f.Add(utf16Bytes(std, binary.LittleEndian, false))
	f.Add([]byte(manifestXML("", ` xmlns:d="`+nsFO+`"`, "d", oneEntity)))
	f.Add([]byte(manifestXML("", "", "", "")))
	f.Add([]byte("<DataManagementPackageHeader/>"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(bytes.NewReader(b))
		if err != nil {
			if m != nil {
				t.Fatalf("ParseManifest returned both %+v and %v", m, err)
			}
			return
		}
		if m.Entities == nil {
			t.Fatalf("ParseManifest returned nil Entities, want an empty list")
		}
		for _, e := range m.Entities {
			if e.Name != strings.TrimSpace(e.Name) || e.File != strings.TrimSpace(e.File) {
				t.Fatalf("untrimmed entity %+v", e)
			}
		}
		_, _ = ParsePackageHeader(bytes.NewReader(b))
	})
}

func FuzzExplode(f *testing.F) {
	tiny := buildZip(f, tinyEntries(f, ""))
	f.Add(tiny)
	f.Add(buildZip(f, tinyEntries(f, "folder")))
	manifest := entitiesManifest(entityXML("A", `x\a.csv`, "CSV", false) + entityXML("B", "", "Excel", true) + entityXML("C", "c.csv", "CSV", false))
	f.Add(buildZip(f, []zent{{name: "Manifest.xml", data: manifest}, {name: "a.csv", data: []byte("A\r\n1\r\n")}, {name: "../b.csv", data: []byte("x")}}))
	f.Add(buildZip(f, []zent{{name: "Manifest.xml", data: manifest}, {name: "a.csv", data: []byte("A"), raw: func(h *zip.FileHeader) { h.Flags |= 1 }}}))
	f.Add(buildZip(f, []zent{{name: "Manifest.xml", data: manifest}, {name: "A.CSV", data: []byte("A")}, {name: "a.csv", data: []byte("B")}}))
	f.Add(buildZip(f, []zent{{name: "Manifest.xml", data: manifest}, {name: "a.csv", data: bytes.Repeat([]byte{0}, 5000)}}))
	f.Add(tiny[:len(tiny)/2])
	f.Add([]byte("PK\x05\x06" + strings.Repeat("\x00", 18)))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		zp := filepath.Join(dir, "pkg.zip")
		if err := os.WriteFile(zp, b, 0o644); err != nil {
			t.Fatal(err)
		}
		st, err := store.NewDirStore(filepath.Join(dir, "store"))
		if err != nil {
			t.Fatal(err)
		}
		opts := ExplodeOptions{Prefix: "p/q", Meta: map[string]string{"run": "1"}, MaxEntryBytes: 1 << 20, MaxTotalBytes: 4 << 20, MaxRatio: 100}
		res, err := Explode(context.Background(), zp, st, opts)
		if err == nil {
			for _, e := range res.Entities {
				if n := btoi(e.Err != nil) + btoi(e.Key != "") + btoi(e.Absent); n != 1 {
					t.Fatalf("entity %+v: want exactly one of Key, Err and Absent", e)
				}
				if e.Key == "" {
					continue
				}
				if !strings.HasPrefix(e.Key, "p/q/") || strings.Count(e.Key, "/") != 2 {
					t.Fatalf("entity key %q is not one segment below p/q", e.Key)
				}
				o, err := st.Stat(context.Background(), e.Key)
				if err != nil || o.Size != e.Size || o.Meta["sha256"] != e.SHA256 {
					t.Fatalf("stored %q = %+v, %v; want size %d sha %s", e.Key, o, err, e.Size, e.SHA256)
				}
			}
		}
		// Nothing may appear outside the store, and nothing inside it but
		// objects below the prefix and their metadata.
		werr := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || p == zp {
				return err
			}
			rel, _ := filepath.Rel(filepath.Join(dir, "store"), p)
			if !strings.HasPrefix(filepath.ToSlash(rel), "p/q/") {
				t.Fatalf("Explode wrote %s, outside the store prefix", p)
			}
			return nil
		})
		if werr != nil {
			t.Fatalf("walk %s: %v", dir, werr)
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
