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

// TestSinkSQLiteDatabase: database_url takes sqlite:PATH, a file relative
// to the configuration file or absolute, and refuses what is not a plain
// file path, and a schema beside it.
func TestSinkSQLiteDatabase(t *testing.T) {
	env := func(k string) (string, bool) { return map[string]string{"DB": "sqlite:from/env.db"}[k], true }
	conf := func(db, extra string) string {
		return "broker: {url: \"amqp://guest:guest@127.0.0.1:5672/\"}\nsinks:\n  - name: dw\n    queue: q\n    database_url: " + db + "\n" + extra
	}
	for _, tc := range []struct {
		name, db, extra string
		want            string // the absolute path, or a problem
	}{
		{"relative to the file", "sqlite:data/dw.db", "", "/etc/dmfexport/data/dw.db"},
		{"parent directory", "sqlite:../var/dw.db", "", "/etc/var/dw.db"},
		{"absolute", "sqlite:/var/lib/dmfexport/dw.db", "", "/var/lib/dmfexport/dw.db"},
		{"absolute, URL style", "sqlite:///var/lib/dw.db", "", "/var/lib/dw.db"},
		{"from the environment", "${DB}", "", "/etc/dmfexport/from/env.db"},
		{"no path", `"sqlite:"`, "", "sqlite: without a file name"},
		{"a directory", "sqlite:data/", "", "sqlite: without a file name"},
		{"in memory", `"sqlite::memory:"`, "", "is not a plain file path"},
		{"options", "sqlite:dw.db?mode=ro", "", "is not a plain file path"},
		{"a host", "sqlite://db.example.com/dw.db", "", "names a host"},
		{"another scheme", "mysql://db/dw", "", "not a postgres:// URL nor sqlite:PATH"},
		{"a schema", "sqlite:dw.db", "    schema: fo\n", "a schema with an SQLite database"},
		{"tables differing in case", "sqlite:dw.db", "    entities:\n      A: {table: Customers}\n      B: {table: customers}\n",
			`lands in table "customers" as entity "A" does`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig("/etc/dmfexport/sinks.yaml", []byte(conf(tc.db, tc.extra)), env)
			if !strings.HasPrefix(tc.want, "/") {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("database_url %s: %v, want a problem saying %q", tc.db, err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := &cfg.Sinks[0]
			if s.SQLitePath() != tc.want {
				t.Errorf("database_url %s: SQLite file %q, want %q", tc.db, s.SQLitePath(), tc.want)
			}
		})
	}
	cfg, err := ParseConfig("/etc/dmfexport/sinks.yaml", []byte(conf("postgres://127.0.0.1/dw", "")), env)
	if err != nil || cfg.Sinks[0].SQLitePath() != "" {
		t.Errorf("a postgres:// URL: SQLite file %q (%v), want none", cfg.Sinks[0].SQLitePath(), err)
	}
}

// TestSetDatabaseFromEnv: the demo's DATABASE_URL is checked as
// database_url is, its password allowed since it comes from the
// environment.
func TestSetDatabaseFromEnv(t *testing.T) {
	for _, tc := range []struct{ value, want, problem string }{
		{"postgres://u:pw@db.example.com/dw", "postgres://u:pw@db.example.com/dw", ""},
		{"sqlite:x/dw.db", "/srv/dmfexport/x/dw.db", ""},
		{"mysql://db/dw", "", "not a postgres:// URL nor sqlite:PATH"},
		{"postgres://u:pw@db.example.com/dw?sslmode=disable", "", "sslmode=disable"},
	} {
		s := SinkConfig{Name: "demo", Schema: "fo", DatabaseURL: "sqlite:/old.db"}
		err := s.SetDatabaseFromEnv("DATABASE_URL", func(string) (string, bool) { return tc.value, true }, "/srv/dmfexport")
		if tc.problem != "" {
			if err == nil || !strings.Contains(err.Error(), tc.problem) || s.DatabaseURL != "sqlite:/old.db" {
				t.Errorf("DATABASE_URL=%s: %v, database %q; want a problem saying %q and the database kept", tc.value, err, s.DatabaseURL, tc.problem)
			}
			continue
		}
		got := s.SQLitePath()
		if got == "" {
			got = s.DatabaseURL.Reveal()
		}
		if err != nil || got != tc.want || (s.SQLitePath() != "") == (s.Schema == "fo") {
			t.Errorf("DATABASE_URL=%s: %v, database %q, schema %q; want %q, the schema kept for PostgreSQL only", tc.value, err, got, s.Schema, tc.want)
		}
	}
}
