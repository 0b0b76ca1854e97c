// Package postgres is the PostgreSQL backend of the sink: each entity is a
// table of text columns in the sink's schema, a snapshot is staged in a
// table of the same name in the schema "<schema>_staging", and the ledger
// of applied batches (dmfexport_ledger) and the state of snapshots
// (dmfexport_snapshots) sit beside the entity tables. Everything is
// created on first use.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dmfexport/dmfexport/internal/redact"
	"github.com/dmfexport/dmfexport/sink"
)

// metaColumns are written with every row, in this order, after the
// entity's columns.
var metaColumns = []string{sink.ColExport, sink.ColRun, sink.ColExecution, sink.ColBatch, sink.ColRow, sink.ColDocument}

// Backend lands batches in one schema of a PostgreSQL database. It is safe
// for concurrent use, and any number of processes may share a schema.
type Backend struct {
	pool    *pgxpool.Pool
	schema  string
	staging string
	secret  string // the URL's password, hidden from errors

	mu   sync.Mutex
	cols map[string]map[string]bool // table → its columns, as last seen
}

var _ sink.Backend = (*Backend)(nil)

// Open connects to the database at url and creates schema, its staging
// schema and the ledger and snapshot tables if they are missing.
func Open(ctx context.Context, url, schema string) (*Backend, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database URL %s: %w", redact.URL(url), redact.Error(err, []string{passwordOf(url)}))
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redact.URL(url), err)
	}
	if schema == "" {
		schema = "public"
	}
	b := &Backend{pool: pool, schema: schema, staging: stagingSchema(schema), secret: cfg.ConnConfig.Password, cols: map[string]map[string]bool{}}
	if err := b.setup(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return b, nil
}

func passwordOf(url string) string {
	if cfg, err := pgconn.ParseConfig(url); err == nil {
		return cfg.Password
	}
	return ""
}

// stagingSchema is the schema of schema's staging tables.
func stagingSchema(schema string) string {
	s := schema + "_staging"
	for len(s) > 63 {
		s = s[:len(s)-len("_staging")-1] + "_staging"
	}
	return s
}

// Close closes the connections.
func (b *Backend) Close() { b.pool.Close() }

// Schema is the schema the entity tables are in.
func (b *Backend) Schema() string { return b.schema }

func (b *Backend) ident(parts ...string) string { return pgx.Identifier(parts).Sanitize() }

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = pgx.Identifier{n}.Sanitize()
	}
	return strings.Join(q, ", ")
}

// ddlLock serializes the sink's DDL on the schema across processes, for
// the rest of tx: CREATE ... IF NOT EXISTS run at once by two sessions can
// fail, and columns must be added to a table and its staging table alike.
func (b *Backend) ddlLock(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "dmfexport/ddl/"+b.schema)
	return err
}

func (b *Backend) setup(ctx context.Context) error {
	return b.inTx(ctx, func(tx pgx.Tx) error {
		if err := b.ddlLock(ctx, tx); err != nil {
			return err
		}
		for _, q := range []string{
			"CREATE SCHEMA IF NOT EXISTS " + b.ident(b.schema),
			"CREATE SCHEMA IF NOT EXISTS " + b.ident(b.staging),
			`CREATE TABLE IF NOT EXISTS ` + b.ident(b.schema, sink.LedgerTable) + ` (
				message_id  text PRIMARY KEY,
				export      text NOT NULL,
				run         text NOT NULL,
				execution   text NOT NULL,
				entity      text NOT NULL,
				table_name  text NOT NULL,
				mode        text NOT NULL,
				batch_index integer NOT NULL,
				batch_count integer,
				rows        integer NOT NULL,
				outcome     text NOT NULL,
				applied_at  timestamptz NOT NULL DEFAULT now())`,
			`CREATE INDEX IF NOT EXISTS dmfexport_ledger_run ON ` + b.ident(b.schema, sink.LedgerTable) + ` (table_name, run)`,
			`CREATE TABLE IF NOT EXISTS ` + b.ident(b.schema, sink.SnapshotsTable) + ` (
				table_name  text NOT NULL,
				run         text NOT NULL,
				run_time    timestamptz NOT NULL,
				entity      text NOT NULL,
				batch_count integer,
				rows        bigint,
				swapped_at  timestamptz,
				superseded  boolean NOT NULL DEFAULT false,
				PRIMARY KEY (table_name, run))`,
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("create the sink's tables in schema %s: %w", b.schema, err)
			}
		}
		return nil
	})
}

// inTx runs f in a transaction and commits it; errors the database would
// give again for the same data wrap sink.ErrRejected.
func (b *Backend) inTx(ctx context.Context, f func(pgx.Tx) error) error {
	err := pgx.BeginFunc(ctx, b.pool, f)
	if err == nil {
		return nil
	}
	if rejected(err) && !errors.Is(err, sink.ErrRejected) {
		return fmt.Errorf("%w: %w", sink.ErrRejected, err)
	}
	return err
}

// faultPoint is called inside a transaction that is about to commit:
// "apply" (a batch's rows and ledger entry are written) and "swap" (a
// snapshot has replaced its table's rows). The fault suite's builds (-tags
// faults) pause there to kill the sink mid-transaction; release builds
// hold no hook.
var faultPoint = func(point string) {}

// atFaultPoint calls faultPoint(point) after f succeeds, before the commit.
func atFaultPoint(point string, f func(pgx.Tx) error) func(pgx.Tx) error {
	return func(tx pgx.Tx) error {
		if err := f(tx); err != nil {
			return err
		}
		faultPoint(point)
		return nil
	}
}

// rejected tells whether err is the database refusing the data: a data
// exception (class 22), an integrity violation (23), a name or syntax it
// refuses (42) or a limit (54). Others (connections, deadlocks, a
// restarting server) may pass on another attempt.
func rejected(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) < 2 {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23", "42", "54":
		return true
	}
	return false
}

// Applied reports whether the ledger holds messageID.
func (b *Backend) Applied(ctx context.Context, messageID string) (bool, error) {
	var ok bool
	err := b.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+b.ident(b.schema, sink.LedgerTable)+" WHERE message_id = $1)", messageID).Scan(&ok)
	return ok, err
}

// Apply lands the batch in one transaction with its ledger entry (see
// sink.Backend).
func (b *Backend) Apply(ctx context.Context, bt *sink.Batch, t sink.Target) (sink.Outcome, error) {
	out := sink.Applied
	// learned is the table's columns once the transaction commits; known
	// to other goroutines only then, or they would skip creating a table
	// that may yet be rolled back.
	var learned map[string]bool
	err := b.inTx(ctx, atFaultPoint("apply", func(tx pgx.Tx) error {
		out, learned = sink.Applied, nil
		var bc *int
		if bt.BatchCount > 0 {
			bc = &bt.BatchCount
		}
		tag, err := tx.Exec(ctx, `INSERT INTO `+b.ident(b.schema, sink.LedgerTable)+`
			(message_id, export, run, execution, entity, table_name, mode, batch_index, batch_count, rows, outcome)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'applied') ON CONFLICT (message_id) DO NOTHING`,
			bt.MessageID, bt.Export, bt.RunID, bt.ExecutionID, bt.Entity, t.Table, string(t.Mode), bt.BatchIndex, bc, len(bt.Rows))
		if err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
		if tag.RowsAffected() == 0 {
			out = sink.Duplicate
			return nil
		}
		var stale bool
		err = tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+b.ident(b.schema, sink.SnapshotsTable)+`
			WHERE table_name = $1 AND swapped_at IS NOT NULL AND (run_time, run) >= ($2, $3))`, t.Table, bt.RunTime, bt.RunID).Scan(&stale)
		if err != nil {
			return fmt.Errorf("snapshot state: %w", err)
		}
		if stale {
			out = sink.Stale
			_, err := tx.Exec(ctx, "UPDATE "+b.ident(b.schema, sink.LedgerTable)+" SET outcome = 'stale' WHERE message_id = $1", bt.MessageID)
			return err
		}
		if learned, err = b.ensureTable(ctx, tx, bt, t); err != nil {
			return err
		}
		switch t.Mode {
		case sink.Snapshot:
			q := `INSERT INTO ` + b.ident(b.schema, sink.SnapshotsTable) + ` (table_name, run, run_time, entity, batch_count)
				VALUES ($1, $2, $3, $4, $5) ON CONFLICT (table_name, run) DO NOTHING`
			if bc != nil {
				q = strings.Replace(q, "DO NOTHING", "DO UPDATE SET batch_count = EXCLUDED.batch_count", 1)
			}
			if _, err := tx.Exec(ctx, q, t.Table, bt.RunID, bt.RunTime, bt.Entity, bc); err != nil {
				return fmt.Errorf("snapshot state: %w", err)
			}
			return b.copyRows(ctx, tx, b.staging, t.Table, bt)
		case sink.Append:
			return b.copyRows(ctx, tx, b.schema, t.Table, bt)
		case sink.Upsert:
			return b.upsert(ctx, tx, bt, t)
		}
		return fmt.Errorf("%w: unknown mode %q", sink.ErrRejected, t.Mode)
	}))
	if err != nil {
		b.forget(t.Table)
		return out, fmt.Errorf("table %s: %w", t.Table, err)
	}
	if learned != nil {
		b.mu.Lock()
		b.cols[t.Table] = learned
		b.mu.Unlock()
	}
	return out, nil
}

func (b *Backend) forget(table string) {
	b.mu.Lock()
	delete(b.cols, table)
	b.mu.Unlock()
}

// ensureTable creates t.Table (and, for a snapshot, its staging table) or
// adds the batch's columns it lacks, to both. A table is created with a
// primary key on t.Keys unless it is appended to. It returns the table's
// columns when it looked them up, nil when it knew them.
func (b *Backend) ensureTable(ctx context.Context, tx pgx.Tx, bt *sink.Batch, t sink.Target) (map[string]bool, error) {
	want := slices.Concat(t.Keys, bt.Columns)
	if t.Mode == sink.Upsert {
		for _, k := range t.Keys {
			if !slices.Contains(bt.Columns, k) {
				return nil, fmt.Errorf("%w: key column %q is not in the batch (columns %q)", sink.ErrRejected, k, bt.Columns)
			}
		}
	}
	b.mu.Lock()
	known := b.cols[t.Table]
	b.mu.Unlock()
	if known != nil && (t.Mode != sink.Snapshot || known["\x00staging"]) {
		missing := false
		for _, c := range want {
			missing = missing || !known[c]
		}
		if !missing {
			return nil, nil
		}
	}
	if err := b.ddlLock(ctx, tx); err != nil {
		return nil, err
	}
	live, err := b.columns(ctx, tx, b.schema, t.Table)
	if err != nil {
		return nil, err
	}
	if live == nil {
		var defs []string
		for _, c := range dedupe(want) {
			defs = append(defs, pgx.Identifier{c}.Sanitize()+" text")
		}
		defs = append(defs, metaDefs()...)
		if len(t.Keys) > 0 && t.Mode != sink.Append {
			defs = append(defs, "PRIMARY KEY ("+quoteAll(t.Keys)+")")
		}
		if _, err := tx.Exec(ctx, "CREATE TABLE "+b.ident(b.schema, t.Table)+" ("+strings.Join(defs, ", ")+")"); err != nil {
			return nil, fmt.Errorf("create table: %w", err)
		}
		live = map[string]bool{}
		for _, c := range want {
			live[c] = true
		}
	}
	if err := b.addColumns(ctx, tx, b.schema, t.Table, live, want); err != nil {
		return nil, err
	}
	if t.Mode == sink.Snapshot {
		staged, err := b.columns(ctx, tx, b.staging, t.Table)
		if err != nil {
			return nil, err
		}
		if staged == nil {
			// Like the table, without its keys: a run's rows are checked
			// against them when they replace the table's.
			if _, err := tx.Exec(ctx, "CREATE TABLE "+b.ident(b.staging, t.Table)+" (LIKE "+b.ident(b.schema, t.Table)+" INCLUDING DEFAULTS)"); err != nil {
				return nil, fmt.Errorf("create staging table: %w", err)
			}
			if _, err := tx.Exec(ctx, "CREATE INDEX ON "+b.ident(b.staging, t.Table)+" ("+pgx.Identifier{sink.ColRun}.Sanitize()+")"); err != nil {
				return nil, fmt.Errorf("create staging table: %w", err)
			}
			staged = live
		}
		// The staging table has every column of the table, so a swap
		// can copy the table's column list.
		var all []string
		for c := range live {
			all = append(all, c)
		}
		slices.Sort(all)
		if err := b.addColumns(ctx, tx, b.staging, t.Table, staged, all); err != nil {
			return nil, err
		}
		live["\x00staging"] = true
	}
	return live, nil
}

func metaDefs() []string {
	return []string{
		pgx.Identifier{sink.ColExport}.Sanitize() + " text NOT NULL",
		pgx.Identifier{sink.ColRun}.Sanitize() + " text NOT NULL",
		pgx.Identifier{sink.ColExecution}.Sanitize() + " text NOT NULL",
		pgx.Identifier{sink.ColBatch}.Sanitize() + " integer NOT NULL",
		pgx.Identifier{sink.ColRow}.Sanitize() + " bigint NOT NULL",
		pgx.Identifier{sink.ColDocument}.Sanitize() + " jsonb",
		pgx.Identifier{sink.ColLoadedAt}.Sanitize() + " timestamptz NOT NULL DEFAULT now()",
	}
}

func dedupe(names []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// addColumns adds to schema.table the columns of want that have lacks,
// as text, and records them in have.
func (b *Backend) addColumns(ctx context.Context, tx pgx.Tx, schema, table string, have map[string]bool, want []string) error {
	var adds []string
	for _, c := range dedupe(want) {
		if !have[c] {
			adds = append(adds, "ADD COLUMN IF NOT EXISTS "+pgx.Identifier{c}.Sanitize()+" text")
			have[c] = true
		}
	}
	if len(adds) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, "ALTER TABLE "+b.ident(schema, table)+" "+strings.Join(adds, ", ")); err != nil {
		return fmt.Errorf("add columns: %w", err)
	}
	return nil
}

// columns returns the columns of schema.table, or nil when it does not
// exist.
func (b *Backend) columns(ctx context.Context, tx pgx.Tx, schema, table string) (map[string]bool, error) {
	rows, err := tx.Query(ctx, `SELECT a.attname FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped`, schema, table)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, nil
	}
	out := map[string]bool{}
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}

// copyRows writes the batch's rows into schema.table with COPY.
func (b *Backend) copyRows(ctx context.Context, tx pgx.Tx, schema, table string, bt *sink.Batch) error {
	cols := slices.Concat(bt.Columns, metaColumns)
	n := len(bt.Columns)
	row := make([]any, len(cols))
	_, err := tx.CopyFrom(ctx, pgx.Identifier{schema, table}, cols, pgx.CopyFromSlice(len(bt.Rows), func(i int) ([]any, error) {
		for j, v := range bt.Rows[i] {
			if v == nil {
				row[j] = nil
			} else {
				row[j] = *v
			}
		}
		row[n], row[n+1], row[n+2], row[n+3], row[n+4] = bt.Export, bt.RunID, bt.ExecutionID, bt.BatchIndex, int64(bt.FirstRow+i)
		row[n+5] = nil
		if bt.Documents != nil && bt.Documents[i] != nil {
			row[n+5] = string(bt.Documents[i])
		}
		return row, nil
	}))
	if err != nil {
		return fmt.Errorf("copy rows: %w", err)
	}
	return nil
}

// upsert inserts the batch's rows, or updates the rows with the same keys,
// in one statement. Of rows repeating a key within the batch the last one
// wins, as it would applied one by one.
func (b *Backend) upsert(ctx context.Context, tx pgx.Tx, bt *sink.Batch, t sink.Target) error {
	if len(bt.Rows) == 0 {
		return nil
	}
	keyIdx := make([]int, len(t.Keys))
	for i, k := range t.Keys {
		keyIdx[i] = slices.Index(bt.Columns, k)
	}
	last := map[string]int{}
	for i, r := range bt.Rows {
		var kb strings.Builder
		for _, j := range keyIdx {
			if r[j] == nil {
				return fmt.Errorf("%w: row %d has no value for key column %q", sink.ErrRejected, bt.FirstRow+i, bt.Columns[j])
			}
			fmt.Fprintf(&kb, "%d:%s", len(*r[j]), *r[j])
		}
		last[kb.String()] = i
	}
	keep := make([]int, 0, len(last))
	for _, i := range last {
		keep = append(keep, i)
	}
	slices.Sort(keep)
	arrays := make([]any, 0, len(bt.Columns)+2)
	for j := range bt.Columns {
		col := make([]*string, len(keep))
		for x, i := range keep {
			col[x] = bt.Rows[i][j]
		}
		arrays = append(arrays, col)
	}
	rowNums := make([]int64, len(keep))
	docs := make([]*string, len(keep))
	for x, i := range keep {
		rowNums[x] = int64(bt.FirstRow + i)
		if bt.Documents != nil && bt.Documents[i] != nil {
			s := string(bt.Documents[i])
			docs[x] = &s
		}
	}
	arrays = append(arrays, rowNums, docs)
	var unnest, sel, set []string
	for j, c := range bt.Columns {
		unnest = append(unnest, fmt.Sprintf("$%d::text[]", j+1))
		sel = append(sel, fmt.Sprintf("u.c%d", j))
		if !slices.Contains(t.Keys, c) {
			q := pgx.Identifier{c}.Sanitize()
			set = append(set, q+" = EXCLUDED."+q)
		}
	}
	n := len(bt.Columns)
	unnest = append(unnest, fmt.Sprintf("$%d::bigint[]", n+1), fmt.Sprintf("$%d::text[]", n+2))
	names := make([]string, 0, n+2)
	for j := range n {
		names = append(names, fmt.Sprintf("c%d", j))
	}
	names = append(names, "rn", "doc")
	sel = append(sel, fmt.Sprintf("$%d", n+3), fmt.Sprintf("$%d", n+4), fmt.Sprintf("$%d", n+5), fmt.Sprintf("$%d::integer", n+6), "u.rn", "u.doc::jsonb")
	arrays = append(arrays, bt.Export, bt.RunID, bt.ExecutionID, bt.BatchIndex)
	for _, c := range metaColumns {
		q := pgx.Identifier{c}.Sanitize()
		set = append(set, q+" = EXCLUDED."+q)
	}
	loaded := pgx.Identifier{sink.ColLoadedAt}.Sanitize()
	set = append(set, loaded+" = now()")
	q := "INSERT INTO " + b.ident(b.schema, t.Table) + " (" + quoteAll(slices.Concat(bt.Columns, metaColumns)) + ") SELECT " +
		strings.Join(sel, ", ") + " FROM unnest(" + strings.Join(unnest, ", ") + ") AS u(" + strings.Join(names, ", ") + ")" +
		" ON CONFLICT (" + quoteAll(t.Keys) + ") DO UPDATE SET " + strings.Join(set, ", ")
	if _, err := tx.Exec(ctx, q, arrays...); err != nil {
		return fmt.Errorf("upsert rows: %w", err)
	}
	return nil
}

// FinishSnapshot replaces t.Table's rows with the run's staged rows once
// every batch of the run is in (see sink.Backend).
func (b *Backend) FinishSnapshot(ctx context.Context, t sink.Target, runID string) (bool, error) {
	swapped := false
	err := b.inTx(ctx, func(tx pgx.Tx) error {
		swapped = false
		// One swap of a table at a time, whichever process holds the last
		// batch of a run.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "dmfexport/snapshot/"+b.schema+"/"+t.Table); err != nil {
			return err
		}
		snaps := b.ident(b.schema, sink.SnapshotsTable)
		var batchCount *int
		var done, superseded bool
		var runTime any
		err := tx.QueryRow(ctx, "SELECT batch_count, swapped_at IS NOT NULL, superseded, run_time FROM "+snaps+" WHERE table_name = $1 AND run = $2",
			t.Table, runID).Scan(&batchCount, &done, &superseded, &runTime)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && (done || superseded || batchCount == nil) {
			return nil
		}
		if err != nil {
			return err
		}
		var in int
		if err := tx.QueryRow(ctx, "SELECT count(DISTINCT batch_index) FROM "+b.ident(b.schema, sink.LedgerTable)+
			" WHERE table_name = $1 AND run = $2 AND outcome = 'applied' AND mode = 'snapshot'", t.Table, runID).Scan(&in); err != nil {
			return err
		}
		if in < *batchCount {
			return nil
		}
		var newer bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+snaps+" WHERE table_name = $1 AND swapped_at IS NOT NULL AND (run_time, run) > ($2, $3))",
			t.Table, runTime, runID).Scan(&newer); err != nil {
			return err
		}
		run := pgx.Identifier{sink.ColRun}.Sanitize()
		staging := b.ident(b.staging, t.Table)
		if newer {
			// A later run's snapshot is in already: this one is not wanted.
			_, err := tx.Exec(ctx, "UPDATE "+snaps+" SET superseded = true WHERE table_name = $1 AND run = $2", t.Table, runID)
			if err == nil {
				_, err = tx.Exec(ctx, "DELETE FROM "+staging+" WHERE "+run+" = $1", runID)
			}
			return err
		}
		// Unfinished older runs are superseded by this one: their staged
		// rows go.
		if _, err := tx.Exec(ctx, "DELETE FROM "+staging+" WHERE "+run+" IN (SELECT run FROM "+snaps+
			" WHERE table_name = $1 AND swapped_at IS NULL AND (run_time, run) < ($2, $3))", t.Table, runTime, runID); err != nil {
			return fmt.Errorf("clear staged rows: %w", err)
		}
		if _, err := tx.Exec(ctx, "UPDATE "+snaps+" SET superseded = true WHERE table_name = $1 AND swapped_at IS NULL AND (run_time, run) < ($2, $3)",
			t.Table, runTime, runID); err != nil {
			return err
		}
		cols, err := b.columns(ctx, tx, b.staging, t.Table)
		if err != nil {
			return err
		}
		var names []string
		for c := range cols {
			if c != sink.ColLoadedAt {
				names = append(names, c)
			}
		}
		slices.Sort(names)
		list := quoteAll(names)
		if _, err := tx.Exec(ctx, "TRUNCATE "+b.ident(b.schema, t.Table)); err != nil {
			return fmt.Errorf("replace rows: %w", err)
		}
		tag, err := tx.Exec(ctx, "INSERT INTO "+b.ident(b.schema, t.Table)+" ("+list+") SELECT "+list+" FROM "+staging+
			" WHERE "+run+" = $1 ORDER BY "+pgx.Identifier{sink.ColRow}.Sanitize(), runID)
		if err != nil {
			return fmt.Errorf("replace rows: %w", err)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM "+staging+" WHERE "+run+" = $1", runID); err != nil {
			return fmt.Errorf("clear staged rows: %w", err)
		}
		if _, err := tx.Exec(ctx, "UPDATE "+snaps+" SET swapped_at = now(), rows = $3 WHERE table_name = $1 AND run = $2", t.Table, runID, tag.RowsAffected()); err != nil {
			return err
		}
		faultPoint("swap")
		swapped = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("table %s: finish snapshot of run %s: %w", t.Table, runID, err)
	}
	return swapped, nil
}

// Sample counts the rows of table and reads the first limit of them in
// the order they were exported (run, batch, row number), every value as
// text, the metadata columns after the entity's.
func (b *Backend) Sample(ctx context.Context, table string, limit int) (*sink.TableSample, error) {
	s := &sink.TableSample{Table: table}
	rows, err := b.pool.Query(ctx, `SELECT a.attname FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, b.schema, table)
	if err != nil {
		return nil, fmt.Errorf("table %s: %w", table, err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("table %s: %w", table, err)
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("table %s: no such table in schema %s", table, b.schema)
	}
	slices.SortStableFunc(cols, func(x, y string) int {
		return cmpBool(strings.HasPrefix(x, "_dmf_"), strings.HasPrefix(y, "_dmf_"))
	})
	s.Columns = cols
	from := b.ident(b.schema, table)
	if err := b.pool.QueryRow(ctx, "SELECT count(*) FROM "+from).Scan(&s.Count); err != nil {
		return nil, fmt.Errorf("table %s: count rows: %w", table, err)
	}
	sel := make([]string, len(cols))
	for i, c := range cols {
		sel[i] = pgx.Identifier{c}.Sanitize() + "::text"
	}
	// t.: the table's columns, not the text the select list makes of
	// them under the same names.
	rows, err = b.pool.Query(ctx, "SELECT "+strings.Join(sel, ", ")+" FROM "+from+" AS t ORDER BY t."+pgx.Identifier{sink.ColRun}.Sanitize()+
		", t."+pgx.Identifier{sink.ColBatch}.Sanitize()+", t."+pgx.Identifier{sink.ColRow}.Sanitize()+" LIMIT $1", limit)
	if err != nil {
		return nil, fmt.Errorf("table %s: read rows: %w", table, err)
	}
	s.Rows, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]*string, error) {
		vals := make([]*string, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		return vals, r.Scan(ptrs...)
	})
	if err != nil {
		return nil, fmt.Errorf("table %s: read rows: %w", table, err)
	}
	return s, nil
}

// cmpBool orders false before true.
func cmpBool(x, y bool) int {
	switch {
	case x == y:
		return 0
	case !x:
		return -1
	}
	return 1
}
