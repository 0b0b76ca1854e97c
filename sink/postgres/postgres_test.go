package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/sink"
)

// batch builds a batch of run (its time: minute m of a day) with rows of
// values: a string, or nil for a field the row leaves out.
func batch(run string, m, index, count int, entity string, cols []string, rows ...[]any) *sink.Batch {
	b := &sink.Batch{
		MessageID: fmt.Sprintf("exec-%s/%s/%d", run, entity, index), Export: "exp", RunID: run, ExecutionID: "exec-" + run,
		Entity: entity, RunTime: time.Date(2026, 3, 1, 2, m, 0, 0, time.UTC), BatchIndex: index, FirstRow: 1 + index*100,
		Columns: cols, BatchCount: count, LastBatch: count > 0,
	}
	for _, r := range rows {
		vals := make([]*string, len(cols))
		for j, v := range r {
			if s, ok := v.(string); ok {
				vals[j] = &s
			}
		}
		b.Rows = append(b.Rows, vals)
	}
	return b
}

// step is one call on the backend and what it must give.
type step struct {
	b      *sink.Batch
	target sink.Target
	want   sink.Outcome
	// swap: FinishSnapshot after the batch must swap (or must not).
	swap bool
	// doc sets the batch's composite documents.
	docs [][]byte
}

func open(t *testing.T) (*Backend, *pgx.Conn) {
	t.Helper()
	schema := testenv.PostgresSchema(t)
	b, err := Open(context.Background(), testenv.PostgresURL(), schema)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b, testenv.PostgresConn(t)
}

// tableRows reads schema.table ordered by orderBy, each row without the
// metadata columns (but the document) as column → value (nil for NULL).
func tableRows(t *testing.T, conn *pgx.Conn, schema, table, orderBy string) []map[string]any {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT row_to_json(x)::text FROM "+pgx.Identifier{schema, table}.Sanitize()+" x ORDER BY "+orderBy)
	if err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, s := range texts {
		m := map[string]any{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatal(err)
		}
		for k := range m {
			if strings.HasPrefix(k, "_dmf_") && k != ColDocument {
				delete(m, k)
			}
		}
		if m[ColDocument] == nil {
			delete(m, ColDocument)
		}
		out = append(out, m)
	}
	return out
}

func TestBackend(t *testing.T) {
	cols := []string{"ID", "NAME"}
	snap := sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Snapshot}
	up := sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Upsert}
	app := sink.Target{Table: "customers", Mode: sink.Append}
	odd := sink.Target{Table: `Odd "name"; DROP TABLE x;--`, Keys: []string{`a"b`}, Mode: sink.Upsert}
	tests := []struct {
		name  string
		steps []step
		table string
		order string
		want  []map[string]any
	}{
		{name: "snapshot replaces the table once every batch is in, in any order",
			steps: []step{
				{b: batch("r1", 0, 0, 0, "Customers", cols, []any{"1", "a"}, []any{"2", "b"}), target: snap},
				{b: batch("r1", 0, 1, 2, "Customers", cols, []any{"3", "c"}), target: snap, swap: true},
				// Run 2: row 2 removed, row 3 changed, its last batch first.
				{b: batch("r2", 1, 1, 2, "Customers", cols, []any{"3", "C"}), target: snap},
				{b: batch("r2", 1, 0, 0, "Customers", cols, []any{"1", "a"}), target: snap, swap: true},
			},
			table: "customers", order: `"ID"`,
			want: []map[string]any{{"ID": "1", "NAME": "a"}, {"ID": "3", "NAME": "C"}},
		},
		{name: "a half-delivered snapshot leaves the table as it was",
			steps: []step{
				{b: batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}), target: snap, swap: true},
				{b: batch("r2", 1, 0, 0, "Customers", cols, []any{"9", "z"}), target: snap},
			},
			table: "customers", order: `"ID"`,
			want: []map[string]any{{"ID": "1", "NAME": "a"}},
		},
		{name: "a batch of a run older than the swapped snapshot is stale",
			steps: []step{
				{b: batch("r2", 5, 0, 1, "Customers", cols, []any{"2", "new"}), target: snap, swap: true},
				{b: batch("r1", 1, 0, 1, "Customers", cols, []any{"1", "old"}), target: snap, want: sink.Stale},
				{b: batch("r0", 0, 0, 1, "Customers", cols, []any{"1", "older"}), target: up, want: sink.Stale},
			},
			table: "customers", order: `"ID"`,
			want: []map[string]any{{"ID": "2", "NAME": "new"}},
		},
		{name: "upsert inserts and updates by key, the last of a repeated key winning",
			steps: []step{
				{b: batch("r1", 0, 0, 0, "Customers", cols, []any{"1", "a"}, []any{"2", "b"}), target: up},
				{b: batch("r2", 1, 0, 1, "Customers", cols, []any{"2", "B"}, []any{"3", "c"}, []any{"3", "c2"}), target: up},
			},
			table: "customers", order: `"ID"`,
			want: []map[string]any{{"ID": "1", "NAME": "a"}, {"ID": "2", "NAME": "B"}, {"ID": "3", "NAME": "c2"}},
		},
		{name: "append keeps every row",
			steps: []step{
				{b: batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}), target: app},
				{b: batch("r2", 1, 0, 1, "Customers", cols, []any{"1", "a"}), target: app},
			},
			table: "customers", order: `"_dmf_run"`,
			want: []map[string]any{{"ID": "1", "NAME": "a"}, {"ID": "1", "NAME": "a"}},
		},
		{name: "a duplicate message ID has no effect",
			steps: []step{
				{b: batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}), target: app},
				{b: batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}), target: app, want: sink.Duplicate},
				{b: batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}), target: snap, want: sink.Duplicate},
			},
			table: "customers", order: `"ID"`,
			want: []map[string]any{{"ID": "1", "NAME": "a"}},
		},
		{name: "a column that appears later is added",
			steps: []step{
				{b: batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}), target: snap, swap: true},
				{b: batch("r2", 1, 0, 1, "Customers", []string{"ID", "NAME", "CITY"}, []any{"1", "a", "Paris"}, []any{"2", "b", ""}), target: snap, swap: true},
				{b: batch("r3", 2, 0, 1, "Customers", []string{"ID", "ZIP"}, []any{"3", "75001"}), target: up},
			},
			table: "customers", order: `"ID"`,
			want: []map[string]any{{"ID": "1", "NAME": "a", "CITY": "Paris", "ZIP": nil}, {"ID": "2", "NAME": "b", "CITY": "", "ZIP": nil},
				{"ID": "3", "NAME": nil, "CITY": nil, "ZIP": "75001"}},
		},
		{name: "a field an XML row leaves out is NULL, an empty one empty",
			steps: []step{
				{b: batch("r1", 0, 0, 1, "Vendors", []string{"ACCOUNT", "NAME", "CURRENCY"}, []any{"V1", "x", nil}, []any{"V2", "", "EUR"}),
					target: sink.Target{Table: "vendors", Mode: sink.Snapshot}, swap: true},
			},
			table: "vendors", order: `"ACCOUNT"`,
			want: []map[string]any{{"ACCOUNT": "V1", "NAME": "x", "CURRENCY": nil}, {"ACCOUNT": "V2", "NAME": "", "CURRENCY": "EUR"}},
		},
		{name: "odd names are quoted, never interpolated",
			steps: []step{
				{b: batch("r1", 0, 0, 1, "Odd", []string{`a"b`, "select", "Sp ace; --", "ÄÖ"}, []any{"1", "x", "y", "z"}), target: odd},
				{b: batch("r2", 1, 0, 1, "Odd", []string{`a"b`, "select"}, []any{"1", "X'); DROP TABLE y; --"}), target: odd},
			},
			table: `Odd "name"; DROP TABLE x;--`, order: `"a""b"`,
			want: []map[string]any{{`a"b`: "1", "select": "X'); DROP TABLE y; --", "Sp ace; --": "y", "ÄÖ": "z"}},
		},
		{name: "a composite entity's child records land in the document column",
			steps: []step{
				{b: batch("r1", 0, 0, 1, "Sales orders", []string{"SO"}, []any{"SO-1"}, []any{"SO-2"}),
					target: sink.Target{Table: "sales_orders", Keys: []string{"SO"}, Mode: sink.Snapshot}, swap: true,
					docs: [][]byte{[]byte(`{"LINES":[{"LINE":"1"},{"LINE":"2"}]}`), nil}},
			},
			table: "sales_orders", order: `"SO"`,
			want: []map[string]any{{"SO": "SO-1", ColDocument: map[string]any{"LINES": []any{map[string]any{"LINE": "1"}, map[string]any{"LINE": "2"}}}},
				{"SO": "SO-2"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			be, conn := open(t)
			for i, s := range tc.steps {
				s.b.Documents = s.docs
				out, err := be.Apply(ctx, s.b, s.target)
				if err != nil {
					t.Fatalf("step %d: apply: %v", i, err)
				}
				if out != s.want {
					t.Errorf("step %d: apply gave %v, want %v", i, out, s.want)
				}
				if s.target.Mode != sink.Snapshot {
					continue
				}
				swapped, err := be.FinishSnapshot(ctx, s.target, s.b.RunID)
				if err != nil {
					t.Fatalf("step %d: finish snapshot: %v", i, err)
				}
				if swapped != s.swap {
					t.Errorf("step %d: finish snapshot swapped %v, want %v", i, swapped, s.swap)
				}
				// Asking again, as another process would, changes nothing.
				if again, err := be.FinishSnapshot(ctx, s.target, s.b.RunID); err != nil || again {
					t.Errorf("step %d: finish snapshot again: %v, %v; want false, nil", i, again, err)
				}
			}
			got := tableRows(t, conn, be.Schema(), tc.table, tc.order)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("table %s:\n got %v\nwant %v", tc.table, got, tc.want)
			}
			for _, s := range tc.steps {
				if ok, err := be.Applied(ctx, s.b.MessageID); err != nil || !ok {
					t.Errorf("ledger lacks %s: %v, %v", s.b.MessageID, ok, err)
				}
			}
		})
	}
}

// TestBackendRefuses: a batch the database refuses for what it holds
// wraps sink.ErrRejected, so the consumer dead-letters it instead of
// retrying forever, and nothing of it (not its ledger entry) is kept.
func TestBackendRefuses(t *testing.T) {
	ctx := context.Background()
	be, _ := open(t)
	up := sink.Target{Table: "t", Keys: []string{"ID"}, Mode: sink.Upsert}
	for _, tc := range []struct {
		name string
		b    *sink.Batch
	}{
		{"key column missing", batch("r1", 0, 0, 1, "E", []string{"NAME"}, []any{"a"})},
		{"key value missing", batch("r2", 0, 0, 1, "E", []string{"ID", "NAME"}, []any{nil, "a"})},
		{"value with a NUL", batch("r3", 0, 0, 1, "E", []string{"ID", "NAME"}, []any{"1", "a\x00b"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := be.Apply(ctx, tc.b, up)
			if !errors.Is(err, sink.ErrRejected) {
				t.Fatalf("apply: %v, want an error wrapping sink.ErrRejected", err)
			}
			if ok, _ := be.Applied(ctx, tc.b.MessageID); ok {
				t.Errorf("the ledger holds the refused batch %s", tc.b.MessageID)
			}
		})
	}
}
