package sink_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/sink"
	"github.com/dmfexport/dmfexport/sink/postgres"
)

// scrape returns the value of one series m serves, and whether it is
// served.
func scrape(t *testing.T, m *sink.Metrics, series string) (float64, bool) {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	match := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if match == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(match[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v, true
}

// TestConsumerQueueDepth holds a consumer on its first batch with its
// database down (through a proxy): the queue's depth is still sampled,
// showing the batches waiting behind it, and drops to 0 once the database
// is back and they are applied. The dead-letter counter is served at 0
// from the start.
func TestConsumerQueueDepth(t *testing.T) {
	defer sink.SetQueueSampleInterval(50 * time.Millisecond)()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	queue := fmt.Sprintf("dmfexport.test.sinkdepth.%d", time.Now().UnixNano())
	ch := testenv.AMQPChannel(t)
	testenv.DeleteOnCleanup(t, ch, queue, sink.DeadLetterName(queue))
	u, err := url.Parse(testenv.PostgresURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.StartProxy(t, u.Host)
	u.Host = proxy.Addr()
	be, err := postgres.Open(ctx, u.String(), testenv.PostgresSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	m := sink.NewMetrics()
	c := &sink.Consumer{Name: "depth", URL: testenv.AMQPURL(), Queue: queue, Quorum: true, Prefetch: 1, Backend: be, Metrics: m,
		Entities: map[string]sink.EntityOptions{"Groups": {Keys: []string{"ID"}}}}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}); err != nil {
		t.Fatal(err)
	}
	const batches = 5
	for i := range batches {
		body := event(fmt.Sprintf("20260301T02000%dZ-aa", i), "Groups", sink.IncrementalPush, 0, true, []string{"ID"}, map[string]any{"ID": fmt.Sprint(i)})
		if err := ch.PublishWithContext(ctx, "", queue, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	proxy.SetDown(true)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	series := `dmfexport_sink_queue_messages{sink="depth"}`
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		if !testenv.Await(30*time.Second, ok) {
			v, served := scrape(t, m, series)
			t.Fatalf("after 30s, still not %s: %s = %v (served %v), %d batches applied", what, series, v, served, c.Stats().Batches.Load())
		}
	}
	waitFor("the batches behind the one in hand counted", func() bool {
		v, _ := scrape(t, m, series)
		return v == batches-1
	})
	for _, zero := range []string{
		`dmfexport_sink_dead_letters_total{sink="depth"}`,
		`dmfexport_sink_batches_total{entity="Groups",outcome="applied",sink="depth"}`,
		`dmfexport_sink_rows_total{entity="Groups",outcome="applied",sink="depth"}`,
		`dmfexport_sink_snapshot_swaps_total{entity="Groups",sink="depth"}`,
	} {
		if v, ok := scrape(t, m, zero); !ok || v != 0 {
			t.Errorf("%s = %v (served %v), want 0 from the start", zero, v, ok)
		}
	}
	if n := c.Stats().Batches.Load(); n != 0 {
		t.Errorf("%d batches applied with the database down, want 0", n)
	}
	proxy.SetDown(false)
	waitFor("drained", func() bool {
		v, _ := scrape(t, m, series)
		return v == 0 && c.Stats().Batches.Load() == batches
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after stop: %v", err)
	}
}
