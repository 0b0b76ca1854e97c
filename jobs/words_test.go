package jobs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
)

// TestLogsNameTheExport runs an export and replays it with a debug JSON
// log: every line about the run names the export under the key "export",
// and no line carries the key "job" (the word F&O's UI uses for its own
// executions, which earlier versions also used for exports).
func TestLogsNameTheExport(t *testing.T) {
	bubble(t, func(t *testing.T) {
		sim := newSim(dmftest.Options{
			Projects:      map[string][]dmftest.Entity{"G": {csvEntity("A", 120), csvEntity("B", 3)}},
			ExecutionTime: 20 * time.Millisecond,
		})
		defer sim.Close()
		exp := fileExport(sim, t.TempDir())
		var logs bytes.Buffer
		var mu sync.Mutex
		r := &Runner{Logger: slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		ctx := context.Background()
		rec, err := r.Run(ctx, exp, RunOptions{Trigger: "manual"})
		if err != nil || rec.State != runs.StateSucceeded {
			t.Fatalf("Run: want succeeded, got %v (%+v)", err, rec)
		}
		if _, err := r.Replay(ctx, exp, rec, ReplayOptions{RoutingKey: "replay"}); err != nil {
			t.Fatalf("Replay: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		lines, named := 0, 0
		sc := bufio.NewScanner(&logs)
		for sc.Scan() {
			lines++
			var line map[string]any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Fatalf("log line is not JSON: %v: %s", err, sc.Bytes())
			}
			if _, ok := line["job"]; ok {
				t.Errorf("log line carries the key job: %s", sc.Bytes())
			}
			if _, ok := line["run"]; ok {
				if line["export"] != exp.Name {
					t.Errorf("log line of run %v has export %v, want %q: %s", line["run"], line["export"], exp.Name, sc.Bytes())
				}
				named++
			}
		}
		if lines == 0 || named == 0 {
			t.Fatalf("%d log lines, %d naming a run: the test saw nothing to check", lines, named)
		}
	})
}

// TestRunRecordNames: a record an earlier version wrote (only "job", see
// runs.TestRecordNames) lists and shows its export.
func TestRunRecordNames(t *testing.T) {
	t.Run("old record in a store", func(t *testing.T) {
		dir := t.TempDir()
		exp := &Export{Name: "daily", Store: StoreConfig{Type: "dir", Path: dir}}
		st, err := store.NewDirStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		old := `{
  "job": "daily",
  "run_id": "20251124T020000Z-1a2b3c4d",
  "trigger": "schedule",
  "started_at": "2025-11-24T02:00:00Z",
  "finished_at": "2025-11-24T02:03:00Z",
  "state": "succeeded",
  "definition_group": "G",
  "legal_entity": "USMF",
  "unpacked": true
}`
		if _, err := st.Put(context.Background(), runs.Layout{Prefix: "", Export: "daily"}.Record("20251124T020000Z-1a2b3c4d"), strings.NewReader(old), nil); err != nil {
			t.Fatal(err)
		}
		recs, err := Records(context.Background(), exp, 0)
		if err != nil || len(recs) != 1 {
			t.Fatalf("Records: %v, %d records; want the old one", err, len(recs))
		}
		if got := recs[0]; got.Job != "daily" || got.State != runs.StateSucceeded || got.DefinitionGroup != "G" {
			t.Errorf("old record read as %+v", got)
		}
	})
}
