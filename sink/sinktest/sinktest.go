// Package sinktest is the conformance suite of the sink's backends: every
// backend (sink/postgres, sink/sqlite) runs the same cases against a real
// database of its kind, so a batch lands alike whichever database holds
// it. A new backend's test calls RunBackend.
package sinktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/sink"
)

// Harness is one backend under test, on a database of its own.
type Harness struct {
	Backend sink.Backend
	// Rows reads every row of table, in any order, as column → value: a
	// string, nil for NULL, any value for a metadata column; the document
	// column as a JSON object or its text.
	Rows func(table string) ([]map[string]any, error)
	// Ledger opens a reader of the ledger Backend writes.
	Ledger func() (sink.LedgerReader, error)
	// Sample is the backend's Sample method.
	Sample func(ctx context.Context, table string, limit int) (*sink.TableSample, error)
}

// Batch builds a batch of run (its time: minute m of a day) with rows of
// values: a string, or nil for a field the row leaves out. Its message ID
// is "exec-<run>/<entity>/<index>", its export "exp", its first row
// 1+index*100.
func Batch(run string, m, index, count int, entity string, cols []string, rows ...[]any) *sink.Batch {
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
	// docs sets the batch's composite documents.
	docs [][]byte
}

// RunBackend runs every case of the suite as a subtest, each on the
// harness open gives it (a database of its own).
func RunBackend(t *testing.T, open func(t *testing.T) Harness) {
	t.Helper()
	runCases(t, open)
	t.Run("refuses", func(t *testing.T) { runRefusals(t, open) })
	t.Run("concurrent batches", func(t *testing.T) { runConcurrent(t, open(t)) })
	t.Run("ledger", func(t *testing.T) { runLedger(t, open(t)) })
	t.Run("ledger of a snapshot upserted since", func(t *testing.T) { runLedgerUpserted(t, open(t)) })
	t.Run("sample", func(t *testing.T) { runSample(t, open(t)) })
	t.Run("upsert in the runs' order", func(t *testing.T) { runUnchanged(t, open(t)) })
	t.Run("upsert in a group", func(t *testing.T) { runUpsertGroup(t, open(t)) })
	t.Run("snapshot in a group", func(t *testing.T) { runSnapshotGroup(t, open(t)) })
}

// runUnchanged: of rows with one key, the table holds the latest run's,
// whatever order the batches land in. A later run's row replaces the
// table's, alike or not, a NULL differing from "" (its metadata then names
// that run); an earlier run's, applied late (a dead letter replayed after
// a fix), is left out, though a key the table lacks is inserted; the same
// rows again, under another message ID, are left as they are.
func runUnchanged(t *testing.T, h Harness) {
	ctx := context.Background()
	up := sink.Target{Table: "items", Keys: []string{"ID"}, Mode: sink.Upsert}
	cols := []string{"ID", "NAME"}
	again := Batch("r2", 1, 5, 0, "Items", cols, []any{"1", "a"}, []any{"2", "B"}, []any{"3", ""})
	again.FirstRow = 1 // the rows of r2's batch 0
	for _, b := range []*sink.Batch{
		Batch("r1", 0, 0, 1, "Items", cols, []any{"1", "a"}, []any{"2", "b"}, []any{"3", nil}),
		Batch("r2", 1, 0, 1, "Items", cols, []any{"1", "a"}, []any{"2", "B"}, []any{"3", ""}),
		again,
		Batch("r0", 0, 0, 1, "Items", cols, []any{"1", "old"}, []any{"4", "d"}),
	} {
		if out, err := h.Backend.Apply(ctx, b, up); err != nil || out != sink.Applied {
			t.Fatalf("apply %s: %v, %v; want applied", b.MessageID, out, err)
		}
	}
	rows, err := h.Rows("items")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range rows {
		got[fmt.Sprint(r["ID"])] = fmt.Sprint(r["NAME"], " ", r[sink.ColRun], "/", r[sink.ColBatch])
	}
	want := map[string]string{"1": "a r2/0", "2": "B r2/0", "3": " r2/0", "4": "d r0/0"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("each row's name and run/batch: got %v, want %v", got, want)
	}
}

// runUpsertGroup: batches upserted in one transaction (a GroupApplier's
// group) land as they would one by one: of a key repeated across them the
// latest run's row wins (within a run the later row), a duplicate has no
// effect, and rows appended to the table meanwhile land after the upserts
// before them.
func runUpsertGroup(t *testing.T, h Harness) {
	ga, ok := h.Backend.(sink.GroupApplier)
	if !ok {
		t.Skip("the backend applies batches one at a time")
	}
	ctx := context.Background()
	up := sink.Target{Table: "lines", Keys: []string{"SO", "LINE"}, Mode: sink.Upsert}
	other := sink.Target{Table: "others", Keys: []string{"ID"}, Mode: sink.Upsert}
	cols := []string{"SO", "LINE", "QTY"}
	first := Batch("r1", 0, 0, 0, "Lines", cols, []any{"1", "1", "5"}, []any{"1", "2", "6"})
	if _, err := h.Backend.Apply(ctx, first, up); err != nil {
		t.Fatal(err)
	}
	group := []sink.Pending{
		{Batch: Batch("r1", 0, 0, 0, "Lines", cols, []any{"1", "1", "5"}), Target: up}, // a duplicate
		{Batch: Batch("r2", 1, 0, 0, "Lines", cols, []any{"1", "2", "7"}, []any{"2", "1", "1"}), Target: up},
		{Batch: Batch("r2", 1, 0, 0, "Others", []string{"ID"}, []any{"x"}), Target: other},
		{Batch: Batch("r2", 1, 1, 0, "Lines", cols, []any{"2", "1", "2"}, []any{"1", "2", "8"}, []any{"2", "1", "3"}), Target: up},
		{Batch: Batch("r1", 0, 1, 0, "Lines", cols, []any{"1", "2", "0"}), Target: up}, // an earlier run's, late
		{Batch: Batch("r2", 1, 2, 3, "Lines", []string{"SO", "LINE", "NOTE"}, []any{"1", "1", "n"}), Target: up},
	}
	outs, err := ga.ApplyGroup(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if want := []sink.Outcome{sink.Duplicate, sink.Applied, sink.Applied, sink.Applied, sink.Applied, sink.Applied}; !reflect.DeepEqual(outs, want) {
		t.Errorf("outcomes %v, want %v", outs, want)
	}
	got := tableRows(t, h, "lines", "SO")
	slices.SortStableFunc(got, func(a, b map[string]any) int {
		return strings.Compare(fmt.Sprint(a["SO"], a["LINE"]), fmt.Sprint(b["SO"], b["LINE"]))
	})
	want := []map[string]any{
		{"SO": "1", "LINE": "1", "QTY": "5", "NOTE": "n"},
		{"SO": "1", "LINE": "2", "QTY": "8", "NOTE": nil},
		{"SO": "2", "LINE": "1", "QTY": "3", "NOTE": nil},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("table lines:\n got %v\nwant %v", got, want)
	}
	if got := tableRows(t, h, "others", "ID"); !reflect.DeepEqual(got, []map[string]any{{"ID": "x"}}) {
		t.Errorf("table others: got %v", got)
	}
	// A batch the database refuses fails the whole group, and nothing of
	// it is kept.
	bad := []sink.Pending{
		{Batch: Batch("r3", 2, 0, 0, "Lines", cols, []any{"3", "1", "1"}), Target: up},
		{Batch: Batch("r3", 2, 1, 2, "Lines", cols, []any{"3", "2", "a\x00b"}), Target: up},
	}
	if _, err := ga.ApplyGroup(ctx, bad); !errors.Is(err, sink.ErrRejected) {
		t.Fatalf("apply a group with a NUL byte: %v, want an error wrapping sink.ErrRejected", err)
	}
	if ok, _ := h.Backend.Applied(ctx, bad[0].Batch.MessageID); ok {
		t.Errorf("the ledger holds %s of the refused group", bad[0].Batch.MessageID)
	}
}

// runSnapshotGroup: snapshot batches staged in one transaction (a
// GroupApplier's group) land as they would one by one, whatever the
// tables, runs and columns of the batches between them; a value the
// database refuses fails the whole group and stages none of its rows.
func runSnapshotGroup(t *testing.T, h Harness) {
	ga, ok := h.Backend.(sink.GroupApplier)
	if !ok {
		t.Skip("the backend applies batches one at a time")
	}
	ctx := context.Background()
	snap := sink.Target{Table: "orders", Keys: []string{"ID"}, Mode: sink.Snapshot}
	other := sink.Target{Table: "others", Keys: []string{"ID"}, Mode: sink.Snapshot}
	cols := []string{"ID", "QTY"}
	group := []sink.Pending{
		{Batch: Batch("r1", 0, 0, 0, "Orders", cols, []any{"1", "5"}, []any{"2", "6"}), Target: snap},
		{Batch: Batch("r1", 0, 0, 1, "Others", []string{"ID"}, []any{"x"}), Target: other},
		{Batch: Batch("r1", 0, 1, 0, "Orders", cols, []any{"3", "7"}), Target: snap},
		{Batch: Batch("r1", 0, 1, 0, "Orders", cols, []any{"3", "7"}), Target: snap}, // a duplicate
		{Batch: Batch("r1", 0, 2, 0, "Orders", []string{"ID", "QTY", "NOTE"}, []any{"4", "8", "n"}), Target: snap},
		{Batch: Batch("r1", 0, 3, 0, "Orders", cols), Target: snap}, // no rows
		{Batch: Batch("r1", 0, 4, 5, "Orders", cols, []any{"5", "9"}), Target: snap},
	}
	outs, err := ga.ApplyGroup(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	want := []sink.Outcome{sink.Applied, sink.Applied, sink.Applied, sink.Duplicate, sink.Applied, sink.Applied, sink.Applied}
	if !reflect.DeepEqual(outs, want) {
		t.Errorf("outcomes %v, want %v", outs, want)
	}
	for _, tt := range []sink.Target{snap, other} {
		if ok, err := h.Backend.FinishSnapshot(ctx, tt, "r1"); err != nil || !ok {
			t.Fatalf("finish the snapshot of %s: %v, %v; want swapped", tt.Table, ok, err)
		}
	}
	wantRows := []map[string]any{
		{"ID": "1", "QTY": "5", "NOTE": nil}, {"ID": "2", "QTY": "6", "NOTE": nil}, {"ID": "3", "QTY": "7", "NOTE": nil},
		{"ID": "4", "QTY": "8", "NOTE": "n"}, {"ID": "5", "QTY": "9", "NOTE": nil},
	}
	if got := tableRows(t, h, "orders", "ID"); !reflect.DeepEqual(got, wantRows) {
		t.Errorf("table orders:\n got %v\nwant %v", got, wantRows)
	}
	if got := tableRows(t, h, "others", "ID"); !reflect.DeepEqual(got, []map[string]any{{"ID": "x"}}) {
		t.Errorf("table others: got %v", got)
	}
	bad := []sink.Pending{
		{Batch: Batch("r2", 1, 0, 0, "Orders", cols, []any{"1", "1"}), Target: snap},
		{Batch: Batch("r2", 1, 1, 2, "Orders", cols, []any{"2", "a\x00b"}), Target: snap},
	}
	if _, err := ga.ApplyGroup(ctx, bad); !errors.Is(err, sink.ErrRejected) {
		t.Fatalf("apply a group with a NUL byte: %v, want an error wrapping sink.ErrRejected", err)
	}
	if ok, _ := h.Backend.Applied(ctx, bad[0].Batch.MessageID); ok {
		t.Errorf("the ledger holds %s of the refused group", bad[0].Batch.MessageID)
	}
	// Run 2 delivered again, fixed: only its rows are staged.
	for _, p := range []sink.Pending{
		{Batch: Batch("r2", 1, 0, 0, "Orders", cols, []any{"1", "1"}), Target: snap},
		{Batch: Batch("r2", 1, 1, 2, "Orders", cols, []any{"2", "2"}), Target: snap},
	} {
		if _, err := h.Backend.Apply(ctx, p.Batch, p.Target); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := h.Backend.FinishSnapshot(ctx, snap, "r2"); err != nil || !ok {
		t.Fatalf("finish the snapshot of run r2: %v, %v; want swapped", ok, err)
	}
	wantRows = []map[string]any{{"ID": "1", "QTY": "1", "NOTE": nil}, {"ID": "2", "QTY": "2", "NOTE": nil}}
	if got := tableRows(t, h, "orders", "ID"); !reflect.DeepEqual(got, wantRows) {
		t.Errorf("table orders after run r2:\n got %v\nwant %v", got, wantRows)
	}
}

func runCases(t *testing.T, open func(t *testing.T) Harness) {
	cols := []string{"ID", "NAME"}
	snap := sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Snapshot}
	up := sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Upsert}
	app := sink.Target{Table: "customers", Mode: sink.Append}
	odd := sink.Target{Table: `Odd "name"; DROP TABLE x;--`, Keys: []string{`a"b`}, Mode: sink.Upsert}
	tests := []struct {
		name  string
		steps []step
		table string
		order string // the column the rows are compared in the order of
		want  []map[string]any
	}{
		{name: "snapshot replaces the table once every batch is in, in any order",
			steps: []step{
				{b: Batch("r1", 0, 0, 0, "Customers", cols, []any{"1", "a"}, []any{"2", "b"}), target: snap},
				{b: Batch("r1", 0, 1, 2, "Customers", cols, []any{"3", "c"}), target: snap, swap: true},
				// Run 2: row 2 removed, row 3 changed, its last batch first.
				{b: Batch("r2", 1, 1, 2, "Customers", cols, []any{"3", "C"}), target: snap},
				{b: Batch("r2", 1, 0, 0, "Customers", cols, []any{"1", "a"}), target: snap, swap: true},
			},
			table: "customers", order: "ID",
			want: []map[string]any{{"ID": "1", "NAME": "a"}, {"ID": "3", "NAME": "C"}},
		},
		{name: "a half-delivered snapshot leaves the table as it was",
			steps: []step{
				{b: Batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}), target: snap, swap: true},
				{b: Batch("r2", 1, 0, 0, "Customers", cols, []any{"9", "z"}), target: snap},
			},
			table: "customers", order: "ID",
			want: []map[string]any{{"ID": "1", "NAME": "a"}},
		},
		{name: "a newer run staged meanwhile keeps its rows when an older one is swapped in",
			steps: []step{
				{b: Batch("r1", 0, 0, 0, "Customers", cols, []any{"1", "a"}), target: snap},
				{b: Batch("r2", 1, 0, 0, "Customers", cols, []any{"1", "A"}, []any{"2", "B"}), target: snap},
				{b: Batch("r1", 0, 1, 2, "Customers", cols, []any{"2", "b"}), target: snap, swap: true},
				{b: Batch("r2", 1, 1, 2, "Customers", cols, []any{"3", "C"}), target: snap, swap: true},
			},
			table: "customers", order: "ID",
			want: []map[string]any{{"ID": "1", "NAME": "A"}, {"ID": "2", "NAME": "B"}, {"ID": "3", "NAME": "C"}},
		},
		{name: "an older run completing after a newer one's swap is stale, the newer kept",
			steps: []step{
				{b: Batch("r1", 0, 0, 0, "Customers", cols, []any{"1", "a"}), target: snap},
				{b: Batch("r2", 1, 0, 1, "Customers", cols, []any{"2", "B"}), target: snap, swap: true},
				{b: Batch("r1", 0, 1, 2, "Customers", cols, []any{"3", "c"}), target: snap, want: sink.Stale},
			},
			table: "customers", order: "ID",
			want: []map[string]any{{"ID": "2", "NAME": "B"}},
		},
		{name: "a batch of a run older than the swapped snapshot is stale",
			steps: []step{
				{b: Batch("r2", 5, 0, 1, "Customers", cols, []any{"2", "new"}), target: snap, swap: true},
				{b: Batch("r1", 1, 0, 1, "Customers", cols, []any{"1", "old"}), target: snap, want: sink.Stale},
				{b: Batch("r0", 0, 0, 1, "Customers", cols, []any{"1", "older"}), target: up, want: sink.Stale},
			},
			table: "customers", order: "ID",
			want: []map[string]any{{"ID": "2", "NAME": "new"}},
		},
		{name: "a later run's upserts landed before an earlier snapshot's swap are kept",
			steps: []step{
				{b: Batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}, []any{"2", "b"}), target: snap, swap: true},
				{b: Batch("r2", 1, 0, 0, "Customers", cols, []any{"1", "a2"}, []any{"2", "b2"}), target: snap},
				{b: Batch("r3", 2, 0, 1, "Customers", cols, []any{"2", "B3"}, []any{"3", "c3"}), target: up},
				{b: Batch("r2", 1, 1, 2, "Customers", cols, []any{"4", "d2"}), target: snap, swap: true},
			},
			table: "customers", order: "ID",
			want: []map[string]any{{"ID": "1", "NAME": "a2"}, {"ID": "2", "NAME": "B3"}, {"ID": "3", "NAME": "c3"}, {"ID": "4", "NAME": "d2"}},
		},
		{name: "upsert inserts and updates by key, the last of a repeated key winning",
			steps: []step{
				{b: Batch("r1", 0, 0, 0, "Customers", cols, []any{"1", "a"}, []any{"2", "b"}), target: up},
				{b: Batch("r2", 1, 0, 1, "Customers", cols, []any{"2", "B"}, []any{"3", "c"}, []any{"3", "c2"}), target: up},
			},
			table: "customers", order: "ID",
			want: []map[string]any{{"ID": "1", "NAME": "a"}, {"ID": "2", "NAME": "B"}, {"ID": "3", "NAME": "c2"}},
		},
		{name: "append keeps every row",
			steps: []step{
				{b: Batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}), target: app},
				{b: Batch("r2", 1, 0, 1, "Customers", cols, []any{"1", "a"}), target: app},
			},
			table: "customers", order: sink.ColRun,
			want: []map[string]any{{"ID": "1", "NAME": "a"}, {"ID": "1", "NAME": "a"}},
		},
		{name: "a duplicate message ID has no effect",
			steps: []step{
				{b: Batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}), target: app},
				{b: Batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}), target: app, want: sink.Duplicate},
				{b: Batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}), target: snap, want: sink.Duplicate},
			},
			table: "customers", order: "ID",
			want: []map[string]any{{"ID": "1", "NAME": "a"}},
		},
		{name: "a column that appears later is added",
			steps: []step{
				{b: Batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}), target: snap, swap: true},
				{b: Batch("r2", 1, 0, 1, "Customers", []string{"ID", "NAME", "CITY"}, []any{"1", "a", "Paris"}, []any{"2", "b", ""}), target: snap, swap: true},
				{b: Batch("r3", 2, 0, 1, "Customers", []string{"ID", "ZIP"}, []any{"3", "75001"}), target: up},
			},
			table: "customers", order: "ID",
			want: []map[string]any{{"ID": "1", "NAME": "a", "CITY": "Paris", "ZIP": nil}, {"ID": "2", "NAME": "b", "CITY": "", "ZIP": nil},
				{"ID": "3", "NAME": nil, "CITY": nil, "ZIP": "75001"}},
		},
		{name: "a field an XML row leaves out is NULL, an empty one empty",
			steps: []step{
				{b: Batch("r1", 0, 0, 1, "Vendors", []string{"ACCOUNT", "NAME", "CURRENCY"}, []any{"V1", "x", nil}, []any{"V2", "", "EUR"}),
					target: sink.Target{Table: "vendors", Mode: sink.Snapshot}, swap: true},
			},
			table: "vendors", order: "ACCOUNT",
			want: []map[string]any{{"ACCOUNT": "V1", "NAME": "x", "CURRENCY": nil}, {"ACCOUNT": "V2", "NAME": "", "CURRENCY": "EUR"}},
		},
		{name: "odd names are quoted, never interpolated",
			steps: []step{
				{b: Batch("r1", 0, 0, 1, "Odd", []string{`a"b`, "select", "Sp ace; --", "ÄÖ"}, []any{"1", "x", "y", "z"}), target: odd},
				{b: Batch("r2", 1, 0, 1, "Odd", []string{`a"b`, "select"}, []any{"1", "X'); DROP TABLE y; --"}), target: odd},
			},
			table: `Odd "name"; DROP TABLE x;--`, order: `a"b`,
			want: []map[string]any{{`a"b`: "1", "select": "X'); DROP TABLE y; --", "Sp ace; --": "y", "ÄÖ": "z"}},
		},
		{name: "a composite entity's child records land in the document column",
			steps: []step{
				{b: Batch("r1", 0, 0, 1, "Sales orders", []string{"SO"}, []any{"SO-1"}, []any{"SO-2"}),
					target: sink.Target{Table: "sales_orders", Keys: []string{"SO"}, Mode: sink.Snapshot}, swap: true,
					docs: [][]byte{[]byte(`{"LINES":[{"LINE":"1"},{"LINE":"2"}]}`), nil}},
			},
			table: "sales_orders", order: "SO",
			want: []map[string]any{{"SO": "SO-1", sink.ColDocument: map[string]any{"LINES": []any{map[string]any{"LINE": "1"}, map[string]any{"LINE": "2"}}}},
				{"SO": "SO-2"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			h := open(t)
			be := h.Backend
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
			got := tableRows(t, h, tc.table, tc.order)
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

// tableRows reads table through h.Rows ordered by the column order, each
// row without the metadata columns but the document (left out when NULL,
// else decoded), as column → value (nil for NULL).
func tableRows(t *testing.T, h Harness, table, order string) []map[string]any {
	t.Helper()
	rows, err := h.Rows(table)
	if err != nil {
		t.Fatalf("read table %s: %v", table, err)
	}
	slices.SortStableFunc(rows, func(a, b map[string]any) int { return strings.Compare(fmt.Sprint(a[order]), fmt.Sprint(b[order])) })
	for _, m := range rows {
		for k, v := range m {
			switch {
			case k == sink.ColDocument && v == nil:
				delete(m, k)
			case k == sink.ColDocument:
				if s, ok := v.(string); ok {
					var doc any
					if err := json.Unmarshal([]byte(s), &doc); err != nil {
						t.Fatalf("table %s: document %q is not JSON: %v", table, s, err)
					}
					m[k] = doc
				}
			case strings.HasPrefix(k, "_dmf_"):
				delete(m, k)
			}
		}
	}
	if len(rows) == 0 {
		return nil
	}
	return rows
}

// runRefusals: a batch the database refuses for what it holds wraps
// sink.ErrRejected, so the consumer dead-letters it instead of retrying
// forever, and nothing of it (not its ledger entry) is kept.
func runRefusals(t *testing.T, open func(t *testing.T) Harness) {
	ctx := context.Background()
	be := open(t).Backend
	up := sink.Target{Table: "t", Keys: []string{"ID"}, Mode: sink.Upsert}
	snap := sink.Target{Table: "s", Keys: []string{"ID"}, Mode: sink.Snapshot}
	for _, tc := range []struct {
		name   string
		b      *sink.Batch
		target sink.Target
	}{
		{"key column missing", Batch("r1", 0, 0, 1, "E", []string{"NAME"}, []any{"a"}), up},
		{"key value missing", Batch("r2", 0, 0, 1, "E", []string{"ID", "NAME"}, []any{nil, "a"}), up},
		{"value with a NUL", Batch("r3", 0, 0, 1, "E", []string{"ID", "NAME"}, []any{"1", "a\x00b"}), up},
		{"snapshot key value missing", Batch("r4", 0, 0, 1, "S", []string{"ID", "NAME"}, []any{"1", "a"}, []any{nil, "b"}), snap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := be.Apply(ctx, tc.b, tc.target)
			if !errors.Is(err, sink.ErrRejected) {
				t.Fatalf("apply: %v, want an error wrapping sink.ErrRejected", err)
			}
			if ok, _ := be.Applied(ctx, tc.b.MessageID); ok {
				t.Errorf("the ledger holds the refused batch %s", tc.b.MessageID)
			}
		})
	}
	// A snapshot whose rows repeat a key is in the ledger, but cannot
	// replace the table: the swap is refused and the table kept.
	t.Run("snapshot repeating a key", func(t *testing.T) {
		if _, err := be.Apply(ctx, Batch("r5", 1, 0, 1, "S", []string{"ID", "NAME"}, []any{"1", "a"}), snap); err != nil {
			t.Fatal(err)
		}
		if ok, err := be.FinishSnapshot(ctx, snap, "r5"); err != nil || !ok {
			t.Fatalf("finish snapshot r5: %v, %v; want true, nil", ok, err)
		}
		if _, err := be.Apply(ctx, Batch("r6", 2, 0, 1, "S", []string{"ID", "NAME"}, []any{"2", "b"}, []any{"2", "c"}), snap); err != nil {
			t.Fatalf("apply: %v; the rows are staged, the keys checked at the swap", err)
		}
		ok, err := be.FinishSnapshot(ctx, snap, "r6")
		if !errors.Is(err, sink.ErrRejected) || ok {
			t.Errorf("finish snapshot r6: %v, %v; want false and an error wrapping sink.ErrRejected", ok, err)
		}
	})
}

// runConcurrent applies the batches of a snapshot run, and upserts into
// another table, from several goroutines at once, as a sink with
// prefetch > 1 might: each batch lands once, the snapshot is swapped in
// exactly once, and tables created at the same time are created once.
func runConcurrent(t *testing.T, h Harness) {
	const n = 8
	ctx := context.Background()
	snap := sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Snapshot}
	up := sink.Target{Table: "groups", Keys: []string{"GROUP"}, Mode: sink.Upsert}
	var wg sync.WaitGroup
	var mu sync.Mutex
	swaps := 0
	errs := make([]error, n)
	var want, wantGroups []map[string]any
	for i := range n {
		count := 0
		if i == n-1 {
			count = n
		}
		id := func(k int) string { return fmt.Sprintf("%02d", 2*i+k) }
		want = append(want, map[string]any{"ID": id(0), "NAME": "x"}, map[string]any{"ID": id(1), "NAME": "y"})
		wantGroups = append(wantGroups, map[string]any{"GROUP": fmt.Sprintf("g%d", i), "DESCRIPTION": "d"})
		b := Batch("r1", 0, i, count, "Customers", []string{"ID", "NAME"}, []any{id(0), "x"}, []any{id(1), "y"})
		g := Batch(fmt.Sprintf("u%d", i), 1, 0, 1, "Groups", []string{"GROUP", "DESCRIPTION"}, []any{fmt.Sprintf("g%d", i), "d"})
		wg.Go(func() {
			if _, err := h.Backend.Apply(ctx, g, up); err != nil {
				errs[i] = err
				return
			}
			if _, err := h.Backend.Apply(ctx, b, snap); err != nil {
				errs[i] = err
				return
			}
			ok, err := h.Backend.FinishSnapshot(ctx, snap, "r1")
			if err != nil {
				errs[i] = err
				return
			}
			if ok {
				mu.Lock()
				swaps++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if swaps != 1 {
		t.Errorf("the snapshot was swapped in %d times, want once", swaps)
	}
	if got := tableRows(t, h, "customers", "ID"); !reflect.DeepEqual(got, want) {
		t.Errorf("table customers:\n got %v\nwant %v", got, want)
	}
	if got := tableRows(t, h, "groups", "GROUP"); !reflect.DeepEqual(got, wantGroups) {
		t.Errorf("table groups:\n got %v\nwant %v", got, wantGroups)
	}
}

// runLedger checks what reconcile and status read of the ledger: batches
// and rows per run and entity (stale ones too), the rows a snapshot put
// in and the table holds, the first run of each export, and per entity
// the run applied last.
func runLedger(t *testing.T, h Harness) {
	ctx := context.Background()
	start := time.Now().Add(-time.Minute)
	cols := []string{"ID", "NAME"}
	snap := sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Snapshot}
	up := sink.Target{Table: "groups", Keys: []string{"ID"}, Mode: sink.Upsert}

	// Nothing applied yet: an empty ledger, not an error.
	led, err := h.Ledger()
	if err != nil {
		t.Fatalf("open the ledger of an empty database: %v", err)
	}
	landed, first, err := led.Landed(ctx, []string{"exp"}, []string{"r1"})
	runs, err2 := led.LastRuns(ctx)
	led.Close()
	if err != nil || err2 != nil || len(landed) != 0 || len(first) != 0 || len(runs) != 0 {
		t.Fatalf("empty ledger: landed %v, first %v (%v), last runs %v (%v); want nothing, no error", landed, first, err, runs, err2)
	}

	for _, s := range []step{
		{b: Batch("r2", 5, 0, 0, "Customers", cols, []any{"1", "a"}, []any{"2", "b"}), target: snap},
		{b: Batch("r2", 5, 1, 2, "Customers", cols, []any{"3", "c"}), target: snap},
		{b: Batch("r1", 1, 0, 1, "Customers", cols, []any{"1", "old"}), target: snap, want: sink.Stale},
		{b: Batch("r3", 6, 0, 1, "Groups", cols, []any{"g", "x"}, []any{"h", "y"}), target: up},
	} {
		out, err := h.Backend.Apply(ctx, s.b, s.target)
		if err != nil || out != s.want {
			t.Fatalf("apply %s: %v, %v; want %v", s.b.MessageID, out, err, s.want)
		}
		if s.b.RunID == "r2" && s.b.BatchIndex == 1 {
			if ok, err := h.Backend.FinishSnapshot(ctx, snap, "r2"); err != nil || !ok {
				t.Fatalf("finish snapshot r2: %v, %v", ok, err)
			}
		}
	}
	led, err = h.Ledger()
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	landed, first, err = led.Landed(ctx, []string{"exp", "other"}, []string{"r1", "r2", "r3", "r9"})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(landed, func(a, b sink.Landed) int { return strings.Compare(a.Run, b.Run) })
	wantLanded := []sink.Landed{
		{Export: "exp", Run: "r1", Entity: "Customers", Batches: 1, Rows: 1, Stale: 1, SwappedRows: -1},
		{Export: "exp", Run: "r2", Entity: "Customers", Batches: 2, Rows: 3, TableRows: 3, SwappedRows: 3},
		{Export: "exp", Run: "r3", Entity: "Groups", Batches: 1, Rows: 2, SwappedRows: -1},
	}
	if !reflect.DeepEqual(landed, wantLanded) {
		t.Errorf("landed:\n got %+v\nwant %+v", landed, wantLanded)
	}
	if want := map[string]string{"exp": "r1"}; !reflect.DeepEqual(first, want) {
		t.Errorf("first runs: got %v, want %v", first, want)
	}
	if only, _, err := led.Landed(ctx, []string{"exp"}, []string{"r3"}); err != nil || len(only) != 1 || only[0].Run != "r3" {
		t.Errorf("landed of run r3 only: %+v, %v", only, err)
	}

	runs, err = led.LastRuns(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		if r.AppliedAt.Before(start) || r.AppliedAt.After(time.Now().Add(time.Minute)) {
			t.Errorf("entity %s: applied at %v, want about now", r.Entity, r.AppliedAt)
		}
	}
	for i := range runs {
		runs[i].AppliedAt = time.Time{}
	}
	// The stale batch of r1 was applied last to customers.
	wantRuns := []sink.EntityRun{
		{Entity: "Customers", Table: "customers", Export: "exp", Run: "r1", Batches: 1, Rows: 1, Stale: 1, BatchCount: 1},
		{Entity: "Groups", Table: "groups", Export: "exp", Run: "r3", Batches: 1, Rows: 2, BatchCount: 1},
	}
	if !reflect.DeepEqual(runs, wantRuns) {
		t.Errorf("last runs:\n got %+v\nwant %+v", runs, wantRuns)
	}
}

// runLedgerUpserted: the ledger tells of the snapshot a table holds now
// whether later runs upserted into it (which add rows the swap did not put
// in), and a later snapshot clears that.
func runLedgerUpserted(t *testing.T, h Harness) {
	ctx := context.Background()
	cols := []string{"ID", "NAME"}
	snap := sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Snapshot}
	up := sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Upsert}
	current := func() sink.Landed {
		t.Helper()
		led, err := h.Ledger()
		if err != nil {
			t.Fatal(err)
		}
		defer led.Close()
		landed, _, err := led.Landed(ctx, []string{"exp"}, []string{"r1", "r2", "r3"})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range landed {
			if l.SwappedRows >= 0 {
				return l
			}
		}
		t.Fatalf("no current snapshot in %+v", landed)
		return sink.Landed{}
	}
	for _, s := range []step{
		{b: Batch("r1", 0, 0, 1, "Customers", cols, []any{"1", "a"}, []any{"2", "b"}), target: snap, swap: true},
		{b: Batch("r2", 1, 0, 1, "Customers", cols, []any{"2", "B"}, []any{"3", "c"}), target: up},
	} {
		if out, err := h.Backend.Apply(ctx, s.b, s.target); err != nil || out != sink.Applied {
			t.Fatalf("apply %s: %v, %v", s.b.MessageID, out, err)
		}
		if s.swap {
			if ok, err := h.Backend.FinishSnapshot(ctx, snap, s.b.RunID); err != nil || !ok {
				t.Fatalf("finish snapshot %s: %v, %v", s.b.RunID, ok, err)
			}
		}
	}
	if l := current(); l.Run != "r1" || l.SwappedRows != 2 || l.TableRows != 3 || !l.Upserted || l.TableDiffers() {
		t.Errorf("snapshot r1 with r2 upserted since: %+v; want 2 swapped, 3 in the table, upserted, not differing", l)
	}
	if out, err := h.Backend.Apply(ctx, Batch("r3", 2, 0, 1, "Customers", cols, []any{"1", "a"}), snap); err != nil || out != sink.Applied {
		t.Fatalf("apply r3: %v, %v", out, err)
	}
	if ok, err := h.Backend.FinishSnapshot(ctx, snap, "r3"); err != nil || !ok {
		t.Fatalf("finish snapshot r3: %v, %v", ok, err)
	}
	if l := current(); l.Run != "r3" || l.SwappedRows != 1 || l.TableRows != 1 || l.Upserted || l.TableDiffers() {
		t.Errorf("snapshot r3: %+v; want 1 swapped and in the table, not upserted since", l)
	}
}

// runSample checks the look at a table the demo prints: the row count,
// the entity's columns before the metadata, rows in file order (row 10
// after row 9, batch 1 after batch 0, whatever order they came in).
func runSample(t *testing.T, h Harness) {
	ctx := context.Background()
	snap := sink.Target{Table: "customers", Keys: []string{"ID"}, Mode: sink.Snapshot}
	var rows [][]any
	var want [][]string
	for i := range 11 {
		id := fmt.Sprintf("%c", 'k'-i) // k, j, ... a: not in file order
		name := any(fmt.Sprint(i + 1))
		if i == 1 {
			name = nil
		}
		rows = append(rows, []any{id, name})
		if i < 12 {
			want = append(want, []string{id, fmt.Sprint(name)})
		}
	}
	want[1][1] = "NULL"
	want = append(want, []string{"z", "last"})
	b0 := Batch("r1", 0, 0, 0, "Customers", []string{"ID", "NAME"}, rows...)
	b1 := Batch("r1", 0, 1, 2, "Customers", []string{"ID", "NAME"}, []any{"z", "last"})
	for _, b := range []*sink.Batch{b1, b0} {
		if _, err := h.Backend.Apply(ctx, b, snap); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := h.Backend.FinishSnapshot(ctx, snap, "r1"); err != nil || !ok {
		t.Fatalf("finish snapshot: %v, %v", ok, err)
	}
	s, err := h.Sample(ctx, "customers", 20)
	if err != nil {
		t.Fatal(err)
	}
	if s.Count != 12 || len(s.Rows) != 12 || len(s.Columns) < 2 || s.Columns[0] != "ID" || s.Columns[1] != "NAME" {
		t.Fatalf("sample: %d rows, columns %q, %d rows read; want 12, ID and NAME first, 12", s.Count, s.Columns, len(s.Rows))
	}
	var got [][]string
	for _, r := range s.Rows {
		row := []string{"NULL", "NULL"}
		for j := range row {
			if r[j] != nil {
				row[j] = *r[j]
			}
		}
		got = append(got, row)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sample rows:\n got %v\nwant %v (file order)", got, want)
	}
	for _, c := range s.Columns[2:] {
		if !strings.HasPrefix(c, "_dmf_") {
			t.Errorf("column %q after the metadata columns begin", c)
		}
	}
	if s, err := h.Sample(ctx, "customers", 0); err != nil || s.Count != 12 || len(s.Rows) != 0 {
		t.Errorf("sample of no rows: %+v, %v; want the count only", s, err)
	}
	if _, err := h.Sample(ctx, "no_such_table", 10); err == nil {
		t.Errorf("sample of a missing table: no error")
	}
}

// BenchmarkApply lands b.N batches of 5,000 rows of 8 columns (about 60
// bytes a value) in be, in the given mode, a snapshot's in runs of 10
// batches each swapped in, and reports rows/s.
func BenchmarkApply(b *testing.B, be sink.Backend, mode sink.Mode) {
	const rowsPer, batchesPerRun = 5000, 10
	cols := []string{"ID", "C1", "C2", "C3", "C4", "C5", "C6", "C7"}
	t := sink.Target{Table: "bench_" + string(mode), Keys: []string{"ID"}, Mode: mode}
	value := strings.Repeat("x", 60)
	batch := func(n int) *sink.Batch {
		run, index := fmt.Sprintf("r%06d", n/batchesPerRun), n%batchesPerRun
		count := 0
		if index == batchesPerRun-1 {
			count = batchesPerRun
		}
		rows := make([][]any, rowsPer)
		for i := range rows {
			rows[i] = []any{fmt.Sprintf("%08d", index*rowsPer+i), value, value, value, value, value, value, value}
		}
		bt := Batch(run, n/batchesPerRun, index, count, "Bench", cols, rows...)
		bt.MessageID = fmt.Sprintf("%s-%d", bt.MessageID, n)
		return bt
	}
	ctx := context.Background()
	b.ResetTimer()
	for n := range b.N {
		b.StopTimer()
		bt := batch(n)
		b.StartTimer()
		if _, err := be.Apply(ctx, bt, t); err != nil {
			b.Fatal(err)
		}
		if mode == sink.Snapshot {
			if _, err := be.FinishSnapshot(ctx, t, bt.RunID); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*rowsPer)/b.Elapsed().Seconds(), "rows/s")
}
