package jobs

import (
	"bufio"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
)

// csvExport starts a simulator whose group G holds one CSV entity A of
// rows rows, each export taking 20ms, and returns it with a fileExport of
// G; the simulator closes when the test ends.
func csvExport(t *testing.T, rows int) (*simServer, *Export) {
	t.Helper()
	sim := newSim(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("A", rows)}}, ExecutionTime: 20 * time.Millisecond})
	t.Cleanup(sim.Close)
	return sim, fileExport(sim, t.TempDir())
}

// fileExport is an export of group G from sim into a local store and NDJSON
// files under dir.
func fileExport(sim *simServer, dir string) *Export {
	u, _ := url.Parse(sim.URL)
	return &Export{
		Name: "files", Schedule: "@daily", Enabled: true, DefinitionGroup: "G", PackageName: "G", LegalEntity: "USMF",
		RoutingKey: "fo.files", BatchSize: 100,
		FO:     FOConfig{URL: u, Auth: AuthConfig{Options: azauth.Options{Method: "token", Token: Secret(dmftest.DefaultToken)}}},
		Store:  StoreConfig{Type: "dir", Path: filepath.Join(dir, "store")},
		Broker: BrokerConfig{Type: "file", Path: filepath.Join(dir, "batches")},
		Poll:   PollConfig{Interval: 20 * time.Millisecond, MaxInterval: 50 * time.Millisecond, Deadline: time.Minute, PackageURLTimeout: 10 * time.Second, RegisterTimeout: 10 * time.Second},
	}
}

// wantEachBatchOnce checks that the NDJSON batch file at path holds, for
// each entity of want, that many rows, and every message ID once.
func wantEachBatchOnce(t *testing.T, path string, want map[string]int) {
	t.Helper()
	rows, ids := ndjsonRows(t, path)
	for entity, n := range want {
		if rows[entity] != n {
			t.Errorf("rows delivered %v, want %v, each once", rows, want)
			break
		}
	}
	for id, n := range ids {
		if n > 1 {
			t.Errorf("batch %s delivered %d times", id, n)
		}
	}
}

// ndjsonRows counts rows per entity and message IDs in an NDJSON batch file.
func ndjsonRows(t *testing.T, path string) (map[string]int, map[string]int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	rows, ids := map[string]int{}, map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var b batchBody
		if err := json.Unmarshal(sc.Bytes(), &b); err != nil {
			t.Fatal(err)
		}
		rows[b.Data.Entity] += len(b.Data.Rows)
		ids[b.ID]++
	}
	return rows, ids
}

func TestReplay(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	var exp *Export
	var rec *runs.Record
	bubble(t, func(t *testing.T) { // the run to replay
		sim := newSim(dmftest.Options{
			Projects:      map[string][]dmftest.Entity{"G": {csvEntity("A", 250), csvEntity("B", 40)}},
			ExecutionTime: 50 * time.Millisecond,
		})
		defer sim.Close()
		exp = fileExport(sim, dir)
		var err error
		if rec, err = (&Runner{}).Run(ctx, exp, RunOptions{Trigger: "manual"}); err != nil {
			t.Fatal(err)
		}
	})
	if t.Failed() {
		return
	}
	cfg := &Config{Exports: []Export{*exp}}
	tests := []struct {
		name     string
		run      string
		opts     ReplayOptions
		wantFile string
		want     map[string]int
	}{
		{"whole run", rec.RunID, ReplayOptions{RoutingKey: "replay.all"}, "replay.all", map[string]int{"A": 250, "B": 40}},
		{"one entity by EXPORT/RUN", "files/" + rec.RunID, ReplayOptions{Entities: []string{"B"}, RoutingKey: "replay.b"}, "replay.b", map[string]int{"B": 40}},
	}
	_, firstIDs := ndjsonRows(t, filepath.Join(dir, "batches", publish.FileName("fo.files")))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, r, err := FindRun(ctx, cfg, tt.run)
			if err != nil {
				t.Fatal(err)
			}
			ents, err := (&Runner{}).Replay(ctx, e, r, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(ents) != len(tt.want) {
				t.Errorf("replayed %d entities, want %d", len(ents), len(tt.want))
			}
			rows, ids := ndjsonRows(t, filepath.Join(dir, "batches", publish.FileName(tt.wantFile)))
			for ent, n := range tt.want {
				if rows[ent] != n {
					t.Errorf("entity %s: replayed %d rows, want %d", ent, rows[ent], n)
				}
			}
			if len(rows) != len(tt.want) {
				t.Errorf("replayed entities %v, want %v", rows, tt.want)
			}
			for id := range ids {
				if firstIDs[id] != 1 {
					t.Errorf("replayed message ID %q was not an ID of the first publication", id)
				}
			}
		})
	}
	if _, _, err := FindRun(ctx, cfg, "no-such-run"); err == nil {
		t.Error("FindRun found a run that does not exist")
	}
	if _, err := (&Runner{}).Replay(ctx, exp, rec, ReplayOptions{Entities: []string{"Nope"}}); err == nil {
		t.Error("Replay of an unknown entity did not fail")
	}
}
