package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/runs"
)

// fullQueueExport returns an export publishing to a queue (through the
// default exchange) that holds at most maxLen messages and refuses
// (nacks) the rest, x-overflow reject-publish, as RabbitMQ does for a
// queue whose consumer is slow or stopped.
func fullQueueExport(t *testing.T, sim *simServer, maxLen int, timeout time.Duration) (*Export, string) {
	t.Helper()
	queue := fmt.Sprintf("dmfexport.test.full.%d", time.Now().UnixNano())
	ch := testenv.AMQPChannel(t)
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{
		amqp.QueueMaxLenArg: maxLen, amqp.QueueOverflowArg: amqp.QueueOverflowRejectPublish,
	}); err != nil {
		t.Fatal(err)
	}
	testenv.DeleteOnCleanup(t, ch, queue)
	u, _ := url.Parse(sim.URL)
	return &Export{
		Name: "full", Schedule: "@daily", DefinitionGroup: "G", PackageName: "G", LegalEntity: "USMF",
		Enabled: true, RoutingKey: queue, BatchSize: 10,
		FO:     FOConfig{URL: u, Auth: AuthConfig{Options: azauth.Options{Method: "token", Token: Secret(dmftest.DefaultToken)}}},
		Store:  StoreConfig{Type: "dir", Path: t.TempDir()},
		Broker: BrokerConfig{Type: "amqp", URL: Secret(testenv.AMQPURL()), ConfirmWindow: 16, BackpressureTimeout: timeout},
		Poll:   PollConfig{Interval: 20 * time.Millisecond, MaxInterval: 50 * time.Millisecond, Deadline: time.Minute, PackageURLTimeout: 10 * time.Second, RegisterTimeout: 10 * time.Second},
	}, queue
}

// rowTally counts the rows a consumer got, with the message IDs each came
// in.
type rowTally struct {
	mu   sync.Mutex
	rows map[string][]string // message IDs by entity/row ID
	msgs int
}

func (r *rowTally) add(t *testing.T, ds []amqp.Delivery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rows == nil {
		r.rows = map[string][]string{}
	}
	for _, d := range ds {
		var b batchBody
		if err := json.Unmarshal(d.Body, &b); err != nil {
			t.Errorf("message %s: %v", d.MessageId, err)
			continue
		}
		r.msgs++
		for _, row := range b.Data.Rows {
			k := b.Data.Entity + "/" + row["ID"]
			r.rows[k] = append(r.rows[k], d.MessageId)
		}
	}
}

// check fails t unless want rows came, each once or again only under the
// same message ID.
func (r *rowTally) check(t *testing.T, want int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.rows) != want {
		t.Errorf("distinct rows delivered: want %d, got %d", want, len(r.rows))
	}
	for k, ids := range r.rows {
		for _, id := range ids[1:] {
			if id != ids[0] {
				t.Errorf("row %s came in message %s and again in %s: a duplicate under another message ID", k, ids[0], id)
			}
		}
	}
}

// drainFrom starts a consumer of queue after delay, taking every message
// off it every 20 ms until the returned stop is called (which drains once
// more).
func drainFrom(t *testing.T, queue string, delay time.Duration, into *rowTally) (stop func()) {
	ch := testenv.AMQPChannel(t)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-time.After(delay):
		case <-done:
		}
		for {
			into.add(t, testenv.Drain(t, ch, queue))
			select {
			case <-done:
				into.add(t, testenv.Drain(t, ch, queue))
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// TestFullQueueIsBackpressure runs an export into a queue of at most 20
// messages, x-overflow reject-publish, whose consumer starts 2 s late: the
// broker's nacks are back-pressure, not failures. The run succeeds with
// every row delivered once (again only under the same message ID) and
// every batch counted.
func TestFullQueueIsBackpressure(t *testing.T) {
	t.Parallel() // waits on the real broker: alongside the others
	sim := newSim(quick(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("A", 1234), csvEntity("B", 10)}}, ExecutionTime: 20 * time.Millisecond}))
	defer sim.Close()
	exp, queue := fullQueueExport(t, sim, 20, 30*time.Second)
	var got rowTally
	stop := drainFrom(t, queue, 2*time.Second, &got)
	rec, err := (&Runner{}).Run(context.Background(), exp, RunOptions{Trigger: "manual"})
	stop()
	if err != nil || rec.State != runs.StateSucceeded {
		t.Fatalf("Run into a full queue whose consumer starts late: want succeeded, got %v (%+v)", err, rec)
	}
	batches := map[string]int64{"A": 124, "B": 1}
	for _, e := range rec.Entities {
		if e.State != runs.StateSucceeded || e.Batches != batches[e.Entity] || e.LastBatch != batches[e.Entity]-1 {
			t.Errorf("entity %s: want succeeded with %d batches confirmed, got %s with %d (last %d)", e.Entity, batches[e.Entity], e.State, e.Batches, e.LastBatch)
		}
	}
	got.check(t, 1244)
}

// TestFullQueueLeavesRunWaiting: with no consumer at all, the queue stays
// full past broker.backpressure_timeout; the run is left waiting for room
// in the queue (not failed, no entity failed), with the batches the queue
// took counted. Once a consumer drains the queue, taking the run up
// publishes the rest from the same export: every row delivered once.
func TestFullQueueLeavesRunWaiting(t *testing.T) {
	t.Parallel() // waits on the real broker: alongside the others
	sim := newSim(quick(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("A", 1234), csvEntity("B", 10)}}, ExecutionTime: 20 * time.Millisecond}))
	defer sim.Close()
	exp, queue := fullQueueExport(t, sim, 20, time.Second)
	r := &Runner{}
	start := time.Now()
	rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"})
	if !errors.Is(err, ErrWaiting) || errors.Is(err, ErrWaitingForBroker) {
		t.Fatalf("Run into a full queue nobody reads: want ErrWaiting (not for the broker), got %v", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the run was left waiting after %s; broker.backpressure_timeout is 1s", took)
	}
	for _, want := range []string{"waiting for room in the queue", "broker.backpressure_timeout (1s)", "x-overflow reject-publish", "once the queue's consumers make room"} {
		if !strings.Contains(err.Error(), want) || !strings.Contains(rec.Error, want) {
			t.Errorf("error %q (record %q) lacks %q", err, rec.Error, want)
		}
	}
	if rec.State.Final() || rec.Waiting != WaitingForQueueSpace || WaitingText(rec.Waiting) != "waiting for room in the queue" {
		t.Fatalf("record: want unfinished, waiting for room in the queue; got state %s waiting %q", rec.State, rec.Waiting)
	}
	var confirmed int64
	for _, e := range rec.Entities {
		if e.State == runs.StateFailed {
			t.Errorf("entity %s failed: %s", e.Entity, e.Error)
		}
		confirmed += e.Batches
	}
	if confirmed != 20 {
		t.Errorf("batches counted as published: want 20 (what the queue holds), got %d", confirmed)
	}

	// A consumer drains the queue; the run is taken up.
	var got rowTally
	stop := drainFrom(t, queue, 0, &got)
	done, err := r.Resume(context.Background(), exp, rec)
	stop()
	if err != nil || done.State != runs.StateSucceeded || done.Waiting != "" {
		t.Fatalf("Resume once the queue is drained: want succeeded, got %v %+v", err, done)
	}
	if n := sim.Exports(); n != 1 {
		t.Errorf("F&O saw %d exports, want 1", n)
	}
	got.check(t, 1244)
}
