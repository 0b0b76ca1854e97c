package unpack

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dmfexport/dmfexport/store"
	"github.com/dmfexport/dmfexport/store/storetest"
)

const tinyDir = "../testdata/packages/tiny"

// zent is one entry of a zip built by a test.
type zent struct {
	name string
	data []byte
	// raw, when set, writes the entry with CreateRaw after letting raw adjust
	// the header that describes data (already compressed as header.Method says).
	raw func(h *zip.FileHeader)
}

func buildZip(t testing.TB, ents []zent) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range ents {
		if e.raw != nil {
			h := &zip.FileHeader{Name: e.name, Method: zip.Store, CRC32: crc32.ChecksumIEEE(e.data),
				CompressedSize64: uint64(len(e.data)), UncompressedSize64: uint64(len(e.data))}
			e.raw(h)
			w, err := zw.CreateRaw(h)
			if err != nil {
				t.Fatalf("zip CreateRaw %q: %v", e.name, err)
			}
			_, _ = w.Write(e.data)
			continue
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: zip.Deflate})
		if err != nil {
			t.Fatalf("zip create %q: %v", e.name, err)
		}
		_, _ = w.Write(e.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("zip close: %v", err)
	}
	return buf.Bytes()
}

// tinyEntries reads the tiny fixture, optionally inside folder.
func tinyEntries(t testing.TB, folder string) []zent {
	t.Helper()
	des, err := os.ReadDir(tinyDir)
	if err != nil {
		t.Fatal(err)
	}
	var ents []zent
	if folder != "" {
		ents = append(ents, zent{name: folder + "/"})
	}
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(tinyDir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		name := de.Name()
		if folder != "" {
			name = folder + "/" + name
		}
		ents = append(ents, zent{name: name, data: b})
	}
	return ents
}

func writeZip(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "package.zip")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(tinyDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExplodeTiny(t *testing.T) {
	ctx := context.Background()
	cust, vend := fixture(t, "Customers V3.csv"), fixture(t, "Vendors V2.csv")
	tests := []struct {
		name     string
		ents     []zent
		wantFile [2]string
		unlisted []string
	}{
		{"at the root", tinyEntries(t, ""), [2]string{"Customers V3.csv", "Vendors V2.csv"}, nil},
		{"re-zipped in a folder", append(tinyEntries(t, "tiny export"), zent{name: "__MACOSX/._x", data: []byte("x")}),
			[2]string{"tiny export/Customers V3.csv", "tiny export/Vendors V2.csv"}, []string{"__MACOSX/._x"}},
		{"extra file and odd case", []zent{
			{name: "MANIFEST.XML", data: fixture(t, "Manifest.xml")},
			{name: "packageheader.xml", data: fixture(t, "PackageHeader.xml")},
			{name: "CUSTOMERS V3.CSV", data: cust},
			{name: `sub\Vendors V2.csv`, data: vend},
			{name: "notes.txt", data: []byte("hello")},
		}, [2]string{"CUSTOMERS V3.CSV", `sub\Vendors V2.csv`}, []string{"notes.txt"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := storetest.Dir(t)
			zp := writeZip(t, buildZip(t, tt.ents))
			meta := map[string]string{"job": "tiny", "Run": "r1", "executionid": "e/1"}
			res, err := Explode(ctx, zp, st, ExplodeOptions{Prefix: "jobs/tiny/r1/entities", Meta: meta})
			if err != nil {
				t.Fatalf("Explode: %v", err)
			}
			if res.Header == nil || res.Header.PackageVersion != "2" {
				t.Errorf("Header = %+v, want PackageVersion 2", res.Header)
			}
			if res.Manifest.DefinitionGroup != "Tiny export" {
				t.Errorf("Manifest.DefinitionGroup = %q, want %q", res.Manifest.DefinitionGroup, "Tiny export")
			}
			if !reflect.DeepEqual(res.Unlisted, tt.unlisted) {
				t.Errorf("Unlisted = %q, want %q", res.Unlisted, tt.unlisted)
			}
			want := []EntityObject{
				{Entity: "Customers V3", File: tt.wantFile[0], SourceFormat: "CSV-Unicode", RefreshType: "FullPush", Format: "csv",
					Key: "jobs/tiny/r1/entities/Customers V3.csv", Size: int64(len(cust)), SHA256: sha(cust)},
				{Entity: "Vendors V2", File: tt.wantFile[1], SourceFormat: "CSV-Unicode", RefreshType: "IncrementalPush", Format: "csv",
					Key: "jobs/tiny/r1/entities/Vendors V2.csv", Size: int64(len(vend)), SHA256: sha(vend)},
			}
			if !reflect.DeepEqual(res.Entities, want) {
				t.Fatalf("Entities =\n%+v\nwant\n%+v", res.Entities, want)
			}
			for i, data := range [][]byte{cust, vend} {
				w := want[i]
				if got := storetest.ReadAll(t, st, w.Key); got != string(data) {
					t.Errorf("object %q content differs from %s", w.Key, w.File)
				}
				o, err := st.Stat(ctx, w.Key)
				if err != nil {
					t.Fatal(err)
				}
				wantMeta := map[string]string{"job": "tiny", "run": "r1", "executionid": "e/1", "entity": w.Entity,
					"file": w.File, "sourceformat": "CSV-Unicode", "format": "csv", "sha256": w.SHA256, "refreshtype": w.RefreshType}
				if !maps.Equal(o.Meta, wantMeta) {
					t.Errorf("meta of %q = %v, want %v", w.Key, o.Meta, wantMeta)
				}
			}
			objs, _ := st.List(ctx, "")
			if len(objs) != 2 {
				t.Errorf("store holds %d objects, want 2", len(objs))
			}
		})
	}
}

func TestExplodeIdempotent(t *testing.T) {
	ctx := context.Background()
	st := storetest.Dir(t)
	zp := writeZip(t, buildZip(t, tinyEntries(t, "")))
	opts := ExplodeOptions{Prefix: "p/", Meta: map[string]string{"run": "1"}}
	var lists [2][]store.Object
	var results [2]*Result
	for i := range 2 {
		res, err := Explode(ctx, zp, st, opts)
		if err != nil {
			t.Fatalf("Explode #%d: %v", i+1, err)
		}
		results[i] = res
		objs, err := st.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		for j := range objs {
			objs[j].ModTime = objs[j].ModTime.Truncate(0).UTC().Truncate(1e18) // compare content, not time
		}
		lists[i] = objs
	}
	if !reflect.DeepEqual(lists[0], lists[1]) || !reflect.DeepEqual(results[0], results[1]) {
		t.Errorf("second Explode differs:\nfirst  %+v\nsecond %+v", lists[0], lists[1])
	}
	if lists[0][0].Key != "p/Customers V3.csv" {
		t.Errorf("first key = %q, want %q (trailing '/' of the prefix dropped)", lists[0][0].Key, "p/Customers V3.csv")
	}
}

// entitiesManifest is a UTF-8 manifest listing the given entity elements.
func entitiesManifest(entities string) []byte {
	return []byte(manifestXML(`<?xml version="1.0" encoding="utf-16"?>`, ` xmlns="`+nsFO+`"`, "", entities))
}

func entityXML(name, file, format string, disabled bool) string {
	d := "false"
	if disabled {
		d = "true"
	}
	return "<DataManagementPackageEntityData><EntityName>" + name + "</EntityName><InputFilePath>" + file +
		"</InputFilePath><SourceFormat>" + format + "</SourceFormat><Disable>" + d + "</Disable></DataManagementPackageEntityData>"
}

func TestExplodeEntityMatching(t *testing.T) {
	ctx := context.Background()
	x := []byte("A,B\r\n1,2\r\n")
	tests := []struct {
		name     string
		entities string
		files    []string
		want     []EntityObject // Err compared by substring of ErrText
		wantErrs []string
		unlisted []string
	}{
		{"backslash path with folders", entityXML("Customers V3", `C:\Temp\Out\Customers V3.csv`, "CSV", false),
			[]string{"Customers V3.csv"},
			[]EntityObject{{Entity: "Customers V3", File: "Customers V3.csv", SourceFormat: "CSV", Format: "csv", Key: "e/Customers V3.csv"}}, []string{""}, nil},
		{"directory path matched exactly", entityXML("A", `data\a.csv`, "CSV", false),
			[]string{"data/a.csv", "other/a.csv"},
			[]EntityObject{{Entity: "A", File: "data/a.csv", SourceFormat: "CSV", Format: "csv", Key: "e/A.csv"}}, []string{""}, []string{"other/a.csv"}},
		{"case differs", entityXML("A", "A.CSV", "", false), []string{"a.csv"},
			[]EntityObject{{Entity: "A", File: "a.csv", Format: "csv", Key: "e/A.csv"}}, []string{""}, nil},
		{"empty InputFilePath uses entity name", entityXML("Released products V2", "", "Excel", false), []string{"released PRODUCTS v2.XLSX"},
			[]EntityObject{{Entity: "Released products V2", File: "released PRODUCTS v2.XLSX", SourceFormat: "Excel", Format: "xlsx", Key: "e/Released products V2.xlsx"}}, []string{""}, nil},
		{"absent file is an empty entity, not an error", entityXML("Gone", "Gone.csv", "CSV", false) + entityXML("A", "a.csv", "CSV", false), []string{"a.csv"},
			[]EntityObject{{Entity: "Gone", File: "Gone.csv", SourceFormat: "CSV", Format: "csv", Absent: true}, {Entity: "A", File: "a.csv", SourceFormat: "CSV", Format: "csv", Key: "e/A.csv"}},
			[]string{"", ""}, nil},
		{"absent without InputFilePath", entityXML("Nameless file", "", "EXCEL", false), nil,
			[]EntityObject{{Entity: "Nameless file", SourceFormat: "EXCEL", Format: "xlsx", Absent: true}}, []string{""}, nil},
		{"absent file does not take a key", entityXML("A", "gone.csv", "", false) + entityXML("a", "b.csv", "", false), []string{"b.csv"},
			[]EntityObject{{Entity: "A", File: "gone.csv", Format: "csv", Absent: true}, {Entity: "a", File: "b.csv", Format: "csv", Key: "e/a.csv"}},
			[]string{"", ""}, nil},
		{"upper-case InputFilePath unlike the label", entityXML("Customers V3", "CUSTCUSTOMERV3ENTITY.CSV", "csv-unicode", false), []string{"CUSTCUSTOMERV3ENTITY.CSV"},
			[]EntityObject{{Entity: "Customers V3", File: "CUSTCUSTOMERV3ENTITY.CSV", SourceFormat: "csv-unicode", Format: "csv", Key: "e/Customers V3.csv"}}, []string{""}, nil},
		{"label with invalid file name characters", entityXML("Country/regions", "Countryregions.xlsx", "Excel", false), []string{"Countryregions.xlsx"},
			[]EntityObject{{Entity: "Country/regions", File: "Countryregions.xlsx", SourceFormat: "Excel", Format: "xlsx", Key: "e/Country%2Fregions.xlsx"}}, []string{""}, nil},
		{"fixed width", entityXML("F", "f.txt", "Fixed width", false), []string{"f.txt"},
			[]EntityObject{{Entity: "F", File: "f.txt", SourceFormat: "Fixed width", Format: "fixed-width", Key: "e/F.txt"}}, []string{""}, nil},
		{"disabled without file skipped, disabled with file kept", entityXML("Off", "off.csv", "CSV", true) + entityXML("A", "a.csv", "CSV", true), []string{"a.csv"},
			[]EntityObject{{Entity: "A", File: "a.csv", SourceFormat: "CSV", Format: "csv", Key: "e/A.csv"}}, []string{""}, nil},
		{"ambiguous base name", entityXML("A", `x\a.csv`, "CSV", false), []string{"b/a.csv", "c/a.csv"},
			[]EntityObject{{Entity: "A", SourceFormat: "CSV", Format: "csv"}}, []string{"matches several entries"}, []string{"b/a.csv", "c/a.csv"}},
		{"same key twice", entityXML("A", "a.csv", "", false) + entityXML("a", "b.csv", "", false), []string{"a.csv", "b.csv"},
			[]EntityObject{{Entity: "A", File: "a.csv", Format: "csv", Key: "e/A.csv"}, {Entity: "a", File: "b.csv", Format: "csv"}},
			[]string{"", "same store key"}, nil},
		{"escaped name, format from extension, no extension", entityXML("Odd/Name: x", "odd", "Pipe", false) + entityXML("X", "x.xml", "Custom", false) + entityXML("Y", "y.bin", "Custom", false),
			[]string{"odd", "x.xml", "y.bin"},
			[]EntityObject{{Entity: "Odd/Name: x", File: "odd", SourceFormat: "Pipe", Format: "csv", Key: "e/Odd%2FName%3A x.csv"},
				{Entity: "X", File: "x.xml", SourceFormat: "Custom", Format: "xml", Key: "e/X.xml"},
				{Entity: "Y", File: "y.bin", SourceFormat: "Custom", Format: "unknown", Key: "e/Y.bin"}}, []string{"", "", ""}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ents := []zent{{name: "Manifest.xml", data: entitiesManifest(tt.entities)}}
			for _, f := range tt.files {
				ents = append(ents, zent{name: f, data: x})
			}
			st := storetest.Dir(t)
			res, err := Explode(ctx, writeZip(t, buildZip(t, ents)), st, ExplodeOptions{Prefix: "e"})
			if err != nil {
				t.Fatalf("Explode: %v", err)
			}
			if res.Header != nil {
				t.Errorf("Header = %+v, want nil without PackageHeader.xml", res.Header)
			}
			if len(res.Entities) != len(tt.want) {
				t.Fatalf("Entities = %+v, want %d", res.Entities, len(tt.want))
			}
			for i, got := range res.Entities {
				w := tt.want[i]
				if tt.wantErrs[i] == "" {
					if !w.Absent {
						w.Size, w.SHA256 = int64(len(x)), sha(x)
					}
					if got.Err != nil {
						t.Errorf("entity %d: Err = %v, want nil", i, got.Err)
					}
				} else if got.Err == nil || !strings.Contains(got.Err.Error(), tt.wantErrs[i]) {
					t.Errorf("entity %d: Err = %v, want one containing %q", i, got.Err, tt.wantErrs[i])
				}
				got.Err = nil
				if !reflect.DeepEqual(got, w) {
					t.Errorf("entity %d = %+v\nwant %+v", i, got, w)
				}
				if got.Key != "" {
					if s := storetest.ReadAll(t, st, got.Key); s != string(x) {
						t.Errorf("object %q = %q, want %q", got.Key, s, x)
					}
				}
			}
			if !reflect.DeepEqual(res.Unlisted, tt.unlisted) {
				t.Errorf("Unlisted = %q, want %q", res.Unlisted, tt.unlisted)
			}
		})
	}
}

// patch replaces every occurrence of old in b (both the local and the
// central header carry names and flags).
func patch(t *testing.T, b []byte, old, new []byte) []byte {
	t.Helper()
	if !bytes.Contains(b, old) {
		t.Fatalf("patch: %x not found", old)
	}
	return bytes.ReplaceAll(b, old, new)
}

func TestExplodeHostile(t *testing.T) {
	ctx := context.Background()
	manifest := zent{name: "Manifest.xml", data: entitiesManifest(entityXML("A", "a.csv", "CSV", false))}
	a := zent{name: "a.csv", data: []byte("A\r\n1\r\n")}
	valid := buildZip(t, []zent{manifest, a})
	big := bytes.Repeat([]byte{0}, 2<<20)
	tests := []struct {
		name    string
		zip     func(t *testing.T) []byte
		opts    ExplodeOptions
		wantErr []string // substrings, all required
	}{
		{"not a zip", func(t *testing.T) []byte { return []byte("CUSTOMERACCOUNT\r\nUS-001\r\n") }, ExplodeOptions{}, []string{"not a valid zip package"}},
		{"empty file", func(t *testing.T) []byte { return nil }, ExplodeOptions{}, []string{"not a valid zip package"}},
		{"truncated", func(t *testing.T) []byte { return valid[:len(valid)-30] }, ExplodeOptions{}, []string{"not a valid zip package"}},
		{"no manifest", func(t *testing.T) []byte { return buildZip(t, []zent{a}) }, ExplodeOptions{}, []string{"no Manifest.xml"}},
		{"manifest in two folders", func(t *testing.T) []byte {
			return buildZip(t, []zent{{name: "x/Manifest.xml", data: manifest.data}, {name: "y/Manifest.xml", data: manifest.data}})
		}, ExplodeOptions{}, []string{"several folders", "x/Manifest.xml"}},
		{"manifest not XML", func(t *testing.T) []byte {
			return buildZip(t, []zent{{name: "Manifest.xml", data: []byte("\x00\x01garbage")}})
		}, ExplodeOptions{}, []string{"Manifest.xml", "not"}},
		{"absolute slash", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, a, {name: "/etc/passwd", data: []byte("x")}})
		}, ExplodeOptions{}, []string{`"/etc/passwd"`, "absolute path"}},
		{"absolute backslash", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, a, {name: `\Windows\x.csv`, data: []byte("x")}})
		}, ExplodeOptions{}, []string{`Windows`, "absolute path"}},
		{"dot dot slash", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, a, {name: "../evil.csv", data: []byte("x")}})
		}, ExplodeOptions{}, []string{`"../evil.csv"`, `".." segment`}},
		{"dot dot backslash", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, a, {name: `x\..\..\evil.csv`, data: []byte("x")}})
		}, ExplodeOptions{}, []string{`evil.csv`, `".." segment`}},
		{"drive letter", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, a, {name: `C:\evil.csv`, data: []byte("x")}})
		}, ExplodeOptions{}, []string{`evil.csv`, "drive letter"}},
		{"drive letter relative", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, a, {name: `d:evil.csv`, data: []byte("x")}})
		}, ExplodeOptions{}, []string{`"d:evil.csv"`, "drive letter"}},
		{"UNC path", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, a, {name: `\\server\share\evil.csv`, data: []byte("x")}})
		}, ExplodeOptions{}, []string{`evil.csv`, "absolute path"}},
		{"dot dot leading backslash", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, a, {name: `..\evil.csv`, data: []byte("x")}})
		}, ExplodeOptions{}, []string{`evil.csv`, `".." segment`}},
		{"dot dot directory entry", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, a, {name: "x/../../"}})
		}, ExplodeOptions{}, []string{`".." segment`}},
		{"NUL in name", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, a, {name: "a.csv\x00.exe", data: []byte("x")}})
		}, ExplodeOptions{}, []string{"NUL byte in name"}},
		{"declared ratio with zero compressed bytes", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, {name: "a.csv", data: nil, raw: func(h *zip.FileHeader) {
				h.Method = zip.Deflate
				h.UncompressedSize64 = 5 << 30
			}}})
		}, ExplodeOptions{}, []string{`"a.csv"`, "compression ratio", "from 0"}},
		{"Manifest.xml over the size limit", func(t *testing.T) []byte {
			old := manifestLimit
			manifestLimit = 1 << 20 // as if 64 MiB, without the test's cost
			t.Cleanup(func() { manifestLimit = old })
			return buildZip(t, []zent{{name: "Manifest.xml", data: []byte("<DataManagementPackageManifest><!--" + strings.Repeat("x", 2<<20) + "--></DataManagementPackageManifest>")}})
		}, ExplodeOptions{MaxRatio: 1 << 20}, []string{"Manifest.xml", "not a package manifest"}},
		{"duplicate names ignoring case", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, a, {name: "A.CSV", data: []byte("x")}})
		}, ExplodeOptions{}, []string{`"A.CSV"`, `duplicate of entry "a.csv"`}},
		{"duplicate exact names", func(t *testing.T) []byte { return buildZip(t, []zent{manifest, a, a}) }, ExplodeOptions{}, []string{`"a.csv"`, "duplicate"}},
		{"encrypted", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, {name: "a.csv", data: a.data, raw: func(h *zip.FileHeader) { h.Flags |= 1 }}})
		}, ExplodeOptions{}, []string{`"a.csv"`, "encrypted"}},
		{"compression method 99", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, {name: "a.csv", data: a.data, raw: func(h *zip.FileHeader) { h.Method = 99 }}})
		}, ExplodeOptions{}, []string{`"a.csv"`, "compression method 99"}},
		{"declared size over entry limit", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, a, {name: "big.bin", data: bytes.Repeat([]byte("x"), 5000)}})
		}, ExplodeOptions{MaxEntryBytes: 4096}, []string{`"big.bin"`, "per-entry limit of 4096"}},
		{"declared total over package limit", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, a, {name: "b1", data: make([]byte, 3000)}, {name: "b2", data: make([]byte, 3000)}})
		}, ExplodeOptions{MaxTotalBytes: 5000}, []string{`"b2"`, "package limit of 5000"}},
		{"declared ratio over limit", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, a, {name: "zeros.csv", data: big}})
		}, ExplodeOptions{MaxRatio: 10}, []string{`"zeros.csv"`, "compression ratio", "10:1"}},
		{"declared size smaller than real", func(t *testing.T) []byte {
			b := buildZip(t, []zent{manifest, {name: "a.csv", data: big}})
			// Rewrite the declared uncompressed size (2 MiB) as 1 KiB in both headers.
			return patch(t, b, []byte{0, 0, 0x20, 0}, []byte{0, 4, 0, 0})
		}, ExplodeOptions{}, []string{`corrupt package: entry "a.csv"`}},
		{"checksum mismatch", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, {name: "a.csv", data: a.data, raw: func(h *zip.FileHeader) { h.CRC32 ^= 0xFFFF }}})
		}, ExplodeOptions{}, []string{`corrupt package: entry "a.csv"`, "checksum"}},
		{"corrupt deflate stream", func(t *testing.T) []byte {
			return buildZip(t, []zent{manifest, {name: "a.csv", data: []byte("\xff\xff\xff\xff not deflate"), raw: func(h *zip.FileHeader) {
				h.Method = zip.Deflate
				h.UncompressedSize64 = 100
			}}})
		}, ExplodeOptions{}, []string{`corrupt package: entry "a.csv"`}},
	}
	// The same rejections must leave a blob container empty too.
	var blobs *store.BlobStore
	if os.Getenv("DMFEXPORT_TEST_AZURITE") != "" {
		blobs = storetest.Blob(t, store.BlobOptions{})
	}
	// Each case in both ways of storing entities: compressing must not
	// hide a corrupt entry.
	for i := range len(tests) {
		tt := tests[i]
		tt.name += ", gzip"
		tt.opts.Compress = CompressGzip
		tests = append(tests, tt)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := storetest.Dir(t)
			zp := writeZip(t, tt.zip(t))
			res, err := Explode(ctx, zp, st, tt.opts)
			if err == nil {
				t.Fatalf("Explode = %+v, nil; want an error containing %q", res, tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error = %q, want it to contain %q", err, w)
				}
			}
			if files := storetest.FilesUnder(t, filepath.Dir(st.Root())); len(files) != 0 {
				t.Errorf("files written for a rejected package: %q, want none", files)
			}
			if blobs == nil {
				return
			}
			if _, err := Explode(ctx, zp, blobs, tt.opts); err == nil {
				t.Errorf("Explode into the blob store succeeded, want the same rejection")
			}
			if objs, err := blobs.List(ctx, ""); err != nil || len(objs) != 0 {
				t.Errorf("blobs written for a rejected package: %+v, %v; want none", objs, err)
			}
		})
	}
}

func TestExplodeCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	st := storetest.Dir(t)
	_, err := Explode(ctx, writeZip(t, buildZip(t, tinyEntries(t, ""))), st, ExplodeOptions{Prefix: "p"})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Explode with cancelled ctx = %v, want context.Canceled", err)
	}
	if files := storetest.FilesUnder(t, st.Root()); len(files) != 0 {
		t.Errorf("files written after cancel: %q", files)
	}
}

func TestExplodeMissingFile(t *testing.T) {
	_, err := Explode(context.Background(), filepath.Join(t.TempDir(), "none.zip"), storetest.Dir(t), ExplodeOptions{})
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "open package") {
		t.Errorf("Explode of a missing file = %v, want an open package error wrapping store.ErrNotExist", err)
	}
}

func TestExplodeBadPrefix(t *testing.T) {
	st := storetest.Dir(t)
	_, err := Explode(context.Background(), writeZip(t, buildZip(t, tinyEntries(t, ""))), st, ExplodeOptions{Prefix: "a/../b"})
	if err == nil || !strings.Contains(err.Error(), "prefix") {
		t.Errorf("Explode with prefix a/../b = %v, want a prefix error", err)
	}
}

func TestLimitReaderRealBytes(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 3000)
	zp := writeZip(t, buildZip(t, []zent{{name: "a.csv", data: data}}))
	zr, err := zip.OpenReader(zp)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = zr.Close() }()
	f := zr.File[0]
	tests := []struct {
		name    string
		opts    ExplodeOptions
		total   int64
		wantErr string
	}{
		{"within limits", ExplodeOptions{MaxEntryBytes: 3000, MaxTotalBytes: 3000, MaxRatio: 1}, 0, ""},
		{"entry limit", ExplodeOptions{MaxEntryBytes: 2999, MaxTotalBytes: 1 << 20, MaxRatio: 1000}, 0, "more than 2999 bytes"},
		{"total limit", ExplodeOptions{MaxEntryBytes: 1 << 20, MaxTotalBytes: 4000, MaxRatio: 1000}, 1001, "over 4000 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := f.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = rc.Close() }()
			lr := &limitReader{r: rc, f: f, opts: tt.opts, total: tt.total, h: sha256.New()}
			_, err = io.Copy(io.Discard, lr)
			if tt.wantErr == "" {
				if sum := hex.EncodeToString(lr.h.Sum(nil)); err != nil || lr.n != 3000 || sum != sha(data) {
					t.Errorf("limitReader read %d bytes, sha256 %s, err %v; want 3000 bytes, sha256 %s, no error", lr.n, sum, err, sha(data))
				}
				return
			}
			if !errors.Is(err, errOverLimit) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("limitReader err = %v, want over-limit error containing %q", err, tt.wantErr)
			}
		})
	}
}
