package store_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/store"
	"github.com/dmfexport/dmfexport/store/storetest"
)

// onlyReader hides a reader's Seek, as a zip entry's reader has none.
type onlyReader struct{ io.Reader }

// lossBackend is a store whose container or directory a test can take
// away under it, as an emulator restarted empty or an operator does.
type lossBackend struct {
	name string
	open func(t *testing.T, log *slog.Logger) (st store.Store, lose func(), where string)
}

func lossBackends() []lossBackend {
	return []lossBackend{
		{"dir", func(t *testing.T, log *slog.Logger) (store.Store, func(), string) {
			s := storetest.Dir(t)
			s.Logger = log
			root := s.Root()
			return s, func() {
				if err := os.RemoveAll(root); err != nil {
					t.Fatal(err)
				}
			}, root
		}},
		{"azblob", func(t *testing.T, log *slog.Logger) (store.Store, func(), string) {
			name := storetest.RandomContainer()
			s := storetest.Blob(t, store.BlobOptions{Container: name, Logger: log})
			cc, err := container.NewClientFromConnectionString(testenv.AzuriteConnString(t), name, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s, func() {
				if _, err := cc.Delete(context.Background(), nil); err != nil {
					t.Fatalf("delete container %s: %v", name, err)
				}
			}, name
		}},
	}
}

// TestStoreRecreatedAfterLoss: once the container (or directory) is gone
// under a store, each kind of write creates it again and lands, the
// objects stored before are gone, the loss is counted once and warned
// about once, naming the container and saying what was lost.
func TestStoreRecreatedAfterLoss(t *testing.T) {
	ctx := context.Background()
	// file is larger than a test store's block (1 MiB): a section reader
	// over all of it is uploaded from the file, not through UploadStream.
	ranges := bytes.Repeat([]byte("body"), 3<<18+1)
	file := filepath.Join(t.TempDir(), "package.zip")
	if err := os.WriteFile(file, ranges, 0o644); err != nil {
		t.Fatal(err)
	}
	writes := []struct {
		name  string
		size  int64 // 0: 4
		write func(st store.Store, key string) error
	}{
		{"Put", 0, func(st store.Store, key string) error {
			_, err := st.Put(ctx, key, strings.NewReader("body"), map[string]string{"m": "v"})
			return err
		}},
		{"PutSealed", 0, func(st store.Store, key string) error {
			_, err := st.PutSealed(ctx, key, bytes.NewReader([]byte("body")), map[string]string{"m": "v"},
				func() (map[string]string, error) { return map[string]string{"sealed": "yes"}, nil })
			return err
		}},
		{"Create", 0, func(st store.Store, key string) error {
			_, err := st.Create(ctx, key, strings.NewReader("body"), map[string]string{"m": "v"})
			return err
		}},
		{"Put of a whole file", int64(len(ranges)), func(st store.Store, key string) error {
			f, err := os.Open(file)
			if err != nil {
				return err
			}
			defer func() { _ = f.Close() }()
			_, err = st.Put(ctx, key, io.NewSectionReader(f, 0, int64(len(ranges))), map[string]string{"m": "v"})
			return err
		}},
	}
	for _, b := range lossBackends() {
		for _, w := range writes {
			t.Run(b.name+"/"+w.name, func(t *testing.T) {
				var logs testenv.SyncBuffer
				st, lose, where := b.open(t, slog.New(slog.NewTextHandler(&logs, nil)))
				if _, err := st.Put(ctx, "runs/before", strings.NewReader("old"), nil); err != nil {
					t.Fatal(err)
				}
				lose()
				if err := w.write(st, "runs/after"); err != nil {
					t.Fatalf("%s after the store was lost: %v, want it created again and the write done", w.name, err)
				}
				size := cmp.Or(w.size, 4)
				if o, err := st.Stat(ctx, "runs/after"); err != nil || o.Size != size || o.Meta["m"] != "v" {
					t.Errorf("object written after the loss: %+v, %v; want %d bytes with its metadata", o, err, size)
				}
				if _, err := st.Stat(ctx, "runs/before"); !errors.Is(err, store.ErrNotExist) {
					t.Errorf("object stored before the loss: Stat = %v, want ErrNotExist", err)
				}
				if n := store.Recreations(st); n != 1 {
					t.Errorf("Recreations = %d, want 1", n)
				}
				// Later writes find the store there: no second warning.
				if _, err := st.Put(ctx, "runs/later", strings.NewReader("x"), nil); err != nil {
					t.Fatal(err)
				}
				out := logs.String()
				if c := strings.Count(out, "level=WARN"); c != 1 || !strings.Contains(out, where) || !strings.Contains(out, "every object stored in it before is gone") {
					t.Errorf("log after one loss: want one WARN naming %s and saying the objects before are gone, got:\n%s", where, out)
				}
				if n := store.Recreations(st); n != 1 {
					t.Errorf("Recreations after a later write = %d, want still 1", n)
				}
			})
		}
	}
}

// TestStoreLossConcurrentWrites: several writes that find the store gone
// at once all land, and the loss is warned about and counted once.
func TestStoreLossConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	for _, b := range lossBackends() {
		t.Run(b.name, func(t *testing.T) {
			var logs testenv.SyncBuffer
			st, lose, _ := b.open(t, slog.New(slog.NewTextHandler(&logs, nil)))
			if _, err := st.Put(ctx, "x/first", strings.NewReader("1"), nil); err != nil {
				t.Fatal(err)
			}
			lose()
			var wg sync.WaitGroup
			errs := make([]error, 6)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = st.Put(ctx, "x/"+string(rune('a'+i)), strings.NewReader("v"), nil)
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("write %d after the loss: %v", i, err)
				}
			}
			if objs, err := st.List(ctx, "x/"); err != nil || len(objs) != len(errs) {
				t.Errorf("List after the loss: %d objects (%v), want the %d written after it", len(objs), err, len(errs))
			}
			if n := store.Recreations(st); n != 1 {
				t.Errorf("Recreations = %d, want 1", n)
			}
			if c := strings.Count(logs.String(), "level=WARN"); c != 1 {
				t.Errorf("want one WARN for one loss, got %d:\n%s", c, logs.String())
			}
		})
	}
}

// TestBlobStoreLossUnrewindableReader: a write whose reader cannot rewind
// (a zip entry) still gets the container created again, but says so with
// ErrRecreated instead of sending half a body: written again, it lands.
func TestBlobStoreLossUnrewindableReader(t *testing.T) {
	ctx := context.Background()
	var logs testenv.SyncBuffer
	b := lossBackends()[1]
	st, lose, _ := b.open(t, slog.New(slog.NewTextHandler(&logs, nil)))
	lose()
	seal := func() (map[string]string, error) { return map[string]string{"sha256": "x"}, nil }
	_, err := st.PutSealed(ctx, "e/entity.csv", onlyReader{strings.NewReader("a,b\n")}, nil, seal)
	if !errors.Is(err, store.ErrRecreated) {
		t.Fatalf("PutSealed of an unrewindable reader after the loss: %v, want ErrRecreated", err)
	}
	if _, err := st.PutSealed(ctx, "e/entity.csv", onlyReader{strings.NewReader("a,b\n")}, nil, seal); err != nil {
		t.Fatalf("PutSealed written again: %v", err)
	}
	if o, err := st.Stat(ctx, "e/entity.csv"); err != nil || o.Size != 4 || o.Meta["sha256"] != "x" {
		t.Errorf("entity after the second write: %+v, %v", o, err)
	}
	if n := store.Recreations(st); n != 1 {
		t.Errorf("Recreations = %d, want 1", n)
	}
}

// TestBlobStoreLostForGood: a store whose credential may not create
// containers (a container SAS) cannot replace a deleted container: the
// write fails with ErrStoreLost, naming the container.
func TestBlobStoreLostForGood(t *testing.T) {
	ctx := context.Background()
	cs := testenv.AzuriteConnString(t)
	name := storetest.RandomContainer()
	cc, err := container.NewClientFromConnectionString(cs, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Create(ctx, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = cc.Delete(context.Background(), nil) })
	u, err := cc.GetSASURL(sas.ContainerPermissions{Read: true, Write: true, Delete: true, List: true, Create: true, Add: true}, time.Now().Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.SyncBuffer
	st, err := store.NewBlobStore(ctx, store.BlobOptions{SASURL: u, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Delete(ctx, nil); err != nil {
		t.Fatal(err)
	}
	_, err = st.Put(ctx, "r/run.json", strings.NewReader("{}"), nil)
	if !errors.Is(err, store.ErrStoreLost) || !strings.Contains(err.Error(), name) {
		t.Fatalf("Put into a deleted container that cannot be created: %v, want ErrStoreLost naming %s", err, name)
	}
	if strings.Contains(err.Error(), "sig=") {
		t.Errorf("error %q holds the SAS signature", err)
	}
	if n := store.Recreations(st); n != 0 {
		t.Errorf("Recreations = %d, want 0", n)
	}
}
