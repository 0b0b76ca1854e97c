package jobs

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/runs"
)

// TestHostileEntityNames exports a package whose entities are named like
// the store's own files: a "run" entity in run.json, a DirStore temporary
// file, a metadata sidecar. Every entity must be stored and published, and
// the export's records must still read as its one run.
func TestHostileEntityNames(t *testing.T) {
	bubble(t, func(t *testing.T) {
		ent := func(name, file string) dmftest.Entity {
			e := csvEntity(name, 5)
			e.File = file
			return e
		}
		sim := newSim(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {
			ent("run", "run.json"),
			ent(".dmfstore-tmp-x", "tmp.csv"),
			ent("x.csv.meta", "x.json"),
			ent("package", "package.zip.csv"),
		}}, ExecutionTime: 20 * time.Millisecond})
		defer sim.Close()
		exp := fileExport(sim, t.TempDir())
		rec, err := (&Runner{}).Run(context.Background(), exp, RunOptions{Trigger: "manual"})
		if err != nil || rec.State != runs.StateSucceeded {
			t.Fatalf("Run with hostile entity names: want succeeded, got %v (%+v)", err, rec)
		}
		for _, e := range rec.Entities {
			if e.State != runs.StateSucceeded || e.Rows != 5 {
				t.Errorf("entity %q: want succeeded with 5 rows, got %s with %d (%s)", e.Entity, e.State, e.Rows, e.Error)
			}
		}
		recs, err := Records(context.Background(), exp, 0)
		if err != nil || len(recs) != 1 || recs[0].RunID != rec.RunID {
			var ids []string
			for _, r := range recs {
				ids = append(ids, r.RunID)
			}
			t.Fatalf("Records of the export: want only run %s, got %v (%v)", rec.RunID, ids, err)
		}
	})
}

// TestExecutionIDWithLineBreaks has F&O answer ExportToPackage with an
// execution ID holding CR/LF: the run must refuse it rather than carry it
// into records, logs and terminals.
func TestExecutionIDWithLineBreaks(t *testing.T) {
	bubble(t, func(t *testing.T) {
		f := newFOFake(t, map[string]func(int) (int, string){
			"ExportToPackage": fixed(200, foValue("G-1\r\nINFO forged line")),
		})
		exp := foExport(f, t.TempDir())
		rec, err := (&Runner{}).Run(context.Background(), exp, RunOptions{Trigger: "manual"})
		if err == nil || !strings.Contains(err.Error(), `"G-1\r\nINFO forged line"`) {
			t.Fatalf("Run with an execution ID holding CR/LF: want an error quoting it, got %v", err)
		}
		if rec != nil && strings.ContainsAny(rec.ExecutionID, "\r\n") {
			t.Errorf("record keeps execution ID %q", rec.ExecutionID)
		}
	})
}
