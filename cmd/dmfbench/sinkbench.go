package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	neturl "net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/sink"
	"github.com/dmfexport/dmfexport/sink/postgres"
)

// The sink mode (-sink postgres) measures how fast `dmfexport sink` lands
// batches in PostgreSQL. The wide and narrow CSV are published once, as the
// exporter publishes them by default (JSON batches of 5000 rows closed at
// max_batch_bytes, 2 MB: -batch and -batch-bytes), to an NDJSON file beside
// them; each sink case then reads those bodies one at a time and does what
// the sink does per delivery, minus the broker: sink.DecodeBatch and
// sink.TargetFor (of the next body while a batch is applied, as the
// consumer does), postgres.Backend.Apply and, for a snapshot,
// FinishSnapshot after every batch. Two references are measured in the same
// run, on the same rows: the ceiling, one bare COPY (pgx CopyFrom) of the
// CSV into a table of text columns, and the naive consumer a user would
// write, one INSERT (or INSERT … ON CONFLICT) per row with a transaction
// per message, on the first -naive-rows rows. Every case runs in its own
// child process, in a schema of its own that is dropped afterwards.

var (
	sinkMode  = flag.String("sink", "", "measure the sink instead of the publish step: postgres")
	database  = flag.String("database", defaultDatabaseURL(), "sink: PostgreSQL URL (default $DMFEXPORT_TEST_DATABASE_URL, else the local database test)")
	naiveRows = flag.Int("naive-rows", 20000, "sink: rows the naive consumer cases insert (a prefix of the entity, whole messages)")
	sinkCases = flag.String("sink-cases", "ceiling,ceiling-meta,snapshot,upsert,update,naive-insert,naive-upsert,naive-update",
		"sink: cases to run, comma separated (also amqp-snapshot: the sink's consumer reading the batches from RabbitMQ)")

	prefetch     = flag.Int("prefetch", 0, "sink: the consumer's prefetch in the amqp-snapshot case (0: the sink's default)")
	childBatches = flag.String("child-batches", "", "internal: NDJSON file of the entity's batch bodies")
	childSchema  = flag.String("child-schema", "", "internal: schema of the case")
	childKeys    = flag.String("child-keys", "", "internal: key columns, comma separated")
)

func defaultDatabaseURL() string {
	if u := os.Getenv("DMFEXPORT_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test"
}

// sinkKeys are the natural keys of the generated entities: the wide
// entity's account is its row number, the narrow entity's order number
// holds four lines numbered 1 to 4.
var sinkKeys = map[string][]string{
	"wide":   {"CUSTOMERACCOUNT"},
	"narrow": {"SALESORDERNUMBER", "LINENUMBER"},
}

// sinkCase is one case of the sink mode as the table shows it.
type sinkCase struct {
	name  string // -child value without the "pg-" prefix
	label string
	naive string // the naive case it is compared with
	rows  func(e entity) int
}

func sinkCaseList() []sinkCase {
	all := func(e entity) int { return e.rows }
	prefix := func(e entity) int { return min(e.rows, roundUp(*naiveRows, *batch)) }
	return []sinkCase{
		{"ceiling", "COPY ceiling", "", all},
		{"ceiling-meta", "COPY + sink's columns", "", all},
		{"snapshot", "snapshot", "naive-insert", all},
		{"amqp-snapshot", "snapshot via RabbitMQ", "naive-insert", all},
		{"upsert", "upsert, empty table", "naive-upsert", all},
		{"update", "upsert, rows present", "naive-update", all},
		{"naive-insert", "naive INSERT", "", prefix},
		{"naive-upsert", "naive upsert, empty", "", prefix},
		{"naive-update", "naive upsert, present", "", prefix},
	}
}

func roundUp(n, m int) int {
	if m <= 0 {
		return n
	}
	return (n + m - 1) / m * m
}

// runSink runs every sink case of every entity -tries times, interleaved,
// and prints the best run of each with the spread.
func runSink(ents []entity) error {
	if *sinkMode != "postgres" {
		return fmt.Errorf("-sink %q: the sink bench knows postgres", *sinkMode)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, *database)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL (set -database or DMFEXPORT_TEST_DATABASE_URL): %w", err)
	}
	defer func() { _ = admin.Close(ctx) }()
	var version string
	_ = admin.QueryRow(ctx, "SHOW server_version").Scan(&version)
	var cases []sinkCase
	for _, c := range sinkCaseList() {
		if contains(*sinkCases, c.name) {
			cases = append(cases, c)
		}
	}
	type key struct{ ent, c string }
	runs := map[key][]*result{}
	var batchFiles = map[string]string{}
	for _, e := range ents {
		start := time.Now()
		p, made, err := batchFile(e)
		if err != nil {
			return fmt.Errorf("publish %s to a file: %w", e.path, err)
		}
		if made {
			fmt.Fprintf(os.Stderr, "published %s to %s in %.1fs\n", filepath.Base(e.path), p, time.Since(start).Seconds())
		}
		batchFiles[e.key] = p
		n, size, most, err := bodySizes(p)
		if err != nil {
			return err
		}
		fmt.Printf("%s: %d batches, %.2f MB a body on average, %.2f MB the largest\n", e.key, n, float64(size)/float64(max(n, 1))/1e6, float64(most)/1e6)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("dmfbench sink postgres: PostgreSQL %s, batches of %d rows closed at %d bytes (max_batch_bytes), best of %d tries, %s, load %s\n",
		version, *batch, *batchBytes, max(1, *tries), time.Now().UTC().Format(time.RFC3339), strings.Join(strings.Fields(string(load))[:3], " "))
	for i := 0; i < max(1, *tries); i++ {
		for _, e := range ents {
			for _, c := range cases {
				schema := fmt.Sprintf("dmfbench_%d_%s_%s", os.Getpid(), e.key, strings.ReplaceAll(c.name, "-", "_"))
				// A checkpoint before each case, so none pays for the
				// writes of the one before.
				if _, err := admin.Exec(ctx, "CHECKPOINT"); err != nil {
					fmt.Fprintln(os.Stderr, "dmfbench: checkpoint:", err)
				}
				args := []string{"-child", "pg-" + c.name, "-child-entity", e.format + ":" + e.path, "-child-batches", batchFiles[e.key],
					"-child-schema", schema, "-child-keys", strings.Join(sinkKeys[e.key], ","), "-database", *database,
					"-batch", fmt.Sprint(*batch), "-naive-rows", fmt.Sprint(c.rows(e))}
				r, err := spawn(self, args)
				dropSchemas(ctx, admin, schema)
				if err != nil {
					fmt.Printf("%-8s %-22s try %d failed: %v\n", e.key, c.label, i+1, err)
					continue
				}
				fmt.Fprintf(os.Stderr, "%s %s try %d: %d rows in %.2fs (decode %.2fs, swap %.2fs), %.0f rows/s, RSS %.1f MiB, CPU %.2fs, database CPU %.2fs\n",
					e.key, c.name, i+1, r.Rows, r.Seconds, r.DecodeSeconds, r.SwapSeconds, float64(r.Rows)/r.Seconds, float64(r.MaxRSSKB)/1024, r.CPUSeconds, r.DBCPUSeconds)
				runs[key{e.key, c.name}] = append(runs[key{e.key, c.name}], r)
			}
		}
	}
	best := func(rs []*result) (b *result, lo, hi float64) {
		lo = math.Inf(1)
		for _, r := range rs {
			rate := float64(r.Rows) / r.Seconds
			if b == nil || rate > float64(b.Rows)/b.Seconds {
				b = r
			}
			lo, hi = min(lo, rate), max(hi, rate)
		}
		return b, lo, hi
	}
	load, _ = os.ReadFile("/proc/loadavg")
	fmt.Printf("\nbest of %d tries (spread: slowest–fastest rows/s); load at the end %s\n", max(1, *tries), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Printf("%-8s %-22s %9s %8s %9s %15s %7s %7s %8s %6s %6s\n", "entity", "case", "rows", "seconds", "rows/s", "spread", "%COPY", "×naive", "RSS MiB", "CPU-s", "DB-s")
	for _, e := range ents {
		ceil, _, _ := best(runs[key{e.key, "ceiling"}])
		for _, c := range cases {
			r, lo, hi := best(runs[key{e.key, c.name}])
			if r == nil {
				continue
			}
			rate := float64(r.Rows) / r.Seconds
			pct, times := "", ""
			if ceil != nil && c.name != "ceiling" {
				pct = fmt.Sprintf("%.0f%%", 100*rate/(float64(ceil.Rows)/ceil.Seconds))
			}
			if n, _, _ := best(runs[key{e.key, c.naive}]); n != nil {
				times = fmt.Sprintf("%.1f×", rate/(float64(n.Rows)/n.Seconds))
			}
			fmt.Printf("%-8s %-22s %9d %8.2f %9.0f %15s %7s %7s %8.1f %6.2f %6.2f\n", e.key, c.label, r.Rows, r.Seconds, rate,
				fmt.Sprintf("%.0f–%.0f", lo, hi), pct, times, float64(r.MaxRSSKB)/1024, minOf(runs[key{e.key, c.name}], func(r *result) float64 { return r.CPUSeconds }),
				minOf(runs[key{e.key, c.name}], func(r *result) float64 { return r.DBCPUSeconds }))
		}
	}
	fmt.Printf("\nsink cases: each JSON body as published (%d rows or %d bytes), decoded (sink.DecodeBatch; the next while a batch is applied) and\n", *batch, *batchBytes)
	fmt.Println("applied through the postgres Backend (ApplyGroup, and FinishSnapshot after a group's last batch of a run) as `dmfexport sink` does")
	fmt.Println("per delivery, minus the broker, with its soft memory limit; snapshot includes the swap. \"rows present\": the same rows upserted a second time")
	fmt.Println("(the first pass is not timed). \"via RabbitMQ\": the bodies published to a queue first (not timed), then landed by")
	fmt.Println("the sink's consumer (sink.Consumer, its default prefetch unless -prefetch) until the snapshot is swapped in.")
	fmt.Printf("naive: one INSERT (upsert: INSERT … ON CONFLICT DO UPDATE) per row, a transaction per message, first %d rows.\n", roundUp(*naiveRows, *batch))
	fmt.Println("ceiling: one COPY of the CSV's rows into a table of text columns, no key; \"+ sink's columns\": with the values of")
	fmt.Println("the sink's metadata columns (export, run, execution, batch, row, document, loaded_at) too, as the sink's tables have.")
	fmt.Println("CPU-s: the least CPU time of the case's process over its tries; DB-s: of the database's processes serving it")
	fmt.Println("(read from /proc every 100 ms: PostgreSQL on this machine). On a loaded machine they move less than rows/s.")
	return nil
}

// minOf is the least of f over rs.
func minOf(rs []*result, f func(*result) float64) float64 {
	m := math.Inf(1)
	for _, r := range rs {
		m = min(m, f(r))
	}
	if math.IsInf(m, 1) {
		return 0
	}
	return m
}

// dropSchemas drops a case's schema and its staging schema.
func dropSchemas(ctx context.Context, conn *pgx.Conn, schema string) {
	for _, s := range []string{schema, schema + "_staging"} {
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{s}.Sanitize()+" CASCADE"); err != nil {
			fmt.Fprintln(os.Stderr, "dmfbench: drop schema:", err)
		}
	}
}

// batchFile publishes the entity, as the exporter would, to an NDJSON file
// of its batch bodies (made once and reused); made tells whether it was
// made now.
func batchFile(e entity) (path string, made bool, err error) {
	name := fmt.Sprintf("%s-%d-batch%d-bytes%d", e.key, e.rows, *batch, *batchBytes)
	path = filepath.Join(*dir, publish.FileName(name))
	if exists(path) {
		return path, false, nil
	}
	tmp, err := os.MkdirTemp(*dir, "batches-")
	if err != nil {
		return "", false, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	fs, err := publish.NewFileSink(tmp)
	if err != nil {
		return "", false, err
	}
	defer func() { _ = fs.Close() }()
	f, err := os.Open(e.path)
	if err != nil {
		return "", false, err
	}
	defer func() { _ = f.Close() }()
	ctx := context.Background()
	if _, err := publish.PublishEntity(ctx, f, fs, publish.EntityOptions{
		Job: "bench", RunID: "20261201T000000Z-bench", ExecutionID: "bench-exec", Entity: e.name, RoutingKey: name,
		BatchSize: *batch, MaxBatchBytes: *batchBytes, Format: e.format, RefreshType: sink.FullPush,
	}); err != nil {
		return "", false, err
	}
	if err := fs.Flush(ctx); err != nil {
		return "", false, err
	}
	if err := fs.Close(); err != nil {
		return "", false, err
	}
	return path, true, os.Rename(filepath.Join(tmp, publish.FileName(name)), path)
}

// bodySizes counts the bodies of an NDJSON file of batches, their bytes
// and the largest.
func bodySizes(path string) (n, size, most int, err error) {
	err = bodies(path, func(body []byte) (bool, error) {
		n, size, most = n+1, size+len(body), max(most, len(body))
		return true, nil
	})
	return n, size, most, err
}

// bodies calls f with each body of an NDJSON file of batches, a fresh
// slice each time as a broker delivery is, until f returns false.
func bodies(path string, f func(body []byte) (more bool, err error)) error {
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	r := bufio.NewReaderSize(in, 1<<20)
	size := 0 // of the last body: the next is about as long
	for {
		line := make([]byte, 0, size+size/8)
		var err error
		for {
			var chunk []byte
			chunk, err = r.ReadSlice('\n')
			line = append(line, chunk...)
			if !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
		}
		if len(line) > 1 && line[len(line)-1] == '\n' {
			size = len(line)
			more, ferr := f(line[:len(line)-1])
			if ferr != nil || !more {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// runSinkChild runs one case of the sink mode and returns its figures,
// with the CPU time of the database's processes serving it.
func runSinkChild(ctx context.Context) (result, error) {
	admin, app := *database, fmt.Sprintf("dmfbench-%d", os.Getpid())
	u, err := neturl.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return result{}, fmt.Errorf("-database %q: want a postgres:// URL", admin)
	}
	q := u.Query()
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	*database, checkDatabase = u.String(), admin
	stop, err := watchServerCPU(ctx, admin, app)
	if err != nil {
		return result{}, err
	}
	switch *child {
	case "pg-snapshot", "pg-amqp-snapshot", "pg-upsert", "pg-update":
		if os.Getenv("GOMEMLIMIT") == "" {
			// As `dmfexport sink` running one sink does.
			debug.SetMemoryLimit(jobs.SinkMemoryLimit(1))
		}
	}
	r, err := runSinkCase(ctx)
	r.DBCPUSeconds = stop()
	return r, err
}

// watchServerCPU sums the CPU time of the database's processes serving
// connections named app (application_name), read from /proc every 100 ms
// (the server runs on this machine) until stop is called; 0 if they
// cannot be read.
func watchServerCPU(ctx context.Context, url, app string) (stop func() float64, err error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	tick := float64(100) // clock ticks a second (USER_HZ)
	seen := map[int]float64{}
	sample := func() {
		rows, err := conn.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE application_name = $1", app)
		if err != nil {
			return
		}
		pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return
		}
		for _, pid := range pids {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			i := bytes.LastIndexByte(stat, ')')
			if err != nil || i < 0 {
				continue
			}
			// After the command: state, then 10 fields, then utime and stime.
			f := strings.Fields(string(stat[i+1:]))
			if len(f) < 13 {
				continue
			}
			var user, sys float64
			_, err1 := fmt.Sscan(f[11], &user)
			_, err2 := fmt.Sscan(f[12], &sys)
			if err1 == nil && err2 == nil {
				seen[int(pid)] = max(seen[int(pid)], (user+sys)/tick)
			}
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			sample()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() float64 {
		close(done)
		wg.Wait()
		sample()
		_ = conn.Close(ctx)
		total := 0.0
		for _, s := range seen {
			total += s
		}
		return total
	}, nil
}

// runSinkCase runs the case -child names.
func runSinkCase(ctx context.Context) (result, error) {
	keys := strings.Split(*childKeys, ",")
	switch *child {
	case "pg-ceiling":
		return copyCeiling(ctx, false)
	case "pg-ceiling-meta":
		return copyCeiling(ctx, true)
	case "pg-amqp-snapshot":
		return consumeSnapshot(ctx, keys)
	case "pg-snapshot":
		return sinkPass(ctx, sink.Snapshot, keys, false)
	case "pg-upsert":
		return sinkPass(ctx, sink.Upsert, keys, false)
	case "pg-update":
		return sinkPass(ctx, sink.Upsert, keys, true)
	case "pg-naive-insert":
		return naive(ctx, keys, false, false)
	case "pg-naive-upsert":
		return naive(ctx, keys, true, false)
	case "pg-naive-update":
		return naive(ctx, keys, true, true)
	}
	return result{}, fmt.Errorf("unknown case %q", *child)
}

// sinkPass lands every batch of the file through the postgres backend as
// the sink does per delivery. With again, it lands them all once untimed,
// then again (each body under another message ID, so the ledger takes it
// as a new batch) timed: every row is then an update.
func sinkPass(ctx context.Context, mode sink.Mode, keys []string, again bool) (result, error) {
	be, err := postgres.Open(ctx, *database, *childSchema)
	if err != nil {
		return result{}, err
	}
	defer be.Close()
	opts := sink.EntityOptions{Keys: keys, Mode: mode}
	var table string
	var decode, swap time.Duration
	pass := func(tag string) (rows int64, err error) {
		decode = 0
		// As the consumer does, the next body is decoded while a batch is
		// applied.
		type decoded struct {
			b    *sink.Batch
			t    sink.Target
			size int
			err  error
		}
		room := sink.NewByteBudget(sink.GroupBytes)
		batches := make(chan decoded, sink.DefaultPrefetch)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			defer close(batches)
			err := bodies(*childBatches, func(body []byte) (bool, error) {
				if !room.Acquire(len(body)) {
					return false, nil
				}
				t0 := time.Now()
				x := decoded{size: len(body)}
				x.b, x.err = sink.DecodeBatch(body, "")
				if x.err == nil {
					if tag != "" {
						x.b.MessageID += "#" + tag
					}
					x.t, x.err = sink.TargetFor(x.b, opts)
				}
				decode += time.Since(t0)
				select {
				case batches <- x:
					return x.err == nil, nil
				case <-stop:
					return false, nil
				}
			})
			if err != nil {
				select {
				case batches <- decoded{err: err}:
				case <-stop:
				}
			}
		})
		defer wg.Wait()
		defer room.Close()
		defer close(stop)
		swapped := false
		for x := range batches {
			if x.err != nil {
				return rows, x.err
			}
			// As the consumer does, the batches decoded meanwhile (up to
			// its default prefetch and sink.GroupBytes of bodies) land with
			// it in one transaction.
			group := []sink.Pending{{Batch: x.b, Target: x.t}}
			size := x.size
		gather:
			for len(group) < sink.DefaultPrefetch && !sink.EndsGroup(group[len(group)-1].Batch, group[len(group)-1].Target) {
				select {
				case y, ok := <-batches:
					if !ok {
						break gather
					}
					if y.err != nil {
						return rows, y.err
					}
					group = append(group, sink.Pending{Batch: y.b, Target: y.t})
					size += y.size
				default:
					break gather
				}
			}
			outs, err := be.ApplyGroup(ctx, group)
			room.Release(size)
			if err != nil {
				return rows, err
			}
			for i, p := range group {
				b, t := p.Batch, p.Target
				table = t.Table
				if outs[i] != sink.Applied {
					return rows, fmt.Errorf("batch %s: %v, want applied", b.MessageID, outs[i])
				}
				rows += int64(len(b.Rows))
				// As the consumer does, a run's snapshot is finished after
				// the group's last batch of it.
				if t.Mode != sink.Snapshot || !sink.FinishesRun(group, i) {
					continue
				}
				t0 := time.Now()
				ok, err := be.FinishSnapshot(ctx, t, b.RunID)
				if ok {
					swap = time.Since(t0)
				}
				if err != nil {
					return rows, err
				}
				swapped = swapped || ok
			}
		}
		if mode == sink.Snapshot && !swapped {
			return rows, errors.New("the snapshot was never swapped in")
		}
		return rows, nil
	}
	if again {
		if _, err := pass("load"); err != nil {
			return result{}, err
		}
	}
	start := time.Now()
	rows, err := pass("timed")
	if err != nil {
		return result{}, err
	}
	r := result{Rows: rows, Seconds: time.Since(start).Seconds(), DecodeSeconds: decode.Seconds(), SwapSeconds: swap.Seconds()}
	return r, checkRows(ctx, *childSchema, table, rows)
}

// checkDatabase is the database URL checkRows connects with: not one
// whose work counts in the case's figures.
var checkDatabase string

// checkRows fails unless schema.table holds want rows: every row landed,
// and the keys are unique (an upsert of a repeated key would hold fewer).
func checkRows(ctx context.Context, schema, table string, want int64) error {
	conn, err := pgx.Connect(ctx, checkDatabase)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(ctx) }()
	var n int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, table}.Sanitize()).Scan(&n); err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("table %s holds %d rows, want %d: are the keys unique?", table, n, want)
	}
	return nil
}

// copyCeiling COPYs the CSV's rows, in one statement, into a table of text
// columns; with meta, each row with the values of the sink's metadata
// columns too, into a table shaped like the sink's.
func copyCeiling(ctx context.Context, meta bool) (result, error) {
	_, path, _ := strings.Cut(*childEnt, ":")
	f, err := os.Open(path)
	if err != nil {
		return result{}, err
	}
	defer func() { _ = f.Close() }()
	br := bufio.NewReaderSize(f, 1<<20)
	if bom, _ := br.Peek(3); bytes.Equal(bom, []byte("\ufeff")) {
		_, _ = br.Discard(3)
	}
	cr := csv.NewReader(br)
	cr.ReuseRecord = true
	cols, err := cr.Read()
	if err != nil {
		return result{}, err
	}
	cols = slices.Clone(cols)
	conn, err := pgx.Connect(ctx, *database)
	if err != nil {
		return result{}, err
	}
	defer func() { _ = conn.Close(ctx) }()
	table := pgx.Identifier{*childSchema, "ceiling"}
	if err := createTextTable(ctx, conn, table, cols, nil); err != nil {
		return result{}, err
	}
	src := &csvSource{r: cr, vals: make([]any, len(cols))}
	copyCols := cols
	if meta {
		if _, err := conn.Exec(ctx, "ALTER TABLE "+table.Sanitize()+` ADD _dmf_export text NOT NULL, ADD _dmf_run text NOT NULL,
			ADD _dmf_execution text NOT NULL, ADD _dmf_batch integer NOT NULL, ADD _dmf_row bigint NOT NULL, ADD _dmf_document jsonb,
			ADD _dmf_loaded_at timestamptz NOT NULL DEFAULT now()`); err != nil {
			return result{}, err
		}
		copyCols = append(slices.Clone(cols), "_dmf_export", "_dmf_run", "_dmf_execution", "_dmf_batch", "_dmf_row", "_dmf_document")
		src.vals = make([]any, len(copyCols))
		src.meta = true
	}
	start := time.Now()
	n, err := conn.CopyFrom(ctx, table, copyCols, src)
	if err != nil {
		return result{}, err
	}
	return result{Rows: n, Seconds: time.Since(start).Seconds()}, nil
}

// createTextTable creates the schema and a table of text columns, with
// keys as its primary key when given.
func createTextTable(ctx context.Context, conn *pgx.Conn, table pgx.Identifier, cols, keys []string) error {
	defs := make([]string, 0, len(cols)+1)
	for _, c := range cols {
		defs = append(defs, pgx.Identifier{c}.Sanitize()+" text")
	}
	if len(keys) > 0 {
		defs = append(defs, "PRIMARY KEY ("+quoteNames(keys)+")")
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{table[0]}.Sanitize()); err != nil {
		return err
	}
	_, err := conn.Exec(ctx, "CREATE TABLE "+table.Sanitize()+" ("+strings.Join(defs, ", ")+")")
	return err
}

func quoteNames(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = pgx.Identifier{n}.Sanitize()
	}
	return strings.Join(q, ", ")
}

// csvSource streams CSV records to CopyFrom; with meta, followed by the
// values the sink's metadata columns would have.
type csvSource struct {
	r    *csv.Reader
	vals []any
	meta bool
	row  int64
	err  error
}

func (s *csvSource) Next() bool {
	rec, err := s.r.Read()
	if err != nil {
		if !errors.Is(err, io.EOF) {
			s.err = err
		}
		return false
	}
	for i, v := range rec {
		s.vals[i] = v
	}
	s.row++
	if s.meta {
		n := len(rec)
		s.vals[n], s.vals[n+1], s.vals[n+2] = "bench", "20261201T000000Z-bench", "bench-exec"
		s.vals[n+3], s.vals[n+4], s.vals[n+5] = int32((s.row-1)/int64(*batch)), s.row, nil
	}
	return true
}
func (s *csvSource) Values() ([]any, error) { return s.vals, nil }
func (s *csvSource) Err() error             { return s.err }

// naiveMessage is a batch body as a hand-written consumer decodes it.
type naiveMessage struct {
	Data struct {
		Columns []string            `json:"columns"`
		Rows    []map[string]string `json:"rows"`
	} `json:"data"`
}

// naive is the consumer a user would write: per message, a transaction
// with one INSERT per row (upsert: INSERT … ON CONFLICT DO UPDATE), over
// the first -naive-rows rows. With present, those rows are in the table
// before the timed pass (copied in, untimed).
func naive(ctx context.Context, keys []string, upsert, present bool) (result, error) {
	conn, err := pgx.Connect(ctx, *database)
	if err != nil {
		return result{}, err
	}
	defer func() { _ = conn.Close(ctx) }()
	table := pgx.Identifier{*childSchema, "naive"}
	limit := int64(*naiveRows)
	// The table is made from the first message's columns, untimed.
	var first naiveMessage
	err = bodies(*childBatches, func(body []byte) (bool, error) { return false, json.Unmarshal(body, &first) })
	if err != nil {
		return result{}, err
	}
	cols := first.Data.Columns
	var pk []string
	if upsert {
		pk = keys
	}
	if err := createTextTable(ctx, conn, table, cols, pk); err != nil {
		return result{}, err
	}
	ph := make([]string, len(cols))
	var set []string
	for i, c := range cols {
		ph[i] = fmt.Sprintf("$%d", i+1)
		if !slices.Contains(keys, c) {
			set = append(set, pgx.Identifier{c}.Sanitize()+" = EXCLUDED."+pgx.Identifier{c}.Sanitize())
		}
	}
	stmt := "INSERT INTO " + table.Sanitize() + " (" + quoteNames(cols) + ") VALUES (" + strings.Join(ph, ", ") + ")"
	if upsert {
		stmt += " ON CONFLICT (" + quoteNames(keys) + ") DO UPDATE SET " + strings.Join(set, ", ")
	}
	if present {
		var n int64
		err := bodies(*childBatches, func(body []byte) (bool, error) {
			var m naiveMessage
			if err := json.Unmarshal(body, &m); err != nil {
				return false, err
			}
			if _, err := conn.CopyFrom(ctx, table, cols, pgx.CopyFromSlice(len(m.Data.Rows), func(i int) ([]any, error) {
				vals := make([]any, len(cols))
				for j, c := range cols {
					vals[j] = m.Data.Rows[i][c]
				}
				return vals, nil
			})); err != nil {
				return false, err
			}
			n += int64(len(m.Data.Rows))
			return n < limit, nil
		})
		if err != nil {
			return result{}, err
		}
	}
	var rows int64
	start := time.Now()
	err = bodies(*childBatches, func(body []byte) (bool, error) {
		var m naiveMessage
		if err := json.Unmarshal(body, &m); err != nil {
			return false, err
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			return false, err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		for _, row := range m.Data.Rows {
			vals := make([]any, len(m.Data.Columns))
			for j, c := range m.Data.Columns {
				vals[j] = row[c]
			}
			if _, err := tx.Exec(ctx, stmt, vals...); err != nil {
				return false, err
			}
		}
		if err := tx.Commit(ctx); err != nil {
			return false, err
		}
		rows += int64(len(m.Data.Rows))
		return rows < limit, nil
	})
	if err != nil {
		return result{}, err
	}
	r := result{Rows: rows, Seconds: time.Since(start).Seconds()}
	return r, checkRows(ctx, *childSchema, "naive", rows)
}

// consumeSnapshot is the snapshot case through RabbitMQ: the batches are
// published to a classic queue of the case's own (not timed), then the
// sink's consumer (sink.Consumer, with its prefetch and decoding ahead)
// lands them until the snapshot is swapped in.
func consumeSnapshot(ctx context.Context, keys []string) (result, error) {
	var entity string
	err := bodies(*childBatches, func(body []byte) (bool, error) {
		b, err := sink.DecodeBatch(body, "")
		if err == nil {
			entity = b.Entity
		}
		return false, err
	})
	if err != nil {
		return result{}, err
	}
	be, err := postgres.Open(ctx, *database, *childSchema)
	if err != nil {
		return result{}, err
	}
	defer be.Close()
	queue := fmt.Sprintf("dmfbench.sink.%d", os.Getpid())
	c := &sink.Consumer{Name: "bench", URL: *url, Queue: queue, Backend: be, Prefetch: *prefetch,
		Entities: map[string]sink.EntityOptions{entity: {Keys: keys, Mode: sink.Snapshot}}}
	conn, ch, err := confirmChannel(*url)
	if err != nil {
		return result{}, err
	}
	defer func() { _ = conn.Close() }()
	defer func() {
		for _, q := range []string{queue, sink.DeadLetterName(queue)} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(sink.DeadLetterName(queue), false, false)
	}()
	if err := c.Declare(ctx); err != nil {
		return result{}, err
	}
	var n int64
	err = bodies(*childBatches, func(body []byte) (bool, error) {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, amqp.Publishing{
			MessageId: fmt.Sprint(n), ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body})
		if err != nil {
			return false, err
		}
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			return false, fmt.Errorf("broker refused batch %d: %w", n, err)
		}
		n++
		return true, nil
	})
	if err != nil {
		return result{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- c.Run(runCtx) }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	st := c.Stats()
	for st.Swaps.Load() == 0 {
		select {
		case err := <-done:
			return result{}, fmt.Errorf("consumer stopped after %d of %d batches: %w", st.Batches.Load(), n, err)
		case <-tick.C:
		}
		if st.DeadLetters.Load() > 0 {
			return result{}, errors.New("the consumer dead-lettered a batch")
		}
	}
	elapsed := time.Since(start)
	stop()
	if err := <-done; err != nil {
		return result{}, err
	}
	rows := st.Rows.Load()
	r := result{Rows: rows, Messages: n, Seconds: elapsed.Seconds()}
	return r, checkRows(ctx, *childSchema, sink.TableName(entity), rows)
}
