package sink_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/sink"
	"github.com/dmfexport/dmfexport/sink/postgres"
	"github.com/dmfexport/dmfexport/sink/sqlite"
)

// event is a batch message body as dmfexport publishes it.
func event(run, entity, refresh string, index int, last bool, cols []string, rows ...map[string]any) []byte {
	var count any
	if last {
		count = index + 1
	}
	ev := map[string]any{
		"specversion": "1.0", "type": sink.EventType, "source": "dmfexport/e", "id": fmt.Sprintf("exec-%s/%s/%d", run, entity, index),
		"time": "2026-03-01T02:00:00Z", "subject": entity, "datacontenttype": "application/json", "refreshtype": refresh,
		"data": map[string]any{"version": 1, "job": "e", "run_id": run, "execution_id": "exec-" + run, "entity": entity,
			"batch_index": index, "batch_count": count, "last_batch": last, "first_row": 1 + 10*index, "row_count": len(rows),
			"columns": cols, "rows": rows},
	}
	b, _ := json.Marshal(ev)
	return b
}

func TestDecodeBatch(t *testing.T) {
	body := event("20260301T020000Z-aa", "Orders", sink.FullPush, 0, true, []string{"ID", "NOTE", "LINES"},
		map[string]any{"ID": "1", "LINES": []any{map[string]any{"L": "1"}}}, map[string]any{"ID": "2", "NOTE": ""})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(body)
	_ = zw.Close()
	enc, _ := zstd.NewWriter(nil)
	zs := enc.EncodeAll(body, nil)
	for _, tc := range []struct {
		name, encoding string
		body           []byte
	}{{"plain", "", body}, {"gzip", "gzip", gz.Bytes()}, {"zstd", "zstd", zs}} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := sink.DecodeBatch(tc.body, tc.encoding)
			if err != nil {
				t.Fatal(err)
			}
			if b.RunTime != time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC) || b.BatchCount != 1 || len(b.Columns) != 2 ||
				b.Rows[0][1] != nil || *b.Rows[1][1] != "" || string(b.Documents[0]) != `{"LINES":[{"L":"1"}]}` || b.Documents[1] != nil {
				t.Errorf("decoded %+v", b)
			}
		})
	}
	for _, tc := range []struct{ name, body, encoding string }{
		{"not JSON", "{", ""},
		{"other type", `{"type":"x","data":{}}`, ""},
		{"other version", `{"type":"` + sink.EventType + `","id":"i","data":{"version":2,"run_id":"r","entity":"e"}}`, ""},
		{"bad gzip", "xx", "gzip"},
		{"unknown encoding", "{}", "br"},
	} {
		if _, err := sink.DecodeBatch([]byte(tc.body), tc.encoding); err == nil {
			t.Errorf("%s: decoded, want an error", tc.name)
		}
	}
}

func TestTableName(t *testing.T) {
	for in, want := range map[string]string{"Customers V3": "customers_v3", "Country/regions": "country_regions", "3D parts": "e_3d_parts", "--": "e_"} {
		if got := sink.TableName(in); got != want {
			t.Errorf("TableName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestConsumer runs a consumer over a real queue into PostgreSQL: a batch
// delivered twice lands once, a poison batch goes to the dead-letter
// queue with its reason after max_deliveries without holding back the
// good batches behind it, and a stop ends Run.
func TestConsumer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	queue := fmt.Sprintf("dmfexport.test.sinkconsumer.%d", time.Now().UnixNano())
	ch := testenv.AMQPChannel(t)
	testenv.DeleteOnCleanup(t, ch, queue, sink.DeadLetterName(queue))
	be, err := postgres.Open(ctx, testenv.PostgresURL(), testenv.PostgresSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	c := &sink.Consumer{Name: "t", URL: testenv.AMQPURL(), Queue: queue, Quorum: true, MaxDeliveries: 2, Backend: be,
		Entities: map[string]sink.EntityOptions{"Groups": {Keys: []string{"ID"}}}}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}); err != nil {
		t.Fatal(err)
	}
	cols := []string{"ID", "NAME"}
	good := event("20260301T020000Z-aa", "Groups", sink.IncrementalPush, 0, true, cols, map[string]any{"ID": "1", "NAME": "a"})
	noKeys := event("20260301T020000Z-aa", "Other", sink.IncrementalPush, 0, true, cols, map[string]any{"ID": "1", "NAME": "a"})
	later := event("20260301T030000Z-bb", "Groups", sink.IncrementalPush, 0, true, cols, map[string]any{"ID": "2", "NAME": "b"})
	for i, body := range [][]byte{good, good, []byte("not json"), noKeys, later} {
		if err := ch.PublishWithContext(ctx, "", queue, false, false, amqp.Publishing{MessageId: fmt.Sprint(i), DeliveryMode: amqp.Persistent, Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	st := c.Stats()
	if !testenv.Await(30*time.Second, func() bool { return st.DeadLetters.Load() >= 2 && st.Batches.Load() >= 2 }) {
		t.Fatalf("after 30s: %d batches, %d dead letters; want 2 and 2", st.Batches.Load(), st.DeadLetters.Load())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after stop: %v", err)
	}
	if st.Duplicates.Load() != 1 || st.Rows.Load() != 2 {
		t.Errorf("%d duplicates, %d rows; want 1 and 2", st.Duplicates.Load(), st.Rows.Load())
	}
	dead := testenv.Drain(t, ch, sink.DeadLetterName(queue))
	if len(dead) != 2 {
		t.Fatalf("dead-letter queue holds %d messages, want 2", len(dead))
	}
	for _, d := range dead {
		reason, _ := d.Headers[sink.ReasonHeader].(string)
		if reason == "" || d.Headers[sink.SinkHeader] != "t" {
			t.Errorf("dead letter %s: headers %v, want a reason and the sink's name", d.MessageId, d.Headers)
		}
		t.Logf("dead letter %s: %s", d.MessageId, reason)
	}
}

// TestConsumerDeclare: Declare creates the queue bound to the exchange
// before Run, so a batch published in between waits for the consumer,
// which lands it (here in SQLite).
func TestConsumerDeclare(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	name := fmt.Sprintf("dmfexport.test.sinkdeclare.%d", time.Now().UnixNano())
	ch := testenv.AMQPChannel(t)
	testenv.DeleteOnCleanup(t, ch, name, name+".x", sink.DeadLetterName(name))
	be, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "sink.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	c := &sink.Consumer{Name: "t", URL: testenv.AMQPURL(), Queue: name, Quorum: true, Exchange: name + ".x", Bindings: []string{"fo.#"}, Backend: be}
	if err := c.Declare(ctx); err != nil {
		t.Fatal(err)
	}
	body := event("20260301T020000Z-aa", "Groups", sink.FullPush, 0, true, []string{"ID"}, map[string]any{"ID": "1"})
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, name+".x", "fo.groups", true, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dc.WaitContext(ctx); !ok || err != nil {
		t.Fatalf("publish not confirmed: %v, %v", ok, err)
	}
	q, err := ch.QueueDeclarePassive(name, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	if err != nil || q.Messages != 1 {
		t.Fatalf("queue after Declare and a publish: %+v, %v; want 1 message", q, err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	if !testenv.Await(30*time.Second, func() bool { return c.Stats().Swaps.Load() >= 1 }) {
		t.Fatalf("after 30s: %d batches applied, want 1 swapped in", c.Stats().Batches.Load())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after stop: %v", err)
	}
	s, err := be.Sample(context.Background(), "groups", 10)
	if err != nil || s.Count != 1 {
		t.Errorf("table groups: %+v, %v; want 1 row", s, err)
	}
}

// groupCounter counts the batches of the backend's largest group, and
// holds the first Apply or ApplyGroup until release is closed.
type groupCounter struct {
	*postgres.Backend
	release  chan struct{}
	once     sync.Once
	largest  atomic.Int64
	groups   atomic.Int64 // transactions: groups and batches applied alone
	finishes atomic.Int64 // FinishSnapshot calls
}

func (g *groupCounter) FinishSnapshot(ctx context.Context, t sink.Target, run string) (bool, error) {
	g.finishes.Add(1)
	return g.Backend.FinishSnapshot(ctx, t, run)
}

func (g *groupCounter) wait() { g.once.Do(func() { <-g.release }) }

func (g *groupCounter) Apply(ctx context.Context, b *sink.Batch, t sink.Target) (sink.Outcome, error) {
	g.wait()
	g.groups.Add(1)
	return g.Backend.Apply(ctx, b, t)
}

func (g *groupCounter) ApplyGroup(ctx context.Context, group []sink.Pending) ([]sink.Outcome, error) {
	g.wait()
	g.groups.Add(1)
	if n := int64(len(group)); n > g.largest.Load() {
		g.largest.Store(n)
	}
	return g.Backend.ApplyGroup(ctx, group)
}

// landGroups publishes bodies (message IDs 0, 1, …) to a quorum queue of
// its own and lands them with a consumer of maxDeliveries (0: the default)
// through a groupCounter over PostgreSQL, holding the first transaction
// until the broker has delivered them all, so that they come in groups.
// It stops the consumer once landed says so, or fails after 30 s.
func landGroups(t *testing.T, bodies [][]byte, maxDeliveries int, landed func(*sink.Stats) bool) (*groupCounter, *amqp.Channel, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	queue := fmt.Sprintf("dmfexport.test.sinkgroups.%d", time.Now().UnixNano())
	ch := testenv.AMQPChannel(t)
	testenv.DeleteOnCleanup(t, ch, queue, sink.DeadLetterName(queue))
	pg, err := postgres.Open(ctx, testenv.PostgresURL(), testenv.PostgresSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Close)
	be := &groupCounter{Backend: pg, release: make(chan struct{})}
	c := &sink.Consumer{Name: "t", URL: testenv.AMQPURL(), Queue: queue, Quorum: true, MaxDeliveries: maxDeliveries, Prefetch: 2 * len(bodies), Backend: be,
		Entities: map[string]sink.EntityOptions{"Groups": {Keys: []string{"ID"}}}}
	if err := c.Declare(ctx); err != nil {
		t.Fatal(err)
	}
	for i, body := range bodies {
		if err := ch.PublishWithContext(ctx, "", queue, false, false, amqp.Publishing{MessageId: fmt.Sprint(i), DeliveryMode: amqp.Persistent, Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s the queue still holds %d messages", q.Messages)
		}
		time.Sleep(20 * time.Millisecond) // the broker delivers
	}
	close(be.release)
	st := c.Stats()
	for !landed(st) {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: %d batches, %d swaps, %d dead letters", st.Batches.Load(), st.Swaps.Load(), st.DeadLetters.Load())
		}
		time.Sleep(20 * time.Millisecond) // the consumer lands them
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after stop: %v", err)
	}
	if n := be.largest.Load(); n < 2 {
		t.Errorf("largest group %d batches, want several", n)
	}
	return be, ch, queue
}

// TestConsumerSnapshotGroups: a snapshot delivered in groups is finished
// once per group, after the group's last batch of the run, and swapped
// in when its last group lands.
func TestConsumerSnapshotGroups(t *testing.T) {
	const batches = 10
	var bodies [][]byte
	for i := range batches {
		bodies = append(bodies, event("20260301T020000Z-aa", "Groups", sink.FullPush, i, i == batches-1, []string{"ID"}, map[string]any{"ID": fmt.Sprint(i)}))
	}
	be, _, _ := landGroups(t, bodies, 0, func(st *sink.Stats) bool { return st.Swaps.Load() == 1 })
	if f, g := be.finishes.Load(), be.groups.Load(); f != g {
		t.Errorf("FinishSnapshot called %d times for %d transactions of one run, want once each", f, g)
	}
	if s, err := be.Sample(context.Background(), "groups", 100); err != nil || s.Count != batches {
		t.Errorf("table groups: %+v, %v; want %d rows", s, err, batches)
	}
}

// TestConsumerGroups: batches delivered together land in one transaction,
// and one among them that the database refuses (an upsert without its key
// column) is dead-lettered on its own while the others land.
func TestConsumerGroups(t *testing.T) {
	const batches = 10
	var bodies [][]byte
	for i := range batches + 1 {
		body := event("20260301T020000Z-aa", "Groups", sink.IncrementalPush, i, i == batches, []string{"ID", "NAME"},
			map[string]any{"ID": fmt.Sprint(i), "NAME": "n"})
		if i == batches/2 {
			body = event("20260301T020000Z-aa", "Groups", sink.IncrementalPush, i, false, []string{"NAME"}, map[string]any{"NAME": "no key"})
		}
		bodies = append(bodies, body)
	}
	be, ch, queue := landGroups(t, bodies, 1, func(st *sink.Stats) bool { return st.Batches.Load() >= batches && st.DeadLetters.Load() >= 1 })
	if s, err := be.Sample(context.Background(), "groups", 100); err != nil || s.Count != batches {
		t.Errorf("table groups: %+v, %v; want %d rows", s, err, batches)
	}
	dead := testenv.Drain(t, ch, sink.DeadLetterName(queue))
	if len(dead) != 1 || dead[0].MessageId != fmt.Sprint(batches/2) {
		t.Fatalf("dead letters %v, want message %d only", dead, batches/2)
	}
	if _, err := sink.DecodeBatch(dead[0].Body, dead[0].ContentEncoding); err != nil {
		t.Errorf("the dead letter's body does not decode (%v): replay-dead could not land it after a fix", err)
	}
}
