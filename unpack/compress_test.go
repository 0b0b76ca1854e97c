package unpack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dmfexport/dmfexport/store"
	"github.com/dmfexport/dmfexport/store/storetest"
	"github.com/klauspost/compress/gzip"
)

// compressZip is a package of a CSV large enough to take many chunks of
// the compressor, an XML file, an Excel workbook (a zip: stored as it is)
// and a file without extension (CSV, F&O's default).
func compressZip(t *testing.T) (zipPath string, files map[string][]byte) {
	t.Helper()
	var csv bytes.Buffer
	csv.WriteString("CUSTOMERACCOUNT,NAME,CREDITLIMIT\r\n")
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 40000 {
		fmt.Fprintf(&csv, "US-%06d,Customer %d,%d\r\n", i, r.IntN(1e6), r.IntN(1e9))
	}
	files = map[string][]byte{
		"Customers":      csv.Bytes(),
		"Sales orders":   []byte("<Document><SALESORDERHEADERV2ENTITY SALESORDERNUMBER=\"000001\"/></Document>"),
		"Products":       buildZip(t, []zent{{name: "xl/workbook.xml", data: []byte("<workbook/>")}}),
		"No extension":   []byte("A,B\r\n1,2\r\n"),
		"Empty":          nil,
		"Legacy archive": buildZip(t, []zent{{name: "x.csv", data: []byte("A\r\n1\r\n")}}),
	}
	manifest := entitiesManifest(entityXML("Customers", "Customers.csv", "CSV-Unicode", false) +
		entityXML("Sales orders", "Sales orders.xml", "XML-Element", false) +
		entityXML("Products", "Products.xlsx", "EXCEL", false) +
		entityXML("No extension", "noext", "", false) +
		entityXML("Empty", "Empty.csv", "CSV", false) +
		entityXML("Legacy archive", "Legacy archive.zip", "", false))
	ents := []zent{{name: "Manifest.xml", data: manifest},
		{name: "Customers.csv", data: files["Customers"]},
		{name: "Sales orders.xml", data: files["Sales orders"]},
		{name: "Products.xlsx", data: files["Products"]},
		{name: "noext", data: files["No extension"]},
		{name: "Empty.csv", data: files["Empty"]},
		{name: "Legacy archive.zip", data: files["Legacy archive"]}}
	return writeZip(t, buildZip(t, ents)), files
}

func TestExplodeCompress(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		compress string
		// wantKeys: each entity's key under the prefix; a key ending in .gz
		// is a gzip-compressed object.
		wantKeys map[string]string
	}{
		{"default", "", map[string]string{"Customers": "Customers.csv", "Sales orders": "Sales orders.xml", "Products": "Products.xlsx",
			"No extension": "No extension.csv", "Empty": "Empty.csv", "Legacy archive": "Legacy archive.zip"}},
		{"none", CompressNone, map[string]string{"Customers": "Customers.csv", "Sales orders": "Sales orders.xml", "Products": "Products.xlsx",
			"No extension": "No extension.csv", "Empty": "Empty.csv", "Legacy archive": "Legacy archive.zip"}},
		{"gzip", CompressGzip, map[string]string{"Customers": "Customers.csv.gz", "Sales orders": "Sales orders.xml.gz", "Products": "Products.xlsx",
			"No extension": "No extension.csv.gz", "Empty": "Empty.csv.gz", "Legacy archive": "Legacy archive.zip"}},
	}
	storetest.ForEach(t, func(t *testing.T, st store.Store) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				zp, files := compressZip(t)
				prefix := "x/" + tt.name + "/entities"
				res, err := Explode(ctx, zp, st, ExplodeOptions{Prefix: prefix, Meta: map[string]string{"run": "r"}, Compress: tt.compress})
				if err != nil {
					t.Fatalf("Explode: %v", err)
				}
				if len(res.Entities) != len(files) {
					t.Fatalf("Explode stored %d entities, want %d", len(res.Entities), len(files))
				}
				for _, e := range res.Entities {
					want := files[e.Entity]
					gz := strings.HasSuffix(tt.wantKeys[e.Entity], ".gz")
					if e.Err != nil || e.Key != prefix+"/"+tt.wantKeys[e.Entity] {
						t.Fatalf("entity %q: key %q err %v, want key %q", e.Entity, e.Key, e.Err, prefix+"/"+tt.wantKeys[e.Entity])
					}
					wantCompression := map[bool]string{true: CompressGzip}[gz]
					if e.Compression != wantCompression || e.Size != int64(len(want)) || e.SHA256 != sha(want) {
						t.Errorf("entity %q: compression %q size %d sha256 %s, want %q %d %s (the file's own)",
							e.Entity, e.Compression, e.Size, e.SHA256, wantCompression, len(want), sha(want))
					}
					o, err := st.Stat(ctx, e.Key)
					if err != nil {
						t.Fatalf("Stat(%q): %v", e.Key, err)
					}
					if wantStored := map[bool]int64{true: o.Size}[gz]; e.StoredSize != wantStored {
						t.Errorf("entity %q: StoredSize %d, want %d (object size %d)", e.Entity, e.StoredSize, wantStored, o.Size)
					}
					wantMeta := map[string]string{"run": "r", "entity": e.Entity, "file": e.File, "sourceformat": e.SourceFormat,
						"format": e.Format, "sha256": sha(want)}
					if gz {
						wantMeta["compression"] = CompressGzip
					}
					if !maps.Equal(o.Meta, wantMeta) {
						t.Errorf("entity %q: meta %v, want %v", e.Entity, o.Meta, wantMeta)
					}
					raw := []byte(storetest.ReadAll(t, st, e.Key))
					if gz {
						zr, err := gzip.NewReader(bytes.NewReader(raw))
						if err != nil {
							t.Fatalf("entity %q: object is not gzip: %v", e.Entity, err)
						}
						if raw, err = io.ReadAll(zr); err != nil {
							t.Fatalf("entity %q: gunzip: %v", e.Entity, err)
						}
					}
					if !bytes.Equal(raw, want) {
						t.Errorf("entity %q: object holds %d bytes (gunzipped: %v) unlike the package's %d", e.Entity, len(raw), gz, len(want))
					}
					rc, err := OpenStored(ctx, st, e.Key, e.Compression)
					if err != nil {
						t.Fatalf("OpenStored(%q): %v", e.Key, err)
					}
					got, err := io.ReadAll(rc)
					if cerr := rc.Close(); err == nil {
						err = cerr
					}
					if err != nil || !bytes.Equal(got, want) {
						t.Errorf("OpenStored(%q) read %d bytes, %v; want the package's %d", e.Key, len(got), err, len(want))
					}
				}
				if c := res.Entities[0]; tt.compress == CompressGzip && c.StoredSize*2 > c.Size {
					t.Errorf("Customers stored in %d bytes of %d: want it at least halved", c.StoredSize, c.Size)
				}
			})
		}
	})
}

func TestOpenStoredErrors(t *testing.T) {
	ctx := context.Background()
	st := storetest.Dir(t)
	if _, err := st.Put(ctx, "plain.csv", strings.NewReader("A\r\n1\r\n"), nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, key, compression string
		want                   string
		notExist               bool
	}{
		{"absent object", "gone.csv.gz", CompressGzip, "gone.csv.gz", true},
		{"record says gzip, object is not", "plain.csv", CompressGzip, "not gzip-compressed as its run record says", false},
		{"unknown compression", "plain.csv", "zstd", `unknown compression "zstd"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := OpenStored(ctx, st, tt.key, tt.compression)
			if err == nil {
				_ = rc.Close()
				t.Fatalf("OpenStored(%q, %q) = nil error, want one containing %q", tt.key, tt.compression, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || errors.Is(err, store.ErrNotExist) != tt.notExist {
				t.Errorf("error = %v, want it to contain %q (ErrNotExist: %v)", err, tt.want, tt.notExist)
			}
		})
	}
}

// TestGzipReaderPassesSourceErrors: the upload must see the entity file's
// error (a corrupt entry, a limit) when it happens, not a shorter stream.
func TestGzipReaderPassesSourceErrors(t *testing.T) {
	boom := errors.New("boom")
	src := io.MultiReader(bytes.NewReader(bytes.Repeat([]byte("abc,def\r\n"), 50000)), iotestErr{boom})
	n, err := io.Copy(io.Discard, newGzipReader(src))
	if !errors.Is(err, boom) {
		t.Errorf("copy of a failing source = %d bytes, %v; want error %v", n, err, boom)
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }
