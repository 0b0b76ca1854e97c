//go:build faults

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
)

// The sink's cases: whole runs of simulator → dmfexport trigger →
// RabbitMQ → dmfexport sink → PostgreSQL with one fault each. Entity A
// (sinkRowsA rows, FullPush) lands as a snapshot, entity B (100 rows,
// IncrementalPush, keys [ID]) is upserted; 200 rows a batch. A case passes
// when every table equals its entity file of the last run row for row
// (none lost, none twice, none stale), dmfexport reconcile finds nothing
// to report, and only the case's poison is dead-lettered.
const (
	sinkRowsA  = 40000
	sinkRowsB  = 100
	sinkBatch  = 200
	sinkLanded = 3 * time.Minute // a run lands within this, faults included
)

// sinkCase is one fault of the last hop.
type sinkCase struct {
	name string
	ci   bool // part of the CI subset
	// ownCluster: the database is a PostgreSQL cluster of the case's
	// own, which it may stop (root and the installed PostgreSQL only).
	ownCluster bool
	// relay: the exporter's batches wait in a feed queue, and the case
	// moves them to the sink's queue itself (twice, shuffled, poisoned).
	relay bool
	// poison is how many dead letters the case expects.
	poison int
	run    func(e *sinkEnv)
}

func sinkCases() []sinkCase {
	return []sinkCase{
		{name: "sink kill-9 mid-batch", ci: true, run: func(e *sinkEnv) {
			// Killed inside the transaction of its 30th batch, then of
			// the next process's 50th: both rolled back, redelivered.
			for _, nth := range []int{30, 50} {
				p := e.startSink(fmt.Sprintf("DMFEXPORT_FAULTS_SINK_PAUSE=apply@%d", nth))
				if e.runs == 0 {
					e.trigger()
				}
				e.killAt(p, "faults: paused in apply")
			}
			e.startSink()
			e.landed()
		}},
		{name: "sink kill-9 mid-swap", run: func(e *sinkEnv) {
			e.startSink()
			e.trigger()
			e.landed()
			e.stopSinks()
			// The second run: rows removed and changed. Killed inside the
			// swap, the table still holds the first run's snapshot whole.
			first := e.files["A"]
			e.setFiles(func(i int) (string, bool) { return fmt.Sprintf("row %d, second run", i), i%10 != 0 }, false)
			p := e.startSink("DMFEXPORT_FAULTS_SINK_PAUSE=swap")
			e.trigger()
			e.killAt(p, "faults: paused in swap")
			if lost, extra := e.compare("a", first); lost+extra != 0 {
				e.t.Errorf("after a kill inside the swap the table differs from the first run's snapshot: %d rows missing, %d others", lost, extra)
			}
			e.startSink()
			e.landed()
		}},
		{name: "sink database restarted mid-run", ownCluster: true, run: func(e *sinkEnv) {
			e.startSink()
			e.trigger()
			e.waitLedger(40)
			e.db.ctl("stop", "-m", "immediate") // as a crash: recovery on start
			time.Sleep(2 * time.Second)         // the database process stays down a while
			e.db.start()
			e.landed()
			for _, p := range e.sinks {
				if p.count("failed, retrying") == 0 {
					e.t.Errorf("the sink never retried: the database went down after the run had landed")
				}
			}
		}},
		{name: "sink broker connection cut", run: func(e *sinkEnv) {
			e.startSink()
			e.trigger()
			e.waitLedger(40)
			e.proxy.Cut(true)
			e.waitLedger(120)
			e.proxy.Cut(true)
			e.landed()
			if n := e.sinks[0].count("broker connection lost"); n < 2 {
				e.t.Errorf("the sink saw %d lost connections, want 2", n)
			}
		}},
		{name: "sink every batch delivered twice", ci: true, relay: true, run: func(e *sinkEnv) {
			e.startSink()
			e.trigger()
			msgs := e.feedMessages()
			again := slices.Clone(msgs)
			slices.Reverse(again)
			e.publish(append(msgs, again...))
			e.landed()
			// The tables can be whole while second copies still wait.
			for deadline := time.Now().Add(time.Minute); e.sinks[0].count("batch already applied, skipped") < len(msgs) && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) { // the sink process skips the second copies
			}
			if n := e.sinks[0].count("batch already applied, skipped"); n != len(msgs) {
				e.t.Errorf("the sink skipped %d batches as already applied, want %d", n, len(msgs))
			}
		}},
		{name: "sink batches out of order across two sinks", relay: true, run: func(e *sinkEnv) {
			e.startSink()
			e.startSink()
			e.trigger()
			msgs := e.feedMessages()
			rand.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
			e.publish(msgs)
			e.landed()
			for i, p := range e.sinks {
				if p.count(`"msg":"sink consuming"`) == 0 || p.count(`"entity":"A"`) == 0 {
					e.t.Errorf("sink process %d applied none of A's batches: the case did not share the queue", i+1)
				}
			}
		}, poison: 0},
		{name: "sink poison batches among good ones", relay: true, poison: 4, run: func(e *sinkEnv) {
			e.startSink()
			e.trigger()
			msgs := e.feedMessages()
			var good amqp.Delivery // a batch of B, the upserted entity
			for _, m := range msgs {
				if strings.Contains(string(m.Body), `"entity":"B"`) {
					good = m
				}
			}
			poison := []amqp.Publishing{
				{MessageId: "poison-not-json", Body: []byte("not json {")},
				{MessageId: "poison-version", Body: editBatch(e.t, good.Body, "poison-version", func(m map[string]any) { m["specversion"] = "9.9"; m["type"] = "com.example.other" })},
				{MessageId: "poison-nul", Body: editBatch(e.t, good.Body, "poison-nul", func(m map[string]any) {
					rows := m["data"].(map[string]any)["rows"].([]any)
					rows[0].(map[string]any)["TEXT"] = "a NUL \u0000 PostgreSQL refuses"
				})},
				{MessageId: "poison-no-key", Body: editBatch(e.t, good.Body, "poison-no-key", func(m map[string]any) {
					d := m["data"].(map[string]any)
					d["columns"] = []any{"TEXT"}
					for _, r := range d["rows"].([]any) {
						delete(r.(map[string]any), "ID")
					}
				})},
			}
			// One poison batch after every fifth of the good ones.
			var all []amqp.Publishing
			every := len(msgs) / len(poison)
			for i, m := range msgs {
				all = append(all, publishing(m))
				if i%every == every/2 && len(poison) > 0 {
					all = append(all, poison[0])
					poison = poison[1:]
				}
			}
			e.publishRaw(append(all, poison...))
			e.landed()
			// Each is delivered max_deliveries (2) times, a second apart.
			for deadline := time.Now().Add(time.Minute); e.deadLetters() < 4 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) { // the broker node redelivers to the sink process
			}
			for _, reason := range []string{"not a JSON event", "event type", "invalid byte sequence", "is not in the batch"} {
				if e.sinks[0].count(`"msg":"batch dead-lettered"`, reason) != 1 {
					e.t.Errorf("no batch was dead-lettered for %q; dead letters:\n%s", reason, e.sinks[0].grep(`"msg":"batch dead-lettered"`))
				}
			}
		}},
		{name: "sink column added between runs", run: func(e *sinkEnv) {
			e.startSink()
			e.trigger()
			e.landed()
			// The second run's files have a column more; A also loses
			// and changes rows, B's rows are upserted with the new column.
			e.setFiles(func(i int) (string, bool) { return fmt.Sprintf("row %d, second run", i), i%7 != 0 }, true)
			e.trigger()
			e.landed()
		}},
	}
}

func TestSinkFaults(t *testing.T) {
	sel := os.Getenv("DMFEXPORT_FAULTS")
	fmt.Printf("== the sink lands every batch exactly once\n")
	for _, c := range sinkCases() {
		t.Run(c.name, func(t *testing.T) {
			if sel == "ci" && !c.ci {
				t.Skip("not in the CI subset (DMFEXPORT_FAULTS=ci)")
			}
			e := newSinkEnv(t, c)
			c.run(e)
			e.report()
		})
	}
}

// sinkEnv is one sink case's world.
type sinkEnv struct {
	t               *testing.T
	c               sinkCase
	dir, data       string
	sim             *sim
	proxy           *testenv.Proxy // between the sinks and the broker
	exchange, queue string
	feed            string // relay cases: where the exporter's batches wait
	db              *database
	cfg             string
	files           map[string][][]string // entity → header and rows of the last run
	runs            int
	sinks           []*proc
	killed          int
}

func newSinkEnv(t *testing.T, c sinkCase) *sinkEnv {
	dir := t.TempDir()
	e := &sinkEnv{t: t, c: c, dir: dir, data: filepath.Join(dir, "project"), files: map[string][][]string{}}
	id := fmt.Sprintf("faults.sink.%d", time.Now().UnixNano())
	e.exchange, e.queue, e.feed = id, id, id+".feed"
	if c.ownCluster {
		e.db = startPostgres(t)
	} else {
		e.db = &database{url: testenv.PostgresURL(), schema: testenv.PostgresSchema(t)}
	}
	e.setFiles(func(i int) (string, bool) { return fmt.Sprintf("row %d, with a comma", i), true }, false)
	target := strings.TrimSuffix(strings.TrimPrefix(broker.url, "amqp://guest:guest@"), "/")
	e.proxy = testenv.StartProxy(t, target)
	e.declare()

	sinkKeys := fmt.Sprintf("exchange: %q, bindings: [fo.faults], ", e.exchange)
	if c.relay {
		sinkKeys = ""
	}
	cfg := fmt.Sprintf(`fo:
  url: ${DMFSIM_URL}
  auth: {method: token, token: "${FO_TOKEN}"}
store: {path: %q}
broker: {url: %q, declare: false}
poll: {interval: 100ms, max_interval: 300ms, package_url_timeout: 20s, deadline: 2m}
exports:
  - {name: f, schedule: "@yearly", definition_group: G, legal_entity: USMF, exchange: %q, routing_key: fo.faults, batch_size: %d}
sinks:
  - {name: s, broker: {url: "amqp://guest:guest@%s/"}, queue: %q, %sdatabase_url: "${FAULTS_DATABASE_URL}", schema: %q,
     prefetch: 4, max_deliveries: 2, entities: {B: {keys: [ID]}}}
`, filepath.Join(dir, "store"), broker.url, e.exchange, sinkBatch, e.proxy.Addr(), e.queue, sinkKeys, e.db.schema)
	e.cfg = filepath.Join(dir, "dmfexport.yaml")
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// setFiles writes the entity files of the next run: A's row i holds
// text(i) when kept, B's every row; extra adds a third column to both.
// The simulator is (re)started to serve them; every export holds B's rows.
func (e *sinkEnv) setFiles(text func(i int) (string, bool), extra bool) {
	if err := os.MkdirAll(e.data, 0o755); err != nil {
		e.t.Fatal(err)
	}
	for name, n := range map[string]int{"A": sinkRowsA, "B": sinkRowsB} {
		header := []string{"ID", "TEXT"}
		if extra {
			header = append(header, "EXTRA")
		}
		rows := [][]string{header}
		var b strings.Builder
		b.WriteString(strings.Join(header, ",") + "\r\n")
		for i := 1; i <= n; i++ {
			s, keep := text(i)
			if name == "B" {
				s, keep = fmt.Sprintf("group %d", i), true
			}
			if !keep {
				continue
			}
			row := []string{strconv.Itoa(i), s}
			fmt.Fprintf(&b, "%d,%q", i, s)
			if extra {
				row = append(row, "x"+strconv.Itoa(i))
				fmt.Fprintf(&b, ",x%d", i)
			}
			b.WriteString("\r\n")
			rows = append(rows, row)
		}
		if err := os.WriteFile(filepath.Join(e.data, name+".csv"), []byte(b.String()), 0o644); err != nil {
			e.t.Fatal(err)
		}
		e.files[name] = rows
	}
	if e.sim != nil {
		e.sim.signal(syscall.SIGKILL)
		e.sim.wait(10 * time.Second)
	}
	e.sim = startSimData(e.t, e.dir, e.data, "--incremental", "B", "--full-incremental", "--execution-time", "300ms")
}

// declare creates the exporting exchange (and, for relay cases, the feed
// queue bound to it); the sinks declare their own queues.
func (e *sinkEnv) declare() {
	ch := e.channel()
	if err := ch.ExchangeDeclare(e.exchange, "topic", true, false, false, false, nil); err != nil {
		e.t.Fatal(err)
	}
	if e.c.relay {
		if _, err := ch.QueueDeclare(e.feed, true, false, false, false, nil); err != nil {
			e.t.Fatal(err)
		}
		if err := ch.QueueBind(e.feed, "fo.faults", e.exchange, false, nil); err != nil {
			e.t.Fatal(err)
		}
	}
	e.t.Cleanup(func() {
		ch := e.channel()
		for _, q := range []string{e.queue, e.queue + ".dead", e.feed} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(e.exchange, false, false)
		_ = ch.ExchangeDelete(e.queue+".dead", false, false)
	})
}

// channel is a channel on the suite's broker, closed with the case.
func (e *sinkEnv) channel() *amqp.Channel {
	conn, err := amqp.Dial(broker.url)
	if err != nil {
		e.t.Fatalf("broker: %v", err)
	}
	e.t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		e.t.Fatal(err)
	}
	return ch
}

func (e *sinkEnv) env(extra ...string) []string {
	return append(append(os.Environ(), "DMFSIM_URL="+e.sim.url, "FO_TOKEN="+dmftest.DefaultToken, "FAULTS_DATABASE_URL="+e.db.url), extra...)
}

// startSink starts one more dmfexport sink and waits until it consumes.
func (e *sinkEnv) startSink(extra ...string) *proc {
	p := startProc(e.t, e.env(extra...), e.dir, "dmfexport", "sink", "--config", e.cfg, "--log-format", "json", "--log-level", "debug", "--listen", "")
	if !p.waitLine(time.Minute, `"msg":"sink consuming"`) {
		e.t.Fatalf("the sink did not start consuming:\n%s", tail(p.log(), 30))
	}
	e.sinks = append(e.sinks, p)
	return p
}

// grep returns p's log lines that contain every one of parts.
func (p *proc) grep(parts ...string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, l := range p.lines {
		if containsAll(l, parts) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// killAt kills p (-9) once it logs want.
func (e *sinkEnv) killAt(p *proc, want string) {
	if !p.waitLine(sinkLanded, want) {
		e.t.Fatalf("the sink never logged %q:\n%s", want, tail(p.log(), 30))
	}
	p.signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
	e.sinks = slices.DeleteFunc(e.sinks, func(x *proc) bool { return x == p })
	e.killed++
}

// stopSinks stops every sink with SIGTERM; each must exit 0.
func (e *sinkEnv) stopSinks() {
	for _, p := range e.sinks {
		p.signal(syscall.SIGTERM)
		if code, ok := p.wait(30 * time.Second); !ok || code != 0 {
			e.t.Errorf("sink after SIGTERM: exit %d (ended: %v)\n%s", code, ok, tail(p.log(), 20))
		}
	}
	e.sinks = nil
}

// trigger runs one export to the end; it must succeed.
func (e *sinkEnv) trigger() {
	p := startProc(e.t, e.env(), e.dir, "dmfexport", "trigger", "--config", e.cfg, "--log-format", "json", "f")
	if code, ok := p.wait(2 * time.Minute); !ok || code != 0 {
		e.t.Fatalf("dmfexport trigger: exit %d (ended: %v)\n%s", code, ok, tail(p.log(), 30))
	}
	e.runs++
}

// waitLedger waits until the sink's ledger holds n batches.
func (e *sinkEnv) waitLedger(n int) {
	for deadline := time.Now().Add(sinkLanded); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) { // the sink process applies batches
		if got, _ := e.db.ledger(); got >= n {
			return
		}
	}
	e.t.Fatalf("the ledger never held %d batches", n)
}

// feedMessages takes every batch the exporter published out of the feed
// queue, in order.
func (e *sinkEnv) feedMessages() []amqp.Delivery {
	return testenv.Drain(e.t, e.channel(), e.feed)
}

func publishing(m amqp.Delivery) amqp.Publishing {
	return amqp.Publishing{Headers: m.Headers, ContentType: m.ContentType, ContentEncoding: m.ContentEncoding, DeliveryMode: amqp.Persistent,
		MessageId: m.MessageId, CorrelationId: m.CorrelationId, Timestamp: m.Timestamp, Type: m.Type, AppId: m.AppId, Body: m.Body}
}

// publish puts msgs on the sink's queue, in this order.
func (e *sinkEnv) publish(msgs []amqp.Delivery) {
	var out []amqp.Publishing
	for _, m := range msgs {
		out = append(out, publishing(m))
	}
	e.publishRaw(out)
}

func (e *sinkEnv) publishRaw(msgs []amqp.Publishing) {
	ch := e.channel()
	if err := ch.Confirm(false); err != nil {
		e.t.Fatal(err)
	}
	for _, m := range msgs {
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", e.queue, true, false, m)
		if err != nil {
			e.t.Fatal(err)
		}
		if ok, err := dc.WaitContext(context.Background()); !ok || err != nil {
			e.t.Fatalf("the broker refused a batch: %v", err)
		}
	}
}

// editBatch is body (an uncompressed batch) with event id id and f
// applied to its JSON.
func editBatch(t *testing.T, body []byte, id string, f func(map[string]any)) []byte {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("a published batch is not JSON: %v", err)
	}
	m["id"] = id
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// landed waits until every table equals its file of the last run and
// reconcile finds nothing to report.
func (e *sinkEnv) landed() {
	var why string
	for deadline := time.Now().Add(sinkLanded); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) { // the sink process lands the batches; each check runs a reconcile process
		why = ""
		for _, ent := range []string{"A", "B"} {
			if lost, extra := e.compare(strings.ToLower(ent), e.files[ent]); lost+extra != 0 {
				why = fmt.Sprintf("table %s: %d rows missing, %d others", strings.ToLower(ent), lost, extra)
				break
			}
		}
		if why == "" {
			if code, out := e.reconcile(); code != 0 {
				why = "reconcile: exit " + strconv.Itoa(code) + "\n" + out
			} else {
				return
			}
		}
	}
	for _, p := range e.sinks {
		e.t.Logf("sink log:\n%s", tail(p.log(), 40))
	}
	e.t.Fatalf("not landed after %s: %s", sinkLanded, why)
}

// compare counts want's rows (a header, then rows) the table lacks and
// the table's rows want lacks (twice, changed, stale), metadata aside.
func (e *sinkEnv) compare(table string, want [][]string) (lost, extra int) {
	got, err := e.db.rows(table, want[0])
	if err != nil {
		return len(want) - 1, 0
	}
	count := map[string]int{}
	for _, r := range want[1:] {
		count[strings.Join(r, "\x1f")]++
	}
	for _, r := range got {
		count[r]--
	}
	for _, n := range count {
		if n > 0 {
			lost += n
		} else {
			extra -= n
		}
	}
	return lost, extra
}

func (e *sinkEnv) reconcile() (int, string) {
	p := startProc(e.t, e.env(), e.dir, "dmfexport", "reconcile", "--config", e.cfg, "--log-format", "json")
	code, ok := p.wait(time.Minute)
	if !ok {
		return -1, "reconcile hung"
	}
	return code, tail(p.log(), 20)
}

// deadLetters counts the batches in the sink's dead-letter queue.
func (e *sinkEnv) deadLetters() int {
	q, err := e.channel().QueueDeclarePassive(e.queue+".dead", true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	if err != nil {
		return -1
	}
	return q.Messages
}

// report prints the case's line and checks what every case must hold.
func (e *sinkEnv) report() {
	e.stopSinks()
	var lost, extra, rows int
	for _, ent := range []string{"A", "B"} {
		l, x := e.compare(strings.ToLower(ent), e.files[ent])
		lost, extra, rows = lost+l, extra+x, rows+len(e.files[ent])-1
	}
	code, out := e.reconcile()
	ledger, _ := e.db.ledger()
	dead := e.deadLetters()
	fmt.Printf("FAULT %-48s rows %6d lost %d  duplicate or stale %d  runs %d  ledger %4d batches  killed %d  dead letters %d  reconcile exit %d\n",
		e.c.name, rows, lost, extra, e.runs, ledger, e.killed, dead, code)
	if lost+extra != 0 {
		e.t.Errorf("the tables differ from the last run's files: %d rows missing, %d others", lost, extra)
	}
	if code != 0 {
		e.t.Errorf("reconcile: exit %d\n%s", code, out)
	}
	if dead != e.c.poison {
		e.t.Errorf("%d dead letters, want %d", dead, e.c.poison)
	}
	for _, p := range e.sinks {
		if strings.Contains(p.log(), "panic:") {
			e.t.Errorf("the sink panicked:\n%s", tail(p.log(), 30))
		}
	}
}

// database is where a case's sinks land: a schema of the machine's
// PostgreSQL, or a cluster of the case's own.
type database struct {
	url, schema string
	bin, data   string // own cluster: PostgreSQL's bin directory, data directory
	logFile     string // own cluster: the server's log
	t           *testing.T
}

func (d *database) conn() (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return pgx.Connect(ctx, d.url)
}

// ledger counts the batches the sink's ledger holds.
func (d *database) ledger() (int, error) {
	c, err := d.conn()
	if err != nil {
		return 0, err
	}
	defer func() { _ = c.Close(context.Background()) }()
	var n int
	err = c.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{d.schema, "dmfexport_ledger"}.Sanitize()).Scan(&n)
	return n, err
}

// rows reads a table's columns cols, each row joined with U+001F.
func (d *database) rows(table string, cols []string) ([]string, error) {
	c, err := d.conn()
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close(context.Background()) }()
	var list []string
	for _, col := range cols {
		list = append(list, "coalesce("+pgx.Identifier{col}.Sanitize()+", '<NULL>')")
	}
	rows, err := c.Query(context.Background(), "SELECT concat_ws(chr(31), "+strings.Join(list, ", ")+") FROM "+pgx.Identifier{d.schema, table}.Sanitize())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// startPostgres starts a PostgreSQL cluster of the case's own on a free
// port: initdb and pg_ctl of the installed PostgreSQL, run as the postgres
// user (both refuse root) on a directory it owns.
func startPostgres(t *testing.T) *database {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	u, err := user.Lookup("postgres")
	if len(bins) == 0 || err != nil || os.Getuid() != 0 {
		t.Skip("needs root, a postgres user and PostgreSQL's initdb (apt-get install postgresql)")
	}
	slices.Sort(bins)
	dir, err := os.MkdirTemp("", "dmfexport-pg-")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	port := freePort()
	d := &database{bin: filepath.Dir(bins[len(bins)-1]), data: filepath.Join(dir, "data"), t: t, schema: "sink",
		url: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)}
	t.Cleanup(func() {
		_ = exec.CommandContext(context.Background(), "runuser", "-u", "postgres", "--", filepath.Join(d.bin, "pg_ctl"), "-D", d.data, "stop", "-m", "immediate").Run()
		_ = os.RemoveAll(dir)
	})
	d.run("initdb", "-D", d.data, "-A", "trust", "-U", "postgres", "--no-sync")
	conf := fmt.Sprintf("port = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nfsync = off\n", port, dir)
	f, err := os.OpenFile(filepath.Join(d.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(conf)
	_ = f.Close()
	d.logFile = filepath.Join(dir, "log")
	d.start()
	return d
}

// start starts the case's cluster and waits until it takes connections.
func (d *database) start() { d.ctl("start", "-w", "-l", d.logFile) }

// ctl runs pg_ctl on the case's cluster.
func (d *database) ctl(args ...string) {
	d.run("pg_ctl", append([]string{"-D", d.data}, args...)...)
}

func (d *database) run(tool string, args ...string) {
	cmd := exec.CommandContext(context.Background(), "runuser", append([]string{"-u", "postgres", "--", filepath.Join(d.bin, tool)}, args...)...)
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		d.t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
}
