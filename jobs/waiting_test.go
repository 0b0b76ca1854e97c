package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/runs"
)

// TestExecutionPastDeadlineLeavesRunWaiting: an F&O execution still
// running at poll.deadline leaves the run waiting for it (never a second
// export); taken up again, the run polls the same execution and finishes.
func TestExecutionPastDeadlineLeavesRunWaiting(t *testing.T) {
	bubble(t, func(t *testing.T) {
		sim := newSim(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("A", 250)}}, ExecutionTime: time.Second})
		defer sim.Close()
		exp := fileExport(sim, t.TempDir())
		exp.Poll.Deadline = 100 * time.Millisecond
		r := &Runner{}
		rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"})
		if !errors.Is(err, ErrWaiting) || errors.Is(err, ErrWaitingForBroker) {
			t.Fatalf("Run past poll.deadline: want ErrWaiting (not for the broker), got %v", err)
		}
		for _, want := range []string{"waiting for F&O to end the execution", "did not finish before the deadline", "raise poll.deadline", "cancel it there"} {
			if !strings.Contains(err.Error(), want) || !strings.Contains(rec.Error, want) {
				t.Errorf("error %q (record %q) lacks %q", err, rec.Error, want)
			}
		}
		if rec.State != runs.StateExporting || rec.Waiting != WaitingForExecution || rec.ExecutionID == "" {
			t.Fatalf("record: want exporting, waiting for the execution, with its ID; got state %s waiting %q execution %q", rec.State, rec.Waiting, rec.ExecutionID)
		}
		if want := "execution did not finish before the deadline: still "; !strings.HasPrefix(rec.Cause, want) || !strings.HasSuffix(rec.Cause, "(raise poll.deadline if this export needs longer in F&O)") {
			t.Errorf("record cause %q, want F&O's status first (%q) and the setting to raise", rec.Cause, want)
		}
		recs, _ := r.Unfinished(context.Background(), exp)
		if len(recs) != 1 || recs[0].Waiting != WaitingForExecution {
			t.Fatalf("Unfinished: want the waiting run, got %d", len(recs))
		}
		exp.Poll.Deadline = time.Minute // the operator raised it, or F&O ended meanwhile
		r.ResumeAll(context.Background(), []*Export{exp})
		done, err := ledgerOf(mustOpen(t, exp), exp).Find(context.Background(), rec.RunID)
		if err != nil || done.State != runs.StateSucceeded || done.Waiting != "" || done.Entities[0].Rows != 250 || done.ExecutionID != rec.ExecutionID {
			t.Fatalf("resumed: want succeeded with 250 rows of execution %s, got %v %+v", rec.ExecutionID, err, done)
		}
		if n := sim.Exports(); n != 1 {
			t.Errorf("F&O saw %d exports, want 1", n)
		}
	})
}

// TestUnroutableLeavesRunWaiting publishes to an exchange no queue is bound
// to: RabbitMQ returns the batches. The run waits for a queue, with no row
// counted as published and no entity failed; once a queue is bound, taking
// the run up publishes every row exactly once, from the same export.
func TestUnroutableLeavesRunWaiting(t *testing.T) {
	t.Parallel() // waits on the real broker: alongside the others
	sim := newSim(quick(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("A", 1234), csvEntity("B", 10)}}, ExecutionTime: 20 * time.Millisecond}))
	defer sim.Close()
	name := fmt.Sprintf("dmfexport.test.waitqueue.%d", time.Now().UnixNano())
	ch := testenv.AMQPChannel(t)
	if err := ch.ExchangeDeclare(name, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	testenv.DeleteOnCleanup(t, ch, name)
	u, _ := url.Parse(sim.URL)
	exp := &Export{
		Name: "waitqueue", Schedule: "@daily", DefinitionGroup: "G", PackageName: "G", LegalEntity: "USMF",
		Enabled: true, Exchange: name, RoutingKey: "fo.waitqueue", BatchSize: 100,
		FO:     FOConfig{URL: u, Auth: AuthConfig{Options: azauth.Options{Method: "token", Token: Secret(dmftest.DefaultToken)}}},
		Store:  StoreConfig{Type: "dir", Path: t.TempDir()},
		Broker: BrokerConfig{Type: "amqp", URL: Secret(testenv.AMQPURL()), ConfirmWindow: 4},
		Poll:   PollConfig{Interval: 20 * time.Millisecond, MaxInterval: 50 * time.Millisecond, Deadline: time.Minute, PackageURLTimeout: 10 * time.Second, RegisterTimeout: 10 * time.Second},
	}
	r := &Runner{}
	rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"})
	if !errors.Is(err, ErrWaiting) || !strings.Contains(err.Error(), "no queue is bound") || !strings.Contains(err.Error(), "once a queue is bound") {
		t.Fatalf("Run with no queue bound: want a run waiting for a queue, got %v", err)
	}
	if rec.State.Final() || rec.Waiting != WaitingForQueue {
		t.Fatalf("record: want unfinished, waiting for a queue; got state %s waiting %q", rec.State, rec.Waiting)
	}
	if want := "312 NO_ROUTE: no queue is bound to exchange"; !strings.HasPrefix(rec.Cause, want) {
		t.Errorf("record cause %q, want the broker's return first: %q", rec.Cause, want)
	}
	for _, e := range rec.Entities {
		if e.State == runs.StateFailed || e.Rows != 0 {
			t.Errorf("entity %s: want not failed with 0 rows published, got %s with %d", e.Entity, e.State, e.Rows)
		}
	}

	// The operator binds a queue; the run is taken up.
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(name, "fo.waitqueue", name, false, nil); err != nil {
		t.Fatal(err)
	}
	done, err := r.Resume(context.Background(), exp, rec)
	if err != nil || done.State != runs.StateSucceeded || done.Waiting != "" {
		t.Fatalf("Resume with a queue bound: want succeeded, got %v %+v", err, done)
	}
	if n := sim.Exports(); n != 1 {
		t.Errorf("F&O saw %d exports, want 1", n)
	}
	rows := map[string]int{}
	for _, d := range testenv.Drain(t, ch, name) {
		var b batchBody
		if err := json.Unmarshal(d.Body, &b); err != nil {
			t.Fatal(err)
		}
		for _, row := range b.Data.Rows {
			rows[b.Data.Entity+"/"+row["ID"]]++
		}
	}
	if len(rows) != 1244 {
		t.Errorf("rows in the queue: want 1244, got %d", len(rows))
	}
	for k, n := range rows {
		if n != 1 {
			t.Errorf("row %s delivered %d times", k, n)
		}
	}
}

// TestScheduledFireTakesUpWaitingRun: while a run of an export waits, a
// scheduled fire takes that run up instead of starting another export —
// and, inside the run's backoff, does nothing.
func TestScheduledFireTakesUpWaitingRun(t *testing.T) {
	sim := newSim(quick(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("A", 10)}}, ExecutionTime: 20 * time.Millisecond}))
	defer sim.Close()
	exp := fileExport(sim, t.TempDir())
	exp.Broker = BrokerConfig{Type: "amqp", URL: Secret("amqp://guest:guest@" + closedPort(t) + "/"), ReconnectTimeout: -1}
	clock := clockwork.NewFakeClock() // the backoff's
	r := &Runner{Clock: clock}
	if _, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"}); !errors.Is(err, ErrWaitingForBroker) {
		t.Fatalf("Run with the broker down: want ErrWaitingForBroker, got %v", err)
	}
	if n := r.LeftToResume(); n != 1 {
		t.Errorf("a run left waiting: LeftToResume %d, want 1 (dmfexport run stopped now exits 75)", n)
	}
	if _, ok := r.takeUpWaiting(context.Background(), &Export{Name: "other", Store: exp.Store}); ok {
		t.Error("an export without a waiting run: the fire must start a run of its own")
	}
	// Still down: the fire takes the run up, which waits again.
	if outcome, ok := r.takeUpWaiting(context.Background(), exp); !ok || outcome != fireWaiting {
		t.Fatalf("a fire with a run waiting must take it up and count as %s; got %v, %q", fireWaiting, ok, outcome)
	}
	next, ok := r.nextRetry(exp.Name, mustUnfinished(t, r, exp).RunID)
	if !ok || clock.Until(next) != waitRetryMin {
		t.Fatalf("after a vain attempt: want the next retry in %s, got %v (%v)", waitRetryMin, clock.Until(next), ok)
	}
	// Back, but inside the backoff: the fire does nothing.
	exp.Broker = BrokerConfig{Type: "file", Path: t.TempDir()}
	if outcome, ok := r.takeUpWaiting(context.Background(), exp); !ok || outcome != fireWaiting {
		t.Fatalf("a fire inside the backoff must not start another run and count as %s; got %v, %q", fireWaiting, ok, outcome)
	}
	if rec := mustUnfinished(t, r, exp); rec.Waiting != WaitingForBroker {
		t.Fatalf("inside the backoff: want the run still waiting, got %+v", rec)
	}
	// After the backoff: the fire finishes it.
	clock.Advance(waitRetryMin)
	if outcome, ok := r.takeUpWaiting(context.Background(), exp); !ok || outcome != string(runs.StateSucceeded) {
		t.Fatalf("a fire taking up the run must count as its end, succeeded; got %v, %q", ok, outcome)
	}
	if recs, _ := r.Unfinished(context.Background(), exp); len(recs) != 0 {
		t.Fatalf("after the broker is back: want no unfinished run, got %d", len(recs))
	}
	if n := r.LeftToResume(); n != 0 {
		t.Errorf("the waiting run finished: LeftToResume %d, want 0", n)
	}
	if n := sim.Exports(); n != 1 {
		t.Errorf("F&O saw %d exports, want 1", n)
	}
}

func mustUnfinished(t *testing.T, r *Runner, exp *Export) *runs.Record {
	t.Helper()
	recs, err := r.Unfinished(context.Background(), exp)
	if err != nil || len(recs) != 1 {
		t.Fatalf("Unfinished: want one run, got %d (%v)", len(recs), err)
	}
	return recs[0]
}
