package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
)

// TestRunTrace runs an export with the SDK's in-memory exporter: the run is
// one trace with spans for the steps, each poll, the package URL, the
// download and each entity's publish, carrying rows, bytes and retries;
// every batch reaching RabbitMQ carries the entity span's traceparent, as
// an AMQP header and as the CloudEvents extension attribute.
func TestRunTrace(t *testing.T) {
	t.Parallel() // waits on the real broker: alongside the others
	sim := newSim(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"TR": {csvEntity("Customers V3", 1500), csvEntity("Vendors V2", 10)}},
		ExecutionTime: 300 * time.Millisecond,
		Throttle:      4, // every 4th F&O call answers 429: retries to count
	})
	defer sim.Close()
	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	exchange, queue := "dmfexport.test.trace."+suffix, "dmfexport.test.trace."+suffix
	ch := testenv.AMQPChannel(t)
	testenv.DeleteOnCleanup(t, ch, queue, exchange)
	u, _ := url.Parse(sim.URL)
	exp := &Export{
		Name: "traced", Schedule: "@daily", DefinitionGroup: "TR", PackageName: "TR", LegalEntity: "USMF",
		Enabled: true, Exchange: exchange, RoutingKey: "fo.trace", BatchSize: 1000,
		FO:     FOConfig{URL: u, Auth: AuthConfig{Options: azauth.Options{Method: "token", Token: Secret(dmftest.DefaultToken)}}, MaxRetries: 5, RetryBaseDelay: 10 * time.Millisecond, RetryMaxDelay: 50 * time.Millisecond, MaxThrottleWait: 5 * time.Second},
		Store:  StoreConfig{Type: "dir", Path: t.TempDir()},
		Broker: BrokerConfig{Type: "amqp", URL: Secret(testenv.AMQPURL()), ConfirmWindow: 16, Declare: true, Queues: []QueueConfig{{Name: queue, BindingKey: "fo.trace"}}},
		Poll:   PollConfig{Interval: 20 * time.Millisecond, MaxInterval: 50 * time.Millisecond, Deadline: 30 * time.Second, PackageURLTimeout: 10 * time.Second, RegisterTimeout: 10 * time.Second},
	}
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rec, err := (&Runner{TracerProvider: tp}).Run(ctx, exp, RunOptions{Trigger: "manual"})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	got := spans.GetSpans()
	byName := map[string][]tracetest.SpanStub{}
	traces := map[string]bool{}
	for _, s := range got {
		byName[s.Name] = append(byName[s.Name], s)
		traces[s.SpanContext.TraceID().String()] = true
	}
	if len(traces) != 1 {
		t.Errorf("the run made %d traces, want 1", len(traces))
	}
	attr := func(s tracetest.SpanStub, k string) (attribute.Value, bool) {
		for _, a := range s.Attributes {
			if string(a.Key) == k {
				return a.Value, true
			}
		}
		return attribute.Value{}, false
	}
	root := byName["run traced"]
	if len(root) != 1 {
		t.Fatalf("want one root span \"run traced\", got %d; spans: %v", len(root), names(got))
	}
	tests := []struct {
		name   string
		min    int    // spans of that name at least
		parent string // name of their parent span
		attrs  []string
	}{
		{"run traced", 1, "", []string{"dmfexport.export", "dmfexport.run_id", "dmfexport.trigger"}},
		{"export", 1, "run traced", []string{"dmfexport.retries"}},
		{"F&O ExportToPackage", 1, "export", nil},
		{"poll", 3, "export", nil},
		{"download", 1, "run traced", []string{"dmfexport.retries"}},
		{"package URL", 1, "download", []string{"dmfexport.retries"}},
		{"download package", 1, "download", []string{"dmfexport.bytes"}},
		{"GET package", 1, "download package", nil},
		{"unpack", 1, "run traced", nil},
		{"publish", 1, "run traced", []string{"dmfexport.rows", "dmfexport.batches"}},
		{"publish Customers V3", 1, "publish", []string{"dmfexport.rows", "dmfexport.batches", "dmfexport.bytes"}},
		{"publish Vendors V2", 1, "publish", []string{"dmfexport.rows"}},
	}
	ids := map[string]string{} // span ID → name
	for _, s := range got {
		ids[s.SpanContext.SpanID().String()] = s.Name
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := byName[tt.name]
			if len(ss) < tt.min {
				t.Fatalf("%d spans named %q, want at least %d; spans: %v", len(ss), tt.name, tt.min, names(got))
			}
			for _, s := range ss {
				if p := ids[s.Parent.SpanID().String()]; p != tt.parent {
					t.Errorf("span %q has parent %q, want %q", tt.name, p, tt.parent)
				}
				for _, k := range tt.attrs {
					if _, ok := attr(s, k); !ok {
						t.Errorf("span %q lacks attribute %s: %v", tt.name, k, s.Attributes)
					}
				}
			}
		})
	}
	if v, _ := attr(byName["publish Customers V3"][0], "dmfexport.rows"); v.AsInt64() != 1500 {
		t.Errorf("publish span counts %d rows, want 1500", v.AsInt64())
	}
	if v, _ := attr(root[0], "dmfexport.bytes"); v.AsInt64() != rec.PackageBytes || rec.PackageBytes == 0 {
		t.Errorf("run span counts %d package bytes, want %d", v.AsInt64(), rec.PackageBytes)
	}
	var retries int64
	for _, s := range got {
		if v, ok := attr(s, "dmfexport.retries"); ok && s.Name != "publish Customers V3" && s.Name != "publish Vendors V2" {
			retries += v.AsInt64()
		}
	}
	if retries == 0 {
		t.Errorf("no span counted the throttled F&O calls retried")
	}

	// Every batch carries its entity span's traceparent.
	want := map[string]string{}
	for _, e := range []string{"Customers V3", "Vendors V2"} {
		sc := byName["publish "+e][0].SpanContext
		want[e] = fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID())
	}
	deliveries, err := ch.Consume(queue, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		select {
		case d := <-deliveries:
			var body struct {
				TraceParent string `json:"traceparent"`
				Subject     string `json:"subject"`
			}
			if err := json.Unmarshal(d.Body, &body); err != nil {
				t.Fatal(err)
			}
			if h, _ := d.Headers["traceparent"].(string); h != want[body.Subject] || body.TraceParent != want[body.Subject] {
				t.Errorf("batch %s: traceparent header %q, CloudEvents attribute %q; want %q", d.MessageId, h, body.TraceParent, want[body.Subject])
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d batches, want 3", i)
		}
	}
}

func names(spans tracetest.SpanStubs) string {
	var n []string
	for _, s := range spans {
		n = append(n, s.Name)
	}
	return strings.Join(n, ", ")
}
