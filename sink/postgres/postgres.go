// Package postgres is the PostgreSQL backend of the sink: each entity is a
// table of text columns in the sink's schema, partitioned with a single
// partition that holds every row. A run's snapshot is staged in a table of
// its own in the schema "<schema>_staging", which becomes that partition at
// the swap: its rows are written once. The ledger of applied batches
// (dmfexport_ledger) and the state of snapshots (dmfexport_snapshots) sit
// beside the entity tables. Everything is created on first use.
package postgres

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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
	outs, err := b.ApplyGroup(ctx, []sink.Pending{{Batch: bt, Target: t}})
	if err != nil {
		return sink.Applied, err
	}
	return outs[0], nil
}

// ApplyGroup lands the batches in one transaction, each with its ledger
// entry (see sink.GroupApplier).
func (b *Backend) ApplyGroup(ctx context.Context, group []sink.Pending) ([]sink.Outcome, error) {
	outs := make([]sink.Outcome, len(group))
	// learned is each table's columns once the transaction commits; known
	// to other goroutines only then, or they would skip creating a table
	// that may yet be rolled back.
	var learned map[string]map[string]bool
	var failed string // the table of the batch that failed
	err := b.inTx(ctx, func(tx pgx.Tx) error {
		learned = map[string]map[string]bool{}
		st := &txState{learned: learned}
		for i, p := range group {
			out, cols, err := b.apply(ctx, tx, st, p.Batch, p.Target)
			if err != nil {
				failed = p.Target.Table
				return err
			}
			outs[i] = out
			if cols != nil {
				learned[p.Target.Table] = cols
			}
		}
		if table, err := b.flushCopies(ctx, tx, st); err != nil {
			failed = table
			return err
		}
		if table, err := b.flushUpserts(ctx, tx, st, ""); err != nil {
			failed = table
			return err
		}
		for range group {
			faultPoint("apply")
		}
		return nil
	})
	if err != nil {
		for _, p := range group {
			b.forget(p.Target.Table)
		}
		return nil, fmt.Errorf("table %s: %w", failed, err)
	}
	b.mu.Lock()
	for table, cols := range learned {
		b.cols[table] = cols
	}
	b.mu.Unlock()
	return outs, nil
}

// txState is what the batches applied in one transaction share.
type txState struct {
	// learned holds the columns of the tables looked up in the
	// transaction.
	learned map[string]map[string]bool
	// upserted names the temporary tables filled in the transaction: one
	// is emptied only at the commit.
	upserted map[string]bool
	// upserts are the batches to upsert, by table, in the order their
	// tables came: a table's rows are upserted in one statement, when the
	// group's batches are all in (flushUpserts).
	upserts []*pendingUpsert
	// copies are the snapshot batches to copy into staging tables, one
	// COPY for the batches of a table with the same columns
	// (flushCopies): a COPY has a cost of its own, in the server, besides
	// its rows.
	copies []*pendingCopy
}

// pendingCopy is the batches of a group to copy into one staging table,
// all with the same columns.
type pendingCopy struct {
	table string // the live table, for errors
	name  string // the staging table
	parts []copyPart
}

// pendingUpsert is the batches of a group to upsert into one table, all
// with the same columns.
type pendingUpsert struct {
	t     sink.Target
	parts []copyPart
}

// apply lands one batch and its ledger entry in tx. It returns the
// table's columns when it looked them up, nil when it knew them.
func (b *Backend) apply(ctx context.Context, tx pgx.Tx, st *txState, bt *sink.Batch, t sink.Target) (sink.Outcome, map[string]bool, error) {
	var bc *int
	if bt.BatchCount > 0 {
		bc = &bt.BatchCount
	}
	// One round trip, each statement seeing what committed before it
	// ran: the ledger entry; a shared hold on the table's snapshot
	// lock, so that no swap commits while the batch lands (a swap
	// holds it alone); whether a newer snapshot is in already; and a
	// snapshot's state, unless the batch is stale.
	snaps := b.ident(b.schema, sink.SnapshotsTable)
	stale := `EXISTS (SELECT 1 FROM ` + snaps + ` WHERE table_name = $1 AND swapped_at IS NOT NULL AND (run_time, run) >= ($2, $3))`
	q := &pgx.Batch{}
	q.Queue(`INSERT INTO `+b.ident(b.schema, sink.LedgerTable)+`
		(message_id, export, run, execution, entity, table_name, mode, batch_index, batch_count, rows, outcome)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'applied') ON CONFLICT (message_id) DO NOTHING`,
		bt.MessageID, bt.Export, bt.RunID, bt.ExecutionID, bt.Entity, t.Table, string(t.Mode), bt.BatchIndex, bc, len(bt.Rows))
	q.Queue("SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))", b.snapshotLock(t.Table))
	q.Queue("SELECT "+stale, t.Table, bt.RunTime, bt.RunID)
	if t.Mode == sink.Snapshot {
		conflict := "DO NOTHING"
		if bc != nil {
			conflict = "DO UPDATE SET batch_count = EXCLUDED.batch_count"
		}
		q.Queue(`INSERT INTO `+snaps+` (table_name, run, run_time, entity, batch_count)
			SELECT $1::text, $3::text, $2::timestamptz, $4::text, $5::integer WHERE NOT `+stale+` ON CONFLICT (table_name, run) `+conflict,
			t.Table, bt.RunTime, bt.RunID, bt.Entity, bc)
	}
	res := tx.SendBatch(ctx, q)
	tag, err := res.Exec()
	if err != nil {
		_ = res.Close()
		return sink.Applied, nil, fmt.Errorf("ledger: %w", err)
	}
	var isStale bool
	_, err = res.Exec()
	if err == nil {
		err = res.QueryRow().Scan(&isStale)
	}
	if err == nil && t.Mode == sink.Snapshot {
		_, err = res.Exec()
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return sink.Applied, nil, fmt.Errorf("snapshot state: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return sink.Duplicate, nil, nil
	}
	if isStale {
		_, err := tx.Exec(ctx, "UPDATE "+b.ident(b.schema, sink.LedgerTable)+" SET outcome = 'stale' WHERE message_id = $1", bt.MessageID)
		return sink.Stale, nil, err
	}
	learned, err := b.ensureTable(ctx, tx, st, bt, t)
	if err != nil {
		return sink.Applied, nil, err
	}
	switch t.Mode {
	case sink.Snapshot:
		st.queueCopy(t.Table, runTable(t.Table, bt.RunID), bt)
	case sink.Append:
		if _, err = b.flushUpserts(ctx, tx, st, t.Table); err == nil {
			err = b.copyRows(ctx, tx, b.schema, t.Table, []copyPart{{bt: bt}})
		}
	case sink.Upsert:
		err = b.queueUpsert(ctx, tx, st, bt, t)
	default:
		err = fmt.Errorf("%w: unknown mode %q", sink.ErrRejected, t.Mode)
	}
	return sink.Applied, learned, err
}

// snapshotLock names the advisory lock of a table's snapshots: a swap
// holds it alone, a batch landing in the table shares it.
func (b *Backend) snapshotLock(table string) string {
	return "dmfexport/snapshot/" + b.schema + "/" + table
}

func (b *Backend) forget(table string) {
	b.mu.Lock()
	delete(b.cols, table)
	b.mu.Unlock()
}

// ensureTable creates t.Table (and, for a snapshot, the staging table of
// the batch's run) or adds the batch's columns it lacks, to both. A table
// is created with a primary key on t.Keys unless it is appended to. It
// returns the table's columns when it looked them up, nil when it knew
// them.
func (b *Backend) ensureTable(ctx context.Context, tx pgx.Tx, st *txState, bt *sink.Batch, t sink.Target) (map[string]bool, error) {
	want := slices.Concat(t.Keys, bt.Columns)
	if t.Mode == sink.Upsert {
		for _, k := range t.Keys {
			if !slices.Contains(bt.Columns, k) {
				return nil, fmt.Errorf("%w: key column %q is not in the batch (columns %q)", sink.ErrRejected, k, bt.Columns)
			}
		}
	}
	staged := stagedMark + bt.RunID
	known := st.learned[t.Table]
	if known == nil {
		b.mu.Lock()
		known = b.cols[t.Table]
		b.mu.Unlock()
	}
	if known != nil && (t.Mode != sink.Snapshot || known[staged]) {
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
		if live, err = b.createTable(ctx, tx, t, want); err != nil {
			return nil, err
		}
	}
	if err := b.addColumns(ctx, tx, b.schema, t.Table, live, want); err != nil {
		return nil, err
	}
	if t.Mode == sink.Snapshot {
		if err := b.ensureStaging(ctx, tx, t.Table, bt.RunID, live); err != nil {
			return nil, err
		}
		for c := range live {
			if strings.HasPrefix(c, stagedMark) {
				delete(live, c) // one run staged at a time, mostly
			}
		}
		live[staged] = true
	}
	return live, nil
}

// stagedMark starts the entries of a table's known columns that say a
// run's staging table has them all.
const stagedMark = "\x00staged:"

// createTable creates t.Table with the columns want and the metadata
// columns, partitioned by list on its first key (else on the run column)
// with one default partition, empty, in the staging schema: a snapshot's
// swap replaces that partition by the staging table of its run. It returns
// the table's columns.
func (b *Backend) createTable(ctx context.Context, tx pgx.Tx, t sink.Target, want []string) (map[string]bool, error) {
	var defs []string
	for _, c := range dedupe(want) {
		defs = append(defs, pgx.Identifier{c}.Sanitize()+" text")
	}
	defs = append(defs, metaDefs()...)
	by := sink.ColRun
	if len(t.Keys) > 0 {
		by = t.Keys[0]
	}
	if len(t.Keys) > 0 && t.Mode != sink.Append {
		defs = append(defs, "PRIMARY KEY ("+quoteAll(t.Keys)+")")
	}
	if _, err := tx.Exec(ctx, "CREATE TABLE "+b.ident(b.schema, t.Table)+" ("+strings.Join(defs, ", ")+") PARTITION BY LIST ("+pgx.Identifier{by}.Sanitize()+")"); err != nil {
		return nil, fmt.Errorf("create table: %w", err)
	}
	if _, err := tx.Exec(ctx, "CREATE TABLE "+b.ident(b.staging, runTable(t.Table, ""))+" PARTITION OF "+b.ident(b.schema, t.Table)+" DEFAULT"); err != nil {
		return nil, fmt.Errorf("create table: %w", err)
	}
	live := map[string]bool{}
	for _, c := range want {
		live[c] = true
	}
	return live, nil
}

// ensureStaging creates the staging table of table's snapshot of run, like
// the table but without its keys (the run's rows are checked against them
// at the swap, at once) or any index, or adds the table's columns it
// lacks, live.
func (b *Backend) ensureStaging(ctx context.Context, tx pgx.Tx, table, run string, live map[string]bool) error {
	name := runTable(table, run)
	staged, err := b.columns(ctx, tx, b.staging, name)
	if err != nil {
		return err
	}
	if staged == nil {
		if _, err := tx.Exec(ctx, "CREATE TABLE "+b.ident(b.staging, name)+" (LIKE "+b.ident(b.schema, table)+" INCLUDING DEFAULTS)"); err != nil {
			return fmt.Errorf("create staging table: %w", err)
		}
		return nil
	}
	var all []string
	for c := range live {
		if !strings.HasPrefix(c, stagedMark) {
			all = append(all, c)
		}
	}
	slices.Sort(all)
	return b.addColumns(ctx, tx, b.staging, name, staged, all)
}

// runTable names, in the staging schema, the staging table of table's
// snapshot of run, and the table's first, empty, partition for run "":
// table's name cut to leave room for a hash of both (so that two tables
// whose names were cut alike differ), within PostgreSQL's 63 bytes.
func runTable(table, run string) string {
	h := sha256.Sum256([]byte(table + "\x00" + run))
	for len(table) > 63-17 {
		_, size := utf8.DecodeLastRuneInString(table)
		table = table[:len(table)-size]
	}
	return table + "_" + hex.EncodeToString(h[:8])
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

// copyRows writes the rows of parts, batches with the same columns, into
// schema.table with a binary COPY, encoded straight from the batches.
func (b *Backend) copyRows(ctx context.Context, tx pgx.Tx, schema, table string, parts []copyPart) error {
	q := "COPY " + b.ident(schema, table) + " (" + quoteAll(slices.Concat(parts[0].bt.Columns, metaColumns)) + ") FROM STDIN (FORMAT binary)"
	if _, err := tx.Conn().PgConn().CopyFrom(ctx, &copyStream{parts: parts}, q); err != nil {
		return fmt.Errorf("copy rows: %w", err)
	}
	return nil
}

// queueCopy adds a snapshot batch's rows to those copied into the staging
// table name when the group's batches are all in.
func (st *txState) queueCopy(table, name string, bt *sink.Batch) {
	if len(bt.Rows) == 0 {
		return
	}
	for _, p := range st.copies {
		if p.name == name && slices.Equal(p.parts[0].bt.Columns, bt.Columns) {
			p.parts = append(p.parts, copyPart{bt: bt})
			return
		}
	}
	st.copies = append(st.copies, &pendingCopy{table: table, name: name, parts: []copyPart{{bt: bt}}})
}

// flushCopies copies the snapshot rows queued in the group into their
// staging tables, and returns the table that failed.
func (b *Backend) flushCopies(ctx context.Context, tx pgx.Tx, st *txState) (string, error) {
	for _, p := range st.copies {
		if err := b.copyRows(ctx, tx, b.staging, p.name, p.parts); err != nil {
			return p.table, err
		}
	}
	st.copies = nil
	return "", nil
}

// queueUpsert adds the batch's rows to those upserted into t.Table when
// the group's batches are all in, upserting first the rows queued for the
// table with other columns, so that batches land in order.
func (b *Backend) queueUpsert(ctx context.Context, tx pgx.Tx, st *txState, bt *sink.Batch, t sink.Target) error {
	if len(bt.Rows) == 0 {
		return nil
	}
	for _, p := range st.upserts {
		if p.t.Table != t.Table {
			continue
		}
		if slices.Equal(p.parts[0].bt.Columns, bt.Columns) && slices.Equal(p.t.Keys, t.Keys) {
			p.parts = append(p.parts, copyPart{bt: bt})
			return nil
		}
		if _, err := b.flushUpserts(ctx, tx, st, t.Table); err != nil {
			return err
		}
		break
	}
	st.upserts = append(st.upserts, &pendingUpsert{t: t, parts: []copyPart{{bt: bt}}})
	return nil
}

// flushUpserts upserts the rows queued for table, or for every table when
// table is "", and returns the table that failed.
func (b *Backend) flushUpserts(ctx context.Context, tx pgx.Tx, st *txState, table string) (string, error) {
	kept := st.upserts[:0]
	var err error
	var failed string
	for _, p := range st.upserts {
		if err != nil || (table != "" && p.t.Table != table) {
			kept = append(kept, p)
			continue
		}
		if err = b.upsert(ctx, tx, st, p); err != nil {
			failed = p.t.Table
		}
	}
	st.upserts = kept
	return failed, err
}

// upsertTable starts the name of the temporary tables a batch to upsert is
// copied into.
const upsertTable = "dmfexport_upsert"

// upsert inserts the rows of p's batches, or updates the rows with the
// same keys: it copies them into a temporary table, then upserts them all
// in one statement. Of rows with one key, the latest run's wins, and
// within a run the later row, whatever order the batches come in. A row
// the table holds already (the same run and row) is left as it is unless
// its values differ.
func (b *Backend) upsert(ctx context.Context, tx pgx.Tx, st *txState, p *pendingUpsert) error {
	t, cols := p.t, p.parts[0].bt.Columns
	if err := lastOfEachKey(p.parts, t.Keys); err != nil {
		return err
	}
	all := slices.Concat(cols, metaColumns)
	list := quoteAll(all)
	if ok, err := b.insertNew(ctx, tx, p, list); err != nil || ok {
		return err
	}
	defs := make([]string, 0, len(cols)+len(metaColumns))
	for _, c := range cols {
		defs = append(defs, pgx.Identifier{c}.Sanitize()+" text")
	}
	defs = append(defs, metaDefs()[:len(metaColumns)]...)
	// One temporary table per connection and shape of batch, emptied at
	// each commit: creating and dropping one per batch would add a row per
	// column to the catalogs, and dead ones, every time.
	shape := sha256.Sum256([]byte(strings.Join(defs, ",")))
	tmp := pgx.Identifier{upsertTable + "_" + hex.EncodeToString(shape[:8])}.Sanitize()
	if st.upserted[tmp] {
		// Filled before in the transaction.
		if _, err := tx.Exec(ctx, "TRUNCATE "+tmp); err != nil {
			return fmt.Errorf("upsert rows: %w", err)
		}
	} else if _, err := tx.Exec(ctx, "CREATE TEMPORARY TABLE IF NOT EXISTS "+tmp+" ("+strings.Join(defs, ", ")+") ON COMMIT DELETE ROWS"); err != nil {
		return fmt.Errorf("upsert rows: %w", err)
	}
	if st.upserted == nil {
		st.upserted = map[string]bool{}
	}
	st.upserted[tmp] = true
	if _, err := tx.Conn().PgConn().CopyFrom(ctx, &copyStream{parts: p.parts}, "COPY "+tmp+" ("+list+") FROM STDIN (FORMAT binary)"); err != nil {
		return fmt.Errorf("upsert rows: %w", err)
	}
	var set, changed []string
	for _, c := range all {
		if slices.Contains(t.Keys, c) {
			continue
		}
		q := pgx.Identifier{c}.Sanitize()
		set = append(set, q+" = EXCLUDED."+q)
		if !slices.Contains(metaColumns, c) || c == sink.ColDocument {
			changed = append(changed, "t."+q+" IS DISTINCT FROM EXCLUDED."+q)
		}
	}
	set = append(set, pgx.Identifier{sink.ColLoadedAt}.Sanitize()+" = now()")
	// A row from a later run (or later in the same run) replaces the
	// table's; one from an earlier run, applied late (a dead letter
	// replayed after a fix, another sink process), does not; the same row
	// again only where it differs.
	run, row := pgx.Identifier{sink.ColRun}.Sanitize(), pgx.Identifier{sink.ColRow}.Sanitize()
	have := "(t." + run + ` COLLATE "C", t.` + row + ")"
	came := "(EXCLUDED." + run + ` COLLATE "C", EXCLUDED.` + row + ")"
	if _, err := tx.Exec(ctx, "INSERT INTO "+b.ident(b.schema, t.Table)+" AS t ("+list+") SELECT "+list+" FROM "+tmp+
		" ON CONFLICT ("+quoteAll(t.Keys)+") DO UPDATE SET "+strings.Join(set, ", ")+
		" WHERE "+have+" < "+came+" OR "+have+" = "+came+" AND ("+strings.Join(changed, " OR ")+")"); err != nil {
		return fmt.Errorf("upsert rows: %w", err)
	}
	return nil
}

// insertNew copies p's rows straight into the table when none of their
// keys is there yet (a first load, or an increment of new rows only): the
// database then inserts each row once, with about half the work of going
// through the temporary table and ON CONFLICT. It reports false, having
// changed nothing, when a key is there, or came in from another
// transaction meanwhile.
func (b *Backend) insertNew(ctx context.Context, tx pgx.Tx, p *pendingUpsert, list string) (bool, error) {
	t, cols := p.t, p.parts[0].bt.Columns
	keys := make([][]string, len(t.Keys))
	as := make([]string, len(t.Keys))
	names := make([]string, len(t.Keys))
	on := make([]string, len(t.Keys))
	args := make([]any, len(t.Keys))
	for i, k := range t.Keys {
		j := slices.Index(cols, k)
		for _, part := range p.parts {
			rows := part.bt.Rows
			if part.rows == nil {
				for _, r := range rows {
					keys[i] = append(keys[i], *r[j])
				}
				continue
			}
			for _, n := range part.rows {
				keys[i] = append(keys[i], *rows[n][j])
			}
		}
		as[i] = "$" + strconv.Itoa(i+1) + "::text[]"
		names[i] = "c" + strconv.Itoa(i)
		on[i] = "t." + pgx.Identifier{k}.Sanitize() + " = k." + names[i]
		args[i] = keys[i]
	}
	table := b.ident(b.schema, t.Table)
	// Only where ON CONFLICT on the keys would insert every row: the
	// table has a unique index on exactly the keys, and holds none of
	// them. Else the upsert has its say (and its error, for a table
	// without such an index). The first row's key is looked up first,
	// with the index: where rows are there already, it mostly is, and
	// sending every key is spared.
	rel, named := "$"+strconv.Itoa(len(t.Keys)+1), "$"+strconv.Itoa(len(t.Keys)+2)
	unique := `EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = ` + rel + `::text::regclass
			AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = cardinality(` + named + `::text[])
			AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
				WHERE a.attrelid = i.indrelid AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts-1]))
			= (SELECT array_agg(c ORDER BY c) FROM unnest(` + named + `::text[]) c))`
	none := `NOT EXISTS (SELECT 1 FROM unnest(` + strings.Join(as, ", ") + `) AS k(` + strings.Join(names, ", ") + `) JOIN ` + table + ` t ON ` + strings.Join(on, " AND ") + `)`
	first := make([]any, 0, len(t.Keys)+2)
	for _, k := range keys {
		first = append(first, k[:1])
	}
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{"SELECT " + unique + " AND " + none, append(first, table, t.Keys)},
		{"SELECT " + none, args},
	} {
		var fresh bool
		if err := tx.QueryRow(ctx, q.sql, q.args...).Scan(&fresh); err != nil {
			return false, fmt.Errorf("upsert rows: look up keys: %w", err)
		}
		if !fresh {
			return false, nil
		}
	}
	if _, err := tx.Exec(ctx, "SAVEPOINT "+insertSavepoint); err != nil {
		return false, fmt.Errorf("upsert rows: %w", err)
	}
	_, err := tx.Conn().PgConn().CopyFrom(ctx, &copyStream{parts: p.parts}, "COPY "+table+" ("+list+") FROM STDIN (FORMAT binary)")
	var pe *pgconn.PgError
	switch {
	case err == nil:
		_, err = tx.Exec(ctx, "RELEASE SAVEPOINT "+insertSavepoint)
	case errors.As(err, &pe) && pe.Code == "23505": // unique_violation
		// Another sink's transaction inserted one of the keys since they
		// were looked up: upsert after all.
		if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+insertSavepoint); err != nil {
			return false, fmt.Errorf("upsert rows: %w", err)
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("upsert rows: %w", err)
	}
	return true, nil
}

// insertSavepoint is where insertNew goes back to when a key came in
// meanwhile.
const insertSavepoint = "dmfexport_insert"

// lastOfEachKey keeps, of the rows of the parts (batches of the same
// columns, in order), the one of each key that the table is to hold: of
// the latest run, the latest row (a row repeated, the later part's),
// setting each part's rows.
func lastOfEachKey(parts []copyPart, keys []string) error {
	cols := parts[0].bt.Columns
	keyIdx := make([]int, len(keys))
	for i, k := range keys {
		keyIdx[i] = slices.Index(cols, k)
	}
	type at struct{ part, row int }
	n := 0
	for _, p := range parts {
		n += len(p.bt.Rows)
	}
	last := make(map[string]at, n)
	var kb []byte
	for pi, p := range parts {
		for i, r := range p.bt.Rows {
			kb = kb[:0]
			for _, j := range keyIdx {
				if r[j] == nil {
					return fmt.Errorf("%w: row %d has no value for key column %q", sink.ErrRejected, p.bt.FirstRow+i, cols[j])
				}
				kb = strconv.AppendInt(kb, int64(len(*r[j])), 10)
				kb = append(kb, ':')
				kb = append(kb, *r[j]...)
			}
			// The row of the latest run wins, and within a run the later
			// row; the same one twice, the later delivered.
			if prev, ok := last[string(kb)]; !ok || cmp.Or(strings.Compare(p.bt.RunID, parts[prev.part].bt.RunID),
				cmp.Compare(p.bt.FirstRow+i, parts[prev.part].bt.FirstRow+prev.row)) >= 0 {
				last[string(kb)] = at{pi, i}
			}
		}
	}
	if len(last) == n {
		for i := range parts {
			parts[i].rows = nil // every row
		}
		return nil
	}
	for i := range parts {
		parts[i].rows = []int{}
	}
	for _, a := range last {
		parts[a.part].rows = append(parts[a.part].rows, a.row)
	}
	for i := range parts {
		slices.Sort(parts[i].rows)
	}
	return nil
}

// FinishSnapshot replaces t.Table's rows with the run's staged rows once
// every batch of the run is in (see sink.Backend).
func (b *Backend) FinishSnapshot(ctx context.Context, t sink.Target, runID string) (bool, error) {
	// The consumer asks after every batch of a snapshot: a run that is not
	// complete is told without a transaction or a lock. The last batch's
	// process is the last to ask, after its commit, and sees it complete.
	if _, ready, err := b.runReady(ctx, b.pool, t.Table, runID); err != nil || !ready {
		if err != nil {
			return false, fmt.Errorf("table %s: finish snapshot of run %s: %w", t.Table, runID, err)
		}
		return false, nil
	}
	swapped := false
	err := b.inTx(ctx, func(tx pgx.Tx) error {
		swapped = false
		// One swap of a table at a time, whichever process holds the last
		// batch of a run, and none while a batch lands in the table.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", b.snapshotLock(t.Table)); err != nil {
			return err
		}
		runTime, ready, err := b.runReady(ctx, tx, t.Table, runID)
		if err != nil || !ready {
			return err
		}
		snaps := b.ident(b.schema, sink.SnapshotsTable)
		var newer bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+snaps+" WHERE table_name = $1 AND swapped_at IS NOT NULL AND (run_time, run) > ($2, $3))",
			t.Table, runTime, runID).Scan(&newer); err != nil {
			return err
		}
		if newer {
			// A later run's snapshot is in already: this one is not wanted.
			_, err := tx.Exec(ctx, "UPDATE "+snaps+" SET superseded = true WHERE table_name = $1 AND run = $2", t.Table, runID)
			if err == nil {
				err = b.dropStaged(ctx, tx, t.Table, []string{runID})
			}
			return err
		}
		// Unfinished older runs are superseded by this one: their staged
		// rows go.
		rows, err := tx.Query(ctx, "UPDATE "+snaps+" SET superseded = true WHERE table_name = $1 AND swapped_at IS NULL AND (run_time, run) < ($2, $3) RETURNING run",
			t.Table, runTime, runID)
		if err != nil {
			return fmt.Errorf("supersede older runs: %w", err)
		}
		older, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("supersede older runs: %w", err)
		}
		if err := b.dropStaged(ctx, tx, t.Table, older); err != nil {
			return err
		}
		var n int64
		if err := tx.QueryRow(ctx, "SELECT coalesce(sum(rows), 0) FROM "+b.ident(b.schema, sink.LedgerTable)+
			" WHERE table_name = $1 AND run = $2 AND outcome = 'applied' AND mode = 'snapshot'", t.Table, runID).Scan(&n); err != nil {
			return fmt.Errorf("count staged rows: %w", err)
		}
		if err := b.replaceRows(ctx, tx, t, runID); err != nil {
			return fmt.Errorf("replace rows: %w", err)
		}
		if _, err := tx.Exec(ctx, "UPDATE "+snaps+" SET swapped_at = now(), rows = $3 WHERE table_name = $1 AND run = $2", t.Table, runID, n); err != nil {
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

// replaceRows makes the staging table of run the table's rows. The staging
// table gets the table's columns it lacks and its keys (an index built in
// one pass, before readers are held), then replaces the table's partition:
// the table keeps its identity (grants, views, its own indexes, built on
// the new partition as it is attached), and readers wait only for the
// exchange. A table made by an earlier version, not partitioned, has its
// rows replaced by a copy of the staged ones.
func (b *Backend) replaceRows(ctx context.Context, tx pgx.Tx, t sink.Target, runID string) error {
	live := b.ident(b.schema, t.Table)
	staging := b.ident(b.staging, runTable(t.Table, runID))
	cols, err := b.columns(ctx, tx, b.schema, t.Table)
	if err != nil {
		return err
	}
	staged, err := b.columns(ctx, tx, b.staging, runTable(t.Table, runID))
	if err != nil {
		return err
	}
	if staged == nil {
		return fmt.Errorf("%w: staging table %s is missing", sink.ErrRejected, staging)
	}
	var names []string
	for c := range cols {
		names = append(names, c)
	}
	slices.Sort(names)
	if err := b.addColumns(ctx, tx, b.staging, runTable(t.Table, runID), staged, names); err != nil {
		return err
	}
	if err := b.keepLaterUpserts(ctx, tx, t, runID, staging, names); err != nil {
		return fmt.Errorf("keep the rows of later runs: %w", err)
	}
	var partitioned bool
	if err := tx.QueryRow(ctx, "SELECT relkind = 'p' FROM pg_class WHERE oid = $1::regclass", live).Scan(&partitioned); err != nil {
		return err
	}
	if !partitioned {
		names = slices.DeleteFunc(names, func(c string) bool { return c == sink.ColLoadedAt })
		list := quoteAll(names)
		if _, err := tx.Exec(ctx, "TRUNCATE "+live); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+live+" ("+list+") SELECT "+list+" FROM "+staging); err != nil {
			return err
		}
		return b.dropStaged(ctx, tx, t.Table, []string{runID})
	}
	var keys []string
	if err := tx.QueryRow(ctx, `SELECT coalesce(array_agg(a.attname ORDER BY k.i), '{}') FROM pg_index x
		CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, i)
		JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
		WHERE x.indrelid = $1::regclass AND x.indisprimary`, live).Scan(&keys); err != nil {
		return fmt.Errorf("read the primary key: %w", err)
	}
	if len(keys) > 0 {
		// A primary key, not only a unique index: the table's key is
		// attached to it, not built again.
		if _, err := tx.Exec(ctx, "ALTER TABLE "+staging+" ADD PRIMARY KEY ("+quoteAll(keys)+")"); err != nil {
			return fmt.Errorf("the run's rows repeat keys %q: %w", keys, err)
		}
	}
	rows, err := tx.Query(ctx, "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = $1::regclass", live)
	if err != nil {
		return err
	}
	parts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := tx.Exec(ctx, "ALTER TABLE "+live+" DETACH PARTITION "+p); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DROP TABLE "+p); err != nil {
			return err
		}
	}
	_, err = tx.Exec(ctx, "ALTER TABLE "+live+" ATTACH PARTITION "+staging+" DEFAULT")
	return err
}

// keepLaterUpserts puts into the staging table of run the table's rows
// that runs later than it upserted (an increment landed before this
// snapshot was complete: its last batch a dead letter replayed after a
// fix, or held by another process), in place of the staged rows with
// their keys: the snapshot is the entity as of its run, those rows what
// changed since. names are the table's columns, all in the staging table.
func (b *Backend) keepLaterUpserts(ctx context.Context, tx pgx.Tx, t sink.Target, runID, staging string, names []string) error {
	if len(t.Keys) == 0 {
		return nil // no upsert without keys
	}
	if later, err := upsertedSince(ctx, tx, b.schema, t.Table, runID); err != nil || !later {
		return err
	}
	live := b.ident(b.schema, t.Table)
	newer := pgx.Identifier{sink.ColRun}.Sanitize() + ` COLLATE "C" > $1`
	var same []string
	for _, k := range t.Keys {
		q := pgx.Identifier{k}.Sanitize()
		same = append(same, "s."+q+" = l."+q)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM "+staging+" s USING "+live+" l WHERE l."+newer+" AND "+strings.Join(same, " AND "), runID); err != nil {
		return err
	}
	list := quoteAll(names)
	_, err := tx.Exec(ctx, "INSERT INTO "+staging+" ("+list+") SELECT "+list+" FROM "+live+" WHERE "+newer, runID)
	return err
}

// upsertedSince tells whether the ledger in schema holds upserts into
// table of runs later than run (run IDs sort by time).
func upsertedSince(ctx context.Context, q querier, schema, table, run string) (bool, error) {
	var later bool
	err := q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+pgx.Identifier{schema, sink.LedgerTable}.Sanitize()+
		` WHERE table_name = $1 AND mode = 'upsert' AND outcome = 'applied' AND run COLLATE "C" > $2)`, table, run).Scan(&later)
	return later, err
}

// querier is a pool, a connection or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// runReady tells whether run's snapshot of table can be swapped in: its
// last batch told the count, every batch is in the ledger, and it is
// neither swapped in nor superseded.
func (b *Backend) runReady(ctx context.Context, q querier, table, run string) (runTime time.Time, ready bool, err error) {
	var batchCount *int
	var done, superseded bool
	var in int
	err = q.QueryRow(ctx, `SELECT s.batch_count, s.swapped_at IS NOT NULL, s.superseded, s.run_time,
			CASE WHEN s.batch_count IS NULL THEN 0 ELSE (SELECT count(DISTINCT batch_index) FROM `+b.ident(b.schema, sink.LedgerTable)+`
				WHERE table_name = $1 AND run = $2 AND outcome = 'applied' AND mode = 'snapshot') END
		FROM `+b.ident(b.schema, sink.SnapshotsTable)+` s WHERE s.table_name = $1 AND s.run = $2`,
		table, run).Scan(&batchCount, &done, &superseded, &runTime, &in)
	if errors.Is(err, pgx.ErrNoRows) {
		return runTime, false, nil
	}
	if err != nil {
		return runTime, false, fmt.Errorf("snapshot state: %w", err)
	}
	return runTime, !done && !superseded && batchCount != nil && in >= *batchCount, nil
}

// dropStaged drops the staging tables of table's snapshots of runs.
func (b *Backend) dropStaged(ctx context.Context, tx pgx.Tx, table string, runs []string) error {
	for _, run := range runs {
		if _, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+b.ident(b.staging, runTable(table, run))); err != nil {
			return fmt.Errorf("drop staged rows of run %s: %w", run, err)
		}
	}
	return nil
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
