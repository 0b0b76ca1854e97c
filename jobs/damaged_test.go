package jobs

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
)

// damagedShapes are run.json contents no run can be resumed from, as an
// operator's editor, a full disk or a stray copy leave them.
var damagedShapes = []struct {
	name  string
	bytes func(orig []byte) []byte
	cause string // in the damaged record's cause
}{
	{name: "truncated", bytes: func(b []byte) []byte { return b[:len(b)/2] }, cause: "not a JSON run record"},
	{name: "empty", bytes: func([]byte) []byte { return nil }, cause: "empty"},
	{name: "random bytes", bytes: func([]byte) []byte { return []byte("\x8f\x00\xffPK\x03\x04 garbage \x1b[2J") }, cause: "not a JSON run record"},
	{name: "{}", bytes: func([]byte) []byte { return []byte("{}") }, cause: "no run ID"},
	{name: "wrong types", bytes: func([]byte) []byte { return []byte(`{"run_id": 5, "state": ["publishing"]}`) }, cause: "not a JSON run record"},
	{name: "JSON array", bytes: func([]byte) []byte { return []byte(`[1, 2]`) }, cause: "not a JSON run record"},
	{name: "no execution ID past pending", bytes: func(b []byte) []byte {
		return bytes.Replace(b, []byte(`"execution_id"`), []byte(`"was_execution_id"`), 1)
	}, cause: "state publishing without an execution ID"},
}

// damage overwrites the record of run runID of exp with what shape makes
// of it, as a hand edit does (the store's metadata of it stays).
func damage(t *testing.T, exp *Export, runID string, shape func([]byte) []byte) string {
	t.Helper()
	file := filepath.Join(exp.Store.Path, filepath.FromSlash(runs.Layout{Prefix: exp.Store.Prefix, Export: exp.Name}.Record(runID)))
	orig, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, shape(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	return runs.Layout{Prefix: exp.Store.Prefix, Export: exp.Name}.Record(runID)
}

// TestDamagedRecordOfUnfinishedRun damages the record of a run stopped
// mid-publish in every shape: status lists it without failing, the scan
// for unfinished runs quarantines it and rebuilds the run from its stored
// package, and the resumed run delivers every row without a second export.
func TestDamagedRecordOfUnfinishedRun(t *testing.T) {
	for _, tt := range damagedShapes {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				sim, exp := csvExport(t, 1000)
				ctx := context.Background()
				firstSink := &scriptedSink{storeFirst: 3, cancelAt: 6}
				first := interruptedRun(t, exp, firstSink)
				key := damage(t, exp, first.RunID, tt.bytes)

				h, err := RunHistory(ctx, exp, 0)
				if err != nil {
					t.Fatalf("RunHistory with a damaged record: %v", err)
				}
				if len(h.Records) != 0 || len(h.Damaged) != 1 || h.Damaged[0].Key != key || h.Damaged[0].Quarantined ||
					!strings.Contains(h.Damaged[0].Cause, tt.cause) || h.Damaged[0].State != runs.StatePublishing {
					t.Fatalf("RunHistory: want no record and damaged %s (cause %q, state publishing from metadata), got %d records, damaged %+v",
						key, tt.cause, len(h.Records), h.Damaged)
				}

				var logs testenv.SyncBuffer
				sink := &scriptedSink{storeFirst: -1}
				r := &Runner{NewSink: sinkFor(sink), Logger: slog.New(slog.NewTextHandler(&logs, nil))}
				recs, err := r.Unfinished(ctx, exp)
				if err != nil || len(recs) != 1 {
					t.Fatalf("Unfinished: want the rebuilt run, got %d runs, %v\n%s", len(recs), err, logs.String())
				}
				rb := recs[0]
				if rb.RunID != first.RunID || rb.ExecutionID != first.ExecutionID || rb.State != runs.StateDownloading || rb.PackageSHA256 != first.PackageSHA256 {
					t.Errorf("rebuilt record: want run %s execution %s in state downloading with the package's checksum, got run %q execution %q state %s sha %q",
						first.RunID, first.ExecutionID, rb.RunID, rb.ExecutionID, rb.State, rb.PackageSHA256)
				}
				if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "key="+key) || !strings.Contains(logs.String(), "quarantined_as=") {
					t.Errorf("log: want a WARN naming %s and its quarantine key, got:\n%s", key, logs.String())
				}
				st := mustDirStore(t, exp.Store.Path)
				var records, quarantined []store.Object
				objs, _ := st.List(ctx, ledgerOf(st, exp).Run(rb.RunID)+"/")
				for _, o := range objs {
					switch name := path.Base(o.Key); {
					case name == "run.json":
						records = append(records, o)
					case strings.HasPrefix(name, "run.json.damaged-"):
						quarantined = append(quarantined, o)
					}
				}
				if len(records) != 1 || len(quarantined) != 1 || quarantined[0].Meta["cause"] == "" {
					t.Fatalf("store: want the rebuilt record and one quarantined copy with its cause, got %d records, %+v", len(records), quarantined)
				}

				got, err := r.Resume(ctx, exp, rb)
				if err != nil || got.State != runs.StateSucceeded || len(got.Warnings) != 1 {
					t.Fatalf("Resume of the rebuilt run: want succeeded with 1 warning, got %v (%+v)", err, got)
				}
				if e := got.Entities[0]; e.Rows != 1000 || e.Batches != 10 {
					t.Errorf("resumed entity: want 1000 rows in 10 batches, got %d rows in %d batches", e.Rows, e.Batches)
				}
				if n := sim.Exports(); n != 1 {
					t.Errorf("F&O exports: want 1 (the rebuilt run uses the stored package), got %d", n)
				}
				// The batches the first attempt confirmed went again under the
				// same IDs, with the same rows.
				after := sink.rowsByMessage(t, false)
				if len(after) != 10 {
					t.Errorf("resumed run: want 10 distinct message IDs, got %d", len(after))
				}
				for id, rows := range firstSink.rowsByMessage(t, true) {
					if len(after[id]) != 1 || strings.Join(after[id][0], ",") != strings.Join(rows[0], ",") {
						t.Errorf("message %s: confirmed before the damage, want it published again with the same rows", id)
					}
				}
				h, err = RunHistory(ctx, exp, 0)
				if err != nil || len(h.Records) != 1 || len(h.Damaged) != 0 {
					t.Errorf("RunHistory after the resume: want the run alone (its warning tells of the quarantine), got %v %d records %+v", err, len(h.Records), h.Damaged)
				}
				if again, err := r.Unfinished(ctx, exp); err != nil || len(again) != 0 {
					t.Errorf("Unfinished after the resume: want none, got %d (%v)", len(again), err)
				}
			})
		})
	}
}

// TestDamagedRecordWithoutPackage damages the record of a run whose
// package is not stored. Where the record's metadata survives (a directory
// store's sidecar) it names the execution: the run is rebuilt, polls that
// execution again and delivers every row with one export. Without it
// nothing names the execution: the run is given up — quarantined, never
// resumed — and a new run exports again.
func TestDamagedRecordWithoutPackage(t *testing.T) {
	tests := []struct {
		name     string
		shape    func([]byte) []byte
		loseMeta bool
	}{
		{name: "{} with metadata", shape: damagedShapes[3].bytes},
		{name: "truncated with metadata", shape: damagedShapes[0].bytes},
		{name: "{} without metadata", shape: damagedShapes[3].bytes, loseMeta: true},
		{name: "empty without metadata", shape: damagedShapes[1].bytes, loseMeta: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				sim, exp := csvExport(t, 300)
				ctx := context.Background()
				first := interruptedRun(t, exp, &scriptedSink{storeFirst: 1, cancelAt: 2})
				st := mustDirStore(t, exp.Store.Path)
				if err := st.Delete(ctx, first.PackageKey); err != nil {
					t.Fatal(err)
				}
				key := damage(t, exp, first.RunID, tt.shape)
				if tt.loseMeta {
					if err := os.Remove(filepath.Join(exp.Store.Path, filepath.FromSlash(key)+".meta.json")); err != nil {
						t.Fatal(err)
					}
				}

				var logs testenv.SyncBuffer
				r := &Runner{NewSink: sinkFor(&scriptedSink{storeFirst: -1}, &scriptedSink{storeFirst: -1}), Logger: slog.New(slog.NewTextHandler(&logs, nil))}
				recs, err := r.Unfinished(ctx, exp)
				if err != nil {
					t.Fatal(err)
				}
				if !tt.loseMeta {
					if len(recs) != 1 || recs[0].ExecutionID != first.ExecutionID || recs[0].State != runs.StateExporting {
						t.Fatalf("Unfinished: want the run rebuilt in state exporting with execution %s, got %+v\n%s", first.ExecutionID, recs, logs.String())
					}
					got, err := r.Resume(ctx, exp, recs[0])
					if err != nil || got.State != runs.StateSucceeded || got.Entities[0].Rows != 300 {
						t.Fatalf("Resume of the rebuilt run: want succeeded with 300 rows, got %v (%+v)", err, got)
					}
					if n := sim.Exports(); n != 1 {
						t.Errorf("F&O exports: want 1 (the rebuilt run polls the same execution), got %d", n)
					}
					return
				}
				if len(recs) != 0 {
					t.Fatalf("Unfinished: want no run to resume, got %d", len(recs))
				}
				if !strings.Contains(logs.String(), "its run is lost and never resumed") || !strings.Contains(logs.String(), "key="+key) {
					t.Errorf("log: want a WARN naming %s and the lost run, got:\n%s", key, logs.String())
				}
				if _, err := st.Stat(ctx, runs.Layout{Prefix: exp.Store.Prefix, Export: exp.Name}.Active(first.RunID)); !errors.Is(err, store.ErrNotExist) {
					t.Errorf("active marker of the given-up run: want deleted, got %v", err)
				}
				h, err := RunHistory(ctx, exp, 0)
				if err != nil || len(h.Damaged) != 1 || !h.Damaged[0].Quarantined || !strings.Contains(h.Damaged[0].Lost, "next run exports again") {
					t.Fatalf("RunHistory: want one quarantined record saying what was lost, got %v %+v", err, h)
				}
				rec, err := r.Run(ctx, exp, RunOptions{Trigger: "manual"})
				if err != nil || rec.State != runs.StateSucceeded {
					t.Fatalf("a new run after the damaged one: want succeeded, got %v", err)
				}
			})
		})
	}
}

// TestDamagedFinalRecord damages the record of a finished run: status
// lists the other runs and the damaged one, nothing quarantines or
// resumes it, and runs and retention go on.
func TestDamagedFinalRecord(t *testing.T) {
	bubble(t, func(t *testing.T) {
		_, exp := csvExport(t, 50)
		exp.Retention.KeepRuns = 5
		ctx := context.Background()
		r := &Runner{NewSink: sinkFor(&scriptedSink{storeFirst: -1}, &scriptedSink{storeFirst: -1}, &scriptedSink{storeFirst: -1})}
		old, err := r.Run(ctx, exp, RunOptions{Trigger: "manual"})
		if err != nil {
			t.Fatal(err)
		}
		key := damage(t, exp, old.RunID, func([]byte) []byte { return []byte("{") })
		for range 2 {
			if _, err := r.Run(ctx, exp, RunOptions{Trigger: "manual"}); err != nil {
				t.Fatalf("a run after a damaged final record: %v", err)
			}
		}
		h, err := RunHistory(ctx, exp, 0)
		if err != nil || len(h.Records) != 2 || len(h.Damaged) != 1 || h.Damaged[0].Key != key || h.Damaged[0].State != runs.StateSucceeded {
			t.Fatalf("RunHistory: want 2 records and the damaged one (state succeeded from metadata), got %v %d records %+v", err, len(h.Records), h.Damaged)
		}
		if recs, err := r.Unfinished(ctx, exp); err != nil || len(recs) != 0 {
			t.Errorf("Unfinished: want none, got %d (%v)", len(recs), err)
		}
		if _, err := mustDirStore(t, exp.Store.Path).Stat(ctx, key); err != nil {
			t.Errorf("the damaged final record: want it left in place, got %v", err)
		}
	})
}

// TestDamagedRecordOfLiveRun leaves a damaged record whose run a live
// process owns to that process.
func TestDamagedRecordOfLiveRun(t *testing.T) {
	bubble(t, func(t *testing.T) {
		_, exp := csvExport(t, 300)
		ctx := context.Background()
		first := interruptedRun(t, exp, &scriptedSink{storeFirst: 1, cancelAt: 2})
		key := damage(t, exp, first.RunID, func([]byte) []byte { return []byte("{}") })
		st := mustDirStore(t, exp.Store.Path)
		lease, err := ledgerOf(st, exp).TakeLease(ctx, first.RunID, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer lease.Release(ctx)
		recs, err := (&Runner{}).Unfinished(ctx, exp)
		if err != nil || len(recs) != 0 {
			t.Fatalf("Unfinished: want none (the owner is live), got %d, %v", len(recs), err)
		}
		if _, err := st.Stat(ctx, key); err != nil {
			t.Errorf("damaged record of a live run: want it left in place, got %v", err)
		}
	})
}

// TestAbandon ends an unfinished run on purpose: its record says who, when
// and why, it is never resumed, and a final or live-owned run is refused.
func TestAbandon(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, exp *Export, rec *runs.Record, st store.Store) func()
		wantErr error // nil: abandoned
	}{
		{name: "interrupted run", prepare: func(*testing.T, *Export, *runs.Record, store.Store) func() { return func() {} }},
		{name: "damaged record", prepare: func(t *testing.T, exp *Export, rec *runs.Record, _ store.Store) func() {
			damage(t, exp, rec.RunID, func([]byte) []byte { return []byte("\x00\x01") })
			return func() {}
		}},
		{name: "owned by a live process", wantErr: runs.ErrLeaseHeld, prepare: func(t *testing.T, exp *Export, rec *runs.Record, st store.Store) func() {
			l, err := ledgerOf(st, exp).TakeLease(context.Background(), rec.RunID, 1)
			if err != nil {
				t.Fatal(err)
			}
			return func() { l.Release(context.Background()) }
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				_, exp := csvExport(t, 300)
				ctx := context.Background()
				rec := interruptedRun(t, exp, &scriptedSink{storeFirst: 1, cancelAt: 2})
				st := mustDirStore(t, exp.Store.Path)
				defer tt.prepare(t, exp, rec, st)()
				r := &Runner{}
				got, err := r.Abandon(ctx, exp, rec.RunID, "ops@host", "F&O restored from backup")
				if tt.wantErr != nil {
					if !errors.Is(err, tt.wantErr) {
						t.Fatalf("Abandon: want %v, got %v", tt.wantErr, err)
					}
					if recs, _ := r.Unfinished(ctx, exp); len(recs) != 1 {
						t.Errorf("a refused abandon: want the run still unfinished, got %d unfinished", len(recs))
					}
					return
				}
				if err != nil || got.State != runs.StateAbandoned || got.Abandoned == nil || got.Abandoned.By != "ops@host" ||
					!strings.Contains(got.Error, "abandoned by ops@host") || !strings.Contains(got.Error, "F&O restored from backup") {
					t.Fatalf("Abandon: want an abandoned record saying who and why, got %v (%+v)", err, got)
				}
				stored, err := ledgerOf(st, exp).Find(ctx, rec.RunID)
				if err != nil || stored.State != runs.StateAbandoned || stored.FinishedAt.IsZero() {
					t.Errorf("stored record: want abandoned with an end time, got %v (%+v)", err, stored)
				}
				if _, err := st.Stat(ctx, runs.Layout{Prefix: exp.Store.Prefix, Export: exp.Name}.Active(rec.RunID)); !errors.Is(err, store.ErrNotExist) {
					t.Errorf("active marker: want deleted, got %v", err)
				}
				if recs, err := r.Unfinished(ctx, exp); err != nil || len(recs) != 0 {
					t.Errorf("Unfinished after abandon: want none, got %d (%v)", len(recs), err)
				}
				if _, err := r.Abandon(ctx, exp, rec.RunID, "ops@host", ""); !errors.Is(err, runs.ErrRunFinal) {
					t.Errorf("Abandon of an abandoned run: want runs.ErrRunFinal, got %v", err)
				}
				if objs, _ := st.List(ctx, path.Join(exp.Store.Prefix, "_leases")+"/"); len(objs) != 0 {
					t.Errorf("leases left after abandon: %d", len(objs))
				}
			})
		})
	}
}
