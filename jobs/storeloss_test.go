package jobs

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
)

// TestRunSurvivesStoreLoss: the store loses everything (its Azure
// container deleted, as by an Azurite restarted empty; or its directory
// removed) while a run is past its export. The run writes its record,
// active marker and lease again, fetches the package of the same
// execution again when the entity files it had stored are gone, and ends
// succeeded with every row delivered once, under one ExportToPackage.
func TestRunSurvivesStoreLoss(t *testing.T) {
	const rowsA, rowsB = 3000, 250
	tests := []struct {
		name  string
		azure bool
		// at says when the store is lost: the first event it returns true for.
		at func(e Event) bool
		// downloads is how many times the package must be downloaded.
		downloads int
	}{
		{"azblob lost as the download begins", true, func(e Event) bool { return e.State == runs.StateDownloading && e.Detail == "" && e.Done == 0 }, 1},
		{"azblob lost after the download", true, func(e Event) bool { return e.State == runs.StateUnpacking && e.Detail != "" }, 1},
		{"azblob lost while publishing", true, func(e Event) bool { return e.Confirmed && e.Entity == "A" && e.Rows >= 500 }, 2},
		{"dir lost after the download", false, func(e Event) bool { return e.State == runs.StateUnpacking && e.Detail != "" }, 1},
		{"dir lost while publishing", false, func(e Event) bool { return e.Confirmed && e.Entity == "A" && e.Rows >= 500 }, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			test := func(t *testing.T) {
				o := dmftest.Options{
					Projects:      map[string][]dmftest.Entity{"G": {csvEntity("A", rowsA), csvEntity("B", rowsB)}},
					ExecutionTime: 50 * time.Millisecond,
				}
				if tt.azure {
					o = quick(o)
				}
				sim := newSim(o)
				defer sim.Close()
				dir := t.TempDir()
				exp := fileExport(sim, dir)
				exp.ParallelEntities = 1 // A, then B: B's file is gone when A is published
				var lose func()
				where := exp.Store.Path
				if tt.azure {
					exp.Store = azuriteStore(t)
					where = exp.Store.Container
					cc, err := container.NewClientFromConnectionString(testenv.AzuriteConnString(t), exp.Store.Container, nil)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _, _ = cc.Delete(context.Background(), nil) })
					lose = func() {
						if _, err := cc.Delete(context.Background(), nil); err != nil {
							t.Errorf("delete container: %v", err)
						}
					}
				} else {
					lose = func() {
						if err := os.RemoveAll(exp.Store.Path); err != nil {
							t.Errorf("remove store directory: %v", err)
						}
					}
				}
				var logs testenv.SyncBuffer
				var once sync.Once
				lost := false
				var mu sync.Mutex
				var seenAfter []string // what the store held at the first state change after the loss
				r := &Runner{Logger: slog.New(slog.NewTextHandler(&logs, nil)), OnEvent: func(e Event) {
					mu.Lock()
					defer mu.Unlock()
					if !lost && tt.at(e) {
						once.Do(lose)
						lost = true
						return
					}
					if lost && seenAfter == nil && e.State == runs.StatePublishing && e.Detail != "" && !e.Confirmed {
						// The run saved its record since: marker and lease too?
						st, err := openStoreReading(context.Background(), exp.Store)
						if err != nil {
							t.Errorf("open store: %v", err)
							return
						}
						objs, _ := st.List(context.Background(), "")
						seenAfter = []string{}
						for _, o := range objs {
							seenAfter = append(seenAfter, o.Key)
						}
					}
				}}
				defer func() { _ = r.Close() }()
				rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"})
				if err != nil {
					t.Fatalf("Run: %v\n%s", err, logs.String())
				}
				if !lost {
					t.Fatal("the store was never lost: the test missed its moment")
				}
				if rec.State != runs.StateSucceeded {
					t.Fatalf("run ended %s (%s), want succeeded", rec.State, rec.Error)
				}
				if n := sim.Exports(); n != 1 {
					t.Errorf("ExportToPackage called %d times, want 1", n)
				}
				if n := sim.Downloads(); n != tt.downloads {
					t.Errorf("package downloaded %d times, want %d", n, tt.downloads)
				}
				wantEachBatchOnce(t, filepath.Join(dir, "batches", publish.FileName(exp.RoutingKey)), map[string]int{"A": rowsA, "B": rowsB})
				// The store keeps the run, final, and no active marker.
				recs, err := Records(context.Background(), exp, 0)
				if err != nil || len(recs) != 1 || recs[0].RunID != rec.RunID || recs[0].State != runs.StateSucceeded {
					t.Errorf("records after the run: %v, %+v; want the run, succeeded", err, recs)
				}
				if un, err := r.Unfinished(context.Background(), exp); err != nil || len(un) != 0 {
					t.Errorf("unfinished runs after the run: %v, %d", err, len(un))
				}
				// Written again while the run went on: record, marker, lease.
				mu.Lock()
				held := strings.Join(seenAfter, "\n")
				mu.Unlock()
				for _, want := range []string{
					runs.Layout{Prefix: exp.Store.Prefix, Export: exp.Name}.Record(rec.RunID),
					runs.Layout{Prefix: exp.Store.Prefix, Export: exp.Name}.Active(rec.RunID),
					leaseKey(runs.Layout{Prefix: exp.Store.Prefix, Export: exp.Name}.Leases(rec.RunID), 1),
				} {
					if !strings.Contains(held, want) {
						t.Errorf("store after the loss, at the next state change, lacks %s; it held:\n%s", want, held)
					}
				}
				out := logs.String()
				if c := strings.Count(out, "was gone and is created again"); c != 1 || !strings.Contains(out, where) {
					t.Errorf("want one WARN that the store (%s) was created again, got %d:\n%s", where, c, out)
				}
				if !strings.Contains(out, "writing the run's record, active marker and lease again") {
					t.Errorf("the run did not say it wrote its record again:\n%s", out)
				}
			}
			if tt.azure { // Azurite is on the real network: real time
				test(t)
			} else {
				bubble(t, test)
			}
		})
	}
}

// TestRunLostForGoodSaysSo: when the store's container is deleted and
// cannot be created again, the run does not promise a resume: it says the
// run is lost and names the execution whose package waits in F&O.
func TestRunLostForGoodSaysSo(t *testing.T) {
	bubble(t, func(t *testing.T) {
		sim := newSim(dmftest.Options{
			Projects:      map[string][]dmftest.Entity{"G": {csvEntity("A", 300)}},
			ExecutionTime: 50 * time.Millisecond,
		})
		defer sim.Close()
		dir := t.TempDir()
		exp := fileExport(sim, dir)
		// A store path that a file takes the place of once the run is going:
		// the directory cannot be created again.
		parent := filepath.Join(dir, "parent")
		exp.Store.Path = filepath.Join(parent, "store")
		var logs testenv.SyncBuffer
		var once sync.Once
		r := &Runner{Logger: slog.New(slog.NewTextHandler(&logs, nil)), OnEvent: func(e Event) {
			if e.State == runs.StateUnpacking && e.Detail != "" {
				once.Do(func() {
					if err := os.RemoveAll(parent); err != nil {
						t.Error(err)
					}
					if err := os.WriteFile(parent, []byte("not a directory"), 0o644); err != nil {
						t.Error(err)
					}
				})
			}
		}}
		rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"})
		if err == nil {
			t.Fatalf("Run succeeded in a store that is gone for good: %+v", rec)
		}
		if !errors.Is(err, store.ErrStoreLost) {
			t.Errorf("Run: %v, want an error wrapping store.ErrStoreLost", err)
		}
		msg := err.Error()
		if !strings.Contains(msg, "run lost") || !strings.Contains(msg, rec.ExecutionID) || strings.Contains(msg, "resumes at the next start") {
			t.Errorf("Run error %q: want it to say the run is lost and name execution %s, without promising a resume", msg, rec.ExecutionID)
		}
		if out := logs.String(); strings.Contains(out, "resumes at the next start") || !strings.Contains(out, "run lost") {
			t.Errorf("log: want the run said lost, no resume promised:\n%s", out)
		}
		if n := sim.Exports(); n != 1 {
			t.Errorf("ExportToPackage called %d times, want 1", n)
		}
	})
}
