package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
)

// scriptedSink is a broker double for faults: it keeps a copy of every
// message, stores (calls OnStored for) only the first storeFirst of them
// (all when storeFirst < 0), and can stop the run at a given publish, as a
// SIGTERM mid-publish would.
type scriptedSink struct {
	storeFirst int
	cancelAt   int // cancel() once this many messages were published; 0: never
	cancel     func()
	flushErr   error

	mu     sync.Mutex
	msgs   []publish.Message
	stored []bool
}

func (s *scriptedSink) Publish(ctx context.Context, m publish.Message) error {
	s.mu.Lock()
	m.Body = slices.Clone(m.Body)
	n := len(s.msgs)
	store := s.storeFirst < 0 || n < s.storeFirst
	s.msgs = append(s.msgs, m)
	s.stored = append(s.stored, store)
	s.mu.Unlock()
	if store && m.OnStored != nil {
		m.OnStored()
	}
	if s.cancelAt > 0 && n+1 == s.cancelAt {
		s.cancel()
	}
	return nil
}

func (s *scriptedSink) Flush(ctx context.Context) error {
	if s.flushErr != nil {
		return s.flushErr
	}
	return ctx.Err()
}

func (s *scriptedSink) Close() error { return nil }

// rowsByMessage decodes the row IDs of every message, keyed by message ID;
// only stored messages when storedOnly.
func (s *scriptedSink) rowsByMessage(t *testing.T, storedOnly bool) map[string][][]string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][][]string{}
	for i, m := range s.msgs {
		if storedOnly && !s.stored[i] {
			continue
		}
		var b batchBody
		if err := json.Unmarshal(m.Body, &b); err != nil {
			t.Fatalf("message %s: %v", m.MessageID, err)
		}
		var ids []string
		for _, r := range b.Data.Rows {
			ids = append(ids, r["ID"])
		}
		out[m.MessageID] = append(out[m.MessageID], ids)
	}
	return out
}

// sinkFor makes a Runner.NewSink that hands out the given sinks in turn.
func sinkFor(sinks ...*scriptedSink) func(context.Context, *Export) (publish.Sink, error) {
	var mu sync.Mutex
	return func(context.Context, *Export) (publish.Sink, error) {
		mu.Lock()
		defer mu.Unlock()
		s := sinks[0]
		sinks = sinks[1:]
		return s, nil
	}
}

// TestFailedEntityRecordsConfirmedRowsOnly fails an entity after the broker
// stored 4 of its 10 batches: the record must show those 400 rows, not the
// 1000 handed to the sink.
func TestFailedEntityRecordsConfirmedRowsOnly(t *testing.T) {
	bubble(t, func(t *testing.T) {
		_, exp := csvExport(t, 1000)
		sink := &scriptedSink{storeFirst: 4, flushErr: errors.New("broker gone")}
		rec, err := (&Runner{NewSink: sinkFor(sink), Metrics: NewMetrics()}).Run(context.Background(), exp, RunOptions{Trigger: "manual"})
		if err == nil || rec == nil || len(rec.Entities) != 1 {
			t.Fatalf("Run with a broker that stops confirming: want a failed run with one entity, got %v (%+v)", err, rec)
		}
		e := rec.Entities[0]
		if e.State != runs.StateFailed || e.Rows != 400 || e.Batches != 4 || e.LastBatch != 3 {
			t.Errorf("entity record: want failed with 400 rows, 4 batches, last batch 3 (what the broker stored), got %s with %d rows, %d batches, last batch %d",
				e.State, e.Rows, e.Batches, e.LastBatch)
		}
	})
}

// interruptedRun runs exp until the sink stops it mid-publish (SIGTERM)
// and returns the unfinished record.
func interruptedRun(t *testing.T, exp *Export, sink *scriptedSink) *runs.Record {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sink.cancel = cancel
	r := &Runner{NewSink: sinkFor(sink), Metrics: NewMetrics()}
	if _, err := r.Run(ctx, exp, RunOptions{Trigger: "manual"}); err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("Run stopped mid-publish: want an interrupted run, got %v", err)
	}
	recs, err := r.Unfinished(context.Background(), exp)
	if err != nil || len(recs) != 1 {
		t.Fatalf("Unfinished after a stop: want 1 run, got %d (%v)", len(recs), err)
	}
	return recs[0]
}

// resume resumes rec with a sink that stores everything, turning a panic
// (a metric update from the record) into a test failure.
func resume(t *testing.T, exp *Export, rec *runs.Record, sink *scriptedSink, metrics *Metrics) (got *runs.Record, err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("Resume panicked (a crash loop at every start): %v", p)
		}
	}()
	return (&Runner{NewSink: sinkFor(sink), Metrics: metrics}).Resume(context.Background(), exp, rec)
}

// TestResumeAfterStopMidPublish stops a run while batches are handed to
// the broker but unconfirmed, then resumes it with metrics on: the record
// holds confirmed counts only, and no metric update may panic, even on a
// record an earlier version wrote with unconfirmed counts.
func TestResumeAfterStopMidPublish(t *testing.T) {
	tests := []struct {
		name     string
		inflated bool // the record counts unconfirmed batches (earlier versions)
	}{
		{name: "record of this version"},
		{name: "record with unconfirmed counts", inflated: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				_, exp := csvExport(t, 1000)
				rec := interruptedRun(t, exp, &scriptedSink{storeFirst: 3, cancelAt: 6})
				e := rec.Entities[0]
				if e.Rows != 300 || e.Batches != 3 || e.LastBatch != 2 {
					t.Errorf("interrupted entity record: want 300 rows, 3 batches, last batch 2 (confirmed), got %d rows, %d batches, last batch %d", e.Rows, e.Batches, e.LastBatch)
				}
				if tt.inflated {
					st, _ := openStore(context.Background(), exp.Store, nil)
					// Those versions had no max_batch_bytes either.
					rec.Entities[0].Rows, rec.Entities[0].Batches = 1000, 10
					rec.Batching.MaxBatchBytes = 0
					if err := saveRecord(context.Background(), st, exp.Store.Prefix, rec); err != nil {
						t.Fatal(err)
					}
				}
				metrics := NewMetrics()
				second := &scriptedSink{storeFirst: -1}
				got, err := resume(t, exp, rec, second, metrics)
				if err != nil || got.State != runs.StateSucceeded {
					t.Fatalf("Resume: want succeeded, got %v (%+v)", err, got)
				}
				if e := got.Entities[0]; e.Rows != 1000 || e.Batches != 10 {
					t.Errorf("resumed entity record: want 1000 rows in 10 batches, got %d rows in %d batches", e.Rows, e.Batches)
				}
				rr := httptest.NewRecorder()
				metrics.Handler().ServeHTTP(rr, httptest.NewRequestWithContext(context.Background(), "GET", "/metrics", nil))
				if want := `dmfexport_rows_published_total{entity="A",export="files"} 700`; !strings.Contains(rr.Body.String(), want) {
					t.Errorf("/metrics: want %s (rows confirmed by the resumed run)", want)
				}
			})
		})
	}
}

// TestResumeKeepsBatchSettings changes batch_size or max_batch_bytes
// between a stop and the resume: the resumed run must publish with the
// settings it started with, so no row is lost and a message ID always
// names the same rows. A record written before max_batch_bytes existed
// resumes with batches closed by rows only.
func TestResumeKeepsBatchSettings(t *testing.T) {
	tests := []struct {
		name                 string
		firstBytes, newBytes int // max_batch_bytes of the first run and the resume
		newSize              int
		oldRecord            bool // the record has no max_batch_bytes
		wantBytes            int  // in the resumed record
	}{
		{name: "batch size grows", newSize: 150, wantBytes: publish.DefaultMaxBatchBytes},
		{name: "batch size shrinks", newSize: 70, wantBytes: publish.DefaultMaxBatchBytes},
		// Rows of csvEntity encode to 50-60 bytes: 2000 bytes close
		// batches at about 35 rows, before batch_size.
		{name: "max_batch_bytes grows", firstBytes: 2000, newBytes: 5000, newSize: 100, wantBytes: 2000},
		{name: "max_batch_bytes shrinks", firstBytes: 2000, newBytes: 1024, newSize: 100, wantBytes: 2000},
		{name: "record without max_batch_bytes", newBytes: 1024, newSize: 100, oldRecord: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				_, exp := csvExport(t, 1000)
				exp.MaxBatchBytes = tt.firstBytes
				first := &scriptedSink{storeFirst: 3, cancelAt: 5}
				rec := interruptedRun(t, exp, first)
				if tt.oldRecord {
					st, _ := openStore(context.Background(), exp.Store, nil)
					rec.Batching.MaxBatchBytes = 0
					if err := saveRecord(context.Background(), st, exp.Store.Prefix, rec); err != nil {
						t.Fatal(err)
					}
				}
				exp.BatchSize, exp.MaxBatchBytes = tt.newSize, tt.newBytes
				second := &scriptedSink{storeFirst: -1}
				got, err := resume(t, exp, rec, second, nil)
				if err != nil || got.State != runs.StateSucceeded {
					t.Fatalf("Resume: want succeeded, got %v (%+v)", err, got)
				}
				if got.Batching == nil || got.Batching.BatchSize != 100 || got.Batching.MaxBatchBytes != tt.wantBytes {
					t.Errorf("record batch settings: want those the run started with (100 rows, %d bytes), got %+v", tt.wantBytes, got.Batching)
				}
				if tt.firstBytes > 0 && got.Entities[0].Batches < 20 {
					t.Errorf("want batches closed by max_batch_bytes (%d), got %d batches for 1000 rows", tt.firstBytes, got.Entities[0].Batches)
				}
				// Every copy of a message ID, from either attempt, stored or
				// not, holds the same rows.
				all := first.rowsByMessage(t, false)
				for id, copies := range second.rowsByMessage(t, false) {
					all[id] = append(all[id], copies...)
				}
				for id, copies := range all {
					for _, c := range copies[1:] {
						if !slices.Equal(c, copies[0]) {
							t.Errorf("message ID %s names different rows: %d rows from %v and %d rows from %v", id, len(copies[0]), copies[0][0], len(c), c[0])
						}
					}
				}
				// Every row reached the broker.
				seen := map[string]bool{}
				for _, sink := range []*scriptedSink{first, second} {
					for _, copies := range sink.rowsByMessage(t, true) {
						for _, c := range copies {
							for _, id := range c {
								seen[id] = true
							}
						}
					}
				}
				for i := 1; i <= 1000; i++ {
					if !seen[fmt.Sprintf("%06d", i)] {
						t.Fatalf("row %d never stored (%d of 1000 rows stored)", i, len(seen))
					}
				}
			})
		})
	}
}

// fullStore is a store whose disk can fill up: every Put, PutSealed and
// Create then fails with ENOSPC; reads and deletes keep working, as on a
// full disk. Every writing method is overridden: one left to the embedded
// store would write past the fault.
type fullStore struct {
	store.Store
	full atomic.Bool
}

func (s *fullStore) Put(ctx context.Context, key string, r io.Reader, meta map[string]string) (store.Object, error) {
	if s.full.Load() {
		return store.Object{}, fmt.Errorf("write %s: %w", key, syscall.ENOSPC)
	}
	return s.Store.Put(ctx, key, r, meta)
}

func (s *fullStore) PutSealed(ctx context.Context, key string, r io.Reader, meta map[string]string, seal func() (map[string]string, error)) (store.Object, error) {
	if s.full.Load() {
		return store.Object{}, fmt.Errorf("write %s: %w", key, syscall.ENOSPC)
	}
	return s.Store.PutSealed(ctx, key, r, meta, seal)
}

func (s *fullStore) Create(ctx context.Context, key string, r io.Reader, meta map[string]string) (store.Object, error) {
	if s.full.Load() {
		return store.Object{}, fmt.Errorf("write %s: %w", key, syscall.ENOSPC)
	}
	return s.Store.Create(ctx, key, r, meta)
}

// useStore makes r use st as exp's store.
func useStore(r *Runner, exp *Export, st store.Store) *Runner {
	r.owned.stores = append(r.owned.stores, ownedStore{cfg: exp.Store, st: st})
	return r
}

// TestDiskFullWhilePublishingLeavesRunResumable fills the store's disk in
// the middle of an entity: the run's final record cannot be written, so
// the run must stay marked unfinished (resumable), say so in its error, and
// finish once the disk has room again.
func TestDiskFullWhilePublishingLeavesRunResumable(t *testing.T) {
	bubble(t, func(t *testing.T) {
		_, exp := csvExport(t, 1000)
		base, err := openStore(context.Background(), exp.Store, nil)
		if err != nil {
			t.Fatal(err)
		}
		st := &fullStore{Store: base}
		sink := &scriptedSink{storeFirst: -1, cancelAt: 3, cancel: func() { st.full.Store(true) }}
		_, err = useStore(&Runner{NewSink: sinkFor(sink)}, exp, st).Run(context.Background(), exp, RunOptions{Trigger: "manual"})
		if err == nil || !strings.Contains(err.Error(), "no space") || !strings.Contains(err.Error(), "resume") {
			t.Errorf("Run whose record cannot be written: want an error naming the write failure and the resume, got %v", err)
		}
		st.full.Store(false)
		r := useStore(&Runner{NewSink: sinkFor(&scriptedSink{storeFirst: -1})}, exp, st)
		recs, err := r.Unfinished(context.Background(), exp)
		if err != nil || len(recs) != 1 {
			t.Fatalf("Unfinished after a failed record write: want the run listed for resume, got %d runs (%v)", len(recs), err)
		}
		got, err := r.Resume(context.Background(), exp, recs[0])
		if err != nil || got.State != runs.StateSucceeded || got.Entities[0].Rows != 1000 {
			t.Fatalf("Resume once the disk has room: want succeeded with 1000 rows, got %v (%+v)", err, got)
		}
		if left, _ := base.List(context.Background(), "_active/"); len(left) != 0 {
			t.Errorf("active markers left after the resumed run finished: %v", left)
		}
	})
}

// stopDuringRecordWrite stores the first write of a run record, then stops
// the run (cancel) and fails the write with the stop, as a SIGTERM that
// lands while the request is on the wire does: the record is in the store,
// but the run never heard so.
type stopDuringRecordWrite struct {
	store.Store
	cancel  func()
	stopped atomic.Bool
}

func (s *stopDuringRecordWrite) Put(ctx context.Context, key string, r io.Reader, meta map[string]string) (store.Object, error) {
	obj, err := s.Store.Put(ctx, key, r, meta)
	if err == nil && strings.HasSuffix(key, "/run.json") && s.stopped.CompareAndSwap(false, true) {
		s.cancel()
		return store.Object{}, fmt.Errorf("write %s: %w", key, context.Cause(ctx))
	}
	return obj, err
}

// TestStopDuringFirstRecordWrite stops a run while its first record is being
// written: the record must say the run was interrupted and resumes (not
// stay pending without a reason), F&O must not have been asked yet, and the
// resumed run exports once and succeeds.
func TestStopDuringFirstRecordWrite(t *testing.T) {
	bubble(t, func(t *testing.T) {
		sim, exp := csvExport(t, 100)
		base, err := openStore(context.Background(), exp.Store, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st := &stopDuringRecordWrite{Store: base, cancel: cancel}
		_, err = useStore(&Runner{NewSink: sinkFor(&scriptedSink{storeFirst: -1})}, exp, st).Run(ctx, exp, RunOptions{Trigger: "manual"})
		if err == nil || !strings.Contains(err.Error(), "interrupted") {
			t.Fatalf("Run stopped during its first record write: want an interrupted run, got %v", err)
		}
		r := useStore(&Runner{NewSink: sinkFor(&scriptedSink{storeFirst: -1})}, exp, base)
		recs, err := r.Unfinished(context.Background(), exp)
		if err != nil || len(recs) != 1 {
			t.Fatalf("Unfinished: want the stopped run listed for resume, got %d runs (%v)", len(recs), err)
		}
		if !strings.HasPrefix(recs[0].Error, "interrupted") || recs[0].ExecutionID != "" {
			t.Errorf("record of the stopped run: want no execution and an error saying interrupted, got execution %q, error %q", recs[0].ExecutionID, recs[0].Error)
		}
		if n := sim.Exports(); n != 0 {
			t.Errorf("F&O saw %d exports before the run was resumed, want 0", n)
		}
		got, err := r.Resume(context.Background(), exp, recs[0])
		if err != nil || got.State != runs.StateSucceeded || got.Entities[0].Rows != 100 {
			t.Fatalf("Resume: want succeeded with 100 rows, got %v (%+v)", err, got)
		}
		if n := sim.Exports(); n != 1 {
			t.Errorf("F&O saw %d exports, want 1", n)
		}
	})
}
