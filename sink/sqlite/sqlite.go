// Package sqlite is the embedded SQLite backend of the sink: one database
// file holds a table of text columns per entity, each snapshot's staging
// table ("dmfexport_staging_<table>"), the ledger of applied batches
// (dmfexport_ledger) and the state of snapshots (dmfexport_snapshots).
// Everything is created on first use. It needs no server and no cgo.
//
// It lands batches as sink/postgres does (the same sinktest suite holds
// for both). SQLite has one writer at a time: within a process the
// backend's writes take turns; several processes on one file are
// serialized by SQLite's lock, each waiting up to BusyTimeout for it
// (after that the consumer retries with backoff). The file is in WAL
// mode, so readers (dmfexport status, reconcile, a user's queries) never
// wait for a writer, and synchronous=FULL, so a commit the broker's
// acknowledgement follows survives a power loss.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/dmfexport/dmfexport/sink"
)

// StagingPrefix starts the name of the table a snapshot of table t is
// staged in: StagingPrefix + t.
const StagingPrefix = "dmfexport_staging_"

// BusyTimeout is how long a write waits for another process's write to
// end before it fails (and is retried).
const BusyTimeout = 30 * time.Second

// timeLayout is how times are stored: UTC, fixed width, so that text order
// is time order.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// Backend lands batches in one SQLite database file. It is safe for
// concurrent use; its writes take turns.
type Backend struct {
	db   *sql.DB
	path string

	// mu makes the process's writes take turns, so that they never wait
	// on SQLite's lock for each other.
	mu   sync.Mutex
	cols map[string]map[string]bool // table → its columns (folded), as last seen
}

var _ sink.Backend = (*Backend)(nil)

// dsn is the driver's name for the file at path (absolute) with the
// connection settings query.
func dsn(path, query string) string {
	return (&url.URL{Scheme: "file", Path: path, RawQuery: query}).String()
}

// Open opens the database file at path, creating it (and its directory)
// and the ledger and snapshot tables if they are missing.
func Open(ctx context.Context, path string) (*Backend, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("SQLite database %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return nil, fmt.Errorf("SQLite database %s: %w", abs, err)
	}
	q := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate", BusyTimeout.Milliseconds())
	db, err := sql.Open("sqlite", dsn(abs, q))
	if err != nil {
		return nil, fmt.Errorf("SQLite database %s: %w", abs, err)
	}
	db.SetMaxOpenConns(4)
	b := &Backend{db: db, path: abs, cols: map[string]map[string]bool{}}
	if err := b.setup(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return b, nil
}

// Close closes the database.
func (b *Backend) Close() { _ = b.db.Close() }

// Path is the database file's absolute path.
func (b *Backend) Path() string { return b.path }

// quote quotes an SQL identifier.
func quote(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` }

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = quote(n)
	}
	return strings.Join(q, ", ")
}

// fold is a name as SQLite compares identifiers: ASCII letters in any
// case are alike, other characters are not.
func fold(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, name)
}

func (b *Backend) setup(ctx context.Context) error {
	return b.inTx(ctx, func(tx *sql.Tx) error {
		for _, q := range []string{
			`CREATE TABLE IF NOT EXISTS ` + sink.LedgerTable + ` (
				message_id  TEXT PRIMARY KEY NOT NULL,
				export      TEXT NOT NULL,
				run         TEXT NOT NULL,
				execution   TEXT NOT NULL,
				entity      TEXT NOT NULL,
				table_name  TEXT NOT NULL,
				mode        TEXT NOT NULL,
				batch_index INTEGER NOT NULL,
				batch_count INTEGER,
				rows        INTEGER NOT NULL,
				outcome     TEXT NOT NULL,
				applied_at  TEXT NOT NULL)`,
			`CREATE INDEX IF NOT EXISTS dmfexport_ledger_run ON ` + sink.LedgerTable + ` (table_name, run)`,
			`CREATE TABLE IF NOT EXISTS ` + sink.SnapshotsTable + ` (
				table_name  TEXT NOT NULL,
				run         TEXT NOT NULL,
				run_time    TEXT NOT NULL,
				entity      TEXT NOT NULL,
				batch_count INTEGER,
				rows        INTEGER,
				swapped_at  TEXT,
				superseded  INTEGER NOT NULL DEFAULT 0,
				PRIMARY KEY (table_name, run))`,
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("create the sink's tables in %s: %w", b.path, err)
			}
		}
		return nil
	})
}

// inTx runs f in a write transaction, its turn among the process's
// writes, and commits it; errors SQLite would give again for the same
// data wrap sink.ErrRejected.
func (b *Backend) inTx(ctx context.Context, f func(*sql.Tx) error) (err error) {
	defer func() {
		if err != nil && rejected(err) && !errors.Is(err, sink.ErrRejected) {
			err = fmt.Errorf("%w: %w", sink.ErrRejected, err)
		}
	}()
	b.mu.Lock()
	defer b.mu.Unlock()
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// rejected tells whether err is SQLite refusing the data: a constraint
// (a key repeated or missing), a value too big, a type mismatch, or an
// SQL error (a name it refuses, such as one starting with "sqlite_", or
// too many columns). Others (a lock held past BusyTimeout, I/O, a full
// disk) may pass on another attempt.
func rejected(err error) bool {
	var se *msqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_ERROR, sqlite3.SQLITE_RANGE:
		return true
	}
	return false
}

// Applied reports whether the ledger holds messageID.
func (b *Backend) Applied(ctx context.Context, messageID string) (bool, error) {
	var ok bool
	err := b.db.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM "+sink.LedgerTable+" WHERE message_id = ?)", messageID).Scan(&ok)
	return ok, err
}

// check refuses what SQLite would take but PostgreSQL would not, or
// would take otherwise: a NUL byte in a name or value, and two columns
// whose names differ only in the case of ASCII letters (one column to
// SQLite).
func check(bt *sink.Batch, t sink.Target) error {
	if strings.ContainsRune(t.Table, 0) {
		return fmt.Errorf("%w: table name %q holds a NUL byte", sink.ErrRejected, t.Table)
	}
	seen := map[string]string{}
	for _, c := range slices.Concat(bt.Columns, t.Keys) {
		if strings.ContainsRune(c, 0) {
			return fmt.Errorf("%w: column name %q holds a NUL byte", sink.ErrRejected, c)
		}
		if other, ok := seen[fold(c)]; ok && other != c {
			return fmt.Errorf("%w: columns %q and %q are one column in SQLite, whose names ignore case: exclude one (sinks[].entities.%q.exclude)",
				sink.ErrRejected, other, c, bt.Entity)
		}
		seen[fold(c)] = c
	}
	for i, r := range bt.Rows {
		for j, v := range r {
			if v != nil && strings.ContainsRune(*v, 0) {
				return fmt.Errorf("%w: row %d, column %q: the value holds a NUL byte", sink.ErrRejected, bt.FirstRow+i, bt.Columns[j])
			}
		}
	}
	return nil
}

// Apply lands the batch in one transaction with its ledger entry (see
// sink.Backend).
func (b *Backend) Apply(ctx context.Context, bt *sink.Batch, t sink.Target) (sink.Outcome, error) {
	if err := check(bt, t); err != nil {
		return sink.Applied, fmt.Errorf("table %s: %w", t.Table, err)
	}
	out := sink.Applied
	// learned is the table's columns once the transaction commits.
	var learned map[string]bool
	err := b.inTx(ctx, func(tx *sql.Tx) error {
		out, learned = sink.Applied, nil
		now := formatTime(time.Now())
		var bc any
		if bt.BatchCount > 0 {
			bc = bt.BatchCount
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO `+sink.LedgerTable+`
			(message_id, export, run, execution, entity, table_name, mode, batch_index, batch_count, rows, outcome, applied_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'applied', ?) ON CONFLICT (message_id) DO NOTHING`,
			bt.MessageID, bt.Export, bt.RunID, bt.ExecutionID, bt.Entity, t.Table, string(t.Mode), bt.BatchIndex, bc, len(bt.Rows), now)
		if err != nil {
			return fmt.Errorf("ledger: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			out = sink.Duplicate
			return err
		}
		var stale bool
		err = tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+sink.SnapshotsTable+`
			WHERE table_name = ? AND swapped_at IS NOT NULL AND (run_time, run) >= (?, ?))`, t.Table, formatTime(bt.RunTime), bt.RunID).Scan(&stale)
		if err != nil {
			return fmt.Errorf("snapshot state: %w", err)
		}
		if stale {
			out = sink.Stale
			_, err := tx.ExecContext(ctx, "UPDATE "+sink.LedgerTable+" SET outcome = 'stale' WHERE message_id = ?", bt.MessageID)
			return err
		}
		if learned, err = b.ensureTable(ctx, tx, bt, t); err != nil {
			return err
		}
		switch t.Mode {
		case sink.Snapshot:
			q := `INSERT INTO ` + sink.SnapshotsTable + ` (table_name, run, run_time, entity, batch_count)
				VALUES (?, ?, ?, ?, ?) ON CONFLICT (table_name, run) DO NOTHING`
			if bc != nil {
				q = strings.Replace(q, "DO NOTHING", "DO UPDATE SET batch_count = excluded.batch_count", 1)
			}
			if _, err := tx.ExecContext(ctx, q, t.Table, bt.RunID, formatTime(bt.RunTime), bt.Entity, bc); err != nil {
				return fmt.Errorf("snapshot state: %w", err)
			}
			return insertRows(ctx, tx, StagingPrefix+t.Table, bt, "", now)
		case sink.Append:
			return insertRows(ctx, tx, t.Table, bt, "", now)
		case sink.Upsert:
			return upsert(ctx, tx, bt, t, now)
		}
		return fmt.Errorf("%w: unknown mode %q", sink.ErrRejected, t.Mode)
	})
	b.mu.Lock()
	if err != nil {
		delete(b.cols, t.Table)
	} else if learned != nil {
		b.cols[t.Table] = learned
	}
	b.mu.Unlock()
	if err != nil {
		return out, fmt.Errorf("table %s: %w", t.Table, err)
	}
	return out, nil
}

// column is one column of a table as SQLite describes it.
type column struct {
	name, typ string
	notNull   bool
}

// columns returns the columns of table in their order, or nil when it
// does not exist.
func columns(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, table string) ([]column, error) {
	rows, err := q.QueryContext(ctx, `SELECT name, type, "notnull" FROM pragma_table_xinfo(?) ORDER BY cid`, table)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []column
	for rows.Next() {
		var c column
		if err := rows.Scan(&c.name, &c.typ, &c.notNull); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func folded(cols []column) map[string]bool {
	m := map[string]bool{}
	for _, c := range cols {
		m[fold(c.name)] = true
	}
	return m
}

// metaDefs are the metadata columns' definitions.
func metaDefs() []string {
	return []string{
		quote(sink.ColExport) + " TEXT NOT NULL",
		quote(sink.ColRun) + " TEXT NOT NULL",
		quote(sink.ColExecution) + " TEXT NOT NULL",
		quote(sink.ColBatch) + " INTEGER NOT NULL",
		quote(sink.ColRow) + " INTEGER NOT NULL",
		quote(sink.ColDocument) + " TEXT",
		quote(sink.ColLoadedAt) + " TEXT NOT NULL",
	}
}

// metaColumns are written with every row, in this order, after the
// entity's columns.
var metaColumns = []string{sink.ColExport, sink.ColRun, sink.ColExecution, sink.ColBatch, sink.ColRow, sink.ColDocument, sink.ColLoadedAt}

func dedupe(names []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		if !seen[fold(n)] {
			seen[fold(n)] = true
			out = append(out, n)
		}
	}
	return out
}

// ensureTable creates t.Table (and, for a snapshot, its staging table) or
// adds the batch's columns it lacks, to both. A table is created with a
// primary key on t.Keys (NOT NULL, as PostgreSQL's are) unless it is
// appended to. It returns the table's columns (folded) when it looked them
// up, nil when it knew them.
func (b *Backend) ensureTable(ctx context.Context, tx *sql.Tx, bt *sink.Batch, t sink.Target) (map[string]bool, error) {
	want := dedupe(slices.Concat(t.Keys, bt.Columns))
	if t.Mode == sink.Upsert {
		for _, k := range t.Keys {
			if !slices.Contains(bt.Columns, k) {
				return nil, fmt.Errorf("%w: key column %q is not in the batch (columns %q)", sink.ErrRejected, k, bt.Columns)
			}
		}
	}
	known := b.cols[t.Table]
	if known != nil && (t.Mode != sink.Snapshot || known["\x00staging"]) {
		missing := false
		for _, c := range want {
			missing = missing || !known[fold(c)]
		}
		if !missing {
			return nil, nil
		}
	}
	cols, err := columns(ctx, tx, t.Table)
	if err != nil {
		return nil, err
	}
	pk := len(t.Keys) > 0 && t.Mode != sink.Append
	if cols == nil {
		var defs []string
		for _, c := range want {
			def := quote(c) + " TEXT"
			if pk && slices.Contains(t.Keys, c) {
				def += " NOT NULL"
			}
			defs = append(defs, def)
		}
		defs = append(defs, metaDefs()...)
		if pk {
			defs = append(defs, "PRIMARY KEY ("+quoteAll(t.Keys)+")")
		}
		if _, err := tx.ExecContext(ctx, "CREATE TABLE "+quote(t.Table)+" ("+strings.Join(defs, ", ")+")"); err != nil {
			return nil, fmt.Errorf("create table: %w", err)
		}
		if cols, err = columns(ctx, tx, t.Table); err != nil {
			return nil, err
		}
	}
	live := folded(cols)
	if err := addColumns(ctx, tx, t.Table, live, want); err != nil {
		return nil, err
	}
	if t.Mode == sink.Snapshot {
		staging := StagingPrefix + t.Table
		staged, err := columns(ctx, tx, staging)
		if err != nil {
			return nil, err
		}
		if staged == nil {
			// Like the table, without its keys: a run's rows are checked
			// against them when they replace the table's.
			var defs []string
			for _, c := range cols {
				def := quote(c.name) + " " + c.typ
				if c.notNull {
					def += " NOT NULL"
				}
				defs = append(defs, def)
			}
			if _, err := tx.ExecContext(ctx, "CREATE TABLE "+quote(staging)+" ("+strings.Join(defs, ", ")+")"); err != nil {
				return nil, fmt.Errorf("create staging table: %w", err)
			}
			if _, err := tx.ExecContext(ctx, "CREATE INDEX "+quote(staging+"_run")+" ON "+quote(staging)+" ("+quote(sink.ColRun)+")"); err != nil {
				return nil, fmt.Errorf("create staging table: %w", err)
			}
			if staged, err = columns(ctx, tx, staging); err != nil {
				return nil, err
			}
		}
		// The staging table has every column of the table, so a swap
		// can copy the table's column list.
		all, err := columns(ctx, tx, t.Table)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, c := range all {
			names = append(names, c.name)
		}
		if err := addColumns(ctx, tx, staging, folded(staged), names); err != nil {
			return nil, err
		}
		live["\x00staging"] = true
	}
	return live, nil
}

// addColumns adds to table the columns of want that have lacks, as text,
// and records them in have.
func addColumns(ctx context.Context, tx *sql.Tx, table string, have map[string]bool, want []string) error {
	for _, c := range dedupe(want) {
		if have[fold(c)] {
			continue
		}
		if _, err := tx.ExecContext(ctx, "ALTER TABLE "+quote(table)+" ADD COLUMN "+quote(c)+" TEXT"); err != nil {
			return fmt.Errorf("add column %q: %w", c, err)
		}
		have[fold(c)] = true
	}
	return nil
}

// rowArgs are the values of row i of bt, then its metadata, as
// metaColumns lists them.
func rowArgs(args []any, bt *sink.Batch, i int, now string) []any {
	args = args[:0]
	for _, v := range bt.Rows[i] {
		if v == nil {
			args = append(args, nil)
		} else {
			args = append(args, *v)
		}
	}
	var doc any
	if bt.Documents != nil && bt.Documents[i] != nil {
		doc = string(bt.Documents[i])
	}
	return append(args, bt.Export, bt.RunID, bt.ExecutionID, bt.BatchIndex, int64(bt.FirstRow+i), doc, now)
}

// insertRows inserts the batch's rows into table with one prepared
// statement; conflict, if not empty, is its ON CONFLICT clause.
func insertRows(ctx context.Context, tx *sql.Tx, table string, bt *sink.Batch, conflict, now string) error {
	if len(bt.Rows) == 0 {
		return nil
	}
	cols := slices.Concat(bt.Columns, metaColumns)
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ")
	stmt, err := tx.PrepareContext(ctx, "INSERT INTO "+quote(table)+" ("+quoteAll(cols)+") VALUES ("+marks+")"+conflict)
	if err != nil {
		return fmt.Errorf("insert rows: %w", err)
	}
	defer func() { _ = stmt.Close() }()
	args := make([]any, 0, len(cols))
	for i := range bt.Rows {
		args = rowArgs(args, bt, i, now)
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("insert row %d: %w", bt.FirstRow+i, err)
		}
	}
	return nil
}

// upsert inserts the batch's rows, or updates the rows with the same
// keys, one by one in the batch's order: of rows with one key, the latest
// run's wins, and within a run the later row, whatever order the batches
// come in.
func upsert(ctx context.Context, tx *sql.Tx, bt *sink.Batch, t sink.Target, now string) error {
	for i, r := range bt.Rows {
		for _, k := range t.Keys {
			if r[slices.Index(bt.Columns, k)] == nil {
				return fmt.Errorf("%w: row %d has no value for key column %q", sink.ErrRejected, bt.FirstRow+i, k)
			}
		}
	}
	// A row of an earlier run, applied late, is left out; the same row
	// again (the same run and row) is written only where it differs.
	var set, changed []string
	for _, c := range slices.Concat(bt.Columns, metaColumns) {
		if !slices.Contains(t.Keys, c) {
			set = append(set, quote(c)+" = excluded."+quote(c))
			if !slices.Contains(metaColumns, c) || c == sink.ColDocument {
				changed = append(changed, quote(t.Table)+"."+quote(c)+" IS NOT excluded."+quote(c))
			}
		}
	}
	have := "(" + quote(t.Table) + "." + quote(sink.ColRun) + ", " + quote(t.Table) + "." + quote(sink.ColRow) + ")"
	came := "(excluded." + quote(sink.ColRun) + ", excluded." + quote(sink.ColRow) + ")"
	return insertRows(ctx, tx, t.Table, bt, " ON CONFLICT ("+quoteAll(t.Keys)+") DO UPDATE SET "+strings.Join(set, ", ")+
		" WHERE "+have+" < "+came+" OR "+have+" = "+came+" AND ("+strings.Join(changed, " OR ")+")", now)
}

// upsertedSince tells whether the ledger holds upserts into table of runs
// later than run (run IDs sort by time).
func upsertedSince(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}, table, run string) (bool, error) {
	var later bool
	err := q.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM "+sink.LedgerTable+
		" WHERE table_name = ? AND mode = 'upsert' AND outcome = 'applied' AND run > ?)", table, run).Scan(&later)
	return later, err
}

// laterUpserts returns the conditions, for a swap of run into t.Table, of
// a row of the table that a later run upserted (keep, its one parameter
// the run), and of such a row (l) with the keys of a staged one (later):
// both false when no later run upserted into the table.
func laterUpserts(ctx context.Context, tx *sql.Tx, t sink.Target, runID string) (keep, later string, err error) {
	var upserted bool
	if len(t.Keys) > 0 {
		upserted, err = upsertedSince(ctx, tx, t.Table, runID)
	}
	if err != nil || !upserted {
		return "? IS NULL", "0", err
	}
	staging := quote(StagingPrefix + t.Table)
	same := []string{"l." + quote(sink.ColRun) + " > " + staging + "." + quote(sink.ColRun)}
	for _, k := range t.Keys {
		same = append(same, "l."+quote(k)+" = "+staging+"."+quote(k))
	}
	return quote(sink.ColRun) + " > ?", strings.Join(same, " AND "), nil
}

// FinishSnapshot replaces t.Table's rows with the run's staged rows once
// every batch of the run is in (see sink.Backend).
func (b *Backend) FinishSnapshot(ctx context.Context, t sink.Target, runID string) (bool, error) {
	swapped := false
	err := b.inTx(ctx, func(tx *sql.Tx) error {
		swapped = false
		snaps := sink.SnapshotsTable
		var batchCount sql.NullInt64
		var done, superseded bool
		var runTime string
		err := tx.QueryRowContext(ctx, "SELECT batch_count, swapped_at IS NOT NULL, superseded, run_time FROM "+snaps+" WHERE table_name = ? AND run = ?",
			t.Table, runID).Scan(&batchCount, &done, &superseded, &runTime)
		if errors.Is(err, sql.ErrNoRows) || err == nil && (done || superseded || !batchCount.Valid) {
			return nil
		}
		if err != nil {
			return err
		}
		var in int64
		if err := tx.QueryRowContext(ctx, "SELECT count(DISTINCT batch_index) FROM "+sink.LedgerTable+
			" WHERE table_name = ? AND run = ? AND outcome = 'applied' AND mode = 'snapshot'", t.Table, runID).Scan(&in); err != nil {
			return err
		}
		if in < batchCount.Int64 {
			return nil
		}
		var newer bool
		if err := tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM "+snaps+" WHERE table_name = ? AND swapped_at IS NOT NULL AND (run_time, run) > (?, ?))",
			t.Table, runTime, runID).Scan(&newer); err != nil {
			return err
		}
		run := quote(sink.ColRun)
		staging := quote(StagingPrefix + t.Table)
		if newer {
			// A later run's snapshot is in already: this one is not wanted.
			_, err := tx.ExecContext(ctx, "UPDATE "+snaps+" SET superseded = 1 WHERE table_name = ? AND run = ?", t.Table, runID)
			if err == nil {
				_, err = tx.ExecContext(ctx, "DELETE FROM "+staging+" WHERE "+run+" = ?", runID)
			}
			return err
		}
		// Unfinished older runs are superseded by this one: their staged
		// rows go.
		if _, err := tx.ExecContext(ctx, "DELETE FROM "+staging+" WHERE "+run+" IN (SELECT run FROM "+snaps+
			" WHERE table_name = ? AND swapped_at IS NULL AND (run_time, run) < (?, ?))", t.Table, runTime, runID); err != nil {
			return fmt.Errorf("clear staged rows: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE "+snaps+" SET superseded = 1 WHERE table_name = ? AND swapped_at IS NULL AND (run_time, run) < (?, ?)",
			t.Table, runTime, runID); err != nil {
			return err
		}
		cols, err := columns(ctx, tx, StagingPrefix+t.Table)
		if err != nil {
			return err
		}
		var names []string
		for _, c := range cols {
			if c.name != sink.ColLoadedAt {
				names = append(names, c.name)
			}
		}
		list := quoteAll(names)
		// The rows runs later than this one upserted (an increment landed
		// before this snapshot was complete) stay, in place of the staged
		// rows with their keys: the snapshot is the entity as of its run,
		// those rows what changed since.
		keep, later, err := laterUpserts(ctx, tx, t, runID)
		if err != nil {
			return fmt.Errorf("replace rows: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM "+quote(t.Table)+" WHERE NOT ("+keep+")", runID); err != nil {
			return fmt.Errorf("replace rows: %w", err)
		}
		now := formatTime(time.Now())
		res, err := tx.ExecContext(ctx, "INSERT INTO "+quote(t.Table)+" ("+list+", "+quote(sink.ColLoadedAt)+") SELECT "+list+", ? FROM "+staging+
			" WHERE "+run+" = ? AND NOT EXISTS (SELECT 1 FROM "+quote(t.Table)+" l WHERE "+later+") ORDER BY "+quote(sink.ColRow), now, runID)
		if err != nil {
			return fmt.Errorf("replace rows: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM "+staging+" WHERE "+run+" = ?", runID); err != nil {
			return fmt.Errorf("clear staged rows: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE "+snaps+" SET swapped_at = ?, rows = ? WHERE table_name = ? AND run = ?", now, n, t.Table, runID); err != nil {
			return err
		}
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
	cols, err := columns(ctx, b.db, table)
	if err != nil {
		return nil, fmt.Errorf("table %s: %w", table, err)
	}
	if cols == nil {
		return nil, fmt.Errorf("table %s: no such table in %s", table, b.path)
	}
	s := &sink.TableSample{Table: table}
	var meta []string
	for _, c := range cols {
		if strings.HasPrefix(c.name, "_dmf_") {
			meta = append(meta, c.name)
		} else {
			s.Columns = append(s.Columns, c.name)
		}
	}
	s.Columns = append(s.Columns, meta...)
	if err := b.db.QueryRowContext(ctx, "SELECT count(*) FROM "+quote(table)).Scan(&s.Count); err != nil {
		return nil, fmt.Errorf("table %s: count rows: %w", table, err)
	}
	sel := make([]string, len(s.Columns))
	for i, c := range s.Columns {
		sel[i] = "CAST(" + quote(c) + " AS TEXT)"
	}
	// t.: the table's columns, not the text the select list makes of
	// them.
	rows, err := b.db.QueryContext(ctx, "SELECT "+strings.Join(sel, ", ")+" FROM "+quote(table)+" AS t ORDER BY t."+quote(sink.ColRun)+
		", t."+quote(sink.ColBatch)+", t."+quote(sink.ColRow)+" LIMIT ?", limit)
	if err != nil {
		return nil, fmt.Errorf("table %s: read rows: %w", table, err)
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		vals := make([]sql.NullString, len(sel))
		ptrs := make([]any, len(sel))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("table %s: read rows: %w", table, err)
		}
		row := make([]*string, len(vals))
		for i, v := range vals {
			if v.Valid {
				row[i] = &v.String
			}
		}
		s.Rows = append(s.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("table %s: read rows: %w", table, err)
	}
	return s, nil
}
