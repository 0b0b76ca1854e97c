package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/dmfexport/dmfexport/sink"
)

// Ledger reads what a sink landed in one database file, for reconcile and
// status. It only reads: a file the sink never wrote (or that does not
// exist, which it does not create) reads as empty.
type Ledger struct {
	db *sql.DB // nil: no file
}

var _ sink.LedgerReader = (*Ledger)(nil)

// OpenLedger opens the database file at path to read the sink's ledger.
func OpenLedger(ctx context.Context, path string) (*Ledger, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("SQLite database %s: %w", path, err)
	}
	if _, err := os.Stat(abs); errors.Is(err, fs.ErrNotExist) {
		return &Ledger{}, nil
	}
	// mode=rw: never create the file; query_only: never write it.
	q := fmt.Sprintf("mode=rw&_pragma=busy_timeout(%d)&_pragma=query_only(1)", BusyTimeout.Milliseconds())
	db, err := sql.Open("sqlite", dsn(abs, q))
	if err != nil {
		return nil, fmt.Errorf("SQLite database %s: %w", abs, err)
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("SQLite database %s: %w", abs, err)
	}
	return &Ledger{db: db}, nil
}

// Close closes the database.
func (l *Ledger) Close() {
	if l.db != nil {
		_ = l.db.Close()
	}
}

// has reports whether the database holds table.
func (l *Ledger) has(ctx context.Context, table string) (bool, error) {
	if l.db == nil {
		return false, nil
	}
	var ok bool
	err := l.db.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?)", table).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("read the ledger: %w", err)
	}
	return ok, nil
}

// jsonList is list as a JSON array, for "IN (SELECT value FROM
// json_each(?))": any number of values in one parameter.
func jsonList(list []string) string {
	if list == nil {
		list = []string{}
	}
	b, _ := json.Marshal(list)
	return string(b)
}

// Landed returns what the ledger holds of the given runs of the given
// exports (see sink.LedgerReader).
func (l *Ledger) Landed(ctx context.Context, exports, runs []string) ([]sink.Landed, map[string]string, error) {
	if ok, err := l.has(ctx, sink.LedgerTable); !ok || err != nil {
		return nil, nil, err
	}
	rows, err := l.db.QueryContext(ctx, `SELECT export, run, entity, count(*), coalesce(sum(rows), 0), coalesce(sum(outcome = 'stale'), 0)
		FROM `+sink.LedgerTable+` WHERE export IN (SELECT value FROM json_each(?)) AND run IN (SELECT value FROM json_each(?)) GROUP BY 1, 2, 3`,
		jsonList(exports), jsonList(runs))
	if err != nil {
		return nil, nil, fmt.Errorf("read the ledger: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var landed []sink.Landed
	for rows.Next() {
		x := sink.Landed{SwappedRows: -1}
		if err := rows.Scan(&x.Export, &x.Run, &x.Entity, &x.Batches, &x.Rows, &x.Stale); err != nil {
			return nil, nil, fmt.Errorf("read the ledger: %w", err)
		}
		landed = append(landed, x)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read the ledger: %w", err)
	}
	first := map[string]string{}
	frows, err := l.db.QueryContext(ctx, `SELECT export, min(run) FROM `+sink.LedgerTable+` WHERE export IN (SELECT value FROM json_each(?)) GROUP BY 1`, jsonList(exports))
	if err != nil {
		return nil, nil, fmt.Errorf("read the ledger: %w", err)
	}
	defer func() { _ = frows.Close() }()
	for frows.Next() {
		var export, run string
		if err := frows.Scan(&export, &run); err != nil {
			return nil, nil, fmt.Errorf("read the ledger: %w", err)
		}
		first[export] = run
	}
	if err := frows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read the ledger: %w", err)
	}
	snaps, err := l.current(ctx)
	if err != nil {
		return nil, nil, err
	}
	sink.MarkCurrent(landed, snaps)
	return landed, first, nil
}

// current returns the newest swapped snapshot of every snapshot table,
// with the table's row count.
func (l *Ledger) current(ctx context.Context) ([]sink.CurrentSnapshot, error) {
	if ok, err := l.has(ctx, sink.SnapshotsTable); !ok || err != nil {
		return nil, err
	}
	rows, err := l.db.QueryContext(ctx, `SELECT table_name, run, entity, coalesce(rows, 0) FROM (
		SELECT *, row_number() OVER (PARTITION BY table_name ORDER BY run_time DESC, run DESC) AS n
		FROM `+sink.SnapshotsTable+` WHERE swapped_at IS NOT NULL) WHERE n = 1`)
	if err != nil {
		return nil, fmt.Errorf("read the snapshots: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var snaps []sink.CurrentSnapshot
	for rows.Next() {
		var s sink.CurrentSnapshot
		if err := rows.Scan(&s.Table, &s.Run, &s.Entity, &s.SwappedRows); err != nil {
			return nil, fmt.Errorf("read the snapshots: %w", err)
		}
		snaps = append(snaps, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the snapshots: %w", err)
	}
	for i := range snaps {
		if err := l.db.QueryRowContext(ctx, "SELECT count(*) FROM "+quote(snaps[i].Table)).Scan(&snaps[i].TableRows); err != nil {
			return nil, fmt.Errorf("count the rows of table %s: %w", snaps[i].Table, err)
		}
		if snaps[i].Upserted, err = upsertedSince(ctx, l.db, snaps[i].Table, snaps[i].Run); err != nil {
			return nil, fmt.Errorf("read the upserts into table %s: %w", snaps[i].Table, err)
		}
	}
	return snaps, nil
}

// LastRuns returns, per entity, the run whose batch the sink applied last
// (see sink.LedgerReader).
func (l *Ledger) LastRuns(ctx context.Context) ([]sink.EntityRun, error) {
	if ok, err := l.has(ctx, sink.LedgerTable); !ok || err != nil {
		return nil, err
	}
	ledger := sink.LedgerTable
	rows, err := l.db.QueryContext(ctx, `WITH last AS (SELECT entity, export, run FROM (
			SELECT entity, export, run, row_number() OVER (PARTITION BY entity ORDER BY applied_at DESC, rowid DESC) AS n FROM `+ledger+`) WHERE n = 1)
		SELECT g.entity, max(g.table_name), g.export, g.run, count(*), coalesce(sum(g.rows), 0), coalesce(sum(g.outcome = 'stale'), 0),
			coalesce(max(g.batch_count), 0), max(g.applied_at)
		FROM `+ledger+` g JOIN last USING (entity, export, run) GROUP BY g.entity, g.export, g.run ORDER BY g.entity`)
	if err != nil {
		return nil, fmt.Errorf("read the ledger: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []sink.EntityRun
	for rows.Next() {
		var e sink.EntityRun
		var at string
		if err := rows.Scan(&e.Entity, &e.Table, &e.Export, &e.Run, &e.Batches, &e.Rows, &e.Stale, &e.BatchCount, &at); err != nil {
			return nil, fmt.Errorf("read the ledger: %w", err)
		}
		if e.AppliedAt, err = time.Parse(time.RFC3339Nano, at); err != nil {
			return nil, fmt.Errorf("read the ledger: applied_at %q: %w", at, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the ledger: %w", err)
	}
	return out, nil
}
