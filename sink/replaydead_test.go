package sink_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/sink"
	"github.com/dmfexport/dmfexport/sink/postgres"
)

// TestReplayDead dead-letters an incremental batch of an entity without
// keys, gives the entity keys, puts the batch back with ReplayDead and
// checks it lands: same message, the dead-letter headers gone, the replay
// marked, applied once.
func TestReplayDead(t *testing.T) {
	ctx := context.Background()
	queue := fmt.Sprintf("dmfexport.test.replaydead.%d", time.Now().UnixNano())
	ch := testenv.AMQPChannel(t)
	testenv.DeleteOnCleanup(t, ch, queue, sink.DeadLetterName(queue))
	schema := testenv.PostgresSchema(t)
	be, err := postgres.Open(ctx, testenv.PostgresURL(), schema)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	c := &sink.Consumer{Name: "t", URL: testenv.AMQPURL(), Queue: queue, Quorum: true, MaxDeliveries: 1, Backend: be}
	// consume runs c until want batches are applied and dead dead-lettered.
	consume := func(want, dead int64) {
		t.Helper()
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(cctx) }()
		if !testenv.Await(30*time.Second, func() bool {
			return c.Stats().Batches.Load() >= want && c.Stats().DeadLetters.Load() >= dead
		}) {
			t.Fatalf("after 30s: %d batches, %d dead letters; want %d and %d", c.Stats().Batches.Load(), c.Stats().DeadLetters.Load(), want, dead)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}); err != nil {
		t.Fatal(err)
	}
	body := event("20260301T020000Z-aa", "Groups", sink.IncrementalPush, 0, true, []string{"ID", "NAME"}, map[string]any{"ID": "1", "NAME": "a"})
	if err := ch.PublishWithContext(ctx, "", queue, false, false, amqp.Publishing{MessageId: "m1", DeliveryMode: amqp.Persistent,
		Headers: amqp.Table{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, Body: body}); err != nil {
		t.Fatal(err)
	}
	consume(0, 1)

	// The fix: the entity gains its keys.
	c.Entities = map[string]sink.EntityOptions{"Groups": {Keys: []string{"ID"}}}
	n, err := sink.ReplayDead(ctx, testenv.AMQPURL(), queue)
	if err != nil || n != 1 {
		t.Fatalf("ReplayDead = %d, %v; want 1 moved", n, err)
	}
	if n, err := sink.DeadLetters(ctx, testenv.AMQPURL(), queue); err != nil || n != 0 {
		t.Errorf("dead letters after replay: %d, %v; want 0", n, err)
	}
	d, ok, err := ch.Get(queue, false)
	if err != nil || !ok {
		t.Fatalf("get the replayed batch: %v, %v", ok, err)
	}
	if d.MessageId != "m1" || string(d.Body) != string(body) || d.Headers["traceparent"] == nil || d.Headers[sink.ReplayedHeader] == nil ||
		d.Headers[sink.ReasonHeader] != nil || d.Headers[sink.SinkHeader] != nil {
		t.Errorf("replayed message %s, headers %v: want the same ID and body, traceparent kept, the reason gone, the replay marked", d.MessageId, d.Headers)
	}
	if err := d.Nack(false, true); err != nil {
		t.Fatal(err)
	}
	consume(1, 1)
	conn := testenv.PostgresConn(t)
	var rows int
	if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %q.groups WHERE "ID" = '1' AND "NAME" = 'a'`, schema)).Scan(&rows); err != nil || rows != 1 {
		t.Errorf("table groups: %d rows of the batch (%v), want 1", rows, err)
	}
}
