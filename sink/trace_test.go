package sink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/sink"
	"github.com/dmfexport/dmfexport/sink/postgres"
)

// withTraceParent sets (or, with nil, removes) the traceparent attribute of
// an event body.
func withTraceParent(body []byte, tp any) []byte {
	var ev map[string]any
	if err := json.Unmarshal(body, &ev); err != nil {
		panic(err)
	}
	if tp == nil {
		delete(ev, "traceparent")
	} else {
		ev["traceparent"] = tp
	}
	b, _ := json.Marshal(ev)
	return b
}

// TestConsumerTrace runs a consumer over a real queue into PostgreSQL with
// the SDK's in-memory exporter: every delivery is one "sink apply" span
// whose trace ID and parent span ID are those of the batch's traceparent
// (the AMQP header first, else the CloudEvents attribute; a malformed one
// is passed over and never fails the batch), carrying the outcome, with a
// child span per transaction attempt and per snapshot swap.
func TestConsumerTrace(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	queue := fmt.Sprintf("dmfexport.test.sinktrace.%d", time.Now().UnixNano())
	ch := testenv.AMQPChannel(t)
	testenv.DeleteOnCleanup(t, ch, queue, sink.DeadLetterName(queue))
	be, err := postgres.Open(ctx, testenv.PostgresURL(), testenv.PostgresSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	c := &sink.Consumer{Name: "traced", URL: testenv.AMQPURL(), Queue: queue, Quorum: true, MaxDeliveries: 2, Backend: be, TracerProvider: tp,
		Entities: map[string]sink.EntityOptions{"Groups": {Keys: []string{"ID"}}}}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}); err != nil {
		t.Fatal(err)
	}

	parent := func(n int) string { return fmt.Sprintf("00-%032x-%016x-01", 0xa0+n, 0xb0+n) }
	cols := []string{"ID", "NAME"}
	row := map[string]any{"ID": "1", "NAME": "a"}
	newer := event("20260301T030000Z-bb", "Parts", sink.FullPush, 0, true, cols, row)
	older := event("20260301T020000Z-aa", "Parts", sink.FullPush, 0, true, cols, row)
	groups := event("20260301T020000Z-aa", "Groups", sink.IncrementalPush, 0, true, cols, row, map[string]any{"ID": "2", "NAME": "b"})
	noKeys := event("20260301T020000Z-aa", "Other", sink.IncrementalPush, 0, true, cols, row)
	groups2 := event("20260301T040000Z-cc", "Groups", sink.IncrementalPush, 0, true, cols, row)
	tests := []struct {
		id       string
		header   any    // AMQP header traceparent; nil: none
		body     []byte // the event, its traceparent attribute set
		parent   string // the span's parent; "" a new trace
		outcomes []string
		attrs    map[string]any
		children []string // child spans of the last delivery
	}{
		{"header", parent(1), withTraceParent(newer, parent(2)), parent(1), []string{"applied"},
			map[string]any{"dmfexport.sink": "traced", "dmfexport.export": "e", "dmfexport.run_id": "20260301T030000Z-bb", "dmfexport.entity": "Parts",
				"dmfexport.batch_index": int64(0), "dmfexport.rows": int64(1), "dmfexport.table": "parts", "dmfexport.mode": "snapshot", "dmfexport.swapped": true},
			[]string{sink.SpanTransaction, sink.SpanSwap}},
		{"body attribute", nil, withTraceParent(groups, parent(3)), parent(3), []string{"applied"},
			map[string]any{"dmfexport.entity": "Groups", "dmfexport.rows": int64(2), "dmfexport.mode": "upsert", "dmfexport.table": "groups"},
			[]string{sink.SpanTransaction}},
		{"malformed header, body attribute", "00-zz-yy-01", withTraceParent(groups2, parent(4)), parent(4), []string{"applied"}, nil, []string{sink.SpanTransaction}},
		{"duplicate", []byte(parent(5)), withTraceParent(groups, nil), parent(5), []string{"duplicate"}, nil, []string{sink.SpanTransaction}},
		{"stale", "", withTraceParent(older, parent(0)[:20]), "", []string{"stale"}, map[string]any{"dmfexport.run_id": "20260301T020000Z-aa"}, []string{sink.SpanTransaction}},
		{"attribute not a string", int64(7), withTraceParent(groups, 42), "", []string{"duplicate"}, nil, []string{sink.SpanTransaction}},
		{"dead-lettered", parent(6), []byte("not json"), parent(6), []string{"requeued", "dead-lettered"}, nil, nil},
		{"upsert without keys", nil, withTraceParent(noKeys, parent(7)), parent(7), []string{"requeued", "dead-lettered"},
			map[string]any{"dmfexport.entity": "Other", "dmfexport.mode": "upsert"}, nil},
	}
	deliveries := 0
	for _, tt := range tests {
		var h amqp.Table
		if tt.header != nil {
			h = amqp.Table{"traceparent": tt.header}
		}
		if err := ch.PublishWithContext(ctx, "", queue, false, false, amqp.Publishing{MessageId: tt.id, Headers: h, DeliveryMode: amqp.Persistent, Body: tt.body}); err != nil {
			t.Fatal(err)
		}
		deliveries += len(tt.outcomes)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	applySpans := func() tracetest.SpanStubs {
		var out tracetest.SpanStubs
		for _, s := range spans.GetSpans() {
			if s.Name == sink.SpanApply {
				out = append(out, s)
			}
		}
		return out
	}
	if !testenv.Await(30*time.Second, func() bool { return len(applySpans()) >= deliveries }) {
		t.Fatalf("after 30s: %d %q spans, want %d", len(applySpans()), sink.SpanApply, deliveries)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after stop: %v", err)
	}

	all := spans.GetSpans()
	byID := map[string][]tracetest.SpanStub{}
	for _, s := range applySpans() {
		id := attrOf(s, "messaging.message.id").AsString()
		byID[id] = append(byID[id], s)
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			got := byID[tt.id]
			if len(got) != len(tt.outcomes) {
				t.Fatalf("%d %q spans of message %s, want %d", len(got), sink.SpanApply, tt.id, len(tt.outcomes))
			}
			for i, s := range got {
				p := s.Parent
				if tt.parent == "" {
					if p.IsValid() {
						t.Errorf("delivery %d: parent %s-%s, want a new trace", i, p.TraceID(), p.SpanID())
					}
				} else if want := fmt.Sprintf("00-%s-%s-01", s.SpanContext.TraceID(), p.SpanID()); want != tt.parent || !p.IsRemote() {
					t.Errorf("delivery %d: trace and parent %s (remote %v), want %s", i, want, p.IsRemote(), tt.parent)
				}
				if got := attrOf(s, "dmfexport.outcome").AsString(); got != tt.outcomes[i] {
					t.Errorf("delivery %d: outcome %q, want %q", i, got, tt.outcomes[i])
				}
				if failed := s.Status.Code == codes.Error; failed != (tt.outcomes[i] == "requeued" || tt.outcomes[i] == "dead-lettered") {
					t.Errorf("delivery %d (%s): status %v %q", i, tt.outcomes[i], s.Status.Code, s.Status.Description)
				}
				for k, want := range tt.attrs {
					if got := attrOf(s, k).AsInterface(); got != want {
						t.Errorf("delivery %d: attribute %s = %v, want %v", i, k, got, want)
					}
				}
			}
			last := got[len(got)-1]
			var children []string
			for _, s := range all {
				if s.Parent.SpanID() == last.SpanContext.SpanID() {
					children = append(children, s.Name)
					if s.SpanContext.TraceID() != last.SpanContext.TraceID() {
						t.Errorf("child %q is in another trace", s.Name)
					}
				}
			}
			if fmt.Sprint(children) != fmt.Sprint(tt.children) {
				t.Errorf("child spans %q, want %q", children, tt.children)
			}
		})
	}
}

func attrOf(s tracetest.SpanStub, key string) attribute.Value {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value
		}
	}
	return attribute.Value{}
}
