package jobs

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store/storetest"
)

// pausingSink stores every message at once and, after the pauseAt-th,
// blocks in Publish until resume is closed: the owner's process stands
// still between two batches, as under SIGSTOP.
type pausingSink struct {
	pauseAt int
	paused  chan struct{}
	resume  chan struct{}

	mu   sync.Mutex
	msgs []string
}

func (s *pausingSink) Publish(ctx context.Context, m publish.Message) error {
	s.mu.Lock()
	s.msgs = append(s.msgs, m.MessageID)
	n := len(s.msgs)
	s.mu.Unlock()
	if m.OnStored != nil {
		m.OnStored()
	}
	if n == s.pauseAt {
		close(s.paused)
		<-s.resume
	}
	return nil
}

func (s *pausingSink) Flush(ctx context.Context) error { return ctx.Err() }
func (s *pausingSink) Close() error                    { return nil }

func (s *pausingSink) published() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// TestPausedOwnerFenced pauses a run's owner mid-entity (its publishing
// and its heartbeats), lets a second replica take the run over and finish
// it, then lets the owner go on: the owner must publish no further batch,
// leave the adopter's final record as it is, refresh no lease the adopter
// released, and end with runs.ErrLeaseLost; the adopter's next run must start
// (not be skipped for a data project the paused owner still seemed to
// hold). The owner's clock is a fake one, moved on by the pause; its
// leases age on the store's clock, the file system's.
func TestPausedOwnerFenced(t *testing.T) {
	sim := newSim(quick(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("A", 1000)}}, ExecutionTime: 20 * time.Millisecond}))
	defer sim.Close()
	exp := fileExport(sim, t.TempDir())
	ctx := context.Background()
	const ttl = runs.DefaultLeaseTTL
	const pauseAt = 4 // of 10 batches
	ownerClock := clockwork.NewFakeClock()

	resume := make(chan struct{})
	var held sync.Mutex // locked while the owner is paused
	held.Lock()
	paused := false
	sink := &pausingSink{pauseAt: pauseAt, paused: make(chan struct{}), resume: resume}
	owner := &Runner{Logger: slog.New(slog.DiscardHandler), LeaseTTL: ttl, Clock: ownerClock,
		NewSink: func(context.Context, *Export) (publish.Sink, error) { return sink, nil },
		heartbeatGate: func() {
			held.Lock()   // blocks while paused
			held.Unlock() //nolint:staticcheck // SA2001: the mutex is a gate that blocks while the owner is paused; it guards nothing
		}}
	type result struct {
		rec *runs.Record
		err error
	}
	ownerDone := make(chan result, 1)
	go func() {
		rec, err := owner.Run(ctx, exp, RunOptions{Trigger: "manual"})
		ownerDone <- result{rec, err}
	}()
	select {
	case <-sink.paused:
		paused = true
	case r := <-ownerDone:
		t.Fatalf("the owner ended before batch %d: %v", pauseAt, r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("the owner never published its first batches")
	}
	defer func() {
		if paused {
			held.Unlock()
			close(resume)
		}
	}()

	adopter := &Runner{Logger: slog.New(slog.DiscardHandler), LeaseTTL: ttl, NewSink: sinkFor(&scriptedSink{storeFirst: -1}, &scriptedSink{storeFirst: -1})}
	recs, err := adopter.Unfinished(ctx, exp)
	if err != nil || len(recs) != 1 {
		t.Fatalf("unfinished runs while the owner is paused: %v, %d runs, want 1", err, len(recs))
	}
	st, err := openStore(ctx, exp.Store, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := ledgerOf(st, exp)
	// The pause outlasts the lease: its run lease and data project hold
	// lapse on the store's clock, and the owner's own clock moves on.
	for _, key := range []string{leaseKey(l.Leases(recs[0].RunID), 1), leaseKey(l.ProjectLeases(dataProject(exp)), 1)} {
		ageObject(t, exp.Store.Path, key, ttl+time.Second)
	}
	ownerClock.Advance(ttl + time.Second)
	adopted, err := adopter.Resume(ctx, exp, recs[0])
	if err != nil {
		t.Fatalf("takeover of the paused owner's run once its lease lapsed: %v", err)
	}
	if adopted.State != runs.StateSucceeded || adopted.OwnerGen != 2 {
		t.Fatalf("adopted run: state %s, owner generation %d; want succeeded by generation 2", adopted.State, adopted.OwnerGen)
	}
	key := l.Record(adopted.RunID)
	before := storetest.ReadAll(t, st, key)

	paused = false
	held.Unlock()
	close(resume)
	var r result
	select {
	case r = <-ownerDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the paused owner did not stop within 10s of going on")
	}
	if !errors.Is(r.err, runs.ErrLeaseLost) {
		t.Errorf("paused owner's run: %v, want runs.ErrLeaseLost", r.err)
	}
	if got := sink.published(); len(got) != pauseAt {
		t.Errorf("paused owner published %d batches, want %d (none after the takeover): %v", len(got), pauseAt, got)
	}
	if after := storetest.ReadAll(t, st, key); after != before {
		t.Errorf("the paused owner rewrote the adopter's final record:\nadopter's:\n%s\nnow:\n%s", before, after)
	}
	for _, prefix := range []string{l.Leases(adopted.RunID), l.ProjectLeases(dataProject(exp))} {
		if left, err := st.List(ctx, prefix+"/"); err != nil || len(left) != 0 {
			t.Errorf("leases under %s after both replicas ended: %v (%v); the paused owner refreshed a lease it had lost", prefix, left, err)
		}
	}
	next, err := adopter.Run(ctx, exp, RunOptions{Trigger: "schedule"})
	if err != nil || next.State != runs.StateSucceeded {
		t.Errorf("the adopter's next run: %v (state %v), want succeeded", err, next)
	}
}
