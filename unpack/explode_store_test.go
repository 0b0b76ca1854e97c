package unpack

import (
	"archive/zip"
	"context"
	"errors"
	"io"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/dmfexport/dmfexport/store"
	"github.com/dmfexport/dmfexport/store/storetest"
)

// multiEntityZip is the tiny fixture plus an entity whose name needs
// escaping and whose metadata needs encoding.
func multiEntityZip(t *testing.T) (zipPath string, extra []byte) {
	t.Helper()
	extra = []byte("ID,NAME\r\n1,Zoë\r\n")
	manifest := entitiesManifest(entityXML("Customers V3", "Customers V3.csv", "CSV-Unicode", false) +
		entityXML("Vendors V2", "Vendors V2.csv", "CSV-Unicode", false) +
		entityXML("Clients/Société: Ünï", `C:\out\clients.csv`, "CSV-Unicode", false))
	ents := []zent{{name: "Manifest.xml", data: manifest},
		{name: "PackageHeader.xml", data: fixture(t, "PackageHeader.xml")},
		{name: "Customers V3.csv", data: fixture(t, "Customers V3.csv")},
		{name: "Vendors V2.csv", data: fixture(t, "Vendors V2.csv")},
		{name: "clients.csv", data: extra}}
	return writeZip(t, buildZip(t, ents)), extra
}

func TestExplodeIntoEveryStore(t *testing.T) {
	ctx := context.Background()
	storetest.ForEach(t, func(t *testing.T, st store.Store) {
		zp, extra := multiEntityZip(t)
		meta := map[string]string{"job": "Nightly Ünï", "run": "20261124T201500Z-1a2b3c4d", "executionid": "Export-2026-11-24_20:15:00-x"}
		prefix := "exports/" + store.EscapeName("Nightly Ünï") + "/20261124T201500Z-1a2b3c4d/entities"
		res, err := Explode(ctx, zp, st, ExplodeOptions{Prefix: prefix, Meta: meta})
		if err != nil {
			t.Fatalf("Explode: %v", err)
		}
		data := map[string][]byte{"Customers V3": fixture(t, "Customers V3.csv"), "Vendors V2": fixture(t, "Vendors V2.csv"), "Clients/Société: Ünï": extra}
		wantKeys := []string{prefix + "/Clients%2FSoci%C3%A9t%C3%A9%3A %C3%9Cn%C3%AF.csv", prefix + "/Customers V3.csv", prefix + "/Vendors V2.csv"}
		objs, err := st.List(ctx, prefix+"/")
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		var keys []string
		for _, o := range objs {
			keys = append(keys, o.Key)
		}
		if !reflect.DeepEqual(keys, wantKeys) {
			t.Fatalf("stored keys = %q, want %q", keys, wantKeys)
		}
		for _, e := range res.Entities {
			if e.Err != nil {
				t.Fatalf("entity %q: %v", e.Entity, e.Err)
			}
			want := data[e.Entity]
			if got := storetest.ReadAll(t, st, e.Key); got != string(want) {
				t.Errorf("object %q differs from the package's file", e.Key)
			}
			o, err := st.Stat(ctx, e.Key)
			if err != nil {
				t.Fatalf("Stat(%q): %v", e.Key, err)
			}
			wantMeta := map[string]string{"job": meta["job"], "run": meta["run"], "executionid": meta["executionid"],
				"entity": e.Entity, "file": e.File, "sourceformat": "CSV-Unicode", "format": "csv", "sha256": sha(want)}
			if !maps.Equal(o.Meta, wantMeta) || o.Size != int64(len(want)) {
				t.Errorf("object %q: meta %v size %d\nwant meta %v size %d", e.Key, o.Meta, o.Size, wantMeta, len(want))
			}
		}
	})
}

func TestExplodeTwiceSameObjects(t *testing.T) {
	ctx := context.Background()
	storetest.ForEach(t, func(t *testing.T, st store.Store) {
		zp, _ := multiEntityZip(t)
		opts := ExplodeOptions{Prefix: "j/r/entities", Meta: map[string]string{"run": "r"}}
		var lists [2][]store.Object
		for i := range 2 {
			if _, err := Explode(ctx, zp, st, opts); err != nil {
				t.Fatalf("Explode #%d: %v", i+1, err)
			}
			objs, err := st.List(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			for j := range objs {
				objs[j].ModTime = objs[j].ModTime.Truncate(0).UTC().Truncate(1e18) // compare content, not time
			}
			lists[i] = objs
		}
		if len(lists[0]) != 3 || !reflect.DeepEqual(lists[0], lists[1]) {
			t.Errorf("objects after the second Explode differ or are not 3:\nfirst  %+v\nsecond %+v", lists[0], lists[1])
		}
	})
}

// faultyStore fails the failPut-th PutSealed (1-based) or cancels a
// context after the cancelAfter-th, and can refuse every Delete.
type faultyStore struct {
	store.Store
	puts        int
	failPut     int
	cancelAfter int
	cancel      context.CancelFunc
	failDelete  bool
}

var errInjected = errors.New("injected store failure")

func (f *faultyStore) PutSealed(ctx context.Context, key string, r io.Reader, meta map[string]string, seal func() (map[string]string, error)) (store.Object, error) {
	f.puts++
	if f.puts == f.failPut {
		_, _ = io.Copy(io.Discard, r)
		return store.Object{}, errInjected
	}
	o, err := f.Store.PutSealed(ctx, key, r, meta, seal)
	if f.puts == f.cancelAfter {
		f.cancel()
	}
	return o, err
}

func (f *faultyStore) Delete(ctx context.Context, key string) error {
	if f.failDelete {
		return errInjected
	}
	return f.Store.Delete(ctx, key)
}

func TestExplodeFailureRemovesWhatItStored(t *testing.T) {
	tests := []struct {
		name    string
		fs      faultyStore
		wantIs  error
		wantErr string
		left    int // objects expected to remain
	}{
		{"third put fails", faultyStore{failPut: 3}, errInjected, "removed the 2 entity objects this attempt had stored", 0},
		{"first put fails", faultyStore{failPut: 1}, errInjected, `store entity "Customers V3": injected store failure`, 0},
		{"cancelled after the first put", faultyStore{cancelAfter: 1}, context.Canceled, "removed the 1 entity objects", 0},
		{"cleanup refused", faultyStore{failPut: 2, failDelete: true}, errInjected, "could not remove 1 of the 1 entity objects", 1},
	}
	for i := range tests {
		tt := &tests[i]
		t.Run(tt.name, func(t *testing.T) {
			storetest.ForEach(t, func(t *testing.T, st store.Store) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				fs := tt.fs
				fs.Store, fs.cancel = st, cancel
				zp, _ := multiEntityZip(t)
				_, err := Explode(ctx, zp, &fs, ExplodeOptions{Prefix: "p"})
				if !errors.Is(err, tt.wantIs) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Explode = %v, want an error wrapping %v and containing %q", err, tt.wantIs, tt.wantErr)
				}
				if tt.fs.failPut == 1 && strings.Contains(err.Error(), "remove") {
					t.Errorf("error %q mentions removal though nothing was stored", err)
				}
				objs, err := st.List(context.Background(), "")
				if err != nil || len(objs) != tt.left {
					t.Errorf("objects left = %+v, %v; want %d", objs, err, tt.left)
				}
			})
		})
	}
}

// TestExplodeSealsSizeAndHash: each stored object has the size and SHA-256
// of its zip entry's bytes (read here with archive/zip, apart from
// Explode's own reading) and the whole metadata, the Result says the same,
// and Explode stores only through PutSealed, never Put.
func TestExplodeSealsSizeAndHash(t *testing.T) {
	ctx := context.Background()
	storetest.ForEach(t, func(t *testing.T, st store.Store) {
		zp, _ := multiEntityZip(t)
		entries := zipEntries(t, zp)
		meta := map[string]string{"job": "j", "run": "r"}
		res, err := Explode(ctx, zp, noPut{st, t}, ExplodeOptions{Prefix: "p", Meta: meta})
		if err != nil {
			t.Fatalf("Explode: %v", err)
		}
		if len(res.Entities) != 3 {
			t.Fatalf("Explode stored %d entities, want 3: %+v", len(res.Entities), res.Entities)
		}
		for _, e := range res.Entities {
			data, ok := entries[e.File]
			if e.Err != nil || !ok {
				t.Fatalf("entity %q: err %v, file %q in the zip: %v", e.Entity, e.Err, e.File, ok)
			}
			wantSum := sha(data)
			if e.Size != int64(len(data)) || e.SHA256 != wantSum {
				t.Errorf("entity %q: Result size %d sha256 %s, want %d %s", e.Entity, e.Size, e.SHA256, len(data), wantSum)
			}
			o, err := st.Stat(ctx, e.Key)
			if err != nil {
				t.Fatalf("Stat(%q): %v", e.Key, err)
			}
			wantMeta := map[string]string{"job": "j", "run": "r", "entity": e.Entity, "file": e.File,
				"sourceformat": "CSV-Unicode", "format": "csv", "sha256": wantSum}
			if o.Size != int64(len(data)) || !maps.Equal(o.Meta, wantMeta) {
				t.Errorf("object %q: size %d meta %v\nwant size %d meta %v", e.Key, o.Size, o.Meta, len(data), wantMeta)
			}
			if got := storetest.ReadAll(t, st, e.Key); got != string(data) {
				t.Errorf("object %q differs from zip entry %q", e.Key, e.File)
			}
		}
	})
}

// zipEntries reads every entry of the zip at zp by name.
func zipEntries(t *testing.T, zp string) map[string][]byte {
	t.Helper()
	zr, err := zip.OpenReader(zp)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = zr.Close() }()
	out := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatalf("open zip entry %q: %v", f.Name, err)
		}
		b, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil {
			t.Fatalf("read zip entry %q: %v", f.Name, err)
		}
		out[f.Name] = b
	}
	return out
}

// noPut is a store whose Put fails the test: Explode must store through
// PutSealed.
type noPut struct {
	store.Store
	t *testing.T
}

func (n noPut) Put(_ context.Context, key string, _ io.Reader, _ map[string]string) (store.Object, error) {
	n.t.Errorf("Put(%q) called: Explode must store through PutSealed", key)
	return store.Object{}, errors.New("Put called")
}
