package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/sink/sinktest"
)

// sinkEntity is one entity of TestSinkEndToEnd: what F&O writes for it in
// each run, and the table it must land in.
type sinkEntity struct {
	name, refresh, table string
	header               []string
	v1, v2               [][]string // rows of the first and the second run
}

// TestSinkEndToEnd runs the whole path END TO END: the simulator, dmfexport
// trigger (batches of 2 rows, gzip and zstd bodies) into RabbitMQ, and the
// dmfexport sink binary into PostgreSQL, stopped with SIGTERM. After the
// first run every table equals its entity file row for row (an XML field
// left out is NULL); after the second, a full (FullPush) entity's table
// holds exactly the new snapshot (a row removed, one changed, one added)
// and an incremental (IncrementalPush) entity's rows are updated and
// inserted by key, the old ones kept.
func TestSinkEndToEnd(t *testing.T) {
	t.Parallel()
	customers := sinkEntity{name: "Customers V3", refresh: dmftest.FullPush, table: "customers_v3", header: []string{"ACCOUNT", "NAME", "CITY"},
		v1: [][]string{{"C1", "Contoso, Ltd.", "Paris"}, {"C2", "Fabrikam", ""}, {"C3", "Müller \"&\" Söhne", "München"}, {"C4", "Northwind", "Oslo"}, {"C5", "Tailspin", "Lyon"}},
		v2: [][]string{{"C1", "Contoso, Ltd.", "Paris"}, {"C3", "Müller & Söhne", "Berlin"}, {"C5", "Tailspin", "Lyon"}, {"C6", "Adatum", "Rome"}}}
	groups := sinkEntity{name: "Customer groups", refresh: dmftest.IncrementalPush, table: "customer_groups", header: []string{"GROUPID", "DESCRIPTION"},
		v1: [][]string{{"10", "Wholesale"}, {"20", "Retail"}, {"30", "Staff"}},
		v2: [][]string{{"20", "Retail shops"}, {"40", "Online"}}}
	project := func(v2 bool) []dmftest.Entity {
		var ents []dmftest.Entity
		for _, e := range []sinkEntity{customers, groups} {
			rows := e.v1
			if v2 {
				rows = e.v2
			}
			data, err := dmftest.TextFile(dmftest.TextFormat{}, e.header, rows)
			if err != nil {
				t.Fatal(err)
			}
			ents = append(ents, dmftest.Entity{Name: e.name, RefreshType: e.refresh, Data: data, Fields: e.header})
		}
		// An XML entity whose second record leaves CURRENCY out.
		ents = append(ents, dmftest.Entity{Name: "Vendors", SourceFormat: "XML-Element", RefreshType: dmftest.FullPush, Data: []byte(
			`<?xml version="1.0" encoding="utf-8"?><Document>` +
				`<VENDORS><ACCOUNT>V1</ACCOUNT><NAME>Northwind &amp; Co</NAME><CURRENCY>USD</CURRENCY></VENDORS>` +
				`<VENDORS><ACCOUNT>V2</ACCOUNT><NAME></NAME></VENDORS>` +
				`<VENDORS><ACCOUNT>V3</ACCOUNT><NAME>Adventure</NAME><CURRENCY>EUR</CURRENCY></VENDORS></Document>`)})
		return ents
	}
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"SinkV1": project(false), "SinkV2": project(true)},
		ExecutionTime: 100 * time.Millisecond,
	})
	defer sim.Close()

	name, _ := testQueue(t, "sink")
	schema := testenv.PostgresSchema(t)
	conf := writeFile(t, t.TempDir(), "dmfexport.yaml", simBrokerConfig(name, "fo.sink.#", true)+fmt.Sprintf(`  - {name: v1, schedule: "@yearly", definition_group: SinkV1, legal_entity: USMF, exchange: %[1]s, routing_key: fo.sink.v1, batch_size: 2, compression: gzip}
  - {name: v2, schedule: "@yearly", definition_group: SinkV2, legal_entity: USMF, exchange: %[1]s, routing_key: fo.sink.v2, batch_size: 2, compression: zstd}
sinks:
  - name: dw
    queue: %[1]s
    exchange: %[1]s
    bindings: ["fo.sink.#"]
    database_url: ${DATABASE_URL}
    schema: %[2]s
    entities:
      "Customers V3": {keys: [ACCOUNT]}
      "Customer groups": {keys: [GROUPID]}
`, name, schema))
	env := []string{"DMFSIM_URL=" + sim.URL, "FO_TOKEN=" + dmftest.DefaultToken, "DATABASE_URL=" + testenv.PostgresURL()}

	if stdout, stderr, code := runBinary(t, env, "trigger", "--config", conf, "v1"); code != 0 {
		t.Fatalf("trigger v1: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	sinkCmd := exec.CommandContext(context.Background(), binary, "sink", "--config", conf, "--log-format", "json", "--listen", "")
	sinkCmd.Env = append(os.Environ(), env...)
	var sinkOut bytes.Buffer
	sinkCmd.Stdout, sinkCmd.Stderr = &sinkOut, &sinkOut
	if err := sinkCmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = sinkCmd.Process.Kill()
			_ = sinkCmd.Wait()
			t.Logf("sink output:\n%s", sinkOut.String())
		}
	}()

	conn := testenv.PostgresConn(t)
	vendors := []map[string]any{{"ACCOUNT": "V1", "NAME": "Northwind & Co", "CURRENCY": "USD"},
		{"ACCOUNT": "V2", "NAME": "", "CURRENCY": nil}, {"ACCOUNT": "V3", "NAME": "Adventure", "CURRENCY": "EUR"}}
	want := map[string][]map[string]any{
		"customers_v3":    fileRows(customers.header, customers.v1),
		"customer_groups": fileRows(groups.header, groups.v1),
		"vendors":         vendors,
	}
	start := time.Now()
	rows := func(table string) ([]map[string]any, error) { return readTable(conn, schema, table) }
	waitTables(t, rows, want)
	t.Logf("first run landed %s after the sink started", time.Since(start).Round(time.Millisecond))

	if stdout, stderr, code := runBinary(t, env, "trigger", "--config", conf, "v2"); code != 0 {
		t.Fatalf("trigger v2: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	want["customers_v3"] = fileRows(customers.header, customers.v2)
	want["customer_groups"] = fileRows(groups.header, [][]string{{"10", "Wholesale"}, {"20", "Retail shops"}, {"30", "Staff"}, {"40", "Online"}})
	waitTables(t, rows, want)

	// Every batch of both runs is in the ledger once. The tables can be
	// equal before the last batches are in (Vendors is the same in both
	// runs): wait for them, then count.
	wantBatches := 3 + 2 + 2 + 2 + 1 + 2
	var batches int
	testenv.Await(30*time.Second, func() bool {
		if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{schema, "dmfexport_ledger"}.Sanitize()).Scan(&batches); err != nil {
			t.Fatal(err)
		}
		return batches >= wantBatches
	})
	if batches != wantBatches {
		t.Errorf("the ledger holds %d batches, want %d", batches, wantBatches)
	}

	if err := sinkCmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sinkCmd.Wait() }()
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Errorf("sink after SIGTERM: %v, want exit 0\n%s", err, sinkOut.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("sink still running 20s after SIGTERM")
	}
	out := sinkOut.String()
	for _, w := range []string{`"msg":"sink consuming"`, `"msg":"snapshot swapped in"`, `"msg":"sink stopped"`, `"batches":12`, `"snapshots":4`} {
		if !strings.Contains(out, w) {
			t.Errorf("sink log lacks %s:\n%s", w, out)
		}
	}
}

// fileRows are rows of a file with header as column → value.
func fileRows(header []string, rows [][]string) []map[string]any {
	var out []map[string]any
	for _, r := range rows {
		m := map[string]any{}
		for i, v := range r {
			m[header[i]] = v
		}
		out = append(out, m)
	}
	return out
}

// waitTables waits up to a minute for every table of want to hold its
// rows (ordered by the first column) as rows reads them, and fails naming
// the difference.
func waitTables(t *testing.T, rows func(table string) ([]map[string]any, error), want map[string][]map[string]any) {
	t.Helper()
	var diffs []string
	if !testenv.Await(time.Minute, func() bool {
		diffs = diffs[:0]
		for table, wantRows := range want {
			got, err := rows(table)
			if err != nil {
				diffs = append(diffs, fmt.Sprintf("%s: %v", table, err))
			} else if !reflect.DeepEqual(got, wantRows) {
				diffs = append(diffs, fmt.Sprintf("%s:\n got %v\nwant %v", table, got, wantRows))
			}
		}
		return len(diffs) == 0
	}) {
		t.Fatalf("tables differ after a minute:\n%s", strings.Join(diffs, "\n"))
	}
}

// readTable reads a PostgreSQL table's rows (see testenv.PostgresRows)
// without the sink's _dmf_ metadata columns.
func readTable(conn *pgx.Conn, schema, table string) ([]map[string]any, error) {
	rows, err := testenv.PostgresRows(context.Background(), conn, schema, table)
	for _, m := range rows {
		for k := range m {
			if strings.HasPrefix(k, "_dmf_") {
				delete(m, k)
			}
		}
	}
	return rows, err
}

// readSQLiteTable reads an SQLite table's rows without the metadata
// columns, ordered by its first column.
func readSQLiteTable(db *sql.DB, table string) ([]map[string]any, error) {
	out, err := sinktest.QueryRows(context.Background(), db, `SELECT * FROM "`+strings.ReplaceAll(table, `"`, `""`)+`" ORDER BY 1`)
	for _, m := range out {
		for c := range m {
			if strings.HasPrefix(c, "_dmf_") {
				delete(m, c)
			}
		}
	}
	return out, err
}
