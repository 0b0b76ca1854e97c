package statuspage

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
)

// stateColumns tells a run by its state alone.
func stateColumns(r *runs.Record, _ bool) Columns { return Columns{State: string(r.State)} }

// TestSourceDeadLetters checks that the page shows each sink's dead
// letters, or why they are unknown, and asks the broker at most every
// deadTTL.
func TestSourceDeadLetters(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC))
	asked := 0
	answers := []error{nil, errors.New("connect to amqp://broker:5672/: dial tcp: connection refused")}
	cfg := &jobs.Config{Sinks: []jobs.SinkConfig{{Name: "warehouse", Queue: "fo.rows"}}}
	s := &Source{
		Config: func() *jobs.Config { return cfg },
		Live:   NewLive(nil),
		Clock:  clock,
		DeadLetters: func(context.Context, *jobs.SinkConfig) (int, error) {
			err := answers[min(asked, len(answers)-1)]
			asked++
			return 1234, err
		},
	}
	for _, step := range []struct {
		advance time.Duration
		want    Sink
		asked   int
	}{
		{0, Sink{Name: "warehouse", Queue: "fo.rows.dead", DeadLetters: 1234}, 1},
		{deadTTL - time.Second, Sink{Name: "warehouse", Queue: "fo.rows.dead", DeadLetters: 1234}, 1},
		{time.Second, Sink{Name: "warehouse", Queue: "fo.rows.dead", Problem: "connect to amqp://broker:5672/: dial tcp: connection refused"}, 2},
	} {
		clock.Advance(step.advance)
		v := s.View(t.Context())
		if len(v.Sinks) != 1 || v.Sinks[0] != step.want || asked != step.asked {
			t.Errorf("after %s: broker asked %d times, want %d; sinks %+v, want [%+v]", step.advance, asked, step.asked, v.Sinks, step.want)
		}
	}
}

// TestSourceReadsFinishedRecordsOnce checks that a refresh reads from the
// store only the records that can change: a finished record's bytes are
// damaged after the first read, and the page still shows it as it was,
// while an unfinished record is read again each time. A reload of the
// configuration, and retention deleting a run, are seen.
func TestSourceReadsFinishedRecordsOnce(t *testing.T) {
	dir := t.TempDir()
	st, err := store.NewDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 12, 7, 15, 0, 0, 0, time.UTC)
	done := runs.Record{Job: "demo", RunID: "20261207T150000Z-0000d0e1", State: runs.StateSucceeded, StartedAt: start,
		FinishedAt: start.Add(time.Minute), ExecutionID: "E1", Entities: []runs.EntityRecord{{Entity: "A", State: runs.StateSucceeded, Rows: 10}}}
	going := runs.Record{Job: "demo", RunID: "20261207T160000Z-0000d0e2", State: runs.StatePublishing, StartedAt: start.Add(time.Hour),
		ExecutionID: "E2", Entities: []runs.EntityRecord{{Entity: "A", State: runs.StatePublishing, Rows: 5}}}
	put(t, st, done)
	put(t, st, going)

	cfg := &jobs.Config{Exports: []jobs.Export{{Name: "demo", Schedule: "@daily", Enabled: true, Store: jobs.StoreConfig{Type: "dir", Path: dir}}}}
	s := &Source{
		Config:   func() *jobs.Config { return cfg },
		Live:     NewLive(nil),
		Clock:    clockwork.NewFakeClockAt(start.Add(2 * time.Hour)),
		Describe: stateColumns,
		Damaged:  func(d runs.DamagedRecord) string { return d.Cause },
	}
	// rows gives the rows the page shows per run, and its problem.
	rows := func() (map[string]int64, string) {
		ev := s.View(t.Context()).Exports[0]
		got := map[string]int64{}
		for _, r := range ev.Runs {
			got[r.ID] = r.Rows
		}
		return got, ev.Problem
	}
	check := func(step string, want map[string]int64, wantProblem bool) {
		t.Helper()
		got, problem := rows()
		if len(got) != len(want) || (problem != "") != wantProblem {
			t.Fatalf("%s: runs %v, problem %q; want runs %v, a problem: %t", step, got, problem, want, wantProblem)
		}
		for id, n := range want {
			if got[id] != n {
				t.Fatalf("%s: runs %v, problem %q; want runs %v", step, got, problem, want)
			}
		}
	}

	check("first read", map[string]int64{done.RunID: 10, going.RunID: 5}, false)
	key := func(r runs.Record) string { return r.Job + "/" + r.RunID + "/run.json" }
	if _, err := st.Put(t.Context(), key(done), bytes.NewReader([]byte("{")), map[string]string{"state": string(done.State)}); err != nil {
		t.Fatal(err)
	}
	going.Entities[0].Rows = 7
	put(t, st, going)
	check("refresh", map[string]int64{done.RunID: 10, going.RunID: 7}, false)

	reloaded := *cfg
	cfg = &reloaded
	check("after a reload", map[string]int64{going.RunID: 7}, true)

	if err := os.RemoveAll(filepath.Join(dir, "demo", done.RunID)); err != nil {
		t.Fatal(err)
	}
	check("after retention", map[string]int64{going.RunID: 7}, false)
}

// put stores rec as the ledger does.
func put(t *testing.T, st store.Store, rec runs.Record) {
	t.Helper()
	if err := runs.NewLedger(st, "", rec.Job, runs.Options{}).Save(t.Context(), &rec); err != nil {
		t.Fatal(err)
	}
}
