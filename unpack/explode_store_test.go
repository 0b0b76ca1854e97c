package unpack

import (
	"context"
	"errors"
	"github.com/dmfexport/dmfexport/store"
	"github.com/dmfexport/dmfexport/store/storetest"
	"io"
	"maps"
	"reflect"
	"strings"
	"testing"
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

// faultyStore fails the failPut-th Put (1-based) or cancels a context
// after the cancelAfter-th, and can refuse every Delete.
type faultyStore struct {
	store.Store
	puts        int
	failPut     int
	cancelAfter int
	cancel      context.CancelFunc
	failDelete  bool
}

var errInjected = errors.New("injected store failure")

func (f *faultyStore) Put(ctx context.Context, key string, r io.Reader, meta map[string]string) (store.Object, error) {
	f.puts++
	if f.puts == f.failPut {
		io.Copy(io.Discard, r)
		return store.Object{}, errInjected
	}
	o, err := f.Store.Put(ctx, key, r, meta)
	if f.puts == f.cancelAfter {
		f.cancel()
	}
	return o, err
}

// sealingFaultyStore is faultyStore for Explode's one-pass path: it seals,
// with the same faults.
type sealingFaultyStore struct{ *faultyStore }

func (f sealingFaultyStore) PutSealed(ctx context.Context, key string, r io.Reader, meta map[string]string, seal func() (map[string]string, error)) (store.Object, error) {
	f.puts++
	if f.puts == f.failPut {
		io.Copy(io.Discard, r)
		return store.Object{}, errInjected
	}
	o, err := f.Store.(store.SealedPutter).PutSealed(ctx, key, r, meta, seal)
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
		for _, sealed := range []bool{false, true} {
			name := tt.name + "/two passes"
			if sealed {
				name = tt.name + "/one pass"
			}
			t.Run(name, func(t *testing.T) {
				storetest.ForEach(t, func(t *testing.T, st store.Store) {
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					fs := tt.fs
					fs.Store, fs.cancel = st, cancel
					var target store.Store = &fs
					if sealed {
						target = sealingFaultyStore{&fs}
					}
					zp, _ := multiEntityZip(t)
					_, err := Explode(ctx, zp, target, ExplodeOptions{Prefix: "p"})
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
}

// TestExplodeOnePassSameAsTwo: a store that seals metadata after the bytes
// gets exactly the objects, sizes, hashes and metadata the two-pass path
// stores, and the one-pass path never calls Put.
func TestExplodeOnePassSameAsTwo(t *testing.T) {
	ctx := context.Background()
	storetest.ForEach(t, func(t *testing.T, st store.Store) {
		zp, _ := multiEntityZip(t)
		one, err := Explode(ctx, zp, noPut{st.(store.SealedPutter), st}, ExplodeOptions{Prefix: "one"})
		if err != nil {
			t.Fatalf("Explode one pass: %v", err)
		}
		two, err := Explode(ctx, zp, struct{ store.Store }{st}, ExplodeOptions{Prefix: "two"})
		if err != nil {
			t.Fatalf("Explode two passes: %v", err)
		}
		if len(one.Entities) != len(two.Entities) || len(one.Entities) == 0 {
			t.Fatalf("entities: one pass %d, two passes %d", len(one.Entities), len(two.Entities))
		}
		for i, a := range one.Entities {
			b := two.Entities[i]
			if a.Size != b.Size || a.SHA256 != b.SHA256 || a.SHA256 == "" || strings.TrimPrefix(a.Key, "one/") != strings.TrimPrefix(b.Key, "two/") {
				t.Errorf("entity %q: one pass %+v, two passes %+v", a.Entity, a, b)
			}
			oa, err1 := st.Stat(ctx, a.Key)
			ob, err2 := st.Stat(ctx, b.Key)
			if err1 != nil || err2 != nil || !maps.Equal(oa.Meta, ob.Meta) || storetest.ReadAll(t, st, a.Key) != storetest.ReadAll(t, st, b.Key) {
				t.Errorf("entity %q: one pass stored %+v (%v), two passes %+v (%v)", a.Entity, oa, err1, ob, err2)
			}
		}
	})
}

// noPut is a store.SealedPutter whose Put fails the test's expectations loudly.
type noPut struct {
	store.SealedPutter
	store.Store
}

func (n noPut) Put(context.Context, string, io.Reader, map[string]string) (store.Object, error) {
	return store.Object{}, errors.New("Put called: the one-pass path must use PutSealed")
}
