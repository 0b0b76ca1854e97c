package jobs

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
)

// blobWatch is an HTTP transport that sees the run's requests to its Azure
// Blob store: it lists the blob writes in order, counts entity blobs read
// back, and holds the first write of entity B's blob until release says.
type blobWatch struct {
	base    *http.Transport
	mu      sync.Mutex
	puts    []string // entity and package blobs written, in order of their first write
	reads   int      // GETs of entity blobs
	holdB   func()   // called (once) before entity B's first write goes out
	heldOut bool
}

func (w *blobWatch) RoundTrip(req *http.Request) (*http.Response, error) {
	p := req.URL.Path
	if strings.Contains(p, "/entities/") && req.Method == http.MethodGet {
		w.mu.Lock()
		w.reads++
		w.mu.Unlock()
	}
	if req.Method == http.MethodPut && (strings.Contains(p, "/entities/") || strings.HasSuffix(p, "/package.zip")) {
		w.mu.Lock()
		first := len(w.puts) == 0 || w.puts[len(w.puts)-1] != p
		if first {
			w.puts = append(w.puts, p)
		}
		hold := strings.HasSuffix(p, "/entities/B.csv") && !w.heldOut && w.holdB != nil
		if hold {
			w.heldOut = true
		}
		w.mu.Unlock()
		if hold {
			w.holdB()
		}
	}
	return w.base.RoundTrip(req)
}

// newBlobWatch returns a blobWatch whose connections close as t ends.
func newBlobWatch(t *testing.T, holdB func()) *blobWatch {
	base := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(base.CloseIdleConnections)
	return &blobWatch{base: base, holdB: holdB}
}

func (w *blobWatch) written() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.puts...)
}

// overlapExport is an export of entities A (3000 rows, stored first: the
// costlier) and B (250 rows) into an Azure Blob store on Azurite, one
// entity published at a time.
func overlapExport(t *testing.T) (*simServer, *Export, string) {
	t.Helper()
	sim := newSim(quick(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"G": {csvEntity("A", 3000), csvEntity("B", 250)}},
		ExecutionTime: 50 * time.Millisecond,
	}))
	t.Cleanup(sim.Close)
	dir := t.TempDir()
	exp := fileExport(sim, dir)
	exp.Store = azuriteStore(t)
	exp.ParallelEntities = 1
	return sim, exp, dir
}

// TestRemoteStorePublishesWhileStoring: with a store across a network,
// entity A is published (from the package file) while entity B is still
// being stored, no entity is read back from the store, and the package is
// stored after the entities.
func TestRemoteStorePublishesWhileStoring(t *testing.T) {
	sim, exp, dir := overlapExport(t)
	published := make(chan struct{})
	var once sync.Once
	overlapped := false
	watch := newBlobWatch(t, func() {
		select {
		case <-published:
			overlapped = true
		case <-time.After(30 * time.Second): // without overlap A waits for B: give up, the test fails below
		}
	})
	r := &Runner{HTTPClient: &http.Client{Transport: watch}, OnEvent: func(e Event) {
		if e.Confirmed && e.Entity == "A" {
			once.Do(func() { close(published) })
		}
	}}
	defer func() { _ = r.Close() }()
	rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"})
	if err != nil || rec.State != runs.StateSucceeded {
		t.Fatalf("Run: %v (%+v)", err, rec)
	}
	if !overlapped {
		t.Error("entity B's blob was written before any batch of A was confirmed: publishing waited for the whole package to be stored")
	}
	if watch.reads != 0 {
		t.Errorf("%d reads of entity blobs: with a store across a network entities are published from the package file", watch.reads)
	}
	puts := watch.written()
	if len(puts) < 3 || !strings.HasSuffix(puts[0], "/entities/A.csv") || !strings.HasSuffix(puts[1], "/entities/B.csv") || !strings.HasSuffix(puts[2], "/package.zip") {
		t.Errorf("blob writes %q: want entity A, entity B, then the package", puts)
	}
	if !rec.Unpacked || rec.PackageKey == "" || rec.PackageSHA256 == "" {
		t.Errorf("record: unpacked %v, package key %q, sha256 %q; want the package stored and recorded", rec.Unpacked, rec.PackageKey, rec.PackageSHA256)
	}
	for _, e := range rec.Entities {
		if e.SHA256 == "" || e.Bytes == 0 || e.State != runs.StateSucceeded {
			t.Errorf("entity %s: sha256 %q, %d bytes, %s; want stored and published", e.Entity, e.SHA256, e.Bytes, e.State)
		}
	}
	wantEachBatchOnce(t, filepath.Join(dir, "batches", publish.FileName(exp.RoutingKey)), map[string]int{"A": 3000, "B": 250})
	if n := sim.Downloads(); n != 1 {
		t.Errorf("package downloaded %d times, want 1", n)
	}
}

// TestRemoteStoreResumeWhileStoring: a run stopped after entity A was
// published while B was still being stored resumes without publishing A
// again: the record kept A's stored file hash with what the broker
// confirmed, and the package stored again has the same file.
func TestRemoteStoreResumeWhileStoring(t *testing.T) {
	sim, exp, dir := overlapExport(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	var once sync.Once
	watch := newBlobWatch(t, func() {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
		cancel() // stopped while B is being stored
	})
	r := &Runner{HTTPClient: &http.Client{Transport: watch}, OnEvent: func(e Event) {
		if e.Confirmed && e.Entity == "A" && e.Rows == 3000 {
			once.Do(func() { close(done) })
		}
	}}
	defer func() { _ = r.Close() }()
	rec, err := r.Run(ctx, exp, RunOptions{Trigger: "manual"})
	if !errors.Is(err, context.Canceled) || rec == nil || rec.State.Final() {
		t.Fatalf("stopped run: %v (%+v), want an unfinished run", err, rec)
	}
	if rec.Unpacked {
		t.Fatal("the stopped run's record says unpacked: the test missed its moment")
	}
	rec, err = r.Resume(context.Background(), exp, rec)
	if err != nil || rec.State != runs.StateSucceeded {
		t.Fatalf("Resume: %v (%+v)", err, rec)
	}
	wantEachBatchOnce(t, filepath.Join(dir, "batches", publish.FileName(exp.RoutingKey)), map[string]int{"A": 3000, "B": 250})
	if n := sim.Downloads(); n != 2 {
		t.Errorf("package downloaded %d times, want 2 (the package is stored after the entities, so the stopped run had none stored)", n)
	}
}
