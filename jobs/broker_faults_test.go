package jobs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
)

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestBrokerCheckedBeforeExport points a run at a broker that is down, or
// at an exchange that does not exist: F&O must not be asked for an export.
// A broker that is down leaves the run waiting, unexported, and taken up
// once the broker is back it exports once; a missing exchange (a
// configuration error) fails the run saying nothing was exported.
func TestBrokerCheckedBeforeExport(t *testing.T) {
	t.Parallel() // waits on the real broker: alongside the others
	tests := []struct {
		name     string
		url      string
		exchange string
		want     string
		waiting  bool
		// wantCause starts the record's cause: the network's answer, the
		// broker's.
		wantCause string
	}{
		{"broker down", "amqp://guest:guest@" + closedPort(t) + "/", "", "connect to broker", true, "dial tcp 127.0.0.1:"},
		{"exchange missing", testenv.AMQPURL(), fmt.Sprintf("dmfexport-test-missing-%d", time.Now().UnixNano()), "does not exist", false, `exchange "dmfexport-test-missing-`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := newSim(quick(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("A", 10)}}, ExecutionTime: 20 * time.Millisecond}))
			defer sim.Close()
			exp := fileExport(sim, t.TempDir())
			exp.Broker = BrokerConfig{Type: "amqp", URL: Secret(tt.url), ReconnectTimeout: -1}
			exp.Exchange = tt.exchange
			r := &Runner{}
			rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "nothing was exported") {
				t.Fatalf("Run with %s: want an error with %q saying nothing was exported, got %v", tt.name, tt.want, err)
			}
			if n := sim.Exports(); n != 0 {
				t.Errorf("Run with %s: want no ExportToPackage call, got %d", tt.name, n)
			}
			if rec == nil || !strings.HasPrefix(rec.Cause, tt.wantCause) {
				t.Errorf("Run with %s: want the record's cause to start with %q, got %+v", tt.name, tt.wantCause, rec)
			}
			if !tt.waiting {
				if rec == nil || rec.State != runs.StateFailed || errors.Is(err, ErrWaiting) {
					t.Errorf("Run with %s: want a failed record, got %+v (%v)", tt.name, rec, err)
				}
				return
			}
			if !errors.Is(err, ErrWaitingForBroker) || rec == nil || rec.State.Final() || rec.Waiting != WaitingForBroker || rec.ExecutionID != "" {
				t.Fatalf("Run with %s: want the run unfinished, waiting for broker, unexported; got %+v (%v)", tt.name, rec, err)
			}
			// The broker is back: the waiting run exports, once.
			exp.Broker = BrokerConfig{Type: "file", Path: filepath.Join(t.TempDir(), "batches")}
			done, err := r.Resume(context.Background(), exp, rec)
			if err != nil || done.State != runs.StateSucceeded || done.Entities[0].Rows != 10 {
				t.Fatalf("Resume with the broker back: want succeeded with 10 rows, got %v %+v", err, done)
			}
			if n := sim.Exports(); n != 1 {
				t.Errorf("Resume with the broker back: want 1 ExportToPackage call, got %d", n)
			}
		})
	}
}

// TestBrokerLostAtPublishLeavesRunWaiting loses the broker for good after 4
// of 10 batches: the run must stay unfinished, waiting for the broker, with
// those 400 rows counted; taken up again once the broker is back it
// finishes without a second export and without losing a row.
func TestBrokerLostAtPublishLeavesRunWaiting(t *testing.T) {
	t.Parallel() // waits on the real broker: alongside the others
	sim := newSim(quick(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("A", 1000)}}, ExecutionTime: 20 * time.Millisecond}))
	defer sim.Close()
	exp := fileExport(sim, t.TempDir())
	gone := fmt.Errorf("connection to broker lost and not restored: %w", publish.ErrBrokerUnavailable)
	first := &scriptedSink{storeFirst: 4, flushErr: gone}
	r := &Runner{NewSink: sinkFor(first), Metrics: NewMetrics()}
	rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"})
	if !errors.Is(err, ErrWaitingForBroker) {
		t.Fatalf("Run losing the broker: want ErrWaitingForBroker, got %v", err)
	}
	if strings.Contains(err.Error(), "next run") || !strings.Contains(err.Error(), "resumes from here once the broker is reachable") {
		t.Errorf("Run losing the broker: the error must say the run resumes, got %v", err)
	}
	recs, uerr := r.Unfinished(context.Background(), exp)
	if uerr != nil || len(recs) != 1 {
		t.Fatalf("Unfinished: want the waiting run, got %d (%v)", len(recs), uerr)
	}
	got := recs[0]
	if got.State.Final() || got.Waiting != WaitingForBroker || got.Entities[0].Rows != 400 || got.Entities[0].State == runs.StateFailed {
		t.Fatalf("waiting record: want unfinished, waiting for broker, entity not failed with 400 confirmed rows, got state %s waiting %q entity %s with %d rows",
			got.State, got.Waiting, got.Entities[0].State, got.Entities[0].Rows)
	}
	if rec.RunID != got.RunID {
		t.Errorf("Run returned run %s, the store holds %s", rec.RunID, got.RunID)
	}

	// The service's ResumeAll takes it up (this process has not tried it
	// yet, so at once); the broker is back by then.
	second := &scriptedSink{storeFirst: -1}
	r.NewSink = sinkFor(second)
	r.ResumeAll(context.Background(), []*Export{exp})
	recs, _ = r.Unfinished(context.Background(), exp)
	if len(recs) != 0 {
		t.Fatalf("ResumeAll with the broker back: want the run finished, %d still unfinished (%s)", len(recs), recs[0].Error)
	}
	done, err := ledgerOf(mustOpen(t, exp), exp).Find(context.Background(), rec.RunID)
	if err != nil || done.State != runs.StateSucceeded || done.Waiting != "" || done.Entities[0].Rows != 1000 {
		t.Fatalf("resumed record: want succeeded with 1000 rows, got %v %+v", err, done)
	}
	if n := sim.Exports(); n != 1 {
		t.Errorf("want 1 export in F&O, got %d", n)
	}
	rows := map[string]bool{}
	for _, s := range []*scriptedSink{first, second} {
		for _, batches := range s.rowsByMessage(t, true) {
			for _, ids := range batches {
				for _, id := range ids {
					rows[id] = true
				}
			}
		}
	}
	if len(rows) != 1000 {
		t.Errorf("rows stored by the broker across both attempts: want 1000, got %d", len(rows))
	}
}

// TestBrokerRetryBackoff checks the waits between attempts at a run
// waiting for the broker: doubling from waitRetryMin up to
// waitRetryMax, forgotten once the run gets on.
func TestBrokerRetryBackoff(t *testing.T) {
	r := &Runner{}
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	if !r.retryDue("j", "r", now) {
		t.Fatal("a run not tried yet must be due")
	}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	for i, w := range want {
		if got := r.noteWait("j", "r", true, now); got != w {
			t.Errorf("attempt %d: want a wait of %s, got %s", i+1, w, got)
		}
		if r.retryDue("j", "r", now.Add(w-time.Millisecond)) || !r.retryDue("j", "r", now.Add(w)) {
			t.Errorf("attempt %d: want the run due after %s, not before", i+1, w)
		}
	}
	r.noteWait("j", "r", false, now)
	if !r.retryDue("j", "r", now) {
		t.Error("a run that got on must be due at once next time")
	}
}

func mustOpen(t *testing.T, exp *Export) store.Store {
	t.Helper()
	st, err := openStore(context.Background(), exp.Store, nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
