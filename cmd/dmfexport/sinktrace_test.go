package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
)

// otlpReceiver is an OTLP/HTTP trace endpoint (http/protobuf) keeping every
// span it is sent.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		var msg coltrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(b, &msg)
		}
		if req.URL.Path != "/v1/traces" || err != nil {
			t.Errorf("OTLP receiver: %s %s: %v", req.Method, req.URL.Path, err)
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range msg.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
			}
		}
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *otlpReceiver) named(name string) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func spanAttr(s *tracepb.Span, key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			if v := a.Value.GetStringValue(); v != "" {
				return v
			}
			return fmt.Sprint(a.Value.GetIntValue())
		}
	}
	return ""
}

// TestSinkTrace runs dmfexport trigger and then dmfexport sink, as
// processes, both exporting spans over OTLP/HTTP to one receiver: each
// batch's "sink apply" span is in the run's trace, a child of the span
// that published its entity, with its transaction and snapshot swap as
// children (a batch landed in one transaction with the run's later batch
// leaves the swap to that one).
func TestSinkTrace(t *testing.T) {
	data, err := dmftest.TextFile(dmftest.TextFormat{}, []string{"ACCOUNT", "NAME"}, [][]string{{"C1", "a"}, {"C2", "b"}, {"C3", "c"}})
	if err != nil {
		t.Fatal(err)
	}
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"Traced": {{Name: "Customers V3", RefreshType: dmftest.FullPush, Data: data, Fields: []string{"ACCOUNT", "NAME"}}}},
		ExecutionTime: 100 * time.Millisecond,
	})
	defer sim.Close()
	otlp := newOTLPReceiver(t)
	name, _ := testQueue(t, "sinktrace")
	schema := testenv.PostgresSchema(t)
	conf := writeFile(t, t.TempDir(), "dmfexport.yaml", simBrokerConfig(name, "fo.traced", true)+fmt.Sprintf(`  - {name: traced, schedule: "@yearly", definition_group: Traced, legal_entity: USMF, exchange: %[1]s, routing_key: fo.traced, batch_size: 2}
sinks:
  - {name: dw, queue: %[1]s, exchange: %[1]s, bindings: [fo.traced], database_url: "${DATABASE_URL}", schema: %[2]s}
`, name, schema))
	env := []string{"DMFSIM_URL=" + sim.URL, "FO_TOKEN=" + dmftest.DefaultToken, "DATABASE_URL=" + testenv.PostgresURL(),
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + otlp.URL, "OTEL_BSP_SCHEDULE_DELAY=100"}

	if stdout, stderr, code := runBinary(t, env, "trigger", "--config", conf, "traced"); code != 0 {
		t.Fatalf("trigger: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	sinkCmd := exec.CommandContext(context.Background(), binary, "sink", "--config", conf, "--listen", "")
	sinkCmd.Env = append(os.Environ(), env...)
	var sinkOut bytes.Buffer
	sinkCmd.Stdout, sinkCmd.Stderr = &sinkOut, &sinkOut
	if err := sinkCmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = sinkCmd.Process.Kill()
		_ = sinkCmd.Wait()
	}()
	conn := testenv.PostgresConn(t)
	waitTables(t, func(table string) ([]map[string]any, error) { return readTable(conn, schema, table) }, map[string][]map[string]any{
		"customers_v3": fileRows([]string{"ACCOUNT", "NAME"}, [][]string{{"C1", "a"}, {"C2", "b"}, {"C3", "c"}})})
	if err := sinkCmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := sinkCmd.Wait(); err != nil {
		t.Fatalf("sink after SIGTERM: %v\n%s", err, sinkOut.String())
	}

	publish := otlp.named("publish Customers V3")
	if len(publish) != 1 {
		t.Fatalf("%d spans \"publish Customers V3\" received, want 1", len(publish))
	}
	applies := otlp.named("sink apply")
	if len(applies) != 2 {
		t.Fatalf("%d spans \"sink apply\" received, want 2 (one per batch)\nsink output:\n%s", len(applies), sinkOut.String())
	}
	children := map[string][]string{} // parent span ID → names
	for _, n := range []string{"sink transaction", "snapshot swap"} {
		for _, s := range otlp.named(n) {
			children[hex.EncodeToString(s.ParentSpanId)] = append(children[hex.EncodeToString(s.ParentSpanId)], n)
		}
	}
	for _, s := range applies {
		if !bytes.Equal(s.TraceId, publish[0].TraceId) || !bytes.Equal(s.ParentSpanId, publish[0].SpanId) {
			t.Errorf("sink apply of batch %s: trace %x parent %x, want the publish span's %x %x",
				spanAttr(s, "dmfexport.batch_index"), s.TraceId, s.ParentSpanId, publish[0].TraceId, publish[0].SpanId)
		}
		if s.Kind != tracepb.Span_SPAN_KIND_CONSUMER || spanAttr(s, "dmfexport.outcome") != "applied" || spanAttr(s, "dmfexport.sink") != "dw" ||
			spanAttr(s, "dmfexport.export") != "traced" || spanAttr(s, "dmfexport.table") != "customers_v3" {
			t.Errorf("sink apply span: kind %v, attributes %v", s.Kind, s.Attributes)
		}
		got := children[hex.EncodeToString(s.SpanId)]
		want := "[sink transaction snapshot swap]"
		if spanAttr(s, "dmfexport.batch_index") == "0" && spanAttr(s, "dmfexport.group_batches") == "2" {
			// Landed with batch 1, which asks for the swap.
			want = "[sink transaction]"
		}
		if fmt.Sprint(got) != want {
			t.Errorf("sink apply of batch %s: children %v, want %s", spanAttr(s, "dmfexport.batch_index"), got, want)
		}
	}
}
