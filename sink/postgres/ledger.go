package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dmfexport/dmfexport/internal/redact"
	"github.com/dmfexport/dmfexport/sink"
)

// Ledger reads what a sink landed in one schema, for reconcile and
// status. It only reads: a schema the sink never wrote reads as empty.
type Ledger struct {
	conn   *pgx.Conn
	schema string
}

var _ sink.LedgerReader = (*Ledger)(nil)

// OpenLedger connects to the database at url to read the sink's ledger in
// schema ("" → public).
func OpenLedger(ctx context.Context, url, schema string) (*Ledger, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redact.URL(url), redact.Error(err, []string{passwordOf(url)}))
	}
	if schema == "" {
		schema = "public"
	}
	return &Ledger{conn: conn, schema: schema}, nil
}

// Close closes the connection.
func (l *Ledger) Close() { _ = l.conn.Close(context.Background()) }

func missingTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "3F000") // undefined table, schema
}

// Landed returns what the ledger holds of the given runs of the given
// exports, per run and entity, and the first run (smallest ID, so the
// oldest) it holds of each export. For the run whose snapshot an entity's
// table holds now, it also counts the table's rows.
func (l *Ledger) Landed(ctx context.Context, exports, runs []string) ([]sink.Landed, map[string]string, error) {
	ledger := pgx.Identifier{l.schema, sink.LedgerTable}.Sanitize()
	rows, err := l.conn.Query(ctx, `SELECT export, run, entity, count(*), coalesce(sum(rows), 0), count(*) FILTER (WHERE outcome = 'stale')
		FROM `+ledger+` WHERE export = ANY($1) AND run = ANY($2) GROUP BY 1, 2, 3`, exports, runs)
	if err != nil {
		if missingTable(err) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("read the ledger: %w", err)
	}
	landed, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sink.Landed, error) {
		x := sink.Landed{SwappedRows: -1}
		err := r.Scan(&x.Export, &x.Run, &x.Entity, &x.Batches, &x.Rows, &x.Stale)
		return x, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read the ledger: %w", err)
	}
	first := map[string]string{}
	rows, err = l.conn.Query(ctx, `SELECT export, min(run) FROM `+ledger+` WHERE export = ANY($1) GROUP BY 1`, exports)
	if err != nil {
		return nil, nil, fmt.Errorf("read the ledger: %w", err)
	}
	var export, run string
	if _, err := pgx.ForEachRow(rows, []any{&export, &run}, func() error { first[export] = run; return nil }); err != nil {
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
	rows, err := l.conn.Query(ctx, `SELECT DISTINCT ON (table_name) table_name, run, entity, coalesce(rows, 0)
		FROM `+pgx.Identifier{l.schema, sink.SnapshotsTable}.Sanitize()+` WHERE swapped_at IS NOT NULL
		ORDER BY table_name, run_time DESC, run DESC`)
	if err != nil {
		if missingTable(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read the snapshots: %w", err)
	}
	snaps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sink.CurrentSnapshot, error) {
		var s sink.CurrentSnapshot
		err := r.Scan(&s.Table, &s.Run, &s.Entity, &s.SwappedRows)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the snapshots: %w", err)
	}
	for i := range snaps {
		if err := l.conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{l.schema, snaps[i].Table}.Sanitize()).Scan(&snaps[i].TableRows); err != nil {
			return nil, fmt.Errorf("count the rows of table %s: %w", snaps[i].Table, err)
		}
		if snaps[i].Upserted, err = upsertedSince(ctx, l.conn, l.schema, snaps[i].Table, snaps[i].Run); err != nil {
			return nil, fmt.Errorf("read the upserts into table %s: %w", snaps[i].Table, err)
		}
	}
	return snaps, nil
}

// LastRuns returns, per entity, the run whose batch the sink applied last,
// with what it applied of it, by entity name.
func (l *Ledger) LastRuns(ctx context.Context) ([]sink.EntityRun, error) {
	ledger := pgx.Identifier{l.schema, sink.LedgerTable}.Sanitize()
	rows, err := l.conn.Query(ctx, `WITH last AS (SELECT DISTINCT ON (entity) entity, export, run FROM `+ledger+` ORDER BY entity, applied_at DESC)
		SELECT g.entity, max(g.table_name), g.export, g.run, count(*), coalesce(sum(g.rows), 0), count(*) FILTER (WHERE g.outcome = 'stale'),
			coalesce(max(g.batch_count), 0), max(g.applied_at)
		FROM `+ledger+` g JOIN last USING (entity, export, run) GROUP BY g.entity, g.export, g.run ORDER BY g.entity`)
	if err != nil {
		if missingTable(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read the ledger: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sink.EntityRun, error) {
		var e sink.EntityRun
		err := r.Scan(&e.Entity, &e.Table, &e.Export, &e.Run, &e.Batches, &e.Rows, &e.Stale, &e.BatchCount, &e.AppliedAt)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the ledger: %w", err)
	}
	return out, nil
}
