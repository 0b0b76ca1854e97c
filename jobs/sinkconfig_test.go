package jobs

import (
	"slices"
	"strings"
	"testing"

	"github.com/dmfexport/dmfexport/sink"
)

// TestSinkConfig: a file of sinks only is valid, a sink takes the shared
// broker unless it names its own, and each mistake is reported with its
// line.
func TestSinkConfig(t *testing.T) {
	env := func(k string) (string, bool) { return map[string]string{"PGPASSWORD": "pw", "RMQ": "x"}[k], true }
	good := `broker: {url: "amqp://guest:guest@127.0.0.1:5672/"}
sinks:
  - name: dw
    queue: q1
    exchange: erp
    bindings: [fo.customers]
    database_url: postgres://u:${PGPASSWORD}@db.example.com/dw
    entities:
      "Customers V3": {keys: [ACCOUNT], mode: upsert}
  - name: other
    queue: q2
    quorum: false
    broker: {url: "amqp://u:${RMQ}@127.0.0.1:5673/"}
    database_url: postgres://127.0.0.1/dw
`
	cfg, err := ParseConfig("sinks.yaml", []byte(good), env)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Sinks) != 2 || len(cfg.Exports) != 0 {
		t.Fatalf("got %d sinks and %d exports, want 2 and 0", len(cfg.Sinks), len(cfg.Exports))
	}
	dw, _ := cfg.Sink("dw")
	if dw.BrokerURL.Reveal() != "amqp://guest:guest@127.0.0.1:5672/" || !dw.Quorum || dw.DatabaseURL.Reveal() != "postgres://u:pw@db.example.com/dw" ||
		!slices.Equal(dw.Entities["Customers V3"].Keys, []string{"ACCOUNT"}) || dw.Entities["Customers V3"].Mode != sink.Upsert {
		t.Errorf("sink dw decoded as %+v", dw)
	}
	if o, _ := cfg.Sink("other"); o.BrokerURL.Reveal() != "amqp://u:x@127.0.0.1:5673/" || o.Quorum {
		t.Errorf("sink other decoded as %+v", o)
	}

	bad := `sinks:
  - name: dw
    queue: q1
    bindings: [fo.x]
    database_url: postgres://u:secret@db.example.com/dw
    entities:
      "Customers V3": {mode: upsert}
      Vendors: {mode: merge}
  - name: dw
    queue: q2
`
	_, err = ParseConfig("sinks.yaml", []byte(bad), env)
	if err == nil {
		t.Fatal("a bad sinks section was accepted")
	}
	for _, want := range []string{
		"sinks.yaml:4:", "bindings without an exchange",
		"sinks.yaml:5:", "plain-text password",
		"sinks.yaml:7:", "upsert without keys",
		"sinks.yaml:8:", `unknown mode "merge"`,
		`duplicate sink name "dw"`,
		"no broker to consume from",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the problems do not say %q:\n%v", want, err)
		}
	}
}
