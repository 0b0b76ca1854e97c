package jobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
	"github.com/klauspost/compress/gzip"
)

// compressStores are the store types a run with store.compress or
// store.package is tested on; azblob skips without Azurite.
var compressStores = []struct {
	name  string
	store func(t *testing.T, dir string) StoreConfig
}{
	{"dir", func(t *testing.T, dir string) StoreConfig {
		return StoreConfig{Type: "dir", Path: filepath.Join(dir, "store")}
	}},
	{"azblob", func(t *testing.T, dir string) StoreConfig { return azuriteStore(t) }},
}

// runWithStore runs an export of project G, of entities, into the store
// that store makes and set changes, and returns the simulator, the export,
// its directory and the record of its run, which must succeed.
func runWithStore(t *testing.T, store func(t *testing.T, dir string) StoreConfig, entities []dmftest.Entity, set func(*StoreConfig)) (*simServer, *Export, string, *runs.Record) {
	t.Helper()
	dir := t.TempDir()
	sim := newSim(quick(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": entities}, ExecutionTime: 20 * time.Millisecond}))
	t.Cleanup(sim.Close)
	exp := fileExport(sim, dir)
	exp.Store = store(t, dir)
	set(&exp.Store)
	r := &Runner{}
	defer func() { _ = r.Close() }()
	rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"})
	if err != nil || rec.State != runs.StateSucceeded {
		t.Fatalf("Run: %v (%+v)", err, rec)
	}
	return sim, exp, dir, rec
}

// TestRunStoresCompressed runs the demo project (CSV, XLSX, XML, a file
// absent from the package) with store.compress none and gzip: with gzip
// every entity but the workbook is stored as <key>.gz, whose gunzipped
// bytes are the package's file, the record keeps the file's size and hash
// with the stored size, and a replay reads the objects back into the
// same rows.
func TestRunStoresCompressed(t *testing.T) {
	ctx := context.Background()
	demo := map[string][]byte{}
	for _, e := range dmftest.DemoProject() {
		demo[e.Name] = e.Data
	}
	for _, sc := range compressStores {
		for _, compress := range []string{"none", "gzip"} {
			t.Run(sc.name+"/"+compress, func(t *testing.T) {
				_, exp, dir, rec := runWithStore(t, sc.store, dmftest.DemoProject(), func(c *StoreConfig) { c.Compress = compress })
				r := &Runner{}
				defer func() { _ = r.Close() }()
				st := mustOpen(t, exp)
				for _, e := range rec.Entities {
					if e.Absent {
						continue
					}
					data, ok := demo[e.Entity]
					if !ok {
						t.Fatalf("entity %q is not in the demo project", e.Entity)
					}
					gz := compress == "gzip" && e.Format != "xlsx"
					if strings.HasSuffix(e.Key, ".gz") != gz || (e.Compression == "gzip") != gz {
						t.Errorf("entity %s: key %q, compression %q; want gzip-compressed: %v", e.Entity, e.Key, e.Compression, gz)
					}
					sum := sha256.Sum256(data)
					if e.Bytes != int64(len(data)) || e.SHA256 != hex.EncodeToString(sum[:]) {
						t.Errorf("entity %s: record bytes %d sha256 %s, want the package file's %d %x", e.Entity, e.Bytes, e.SHA256, len(data), sum)
					}
					o, err := st.Stat(ctx, e.Key)
					if err != nil {
						t.Fatalf("entity %s: %v", e.Entity, err)
					}
					if wantMeta := map[bool]string{true: "gzip"}[gz]; o.Meta["compression"] != wantMeta || o.Meta["sha256"] != e.SHA256 {
						t.Errorf("entity %s: metadata compression %q sha256 %q, want %q and the file's %s", e.Entity, o.Meta["compression"], o.Meta["sha256"], wantMeta, e.SHA256)
					}
					if wantStored := map[bool]int64{true: o.Size}[gz]; e.StoredBytes != wantStored {
						t.Errorf("entity %s: record stored_bytes %d, want %d (object of %d bytes)", e.Entity, e.StoredBytes, wantStored, o.Size)
					}
					rc, err := st.Open(ctx, e.Key)
					if err != nil {
						t.Fatal(err)
					}
					var src io.Reader = rc
					if gz {
						if src, err = gzip.NewReader(rc); err != nil {
							t.Fatalf("entity %s: object %s is not gzip: %v", e.Entity, e.Key, err)
						}
					}
					got, err := io.ReadAll(src)
					_ = rc.Close()
					if err != nil || !bytes.Equal(got, data) {
						t.Errorf("entity %s: object %s holds %d bytes (gunzipped: %v), %v; want the package's %d", e.Entity, e.Key, len(got), gz, err, len(data))
					}
				}
				want := dmftest.DemoRowCounts()
				if rows, _ := ndjsonRows(t, filepath.Join(dir, "batches", publish.FileName(exp.RoutingKey))); !maps.Equal(rows, want) {
					t.Errorf("rows published %v, want %v", rows, want)
				}
				if _, err := r.Replay(ctx, exp, rec, ReplayOptions{RoutingKey: "replay"}); err != nil {
					t.Fatalf("Replay from the store: %v", err)
				}
				if rows, _ := ndjsonRows(t, filepath.Join(dir, "batches", publish.FileName("replay"))); !maps.Equal(rows, want) {
					t.Errorf("rows replayed from the stored objects %v, want %v", rows, want)
				}
			})
		}
	}
}

// TestResumeFromCompressedStore stops a run mid-publish and resumes it,
// which reads the entity back from the store: from a gzip store the
// resumed run publishes the same batches, with the same rows, as from a
// plain one.
func TestResumeFromCompressedStore(t *testing.T) {
	for _, sc := range compressStores {
		t.Run(sc.name, func(t *testing.T) {
			published := map[string]map[string][][]string{}
			for _, compress := range []string{"none", "gzip"} {
				dir := t.TempDir()
				sim := newSim(quick(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("A", 1000)}}, ExecutionTime: 20 * time.Millisecond}))
				defer sim.Close()
				exp := fileExport(sim, dir)
				exp.Store = sc.store(t, dir)
				exp.Store.Compress = compress
				first := &scriptedSink{storeFirst: 3, cancelAt: 6}
				rec := interruptedRun(t, exp, first)
				if !rec.Unpacked || rec.Entities[0].LastBatch != 2 {
					t.Fatalf("%s: interrupted run unpacked %v, last batch %d; want unpacked after batch 2", compress, rec.Unpacked, rec.Entities[0].LastBatch)
				}
				if got := strings.HasSuffix(rec.Entities[0].Key, ".gz"); got != (compress == "gzip") {
					t.Fatalf("%s: entity stored as %q", compress, rec.Entities[0].Key)
				}
				watch := newBlobWatch(t, nil)
				second := &scriptedSink{storeFirst: -1}
				r := &Runner{NewSink: sinkFor(second), Metrics: NewMetrics(), HTTPClient: &http.Client{Transport: watch}}
				got, err := r.Resume(context.Background(), exp, rec)
				_ = r.Close()
				if err != nil || got.State != runs.StateSucceeded {
					t.Fatalf("%s: Resume: %v (%+v)", compress, err, got)
				}
				if sc.name == "azblob" && watch.reads == 0 {
					t.Fatalf("%s: the resumed run read no entity blob: the test does not read the store", compress)
				}
				if sim.Downloads() != 1 {
					t.Errorf("%s: package downloaded %d times, want 1: the resume must read the stored entity", compress, sim.Downloads())
				}
				all := map[string][][]string{}
				for _, s := range []struct {
					sink       *scriptedSink
					storedOnly bool
				}{{first, true}, {second, false}} {
					for id, rows := range s.sink.rowsByMessage(t, s.storedOnly) {
						id = strings.ReplaceAll(id, rec.ExecutionID, "EXECUTION") // the message ID names the execution
						all[id] = append(all[id], rows...)
					}
				}
				if len(all) != 10 {
					t.Errorf("%s: %d batches reached the broker, want 10", compress, len(all))
				}
				published[compress] = all
			}
			plain, gz := published["none"], published["gzip"]
			if len(plain) != len(gz) {
				t.Fatalf("batches from a gzip store: %d, from a plain one %d", len(gz), len(plain))
			}
			for id, rows := range plain {
				if g, ok := gz[id]; !ok || !equalRows(g, rows) {
					t.Errorf("batch %s from a gzip store differs from a plain one's: %d rows %v against %d rows", id, len(g), ok, len(rows))
				}
			}
		})
	}
}

// TestStorePackage: with store.package keep the package is stored beside
// its entities and recorded; with skip it is neither, and a run cut off
// mid-publish resumes from its stored entities all the same, without
// downloading the package again.
func TestStorePackage(t *testing.T) {
	ctx := context.Background()
	for _, sc := range compressStores {
		for _, pkg := range []string{PackageKeep, PackageSkip} {
			t.Run(sc.name+"/"+pkg, func(t *testing.T) {
				sim, exp, _, rec := runWithStore(t, sc.store, []dmftest.Entity{csvEntity("A", 1000)}, func(c *StoreConfig) { c.Package = pkg })
				st := mustOpen(t, exp)
				key := runs.Layout{Prefix: exp.Store.Prefix, Export: exp.Name}.Package(rec.RunID)
				_, err := st.Stat(ctx, key)
				if keep := pkg == PackageKeep; (rec.PackageKey == key) != keep || (err == nil) != keep || !keep && !errors.Is(err, store.ErrNotExist) {
					t.Errorf("record's package key %q, Stat(%s): %v; want the package stored: %v", rec.PackageKey, key, err, keep)
				}
				if pkg == PackageKeep {
					return
				}
				first := &scriptedSink{storeFirst: 3, cancelAt: 6}
				cut := interruptedRun(t, exp, first)
				if !cut.Unpacked || cut.PackageKey != "" {
					t.Fatalf("interrupted run: unpacked %v, package key %q; want unpacked, no package", cut.Unpacked, cut.PackageKey)
				}
				downloads := sim.Downloads()
				second := &scriptedSink{storeFirst: -1}
				got, err := resume(t, exp, cut, second, NewMetrics())
				if err != nil || got.State != runs.StateSucceeded {
					t.Fatalf("Resume: %v (%+v)", err, got)
				}
				if n := sim.Downloads() - downloads; n != 0 {
					t.Errorf("the resume downloaded the package %d times, want 0: its entities are stored", n)
				}
				ids := map[string]bool{}
				for _, s := range []struct {
					sink       *scriptedSink
					storedOnly bool
				}{{first, true}, {second, false}} {
					for id := range s.sink.rowsByMessage(t, s.storedOnly) {
						ids[id] = true
					}
				}
				if len(ids) != 10 {
					t.Errorf("%d batches reached the broker, want 10", len(ids))
				}
			})
		}
	}
}

func equalRows(a, b [][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if strings.Join(a[i], "|") != strings.Join(b[i], "|") {
			return false
		}
	}
	return true
}
