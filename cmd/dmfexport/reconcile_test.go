package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/sink"
)

// landed is a landing done by landRun: the configuration, the
// environment its commands need, the sink's queue and database, and what
// the sink's /metrics served once the tables were equal.
type landed struct {
	conf, queue string
	env         []string
	db          landingDB
	metrics     string
}

// landingDB is the database a test's sink lands in.
type landingDB struct {
	url    string // the sink's database_url
	schema string // PostgreSQL's; "" for SQLite
	// rows reads a table ordered by its first column, without the
	// metadata columns.
	rows func(table string) ([]map[string]any, error)
	// table is a table's name, quoted and qualified, for SQL.
	table func(name string) string
	// exec runs SQL; query returns the first column of its first row.
	exec  func(sql string) error
	query func(sql string) (string, error)
}

// databases are the kinds of database a sink lands in, each giving a new
// database for a test.
var databases = []struct {
	name string
	open func(t *testing.T) landingDB
}{
	{"postgres", func(t *testing.T) landingDB {
		schema, conn := testenv.PostgresSchema(t), testenv.PostgresConn(t)
		ctx := context.Background()
		return landingDB{url: testenv.PostgresURL(), schema: schema,
			rows:  func(table string) ([]map[string]any, error) { return readTable(conn, schema, table) },
			table: func(name string) string { return pgx.Identifier{schema, name}.Sanitize() },
			exec:  func(q string) error { _, err := conn.Exec(ctx, q); return err },
			query: func(q string) (s string, err error) { err = conn.QueryRow(ctx, q).Scan(&s); return s, err },
		}
	}},
	{"sqlite", func(t *testing.T) landingDB {
		path := filepath.Join(t.TempDir(), "sink.db")
		var db *sql.DB
		// The file exists once the sink opened it.
		open := func() (*sql.DB, error) {
			if db != nil {
				return db, nil
			}
			if _, err := os.Stat(path); err != nil {
				return nil, err
			}
			d, err := sql.Open("sqlite", "file:"+path)
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { _ = d.Close() })
			db = d
			return db, nil
		}
		return landingDB{url: "sqlite:" + path,
			rows: func(table string) ([]map[string]any, error) {
				db, err := open()
				if err != nil {
					return nil, err
				}
				return readSQLiteTable(db, table)
			},
			table: func(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` },
			exec: func(q string) error {
				db, err := open()
				if err == nil {
					_, err = db.Exec(q)
				}
				return err
			},
			query: func(q string) (s string, err error) {
				db, err := open()
				if err == nil {
					err = db.QueryRow(q).Scan(&s)
				}
				return s, err
			},
		}
	}},
}

// landRun exports one run (a FullPush entity of 5 rows and an
// IncrementalPush one of 3, batches of 2 rows) through RabbitMQ, runs the
// sink binary until both tables hold their rows, and stops it. Without
// groupKeys the incremental entity has no keys: its 2 batches are
// dead-lettered at their first delivery, and only the other table waited
// for.
func landRun(t *testing.T, db landingDB, groupKeys bool) landed {
	t.Helper()
	cust, err := dmftest.TextFile(dmftest.TextFormat{}, []string{"ACCOUNT", "NAME"}, [][]string{{"C1", "a"}, {"C2", "b"}, {"C3", "c"}, {"C4", "d"}, {"C5", "e"}})
	if err != nil {
		t.Fatal(err)
	}
	groups, err := dmftest.TextFile(dmftest.TextFormat{}, []string{"GROUPID", "DESCRIPTION"}, [][]string{{"10", "x"}, {"20", "y"}, {"30", "z"}})
	if err != nil {
		t.Fatal(err)
	}
	sim := dmftest.NewServer(dmftest.Options{
		Projects: map[string][]dmftest.Entity{"Land": {
			{Name: "Customers V3", RefreshType: dmftest.FullPush, Data: cust, Fields: []string{"ACCOUNT", "NAME"}},
			{Name: "Customer groups", RefreshType: dmftest.IncrementalPush, Data: groups, Fields: []string{"GROUPID", "DESCRIPTION"}},
		}},
		ExecutionTime: 100 * time.Millisecond,
	})
	t.Cleanup(sim.Close)
	name, _ := testQueue(t, "land")
	l := landed{queue: name, db: db}
	schema := ""
	if db.schema != "" {
		schema = "\n    schema: " + db.schema
	}
	l.conf = writeFile(t, t.TempDir(), "dmfexport.yaml", simBrokerConfig(name, "fo.land.#", true)+fmt.Sprintf(`  - {name: land, schedule: "@yearly", definition_group: Land, legal_entity: USMF, exchange: %[1]s, routing_key: fo.land.v1, batch_size: 2}
sinks:
  - name: dw
    queue: %[1]s
    exchange: %[1]s
    bindings: ["fo.land.#"]
    database_url: ${DATABASE_URL}%[2]s
    max_deliveries: 1
    entities:
      "Customer groups": {keys: [GROUPID]}
`, name, schema))
	if !groupKeys {
		b, _ := os.ReadFile(l.conf)
		writeFile(t, filepath.Dir(l.conf), "dmfexport.yaml", strings.Replace(string(b), "{keys: [GROUPID]}", "{}", 1))
	}
	l.env = []string{"DMFSIM_URL=" + sim.URL, "FO_TOKEN=" + dmftest.DefaultToken, "DATABASE_URL=" + db.url}
	if stdout, stderr, code := runBinary(t, l.env, "trigger", "--config", l.conf, "land"); code != 0 {
		t.Fatalf("trigger: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	stop := startSink(t, l)
	want := map[string][]map[string]any{
		"customers_v3":    fileRows([]string{"ACCOUNT", "NAME"}, [][]string{{"C1", "a"}, {"C2", "b"}, {"C3", "c"}, {"C4", "d"}, {"C5", "e"}}),
		"customer_groups": fileRows([]string{"GROUPID", "DESCRIPTION"}, [][]string{{"10", "x"}, {"20", "y"}, {"30", "z"}}),
	}
	if !groupKeys {
		delete(want, "customer_groups")
		waitDeadLetters(t, l.queue, 2)
	}
	waitTables(t, db.rows, want)
	// A batch's rows are in its table once its transaction commits; the
	// sink counts it a moment later. Keep the scrape that counts all five.
	addr := stop.addr()
	if !testenv.Await(10*time.Second, func() bool {
		l.metrics = scrape(t, addr)
		return sinkBatchesCounted(l.metrics) >= 5
	}) {
		t.Errorf("the sink's /metrics counts %v of the 5 batches applied or dead-lettered", sinkBatchesCounted(l.metrics))
	}
	stop.stop()
	return l
}

// sinkBatchesCounted adds up the batches a sink's /metrics counts: taken
// from the queue with any outcome, or dead-lettered.
func sinkBatchesCounted(metrics string) float64 {
	var n float64
	for line := range strings.Lines(metrics) {
		if !strings.HasPrefix(line, "dmfexport_sink_batches_total{") && !strings.HasPrefix(line, "dmfexport_sink_dead_letters_total{") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			n += v
		}
	}
	return n
}

// runningSink is a sink process started by startSink.
type runningSink struct {
	t       *testing.T
	out     *testenv.SyncBuffer
	stopped func() string
}

// stop stops the sink with SIGTERM and returns its output.
func (s runningSink) stop() string { return s.stopped() }

// addr waits for the sink's operations listener and returns its address.
func (s runningSink) addr() string {
	s.t.Helper()
	re := regexp.MustCompile(`"msg":"operations listener","addr":"([^"]+)"`)
	var addr string
	if testenv.Await(10*time.Second, func() bool {
		if m := re.FindStringSubmatch(s.out.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	}) {
		return addr
	}
	s.t.Fatalf("the sink logged no operations listener:\n%s", s.out.String())
	return ""
}

// scrape returns what /metrics at addr serves.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// startSink starts the sink binary on l's configuration, its operations
// listener on a free port, with extra arguments.
func startSink(t *testing.T, l landed, extra ...string) runningSink {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), binary, append([]string{"sink", "--config", l.conf, "--log-format", "json", "--listen", "127.0.0.1:0"}, extra...)...)
	cmd.Env = append(os.Environ(), l.env...)
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() string {
		if stopped {
			return out.String()
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("sink after SIGTERM: %v\n%s", err, out.String())
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("sink still running 20s after SIGTERM\n%s", out.String())
		}
		return out.String()
	}
	t.Cleanup(func() { stop() })
	return runningSink{t: t, out: out, stopped: stop}
}

// TestReconcile lands a run END TO END, in PostgreSQL and in SQLite, and
// checks that reconcile finds export and sink equal (exit 0), then that a
// batch missing from the ledger, and rows deleted from a snapshot table,
// each give exit 1 naming the run and the entity.
func TestReconcile(t *testing.T) {
	t.Parallel()
	for _, db := range databases {
		t.Run(db.name, func(t *testing.T) { testReconcile(t, db.open(t)) })
	}
}

func testReconcile(t *testing.T, db landingDB) {
	l := landRun(t, db, true)
	for _, w := range []string{
		`dmfexport_sink_batches_total{entity="Customers V3",outcome="applied",sink="dw"} 3`,
		`dmfexport_sink_rows_total{entity="Customers V3",outcome="applied",sink="dw"} 5`,
		`dmfexport_sink_batches_total{entity="Customer groups",outcome="applied",sink="dw"} 2`,
		`dmfexport_sink_rows_total{entity="Customer groups",outcome="applied",sink="dw"} 3`,
		`dmfexport_sink_snapshot_swaps_total{entity="Customers V3",sink="dw"} 1`,
		`dmfexport_sink_apply_seconds_count{sink="dw"} 5`,
		`dmfexport_sink_lag_seconds{entity="Customers V3",sink="dw"}`,
	} {
		if !strings.Contains(l.metrics, w) {
			t.Errorf("the sink's /metrics lacks %s", w)
		}
	}
	textfile := t.TempDir() + "/reconcile.prom"
	stdout, stderr, code := runBinary(t, l.env, "reconcile", "--config", l.conf, "--textfile", textfile)
	if code != 0 {
		t.Fatalf("reconcile after a full landing: exit %d, want 0\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	t.Logf("reconcile:\n%s", stdout)
	for _, w := range []string{"Customers V3  3        5     3                5             equal", "Customer groups  2        3     2                3             equal"} {
		if !strings.Contains(strings.Join(strings.Fields(stdout), " "), strings.Join(strings.Fields(w), " ")) {
			t.Errorf("reconcile output lacks %q:\n%s", w, stdout)
		}
	}
	prom, err := os.ReadFile(textfile)
	if err != nil || !strings.Contains(string(prom), `dmfexport_sink_reconcile_difference_rows{entity="Customers V3",export="land",sink="dw"} 0`) {
		t.Errorf("textfile (%v):\n%s", err, prom)
	}
	run, err := db.query("SELECT run FROM " + db.table("dmfexport_ledger") + " LIMIT 1")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, sql, entity, want string
	}{
		{"a batch missing from the ledger", `DELETE FROM %s WHERE entity = 'Customer groups' AND batch_index = 1`, "Customer groups",
			"DIFFERS: +1 batches not in the ledger; +1 rows not in the ledger"},
		{"rows deleted from a snapshot table", `DELETE FROM %s WHERE "ACCOUNT" IN ('C1', 'C2')`, "Customers V3",
			"DIFFERS: the table holds 3 rows, its snapshot put in 5"},
	}
	tables := map[string]string{"Customer groups": "dmfexport_ledger", "Customers V3": "customers_v3"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := db.exec(fmt.Sprintf(tt.sql, db.table(tables[tt.entity]))); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, code := runBinary(t, l.env, "reconcile", "--config", l.conf, "land")
			if code != 1 {
				t.Fatalf("exit %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
			var line string
			for _, ln := range strings.Split(stdout, "\n") {
				if strings.Contains(ln, tt.entity) {
					line = strings.Join(strings.Fields(ln), " ")
				}
			}
			if !strings.Contains(line, run) || !strings.Contains(line, tt.want) {
				t.Errorf("line of %s: %q, want run %s and %q\n%s", tt.entity, line, run, tt.want, stdout)
			}
			if !strings.Contains(stderr, "differ between export and sink") {
				t.Errorf("stderr: %s", stderr)
			}
		})
	}
}

// waitDeadLetters waits up to 30 seconds for queue's dead-letter queue to
// hold n batches.
func waitDeadLetters(t *testing.T, queue string, n int) {
	t.Helper()
	var got int
	var err error
	if !testenv.Await(30*time.Second, func() bool {
		got, err = sink.DeadLetters(context.Background(), testenv.AMQPURL(), queue)
		return err == nil && got == n
	}) {
		t.Fatalf("dead-letter queue of %s: %d batches (%v) after 30s, want %d", queue, got, err, n)
	}
}

// TestSinkReplayDead lands a run whose incremental entity has no keys, so
// its batches are dead-lettered; reconcile reports them missing; the
// entity is given keys, "sink replay-dead" moves them back, and the sink
// lands them: the table equals the file and reconcile exits 0. In
// PostgreSQL and in SQLite.
func TestSinkReplayDead(t *testing.T) {
	t.Parallel()
	for _, db := range databases {
		t.Run(db.name, func(t *testing.T) { testSinkReplayDead(t, db.open(t)) })
	}
}

func testSinkReplayDead(t *testing.T, db landingDB) {
	l := landRun(t, db, false)
	if w := `dmfexport_sink_dead_letters_total{sink="dw"} 2`; !strings.Contains(l.metrics, w) {
		t.Errorf("the sink's /metrics lacks %s", w)
	}
	if stdout, _, code := runBinary(t, l.env, "reconcile", "--config", l.conf); code != 1 || !strings.Contains(stdout, "+2 batches not in the ledger; +3 rows") {
		t.Errorf("reconcile with 2 batches dead: exit %d, want 1 and them missing\n%s", code, stdout)
	}
	// status shows what the sink applied of each entity and its dead letters.
	stdout, stderr, code := runBinary(t, l.env, "status", "--config", l.conf)
	t.Logf("status:\n%s", stdout)
	var line string
	for _, ln := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(ln, "dw ") {
			line = strings.Join(strings.Fields(ln), " ")
		}
	}
	if code != 0 || !regexp.MustCompile(`^dw Customers V3 customers_v3 \d{8}T\d{6}Z-\w+ 3 of 3 5 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d 2$`).MatchString(line) {
		t.Errorf("status: exit %d, sink line %q, want the run, 3 of 3 batches, 5 rows, when and 2 dead letters\n%s%s", code, line, stdout, stderr)
	}
	b, _ := os.ReadFile(l.conf)
	writeFile(t, filepath.Dir(l.conf), "dmfexport.yaml", strings.Replace(string(b), `"Customer groups": {}`, `"Customer groups": {keys: [GROUPID]}`, 1))
	stdout, stderr, code = runBinary(t, l.env, "sink", "replay-dead", "--config", l.conf, "dw")
	if want := "sink dw: moved 2 batches from " + l.queue + ".dead back to " + l.queue; code != 0 || !strings.Contains(stdout, want) {
		t.Fatalf("sink replay-dead: exit %d, want 0 and %q\nstdout: %s\nstderr: %s", code, want, stdout, stderr)
	}
	s := startSink(t, l)
	waitTables(t, db.rows, map[string][]map[string]any{
		"customer_groups": fileRows([]string{"GROUPID", "DESCRIPTION"}, [][]string{{"10", "x"}, {"20", "y"}, {"30", "z"}}),
	})
	s.stop()
	if stdout, stderr, code := runBinary(t, l.env, "reconcile", "--config", l.conf); code != 0 {
		t.Errorf("reconcile after the replay: exit %d, want 0\n%s%s", code, stdout, stderr)
	}
}
