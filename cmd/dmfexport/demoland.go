package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/sink"
)

// demoSchema is the PostgreSQL schema the demo lands in when DATABASE_URL
// names a PostgreSQL database and the sink names no schema.
const demoSchema = "dmfexport_demo"

// demoLandTimeout bounds the wait for a sink to land the demo's batches.
const demoLandTimeout = 2 * time.Minute

// demoSampleRows is how many rows of a table the demo shows.
const demoSampleRows = 10

// demoLanding is one sink of the demo configuration, landing the demo's
// batches in this process as dmfexport sink would.
type demoLanding struct {
	cfg      *jobs.SinkConfig
	backend  sinkBackend
	consumer *sink.Consumer
	exports  []*jobs.Export // the exports it consumes
}

// prepareLandings readies the sinks of cfg that consume one of exps
// through RabbitMQ: it points them at the database DATABASE_URL names,
// when it is set, opens the database and declares the sink's queue, so
// that it receives every batch published from then on.
func prepareLandings(ctx context.Context, cfg *jobs.Config, exps []*jobs.Export, log *slog.Logger, out io.Writer) ([]*demoLanding, error) {
	var landings []*demoLanding
	for i := range cfg.Sinks {
		s := &cfg.Sinks[i]
		l := &demoLanding{cfg: s}
		for _, e := range exps {
			if s.Consumes(e) {
				if e.Broker.Type != "amqp" {
					fmt.Fprintf(out, "Sink %s lands nothing: export %s writes files, and a sink reads RabbitMQ.\n", s.Name, e.Name)
					continue
				}
				l.exports = append(l.exports, e)
			}
		}
		if len(l.exports) == 0 {
			continue
		}
		if os.Getenv("DATABASE_URL") != "" {
			wd, err := os.Getwd()
			if err != nil {
				return nil, fmt.Errorf("demo: find the working directory: %w", err)
			}
			if err := s.SetDatabaseFromEnv("DATABASE_URL", os.LookupEnv, wd); err != nil {
				return nil, fmt.Errorf("demo: sink %s: %w", s.Name, err)
			}
			if s.SQLitePath() == "" && s.Schema == "" {
				s.Schema = demoSchema
			}
		}
		be, err := openBackend(ctx, s)
		if err != nil {
			return nil, fmt.Errorf("demo: sink %s: %w (unset DATABASE_URL to land in SQLite)", s.Name, err)
		}
		l.backend = be
		landings = append(landings, l)
		l.consumer = newConsumer(s, be, log, nil)
		if err := l.consumer.Declare(ctx); err != nil {
			return landings, fmt.Errorf("demo: %w", err)
		}
	}
	return landings, nil
}

// close closes the sink's database.
func (l *demoLanding) close() {
	if l.backend != nil {
		l.backend.Close()
	}
}

// land consumes the sink's queue until the ledger holds every batch the
// newest run of each of its exports published (or what is missing was
// dead-lettered), then stops and shows what landed: each table's rows,
// and the first rows of the largest table.
func (l *demoLanding) land(ctx context.Context, out io.Writer) error {
	var names, runs []string
	want := map[[2]string]int64{} // run, entity → batches
	var total int64
	for _, e := range l.exports {
		recs, err := jobs.Records(ctx, e, 1)
		if err != nil {
			return err
		}
		for _, r := range recs {
			names, runs = append(names, e.Name), append(runs, r.RunID)
			for _, en := range r.Entities {
				want[[2]string{r.RunID, en.Entity}] += en.Batches
				total += en.Batches
			}
		}
	}
	fmt.Fprintf(out, "\nLanding %d batches with sink %s (queue %q) in %s...\n", total, l.cfg.Name, l.cfg.Queue, databaseName(l.cfg))
	led, err := openLedger(ctx, l.cfg)
	if err != nil {
		return fmt.Errorf("sink %s: %w", l.cfg.Name, err)
	}
	defer led.Close()

	start := time.Now()
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.consumer.Run(cctx) }()
	applied, rows, err := l.await(ctx, led, names, runs, want, total, done)
	stop()
	if runErr := <-done; err == nil && runErr != nil {
		err = runErr
	}
	if err != nil {
		return fmt.Errorf("sink %s: %w", l.cfg.Name, err)
	}
	fmt.Fprintf(out, "Landed %d batches (%d rows) in %s", applied, rows, time.Since(start).Round(time.Millisecond))
	if dead := l.consumer.Stats().DeadLetters.Load(); dead > 0 {
		fmt.Fprintf(out, "; %d batches could not be applied: see the dead-letter queue %s.dead", dead, l.cfg.Queue)
	}
	fmt.Fprintln(out, ".")
	return l.show(ctx, led, out)
}

// await waits until the ledger holds the wanted batches of runs, or the
// consumer dead-lettered those missing, the consumer stops, or
// demoLandTimeout passes. It returns the batches and rows the ledger
// holds of runs.
func (l *demoLanding) await(ctx context.Context, led sink.LedgerReader, names, runs []string, want map[[2]string]int64, total int64, done chan error) (int64, int64, error) {
	deadline := time.Now().Add(demoLandTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		landed, _, err := led.Landed(ctx, names, runs)
		if err != nil {
			return 0, 0, err
		}
		var batches, rows int64
		complete := true
		got := map[[2]string]int64{}
		for _, x := range landed {
			got[[2]string{x.Run, x.Entity}] += x.Batches
			batches += x.Batches
			rows += x.Rows
		}
		for k, n := range want {
			complete = complete && got[k] >= n
		}
		if complete || batches+l.consumer.Stats().DeadLetters.Load() >= total {
			return batches, rows, nil
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case err := <-done:
			done <- err // land reads it again
			if err == nil {
				err = errors.New("the consumer stopped")
			}
			return 0, 0, err
		case <-tick.C:
			if time.Now().After(deadline) {
				return 0, 0, fmt.Errorf("%d of %d batches landed after %s: is another consumer on queue %q?", batches, total, demoLandTimeout, l.cfg.Queue)
			}
		}
	}
}

// show prints the rows of each table the sink landed in and the first
// rows of the largest.
func (l *demoLanding) show(ctx context.Context, led sink.LedgerReader, out io.Writer) error {
	runs, err := led.LastRuns(ctx)
	if err != nil {
		return fmt.Errorf("sink %s: %w", l.cfg.Name, err)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TABLE\tENTITY\tROWS")
	var largest *sink.TableSample
	for _, r := range runs {
		s, err := l.backend.Sample(ctx, r.Table, 0)
		if err != nil {
			// An entity of no rows has no table.
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\n", printable(r.Table), printable(r.Entity), s.Count)
		if largest == nil || s.Count > largest.Count {
			largest = s
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if largest == nil {
		return nil
	}
	s, err := l.backend.Sample(ctx, largest.Table, demoSampleRows)
	if err != nil {
		return fmt.Errorf("sink %s: %w", l.cfg.Name, err)
	}
	fmt.Fprintf(out, "\nThe first %d of the %d rows of %s (entity columns; the _dmf_ columns say where each row came from):\n", len(s.Rows), s.Count, printable(s.Table))
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	var cols []int
	var head []string
	for i, c := range s.Columns {
		if !strings.HasPrefix(c, "_dmf_") {
			cols = append(cols, i)
			head = append(head, printable(c))
		}
	}
	fmt.Fprintln(tw, "  "+strings.Join(head, "\t"))
	for _, r := range s.Rows {
		vals := make([]string, len(cols))
		for j, i := range cols {
			vals[j] = "NULL"
			if r[i] != nil {
				vals[j] = printable(oneLine(*r[i], 28))
			}
		}
		fmt.Fprintln(tw, "  "+strings.Join(vals, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "Query it yourself: %s\n", l.queryHint(s.Table))
	return nil
}

// queryHint is a command line that queries table.
func (l *demoLanding) queryHint(table string) string {
	q := fmt.Sprintf("SELECT * FROM %s LIMIT %d", sqlIdent(table), demoSampleRows)
	if path := l.cfg.SQLitePath(); path != "" {
		return "sqlite3 " + jobs.ShellQuote(path) + " " + jobs.ShellQuote(q)
	}
	q = fmt.Sprintf("SELECT * FROM %s.%s LIMIT %d", sqlIdent(l.cfg.Schema), sqlIdent(table), demoSampleRows)
	return `psql "$DATABASE_URL" -c ` + jobs.ShellQuote(q)
}

// where says where the sink landed the batches, and adds how to remove
// them to cleanup.
func (l *demoLanding) where(out io.Writer, cleanup []string) []string {
	fmt.Fprintf(out, "  sink %s: tables in %s, from queue %q\n", l.cfg.Name, databaseName(l.cfg), l.cfg.Queue)
	if path := l.cfg.SQLitePath(); path != "" {
		removed := slices.ContainsFunc(cleanup, func(c string) bool {
			dir, ok := strings.CutPrefix(c, "rm -rf ")
			return ok && strings.HasPrefix(path, strings.Trim(dir, "'")+string(filepath.Separator))
		})
		if !removed {
			cleanup = appendNew(cleanup, "rm -f "+jobs.ShellQuote(path)+" "+jobs.ShellQuote(path+"-wal")+" "+jobs.ShellQuote(path+"-shm"))
		}
	} else {
		cleanup = appendNew(cleanup, `psql "$DATABASE_URL" -c `+jobs.ShellQuote(fmt.Sprintf("DROP SCHEMA %s, %s CASCADE",
			sqlIdent(l.cfg.Schema), sqlIdent(l.cfg.Schema+"_staging"))))
	}
	dead := sink.DeadLetterName(l.cfg.Queue)
	cleanup = appendNew(cleanup, "rabbitmqctl delete_queue "+jobs.ShellQuote(l.cfg.Queue))
	cleanup = appendNew(cleanup, "rabbitmqctl delete_queue "+jobs.ShellQuote(dead))
	return appendNew(cleanup, "rabbitmqadmin delete exchange name="+jobs.ShellQuote(dead))
}

// sqlIdent quotes an SQL identifier when it needs it.
func sqlIdent(name string) string {
	if name != "" && strings.IndexFunc(name, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') }) < 0 {
		return name
	}
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}
