package jobs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/runs"
)

// env is the environment the config tests see.
func env(name string) (string, bool) {
	v, ok := map[string]string{
		"FO_TOKEN":      "secret-token",
		"FO_URL":        "https://contoso.operations.dynamics.com",
		"MQ_PASSWORD":   "mq-secret",
		"EMPTY":         "",
		"RABBITMQ_HOST": "127.0.0.1",
	}[name]
	return v, ok
}

const validConfig = `fo:
  url: https://contoso.operations.dynamics.com/
  auth:
    method: token
    token: ${FO_TOKEN}
store:
  type: dir
  path: ./data
  prefix: /exports/
broker:
  type: amqp
  url: amqps://dmf:${MQ_PASSWORD}@mq.example.com:5671/prod
  confirm_window: 64
poll:
  interval: 5s
exports:
  - name: customers
    schedule: "0 2 * * *"
    definition_group: CustomerExport
    legal_entity: USMF
    exchange: fo.exports
  - name: vendors
    schedule: "CRON_TZ=Europe/Paris 30 0 3 * * *"
    definition_group: VendorExport
    package_name: Vendors
    legal_entity: DEMF
    reexecute: true
    enabled: false
    routing_key: erp.vendors
    batch_size: 1000
    jitter: 1m
    retention: {keep_runs: 5}
    poll:
      deadline: 30m
    broker:
      type: file
      path: /var/lib/batches
    fo:
      url: ${FO_URL}
`

func TestParseConfigValid(t *testing.T) {
	cfg, err := ParseConfig("/etc/dmfexport/dmfexport.yaml", []byte(validConfig), env)
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if len(cfg.Exports) != 2 {
		t.Fatalf("got %d exports, want 2", len(cfg.Exports))
	}
	c, v := cfg.Exports[0], cfg.Exports[1]
	checks := []struct {
		name      string
		got, want any
	}{
		{"customers url", c.FO.URL.String(), "https://contoso.operations.dynamics.com"},
		{"customers token", c.FO.Auth.Token.Reveal(), "secret-token"},
		{"customers store path", c.Store.Path, "/etc/dmfexport/data"},
		{"customers store prefix", c.Store.Prefix, "exports"},
		{"customers package name defaults to group", c.PackageName, "CustomerExport"},
		{"customers routing key default", c.RoutingKey, "fo.customers"},
		{"customers batch size unset (publisher's default)", c.BatchSize, 0},
		{"customers enabled default", c.Enabled, true},
		{"customers broker url", c.Broker.URL.Reveal(), "amqps://dmf:mq-secret@mq.example.com:5671/prod"},
		{"customers confirm window", c.Broker.ConfirmWindow, 64},
		{"customers poll interval", c.Poll.Interval, 5 * time.Second},
		{"customers request timeout unset (client's default)", c.FO.RequestTimeout, time.Duration(0)},
		{"customers poll deadline unset (runner's default)", c.Poll.Deadline, time.Duration(0)},
		{"customers package url timeout unset (client's default)", c.Poll.PackageURLTimeout, time.Duration(0)},
		{"vendors schedule", v.Schedule, "CRON_TZ=Europe/Paris 30 0 3 * * *"},
		{"vendors package name", v.PackageName, "Vendors"},
		{"vendors reexecute", v.ReExecute, true},
		{"vendors enabled", v.Enabled, false},
		{"vendors routing key", v.RoutingKey, "erp.vendors"},
		{"vendors batch size", v.BatchSize, 1000},
		{"vendors poll override", v.Poll.Deadline, 30 * time.Minute},
		{"vendors jitter", v.Jitter, time.Minute},
		{"vendors retention", v.Retention, RetentionConfig{KeepRuns: 5, MaxAge: DefaultRetentionMaxAge}},
		{"customers retention default", c.Retention, RetentionConfig{MaxAge: DefaultRetentionMaxAge}},
		{"vendors poll inherits interval", v.Poll.Interval, 5 * time.Second},
		{"vendors broker override type", v.Broker.Type, "file"},
		{"vendors broker path", v.Broker.Path, "/var/lib/batches"},
		{"vendors broker inherits window", v.Broker.ConfirmWindow, 64},
		{"vendors fo url from env", v.FO.URL.Host, "contoso.operations.dynamics.com"},
		{"vendors fo auth inherited", v.FO.Auth.Token.Reveal(), "secret-token"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	if e, ok := cfg.Export("vendors"); !ok || e.Name != "vendors" {
		t.Errorf("Export(vendors) = %v, %v", e, ok)
	}
	if _, ok := cfg.Export("nope"); ok {
		t.Error("Export(nope) found something")
	}
}

// TestParseConfigProblems checks each class of problem is reported at the
// right line and column with a useful hint.
func TestParseConfigProblems(t *testing.T) {
	const head = `fo:
  url: https://contoso.operations.dynamics.com
  auth:
    method: token
    token: ${FO_TOKEN}
store:
  path: ./data
broker:
  url: amqp://guest:guest@127.0.0.1:5672/
exports:
`
	// Line 11 is the first line after head.
	tests := []struct {
		name    string
		config  string
		want    []string // substrings of the rendered problems, in order
		wantLen int
	}{
		{"unknown key with suggestion", head + "  - name: a\n    shedule: '@daily'\n    definition_group: G\n    legal_entity: USMF\n",
			[]string{`x.yaml:12:5: exports[0](a).shedule: unknown key "shedule" (hint: did you mean "schedule"?)`, `x.yaml:11:5: exports[0](a).schedule: missing required key "schedule"`}, 2},
		{"unknown top-level key", "fo_url: x\n" + head + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF}\n",
			[]string{`x.yaml:1:1: fo_url: unknown key "fo_url"`}, 1},
		{"unknown key without suggestion", head + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF, colour: red}\n",
			[]string{`exports[0](a).colour: unknown key "colour" (hint: valid keys here: name, schedule`}, 1},
		{"bad cron", head + "  - name: a\n    schedule: '0 25 * * *'\n    definition_group: G\n    legal_entity: USMF\n",
			[]string{`x.yaml:12:15: exports[0](a).schedule: bad cron expression "0 25 * * *"`}, 1},
		{"cron that never fires", head + "  - name: a\n    schedule: '0 0 30 2 *'\n    definition_group: G\n    legal_entity: USMF\n",
			[]string{`x.yaml:12:15: exports[0](a).schedule: cron expression "0 0 30 2 *" never fires`}, 1},
		{"duplicate job name", head + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF}\n  - {name: a, schedule: '@daily', definition_group: H, legal_entity: USMF}\n",
			[]string{`x.yaml:12:5: exports[1].name: duplicate export name "a" (first at line 11)`}, 1},
		{"missing fields", head + "  - name: a\n",
			[]string{`x.yaml:11:5: exports[0](a).schedule: missing required key "schedule"`, `exports[0](a).definition_group: missing required key "definition_group"`, `exports[0](a).legal_entity: missing required key "legal_entity"`}, 3},
		{"bad URL", strings.Replace(head, "https://contoso.operations.dynamics.com", "contoso", 1) + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF}\n",
			[]string{`x.yaml:2:8: fo.url: "contoso" is not an http(s) URL`}, 1},
		{"plain-text token", strings.Replace(head, "${FO_TOKEN}", "eyJhbGciOi", 1) + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF}\n",
			[]string{`x.yaml:5:12: fo.auth.token: plain-text secret in the configuration file (hint: write token: ${FO_TOKEN}`}, 1},
		{"plain-text broker password", strings.Replace(head, "guest:guest", "app:hunter2", 1) + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF}\n",
			[]string{`x.yaml:9:8: broker.url: plain-text password`}, 1},
		{"http to non-loopback host", strings.Replace(head, "https://contoso", "http://contoso", 1) + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF}\n",
			[]string{`x.yaml:2:8: fo.url: http URL to non-loopback host "contoso.operations.dynamics.com" (hint: use https`}, 1},
		{"amqp to non-loopback host", strings.Replace(head, "guest:guest@127.0.0.1", "app:${MQ_PASSWORD}@mq.example.com", 1) + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF}\n",
			[]string{`x.yaml:9:8: broker.url: amqp URL to non-loopback host "mq.example.com"`}, 1},
		{"unset variable", strings.Replace(head, "${FO_TOKEN}", "${NOPE}", 1) + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF}\n",
			[]string{`x.yaml:5:12: fo.auth.token: environment variable NOPE is not set`}, 1},
		{"wrong types", head + "  - name: a\n    schedule: '@daily'\n    definition_group: G\n    legal_entity: USMF\n    batch_size: lots\n    enabled: maybe\n    poll: {interval: soon}\n",
			[]string{`x.yaml:15:17: exports[0](a).batch_size: "lots" is not a whole number`, `x.yaml:16:14: exports[0](a).enabled: "maybe" is not true or false`, `x.yaml:17:22: exports[0](a).poll.interval: "soon" is not a duration`}, 3},
		{"out of range", head + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF, batch_size: 0}\n",
			[]string{`exports[0](a).batch_size: 0 is out of range (hint: use a value from 1 to 1000000)`}, 1},
		{"bad name", head + "  - {name: 'a b', schedule: '@daily', definition_group: G, legal_entity: USMF}\n",
			[]string{`exports[0].name: "a b" is not a valid name`}, 1},
		{"duplicate key", head + "  - name: a\n    name: b\n    schedule: '@daily'\n    definition_group: G\n    legal_entity: USMF\n",
			[]string{`x.yaml:12:5: exports[0](a).name: key "name" given twice (first at line 11)`}, 1},
		{"unknown auth method", strings.Replace(head, "method: token", "method: password", 1) + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF}\n",
			[]string{`x.yaml:4:13: fo.auth.method: unknown auth method "password"`}, 1},
		{"yaml syntax", "fo:\n  url: [unclosed\n", []string{`x.yaml:`, `YAML: `}, 1},
		{"no exports", "fo:\n  url: https://x.example\n", []string{`x.yaml:1:1: exports: missing required key "exports"`}, 1},
		{"empty file", "", []string{`x.yaml: the file is empty`}, 1},
		{"environment limits out of range", head + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF, fo: {max_concurrent_exports: 0, max_requests_per_minute: 0}}\n",
			[]string{`exports[0](a).fo.max_concurrent_exports: 0 is out of range`, `exports[0](a).fo.max_requests_per_minute: 0 is out of range`}, 2},
		{"exports of one environment disagree on its limits", head + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF}\n  - {name: b, schedule: '@daily', definition_group: H, legal_entity: USMF, fo: {max_concurrent_exports: 8}}\n",
			[]string{`x.yaml:12:5: exports[1](b).fo: limits of environment https://contoso.operations.dynamics.com (max_concurrent_exports 8, max_requests_per_minute 600) differ from those export "a" gives it (4, 600) (hint: every export of one environment shares its limits: set them once, in the shared fo: section)`}, 1},
		{"shared section problem reported once", "poll: {interval: soon}\n" + head + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF}\n  - {name: b, schedule: '@daily', definition_group: H, legal_entity: USMF}\n",
			[]string{`x.yaml:1:18: poll.interval: "soon" is not a duration`}, 1},
		{"invalid container name not also missing", head + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF, store: {type: azblob, connection_string: '${FO_TOKEN}', container: Bad_Name}}\n",
			[]string{`exports[0](a).store.container: "Bad_Name" is not a valid container name`}, 1},
		{"default of a variable checked", head + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF, batch_size: '${NOPE:-lots}'}\n",
			[]string{`exports[0](a).batch_size: "lots" is not a whole number`}, 1},
		{"poll intervals inconsistent", head + "  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF, poll: {interval: 1m, max_interval: 10s}}\n",
			[]string{`exports[0](a).poll.max_interval: 10s is shorter than interval 1m0s`}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("conf/x.yaml", []byte(tt.config), env)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("ParseConfig error = %v, want a *ConfigError", err)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("problems do not contain %q:\n%s", w, msg)
				}
			}
			if len(ce.Problems) != tt.wantLen {
				t.Errorf("got %d problems, want %d:\n%s", len(ce.Problems), tt.wantLen, msg)
			}
		})
	}
}

func TestExpandEnv(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"plain", "plain", false},
		{"${FO_TOKEN}", "secret-token", false},
		{"a-${FO_TOKEN}-b", "a-secret-token-b", false},
		{"$$HOME", "$HOME", false},
		{"cost $5", "cost $5", false},
		{"${EMPTY}", "", false},
		{"${NOPE}", "", true},
		{"${FO_TOKEN", "", true},
		{"${1BAD}", "", true},
		{"${NOPE:-fallback}", "fallback", false},
		{"${EMPTY:-fallback}", "fallback", false},
		{"${FO_TOKEN:-fallback}", "secret-token", false},
		{"${NOPE:-}", "", false},
		{"x-${NOPE:-a b}-y", "x-a b-y", false},
		{"$${NOPE:-x}", "${NOPE:-x}", false},
		{"${1BAD:-x}", "", true},
	}
	for _, tt := range tests {
		got, err := expandEnv(tt.in, env)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("expandEnv(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := Secret("hunter2")
	for _, out := range []string{s.String(), s.LogValue().String()} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("secret printed: %q", out)
		}
	}
	if s.Reveal() != "hunter2" {
		t.Error("Reveal lost the value")
	}
}

// TestShippedConfigs loads the configurations the project ships, so they
// can never drift from what the loader accepts.
func TestShippedConfigs(t *testing.T) {
	lookup := func(name string) (string, bool) {
		return map[string]string{
			"DMFSIM_URL": "http://127.0.0.1:8089", "FO_TOKEN": "t", "RABBITMQ_PASSWORD": "p",
			"AZURE_CLIENT_SECRET": "s",
		}[name], true
	}
	for _, name := range []string{"example.yaml", "demo.yaml"} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join("..", "configs", name)
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := ParseConfig(p, data, lookup)
			if err != nil {
				t.Fatalf("%s does not load: %v", name, err)
			}
			if len(cfg.Exports) == 0 {
				t.Errorf("%s has no exports", name)
			}
		})
	}
}

// FuzzParseConfig checks the loader never panics and that whatever it
// accepts is fully valid.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(validConfig))
	f.Add([]byte("exports:\n  - name: a\n    schedule: '@daily'\n"))
	f.Add([]byte("a: &x {b: 1}\nfo: *x\nexports: [{<<: *x}]\n"))
	f.Add([]byte(aliasBomb(6) + "exports: [{<<: *a6}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig("f.yaml", data, env)
		if err != nil {
			var ce *ConfigError
			if errors.As(err, &ce) && len(ce.Problems) == 0 {
				t.Fatal("ConfigError without problems")
			}
			return
		}
		for _, e := range cfg.Exports {
			if e.Name == "" || e.FO.URL == nil || e.BatchSize < 0 || e.Poll.Interval < 0 {
				t.Fatalf("accepted an incomplete export: %+v", e)
			}
		}
	})
}

func TestParseConfigAuth(t *testing.T) {
	const tmpl = "fo:\n  url: https://contoso.operations.dynamics.com\n  auth:\n%sstore: {path: ./d}\nbroker: {type: file, path: ./b}\nexports:\n  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF}\n"
	tests := []struct {
		name    string
		auth    string
		want    string // problem substring; "" means valid
		wantLen int
	}{
		{"client secret", "    method: client_secret\n    tenant_id: t\n    client_id: c\n    client_secret: ${FO_TOKEN}\n", "", 0},
		{"certificate", "    method: client_certificate\n    tenant_id: t\n    client_id: c\n    certificate_path: app.pfx\n    certificate_password: ${FO_TOKEN}\n", "", 0},
		{"managed identity", "    method: managed_identity\n    managed_identity_client_id: c\n", "", 0},
		{"workload identity", "    method: workload_identity\n", "", 0},
		{"azure cli", "    method: azure_cli\n", "", 0},
		{"default", "    method: default\n", "", 0},
		{"plain-text client secret", "    method: client_secret\n    tenant_id: t\n    client_id: c\n    client_secret: abc123\n",
			`x.yaml:7:20: fo.auth.client_secret: plain-text secret in the configuration file (hint: write client_secret: ${AZURE_CLIENT_SECRET}`, 1},
		{"missing tenant", "    method: client_secret\n    client_id: c\n    client_secret: ${FO_TOKEN}\n", `x.yaml:4:5: fo.auth: auth method client_secret needs tenant_id`, 1},
		{"unknown method", "    method: client_secrets\n", `x.yaml:4:13: fo.auth.method: unknown auth method "client_secrets" (hint: did you mean "client_secret"?)`, 1},
		{"unknown method beside a plain-text secret", "    method: client_secrets\n    client_secret: abc123\n", `x.yaml:5:20: fo.auth.client_secret: plain-text secret in the configuration file`, 2},
		{"both identities", "    method: managed_identity\n    managed_identity_client_id: c\n    managed_identity_resource_id: r\n", `not both`, 1},
		{"http authority", "    method: default\n    authority_host: http://login.example\n", `authority_host "http://login.example" must be an https URL`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig("conf/x.yaml", []byte(fmt.Sprintf(tmpl, tt.auth)), env)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ParseConfig: %v", err)
				}
				if a := cfg.Exports[0].FO.Auth; strings.Contains(fmt.Sprintf("%v %+v", a, a), "secret-token") {
					t.Errorf("auth config prints a secret: %+v", a)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) || len(ce.Problems) != tt.wantLen {
				t.Errorf("ParseConfig error:\n%v\nwant %d problem(s), one containing %q", err, tt.wantLen, tt.want)
			}
		})
	}
}

func TestParseConfigStoreAndBroker(t *testing.T) {
	const tmpl = "fo:\n  url: https://contoso.operations.dynamics.com\n  auth: {method: default}\n%sbroker: {type: file, path: ./b}\nexports:\n  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF%s}\n"
	tests := []struct {
		name, store, export string
		want                string // problem substring; "" means valid
		check               func(*testing.T, Export)
	}{
		{"connection string", "store:\n  type: azblob\n  connection_string: ${FO_TOKEN}\n  container: exports\n  block_size: 16MiB\n  concurrency: 8\n", "", "",
			func(t *testing.T, e Export) {
				if e.Store.BlockSize != 16<<20 || e.Store.Concurrency != 8 || e.Store.ConnectionString.Reveal() != "secret-token" {
					t.Errorf("store %+v", e.Store)
				}
			}},
		{"account URL with managed identity", "store:\n  type: azblob\n  account_url: https://acct.blob.core.windows.net/\n  container: exports\n  auth: {method: managed_identity}\n", "", "",
			func(t *testing.T, e Export) {
				if e.Store.Auth.Method != "managed_identity" || e.Store.AccountURL == "" {
					t.Errorf("store %+v", e.Store)
				}
			}},
		{"SAS URL without container", "store:\n  type: azblob\n  sas_url: ${FO_TOKEN}\n", "", "", nil},
		{"two methods", "store:\n  type: azblob\n  sas_url: ${FO_TOKEN}\n  connection_string: ${FO_TOKEN}\n", "", "needs exactly one of account_url, connection_string, sas_url (2 given)", nil},
		{"plain-text connection string", "store:\n  type: azblob\n  connection_string: AccountKey=abc\n  container: c\n", "", "x.yaml:6:22: store.connection_string: plain-text secret", nil},
		{"no container", "store:\n  type: azblob\n  connection_string: ${FO_TOKEN}\n", "", `missing required key "container"`, nil},
		{"bad block size", "store:\n  type: azblob\n  connection_string: ${FO_TOKEN}\n  container: c\n  block_size: 10KiB\n", "", `"10KiB" is not a size from 1MiB to 4000MiB`, nil},
		{"unknown store type", "store:\n  type: s3\n", "", `unknown store type "s3"`, nil},
		{"compress default none", "store: {path: ./d}\n", "", "", func(t *testing.T, e Export) {
			if e.Store.Compress != "none" {
				t.Errorf("store.compress %q, want none", e.Store.Compress)
			}
		}},
		{"compress gzip, dir store", "store: {path: ./d, compress: gzip}\n", "", "", func(t *testing.T, e Export) {
			if e.Store.Compress != "gzip" {
				t.Errorf("store.compress %q, want gzip", e.Store.Compress)
			}
		}},
		{"compress gzip, azblob store", "store:\n  type: azblob\n  connection_string: ${FO_TOKEN}\n  container: exports\n  compress: gzip\n", "", "", func(t *testing.T, e Export) {
			if e.Store.Compress != "gzip" {
				t.Errorf("store.compress %q, want gzip", e.Store.Compress)
			}
		}},
		{"compress set by the export", "store: {path: ./d}\n", ", store: {compress: gzip}", "", func(t *testing.T, e Export) {
			if e.Store.Compress != "gzip" || e.Store.Path == "" {
				t.Errorf("store %+v, want the shared path with compress gzip", e.Store)
			}
		}},
		{"package default keep", "store: {path: ./d}\n", "", "", func(t *testing.T, e Export) {
			if e.Store.Package != PackageKeep {
				t.Errorf("store.package %q, want keep", e.Store.Package)
			}
		}},
		{"package skip, set by the export", "store: {path: ./d}\n", ", store: {package: skip}", "", func(t *testing.T, e Export) {
			if e.Store.Package != PackageSkip || e.Store.Path == "" {
				t.Errorf("store %+v, want the shared path with package skip", e.Store)
			}
		}},
		{"package unknown", "store:\n  path: ./d\n  package: drop\n", "", `x.yaml:6:12: store.package: unknown package setting "drop" (hint: use keep`, nil},
		{"compress zstd", "store:\n  path: ./d\n  compress: zstd\n", "", `x.yaml:6:13: store.compress: unknown compression "zstd" (hint: use none`, nil},
		{"compress not a string", "store:\n  path: ./d\n  compress: [gzip]\n", "", `x.yaml:6:13: store.compress:`, nil},
		{"compress wrong in an export", "store: {path: ./d}\n", ", store: {compress: yes}", `exports[0](a).store.compress: unknown compression "yes"`, nil},
		{"block size in a dir store", "store:\n  path: ./d\n  block_size: 16MiB\n", "", `x.yaml:6:15: store.block_size: block_size is used only by an azblob store`, nil},
		{"concurrency in a dir store", "store:\n  type: dir\n  path: ./d\n  concurrency: 8\n", "", `store.concurrency: concurrency is used only by an azblob store`, nil},
		{"account URL without auth", "store:\n  type: azblob\n  account_url: https://acct.blob.core.windows.net/\n  container: exports\n", "", `store.auth: missing required key "auth"`, nil},
		{"container too short", "store:\n  type: azblob\n  connection_string: ${FO_TOKEN}\n  container: ab\n", "", `"ab" is not a valid container name`, nil},
		{"container upper case", "store:\n  type: azblob\n  connection_string: ${FO_TOKEN}\n  container: Exports\n", "", `"Exports" is not a valid container name`, nil},
		{"container double hyphen", "store:\n  type: azblob\n  connection_string: ${FO_TOKEN}\n  container: my--exports\n", "", `"my--exports" is not a valid container name`, nil},
		{"container ends in hyphen", "store:\n  type: azblob\n  connection_string: ${FO_TOKEN}\n  container: exports-\n", "", `"exports-" is not a valid container name`, nil},
		{"container too long", "store:\n  type: azblob\n  connection_string: ${FO_TOKEN}\n  container: " + strings.Repeat("a", 64) + "\n", "", `is not a valid container name`, nil},
		{"container of 63", "store:\n  type: azblob\n  connection_string: ${FO_TOKEN}\n  container: " + strings.Repeat("a", 63) + "\n", "", "", nil},
		{"container with hyphens and digits", "store:\n  type: azblob\n  connection_string: ${FO_TOKEN}\n  container: d365-exports-2\n", "", "", nil},
		{"export settings", "store: {path: ./d}\n", ", compression: zstd, delimiter: ';', max_message_bytes: 8MiB, partial: publish", "",
			func(t *testing.T, e Export) {
				if e.Compression != "zstd" || e.Read.Delimiter != ";" || e.MaxMessageBytes != 8<<20 || e.Partial != "publish" {
					t.Errorf("export %+v", e)
				}
			}},
		{"tab delimiter", "store: {path: ./d}\n", ", delimiter: tab", "", func(t *testing.T, e Export) {
			if e.Read.Delimiter != "\t" {
				t.Errorf("delimiter %q", e.Read.Delimiter)
			}
		}},
		{"reading settings", "store: {path: ./d}\n", ", encoding: '1252', header: false, columns: [A, B], widths: [3, 4], text_qualifier: none, strict_quotes: true", "", func(t *testing.T, e Export) {
			want := runs.ReadSettings{Encoding: "windows-1252", NoHeader: true, Columns: []string{"A", "B"}, Widths: []int{3, 4}, TextQualifier: "none", StrictQuotes: true}
			if !reflect.DeepEqual(e.Read, want) {
				t.Errorf("read settings %+v, want %+v", e.Read, want)
			}
		}},
		{"entity settings override the export's key by key", "store: {path: ./d}\n", `, delimiter: ';', encoding: utf-8, entities: {"Customers V3": {encoding: utf-16le}, "Open orders": {header: false, columns: [A]}}`, "", func(t *testing.T, e Export) {
			want := map[string]runs.ReadSettings{
				"Customers V3": {Delimiter: ";", Encoding: "utf-16le"},
				"Open orders":  {Delimiter: ";", Encoding: "utf-8", NoHeader: true, Columns: []string{"A"}},
			}
			if !reflect.DeepEqual(e.Entities, want) {
				t.Errorf("entities %+v, want %+v", e.Entities, want)
			}
			if got := e.readSettings("Vendors V2"); !reflect.DeepEqual(got, e.Read) {
				t.Errorf("an entity without settings reads with %+v, want the export's %+v", got, e.Read)
			}
		}},
		{"unknown encoding", "store: {path: ./d}\n", ", encoding: klingon", `exports[0](a).encoding`, nil},
		{"unknown code page", "store: {path: ./d}\n", `, entities: {E: {encoding: '99999'}}`, `exports[0](a).entities."E".encoding`, nil},
		{"zero width", "store: {path: ./d}\n", ", widths: [10, 0]", `exports[0](a).widths[1]: 0 is out of range`, nil},
		{"widths not a list", "store: {path: ./d}\n", ", widths: 10", `widths: must be a non-empty list of widths`, nil},
		{"columns without header false", "store: {path: ./d}\n", ", columns: [A, B]", `columns is set but header is not false`, nil},
		{"columns twice", "store: {path: ./d}\n", ", header: false, columns: [A, A]", `column "A" given twice`, nil},
		{"widths and columns disagree", "store: {path: ./d}\n", `, entities: {E: {header: false, columns: [A, B], widths: [3]}}`, `1 widths for 2 columns`, nil},
		{"qualifier is the delimiter", "store: {path: ./d}\n", ", delimiter: ';', text_qualifier: ';'", `text qualifier ";" is also the delimiter`, nil},
		{"unknown entity key", "store: {path: ./d}\n", `, entities: {E: {encodng: utf-8}}`, `unknown key "encodng" (hint: did you mean "encoding"?)`, nil},
		{"bad compression", "store: {path: ./d}\n", ", compression: lz4", `unknown compression "lz4"`, nil},
		{"bad delimiter", "store: {path: ./d}\n", ", delimiter: ';;'", `is not one ASCII character`, nil},
		{"bad partial", "store: {path: ./d}\n", ", partial: maybe", `"maybe" is not fail or publish`, nil},
		{"absent files default empty", "store: {path: ./d}\n", "", "", func(t *testing.T, e Export) {
			if e.AbsentFiles != "empty" {
				t.Errorf("absent_files %q, want empty", e.AbsentFiles)
			}
		}},
		{"absent files fail", "store: {path: ./d}\n", ", absent_files: fail", "", func(t *testing.T, e Export) {
			if e.AbsentFiles != "fail" {
				t.Errorf("absent_files %q, want fail", e.AbsentFiles)
			}
		}},
		{"bad absent files", "store: {path: ./d}\n", ", absent_files: skip", `"skip" is not empty or fail`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig("conf/x.yaml", []byte(fmt.Sprintf(tmpl, tt.store, tt.export)), env)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("ParseConfig: %v", err)
				}
				if tt.check != nil {
					tt.check(t, cfg.Exports[0])
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseConfig error:\n%v\nwant one containing %q", err, tt.want)
			}
		})
	}
}

// TestLoadConfigStructure checks validate --no-env: a file whose secrets
// and URLs come from variables that are not set is valid in structure,
// defaults are used and checked, and every other mistake is still found.
func TestLoadConfigStructure(t *testing.T) {
	const fromEnv = `fo:
  url: ${FO_URL_NOT_SET}
  auth: {method: client_secret, tenant_id: "${TENANT_NOT_SET:-22222222-2222-2222-2222-222222222222}", client_id: 11111111-1111-1111-1111-111111111111, client_secret: "${SECRET_NOT_SET}"}
store: {type: azblob, connection_string: "${STORE_NOT_SET}", container: "${CONTAINER_NOT_SET:-runs}"}
broker: {url: "amqps://app:${PASSWORD_NOT_SET}@${HOST_NOT_SET:-mq.example.com}:5671/"}
poll: {interval: "${POLL_NOT_SET:-30s}"}
exports:
  - {name: a, schedule: '@daily', definition_group: G, legal_entity: USMF}
`
	tests := []struct {
		name    string
		config  string
		want    []string // substrings of the problems; none: valid
		wantLen int
	}{
		{"secrets and URLs from unset variables", fromEnv, nil, 0},
		{"a default is checked", strings.Replace(fromEnv, "${POLL_NOT_SET:-30s}", "${POLL_NOT_SET:-soon}", 1),
			[]string{`x.yaml:6:18: poll.interval: "soon" is not a duration`}, 1},
		{"structure mistakes still found", fromEnv + "  - {name: b, shedule: '@daily', definition_group: H, legal_entity: USMF}\n",
			[]string{`exports[1](b).shedule: unknown key "shedule"`, `exports[1](b).schedule: missing required key "schedule"`}, 2},
		{"plain-text secret still refused", strings.Replace(fromEnv, "${SECRET_NOT_SET}", "hunter2", 1),
			[]string{`fo.auth.client_secret: plain-text secret`}, 1},
		{"invalid container default", strings.Replace(fromEnv, "${CONTAINER_NOT_SET:-runs}", "${CONTAINER_NOT_SET:-Bad_Name}", 1),
			[]string{`store.container: "Bad_Name" is not a valid container name`}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.yaml")
			if err := os.WriteFile(path, []byte(tt.config), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := LoadConfigStructure(path)
			if tt.wantLen == 0 {
				if err != nil || len(cfg.Exports) != 1 {
					t.Fatalf("LoadConfigStructure = %v, want valid with 1 export", err)
				}
				if _, err := LoadConfig(path); err == nil {
					t.Errorf("LoadConfig of the same file with its variables unset: valid, want problems (the test's variables must be unset)")
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("LoadConfigStructure error = %v, want a *ConfigError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("problems do not contain %q:\n%v", w, err)
				}
			}
			if len(ce.Problems) != tt.wantLen {
				t.Errorf("got %d problems, want %d:\n%v", len(ce.Problems), tt.wantLen, err)
			}
		})
	}
}
