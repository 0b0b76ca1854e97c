package publish

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dmfexport/dmfexport/internal/testenv"
)

// fullQueue declares a queue holding at most max messages that refuses
// (nacks) publishes beyond them, and deletes it when the test ends.
func fullQueue(t *testing.T, max int) string {
	t.Helper()
	queue := uniqueName(t, "q")
	if _, err := adminChannel(t).QueueDeclare(queue, false, false, false, false, amqp.Table{
		amqp.QueueMaxLenArg: max, amqp.QueueOverflowArg: amqp.QueueOverflowRejectPublish,
	}); err != nil {
		t.Fatalf("declare queue with x-max-length %d, reject-publish: %v", max, err)
	}
	t.Cleanup(func() { _, _ = adminChannel(t).QueueDelete(queue, false, false, false) })
	return queue
}

// tally counts what a consumer of a queue got: rows by ID, and the
// message IDs each row came in.
type tally struct {
	mu       sync.Mutex
	msgs     map[string]int      // deliveries by message ID
	rowMsgs  map[string][]string // message IDs by row ID
	seqs     []int64             // batch_index of each delivery, in order
	consumed chan struct{}       // signalled at each delivery
}

func newTally() *tally {
	return &tally{msgs: map[string]int{}, rowMsgs: map[string][]string{}, consumed: make(chan struct{}, 1)}
}

// consumeInto reads queue into tl until the test ends, acking each
// message after pause, as a slow consumer would.
func consumeInto(t *testing.T, queue string, tl *tally, pause time.Duration) {
	t.Helper()
	ch := adminChannel(t)
	_ = ch.Qos(1, 0, false)
	dels, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume %s: %v", queue, err)
	}
	go func() {
		for d := range dels {
			time.Sleep(pause) // the real broker must see a slow consumer
			tl.add(t, d)
			_ = d.Ack(false)
		}
	}()
}

func (tl *tally) add(t *testing.T, d amqp.Delivery) {
	_, rows := rowsOf(t, [][]byte{d.Body})
	seq, _ := d.Headers["batch_index"].(int64)
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.msgs[d.MessageId]++
	tl.seqs = append(tl.seqs, seq)
	for _, r := range rows {
		tl.rowMsgs[r[0]] = append(tl.rowMsgs[r[0]], d.MessageId)
	}
	select {
	case tl.consumed <- struct{}{}:
	default:
	}
}

// wait waits until rows distinct rows arrived and nothing more came for a
// moment.
func (tl *tally) wait(t *testing.T, rows int) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		tl.mu.Lock()
		n := len(tl.rowMsgs)
		tl.mu.Unlock()
		if n >= rows {
			select {
			case <-tl.consumed:
				continue
			case <-time.After(300 * time.Millisecond):
				return
			}
		}
		select {
		case <-tl.consumed:
		case <-deadline:
			t.Fatalf("want %d rows from the queue, got %d within 60s", rows, n)
		}
	}
}

// check fails t unless every one of rows rows came, each once or only
// again under the same message ID (a republished batch), and returns the
// duplicated messages.
func (tl *tally) check(t *testing.T, rows int) (dups int) {
	t.Helper()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if len(tl.rowMsgs) != rows {
		t.Errorf("distinct rows delivered: want %d, got %d", rows, len(tl.rowMsgs))
	}
	for id, msgs := range tl.rowMsgs {
		for _, m := range msgs[1:] {
			if m != msgs[0] {
				t.Errorf("row %s came in message %s and again in %s: a duplicate under another message ID", id, msgs[0], m)
			}
		}
	}
	for _, n := range tl.msgs {
		dups += n - 1
	}
	return dups
}

// late counts the deliveries that came after a later batch of theirs.
func (tl *tally) late() int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	n, top := 0, int64(-1)
	for _, s := range tl.seqs {
		if s < top {
			n++
		}
		top = max(top, s)
	}
	return n
}

// TestAMQPBackpressureLateConsumer publishes 400 batches into a queue of
// at most 10 messages that refuses the rest (x-overflow reject-publish),
// whose slow consumer starts 2 s late: the nacks are back-pressure, not
// failures. Every row arrives, duplicates only under a repeated message
// ID, every batch is confirmed in order, and back-pressure is logged at
// WARN when it starts and INFO when it ends.
func TestAMQPBackpressureLateConsumer(t *testing.T) {
	queue := fullQueue(t, 10)
	var logs testenv.SyncBuffer
	s, err := DialAMQP(context.Background(), AMQPOptions{URL: testenv.AMQPURL(), ConfirmWindow: 16, BackpressureTimeout: 30 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("DialAMQP: %v", err)
	}
	defer func() { _ = s.Close() }()
	tl := newTally()
	time.AfterFunc(2*time.Second, func() { consumeInto(t, queue, tl, time.Millisecond) })

	const rows, batch = 2000, 5
	in, _ := genCSV(rows)
	var confirmed []int64
	start := time.Now()
	_, err = PublishEntity(context.Background(), strings.NewReader(in), s, EntityOptions{
		ExecutionID: "e", Entity: "E", RoutingKey: queue, BatchSize: batch, Format: "csv",
		Confirmed: func(b, _ int64) { confirmed = append(confirmed, b) },
	})
	if err != nil {
		t.Fatalf("PublishEntity into a full queue with a late consumer: want no error, got %v\n%s", err, logs.String())
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("PublishEntity ended after %s, before the consumer started: the queue never filled", took)
	}
	for i, b := range confirmed {
		if b != int64(i) {
			t.Fatalf("confirmed batches: want 0..%d in order, got %d at %d", rows/batch-1, b, i)
		}
	}
	if len(confirmed) != rows/batch {
		t.Errorf("confirmed batches: want %d, got %d", rows/batch, len(confirmed))
	}
	tl.wait(t, rows)
	dups := tl.check(t, rows)
	log := logs.String()
	starts, ends := strings.Count(log, "broker refuses messages (nack)"), strings.Count(log, "back-pressure over")
	if starts == 0 || ends != starts || !strings.Contains(log, "level=WARN msg=\"broker refuses messages (nack)") || !strings.Contains(log, "level=INFO msg=\"broker stores messages again") {
		t.Errorf("want each back-pressure logged at WARN when it starts and INFO when it ends; got %d starts, %d ends:\n%s", starts, ends, log)
	}
	if !strings.Contains(log, "nacks=") || !strings.Contains(log, "republished=") {
		t.Errorf("the end of back-pressure names no counts:\n%s", log)
	}
	t.Logf("%d rows in %d batches through a 10-message queue: %d back-pressure episodes, %d duplicate messages, %d batches after a later one, %s",
		rows, rows/batch, starts, dups, tl.late(), time.Since(start).Round(time.Millisecond))
}

// TestAMQPBackpressureTimeout publishes into a full queue nobody reads:
// past BackpressureTimeout the entity fails with ErrQueueFull, having
// confirmed exactly the batches the queue stored. Once the queue is
// drained, publishing again from the first unconfirmed batch delivers the
// rest: every row once.
func TestAMQPBackpressureTimeout(t *testing.T) {
	queue := fullQueue(t, 10)
	var logs testenv.SyncBuffer
	const timeout = time.Second
	s, err := DialAMQP(context.Background(), AMQPOptions{URL: testenv.AMQPURL(), ConfirmWindow: 16, BackpressureTimeout: timeout,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("DialAMQP: %v", err)
	}
	defer func() { _ = s.Close() }()
	const rows, batch = 200, 5
	in, _ := genCSV(rows)
	last, lastRows := int64(-1), int64(0)
	start := time.Now()
	_, err = PublishEntity(context.Background(), strings.NewReader(in), s, EntityOptions{
		ExecutionID: "e", Entity: "E", RoutingKey: queue, BatchSize: batch, Format: "csv",
		Confirmed: func(b, r int64) { last, lastRows = b, r },
	})
	took := time.Since(start)
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("PublishEntity into a full queue nobody reads: want ErrQueueFull, got %v", err)
	}
	for _, want := range []string{"broker refused message e/E/10 (nack)", "broker.backpressure_timeout (1s)", "x-overflow reject-publish"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if took < timeout || took > timeout+5*time.Second {
		t.Errorf("gave up after %s, want about broker.backpressure_timeout (%s)", took, timeout)
	}
	if last != 9 {
		t.Errorf("confirmed through batch %d, want 9 (the queue holds 10 messages)", last)
	}
	if n := strings.Count(logs.String(), "broker refuses messages (nack)"); n != 1 {
		t.Errorf("want back-pressure logged once when it starts, got %d times:\n%s", n, logs.String())
	}

	// The operator's consumer drains the queue; the rest is published
	// from the first unconfirmed batch, on the same sink.
	tl := newTally()
	consumeInto(t, queue, tl, 0)
	if _, err := PublishEntity(context.Background(), strings.NewReader(in), s, EntityOptions{
		ExecutionID: "e", Entity: "E", RoutingKey: queue, BatchSize: batch, Format: "csv", ResumeFrom: last + 1,
		ResumeRows: lastRows, Confirmed: func(b, _ int64) { last = b },
	}); err != nil {
		t.Fatalf("publishing the rest after draining: want no error, got %v", err)
	}
	if last != rows/batch-1 {
		t.Errorf("confirmed through batch %d, want %d", last, rows/batch-1)
	}
	tl.wait(t, rows)
	tl.check(t, rows)
}
