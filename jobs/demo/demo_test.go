package demo

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmfexport/dmfexport/internal/testenv"
)

// closedBrokerURL is an AMQP URL on a loopback port that nothing listens
// on: a port just released by a listener of this test.
func closedBrokerURL(t *testing.T) string {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return "amqp://guest:guest@" + addr + "/"
}

// demoConfig is a demo configuration with one export publishing to
// brokerURL.
func demoConfig(brokerURL string) string {
	return `fo:
  url: ${DMFSIM_URL}
  auth: {method: token, token: "${FO_TOKEN}"}
store: {path: ./store}
broker:
  url: ` + brokerURL + `
exports:
  - name: demo
    schedule: "*/15 * * * *"
    definition_group: DemoExport
    package_name: DemoExport
    legal_entity: USMF
    exchange: dmfexport.demo
    routing_key: fo.demo
`
}

func TestStart(t *testing.T) {
	tests := []struct {
		name       string
		config     string // a file's content; "" runs the built-in configuration
		wantBroker string // the export's broker type after Start
		wantOut    string
		wantErr    string
	}{
		{name: "built-in configuration", wantBroker: "amqp", wantOut: "F&O simulator listening on"},
		{name: "broker answers", config: demoConfig(testenv.AMQPURL()), wantBroker: "amqp"},
		{name: "no broker answers", config: demoConfig(closedBrokerURL(t)), wantBroker: "file", wantOut: "No RabbitMQ answered for export demo"},
		{name: "configuration file missing", config: "-", wantErr: "leave out --config and DMFEXPORT_CONFIG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := BuiltinConfig
			if tt.config != "" {
				path = filepath.Join(dir, "demo.yaml")
			}
			if tt.config != "" && tt.config != "-" {
				if err := os.WriteFile(path, []byte(tt.config), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			fallback := filepath.Join(dir, "batches")
			d, err := Start(context.Background(), Options{Config: path, FallbackDir: fallback, Out: &out})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Start: got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			defer d.Close()
			if len(d.Exports) == 0 {
				t.Fatalf("Start: no exports in %s", d.Config.Path)
			}
			e := d.Exports[0]
			if e.Broker.Type != tt.wantBroker {
				t.Errorf("export %s: broker type %q, want %q; output:\n%s", e.Name, e.Broker.Type, tt.wantBroker, out.String())
			}
			if tt.wantBroker == "file" && e.Broker.Path != fallback {
				t.Errorf("export %s: batches go to %q, want the fallback folder %q", e.Name, e.Broker.Path, fallback)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("output lacks %q:\n%s", tt.wantOut, out.String())
			}
			if host := e.FO.URL.Host; !strings.HasPrefix(host, "127.0.0.1:") {
				t.Errorf("export %s: F&O at %s, want the simulator on loopback", e.Name, e.FO.URL)
			}
			if tt.config == "" && d.Config.Path != BuiltinConfig {
				t.Errorf("configuration path %q, want %q", d.Config.Path, BuiltinConfig)
			}
		})
	}
}
