package postgres

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/sink"
	"github.com/dmfexport/dmfexport/sink/sinktest"
)

// TestBackend runs the backends' conformance suite against PostgreSQL,
// each case in a schema of its own.
func TestBackend(t *testing.T) {
	sinktest.RunBackend(t, func(t *testing.T) sinktest.Harness {
		schema := testenv.PostgresSchema(t)
		b, err := Open(context.Background(), testenv.PostgresURL(), schema)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		conn := testenv.PostgresConn(t)
		return sinktest.Harness{
			Backend: b,
			Rows: func(table string) ([]map[string]any, error) {
				return testenv.PostgresRows(context.Background(), conn, schema, table)
			},
			Ledger: func() (sink.LedgerReader, error) {
				return OpenLedger(context.Background(), testenv.PostgresURL(), schema)
			},
			Sample: b.Sample,
		}
	})
}

// TestStagingSchema: the staging schema's name stays within PostgreSQL's
// 63 bytes and ends in _staging.
func TestStagingSchema(t *testing.T) {
	long := "s234567890123456789012345678901234567890123456789012345678901"
	for _, tc := range []struct{ schema, want string }{
		{"public", "public_staging"},
		{"dw", "dw_staging"},
		{long, long[:63-len("_staging")] + "_staging"},
	} {
		if got := stagingSchema(tc.schema); got != tc.want || len(got) > 63 {
			t.Errorf("stagingSchema(%q) = %q, want %q", tc.schema, got, tc.want)
		}
	}
}

func BenchmarkApply(b *testing.B) {
	for _, mode := range []sink.Mode{sink.Snapshot, sink.Upsert, sink.Append} {
		b.Run(string(mode), func(b *testing.B) {
			be, err := Open(context.Background(), testenv.PostgresURL(), testenv.PostgresSchema(b))
			if err != nil {
				b.Fatal(err)
			}
			defer be.Close()
			sinktest.BenchmarkApply(b, be, mode)
		})
	}
}

// open is a backend on a schema of the test's own, and a connection for
// the test's queries.
func open(t testing.TB) (*Backend, *pgx.Conn) {
	t.Helper()
	b, err := Open(context.Background(), testenv.PostgresURL(), testenv.PostgresSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b, testenv.PostgresConn(t)
}

// TestStagingCleared: a swap makes its run's staging table the table's
// rows and drops those of the runs it supersedes, leaving a newer run's
// staged meanwhile.
func TestStagingCleared(t *testing.T) {
	cols := []string{"ID", "NAME"}
	snap := sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Snapshot}
	for _, tc := range []struct {
		name    string
		batches []*sink.Batch // each applied, then FinishSnapshot of its run
		staged  []string      // the runs whose staging tables are left
	}{
		{"one run", []*sink.Batch{
			sinktest.Batch("r1", 0, 0, 0, "Customers", cols, []any{"1", "a"}),
			sinktest.Batch("r1", 0, 1, 2, "Customers", cols, []any{"2", "b"}),
		}, nil},
		{"an older run superseded", []*sink.Batch{
			sinktest.Batch("r1", 0, 0, 0, "Customers", cols, []any{"1", "a"}),
			sinktest.Batch("r2", 1, 0, 1, "Customers", cols, []any{"2", "b"}),
		}, nil},
		{"a newer run staged meanwhile", []*sink.Batch{
			sinktest.Batch("r1", 0, 0, 0, "Customers", cols, []any{"1", "a"}),
			sinktest.Batch("r2", 1, 0, 0, "Customers", cols, []any{"1", "A"}, []any{"2", "B"}),
			sinktest.Batch("r1", 0, 1, 2, "Customers", cols, []any{"2", "b"}),
		}, []string{"r2"}},
		{"a half-delivered run", []*sink.Batch{
			sinktest.Batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}),
			sinktest.Batch("r2", 1, 0, 0, "Customers", cols, []any{"9", "z"}),
		}, []string{"r2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			be, conn := open(t)
			runs := map[string]bool{}
			for _, b := range tc.batches {
				runs[b.RunID] = true
				if _, err := be.Apply(ctx, b, snap); err != nil {
					t.Fatal(err)
				}
				if _, err := be.FinishSnapshot(ctx, snap, b.RunID); err != nil {
					t.Fatal(err)
				}
			}
			var staged []string
			for _, run := range slices.Sorted(maps.Keys(runs)) {
				var left bool
				if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass($1) AND NOT relispartition)",
					pgx.Identifier{be.staging, runTable(snap.Table, run)}.Sanitize()).Scan(&left); err != nil {
					t.Fatal(err)
				}
				if left {
					staged = append(staged, run)
				}
			}
			if !slices.Equal(staged, tc.staged) {
				t.Errorf("staging tables of runs %q left, want %q", staged, tc.staged)
			}
			var parts int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_inherits WHERE inhparent = $1::regclass",
				pgx.Identifier{be.Schema(), snap.Table}.Sanitize()).Scan(&parts); err != nil {
				t.Fatal(err)
			}
			if parts != 1 {
				t.Errorf("table has %d partitions, want 1", parts)
			}
		})
	}
}

// TestApplyWaitsForSwap: a batch lands only once no swap of its table is
// in progress, and sees that swap: a batch of a run older than a snapshot
// being swapped in is stale, never landed on top of it.
func TestApplyWaitsForSwap(t *testing.T) {
	ctx := context.Background()
	be, conn := open(t)
	cols := []string{"ID", "NAME"}
	up := sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Upsert}
	if _, err := be.Apply(ctx, sinktest.Batch("r0", 0, 0, 1, "Customers", cols, []any{"0", "x"}), up); err != nil {
		t.Fatal(err)
	}
	// A swap in progress in another session: it holds the table's
	// snapshot lock and has marked a newer run swapped in, uncommitted.
	swap, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = swap.Rollback(ctx) }()
	if _, err := swap.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", be.snapshotLock(up.Table)); err != nil {
		t.Fatal(err)
	}
	if _, err := swap.Exec(ctx, "INSERT INTO "+pgx.Identifier{be.Schema(), sink.SnapshotsTable}.Sanitize()+
		" (table_name, run, run_time, entity, swapped_at) VALUES ($1, 'r9', $2, 'Customers', now())", up.Table, time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	type result struct {
		out sink.Outcome
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := be.Apply(ctx, sinktest.Batch("r1", 1, 0, 1, "Customers", cols, []any{"1", "old"}), up)
		done <- result{out, err}
	}()
	// Wait until the batch waits for the lock.
	waiting := testenv.PostgresConn(t)
	if !testenv.Await(10*time.Second, func() bool {
		var n int
		if err := waiting.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0)`, be.snapshotLock(up.Table)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return true
		}
		select {
		case r := <-done:
			t.Fatalf("apply returned %v, %v while a swap held the table's snapshot lock", r.out, r.err)
		default:
		}
		return false
	}) {
		t.Fatal("after 10s the batch neither waits for the swap nor returned")
	}
	if err := swap.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.out != sink.Stale {
		t.Fatalf("apply after the swap: %v, %v; want stale", r.out, r.err)
	}
	got, err := testenv.PostgresRows(context.Background(), conn, be.Schema(), up.Table)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0]["ID"] != "0" {
		t.Errorf("table holds %v, want only the row of ID 0", got)
	}
}

// TestSwapKeepsTable: a swap replaces the rows of the table users see, and
// that table stays the same object, with their views and indexes on it; a
// table made before tables were partitioned has its rows replaced too.
func TestSwapKeepsTable(t *testing.T) {
	cols := []string{"ID", "NAME"}
	snap := sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Snapshot}
	for _, tc := range []struct {
		name  string
		plain bool // the table exists, not partitioned, before the first batch
	}{
		{"partitioned", false},
		{"made by an earlier version", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			be, conn := open(t)
			table := pgx.Identifier{be.Schema(), snap.Table}.Sanitize()
			if tc.plain {
				if _, err := conn.Exec(ctx, `CREATE TABLE `+table+` ("ID" text PRIMARY KEY, "NAME" text, _dmf_export text NOT NULL,
					_dmf_run text NOT NULL, _dmf_execution text NOT NULL, _dmf_batch integer NOT NULL, _dmf_row bigint NOT NULL,
					_dmf_document jsonb, _dmf_loaded_at timestamptz NOT NULL DEFAULT now())`); err != nil {
					t.Fatal(err)
				}
			}
			land := func(run string, m int, rows ...[]any) {
				t.Helper()
				if _, err := be.Apply(ctx, sinktest.Batch(run, m, 0, 1, "Customers", cols, rows...), snap); err != nil {
					t.Fatal(err)
				}
				if ok, err := be.FinishSnapshot(ctx, snap, run); !ok || err != nil {
					t.Fatalf("finish snapshot of %s: %v, %v; want a swap", run, ok, err)
				}
			}
			land("r1", 0, []any{"1", "a"}, []any{"2", "b"})
			var oid uint32
			if err := conn.QueryRow(ctx, "SELECT $1::regclass::oid", table).Scan(&oid); err != nil {
				t.Fatal(err)
			}
			view := pgx.Identifier{be.Schema(), "names"}.Sanitize()
			if _, err := conn.Exec(ctx, "CREATE VIEW "+view+` AS SELECT "NAME" FROM `+table); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, "CREATE INDEX customers_name ON "+table+` ("NAME")`); err != nil {
				t.Fatal(err)
			}
			land("r2", 1, []any{"2", "B"}, []any{"3", "c"})
			var after uint32
			if err := conn.QueryRow(ctx, "SELECT $1::regclass::oid", table).Scan(&after); err != nil {
				t.Fatal(err)
			}
			if after != oid {
				t.Errorf("the table is another object after the swap (oid %d, was %d)", after, oid)
			}
			rows, err := conn.Query(ctx, "SELECT \"NAME\" FROM "+view+" ORDER BY 1")
			if err != nil {
				t.Fatal(err)
			}
			names, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"B", "c"}; !slices.Equal(names, want) {
				t.Errorf("the view reads %q, want %q", names, want)
			}
			var indexed bool
			if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_index x ON x.indrelid = i.inhrelid
				JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
				WHERE i.inhparent = $1::regclass AND a.attname = 'NAME')`, table).Scan(&indexed); err != nil {
				t.Fatal(err)
			}
			if !tc.plain && !indexed {
				t.Error("the table's index on NAME is not on its new partition")
			}
		})
	}
}

// TestUpsertKeyInsertedMeanwhile: a batch whose keys are not in the table
// is copied straight in; when another transaction inserts one of them in
// between (committed once the copy waits on it), the batch is upserted
// after all and its values win.
func TestUpsertKeyInsertedMeanwhile(t *testing.T) {
	ctx := context.Background()
	be, conn := open(t)
	cols := []string{"ID", "NAME"}
	up := sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Upsert}
	if _, err := be.Apply(ctx, sinktest.Batch("r0", 0, 0, 0, "Customers", cols, []any{"0", "a"}), up); err != nil {
		t.Fatal(err)
	}
	other, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Rollback(ctx) }()
	if _, err := other.Exec(ctx, "INSERT INTO "+pgx.Identifier{be.Schema(), up.Table}.Sanitize()+" ("+
		quoteAll(append([]string{"ID", "NAME"}, sink.ColExport, sink.ColRun, sink.ColExecution, sink.ColBatch, sink.ColRow))+
		") VALUES ('1', 'other', 'exp', 'r0', 'exec-r0', 1, 101)"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := be.Apply(ctx, sinktest.Batch("r1", 1, 0, 0, "Customers", cols, []any{"1", "new"}, []any{"2", "b"}), up)
		done <- err
	}()
	waiting := testenv.PostgresConn(t)
	if !testenv.Await(10*time.Second, func() bool {
		var n int
		if err := waiting.QueryRow(ctx, "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}) {
		t.Fatal("after 10s the batch does not wait for the transaction inserting its key")
	}
	if err := other.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("apply: %v", err)
	}
	got, err := testenv.PostgresRows(ctx, conn, be.Schema(), up.Table)
	if err != nil {
		t.Fatal(err)
	}
	names := map[any]any{}
	for _, r := range got {
		names[r["ID"]] = r["NAME"]
	}
	if want := map[any]any{"0": "a", "1": "new", "2": "b"}; !maps.Equal(names, want) || len(got) != 3 {
		t.Errorf("table holds %v, want %v", got, want)
	}
}

// TestUpsertWithoutUniqueKey: upserting into a table that has no unique
// key on the batch's keys (made by an append) is refused, even when none
// of the keys is in it yet: it never inserts rows it could not upsert.
func TestUpsertWithoutUniqueKey(t *testing.T) {
	ctx := context.Background()
	be, conn := open(t)
	cols := []string{"ID", "NAME"}
	if _, err := be.Apply(ctx, sinktest.Batch("r0", 0, 0, 0, "Customers", cols, []any{"0", "a"}), sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Append}); err != nil {
		t.Fatal(err)
	}
	_, err := be.Apply(ctx, sinktest.Batch("r1", 1, 0, 0, "Customers", cols, []any{"1", "b"}), sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Upsert})
	if !errors.Is(err, sink.ErrRejected) {
		t.Fatalf("upsert into a table without a unique key: %v, want an error wrapping sink.ErrRejected", err)
	}
	got, err := testenv.PostgresRows(ctx, conn, be.Schema(), "customers")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Errorf("table holds %v, want only the appended row", got)
	}
}
