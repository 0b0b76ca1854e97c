package jobs

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
)

func TestCostliestFirst(t *testing.T) {
	tests := []struct {
		name     string
		entities []runs.EntityRecord
		want     []string
	}{
		{"larger files first",
			[]runs.EntityRecord{{Entity: "small", Format: "csv", Bytes: 10}, {Entity: "large", Format: "csv", Bytes: 1000}, {Entity: "mid", Format: "csv", Bytes: 100}},
			[]string{"large", "mid", "small"}},
		{"an XLSX file before a larger CSV",
			[]runs.EntityRecord{{Entity: "lines", Format: "csv", Bytes: 97 << 20}, {Entity: "products", Format: "xlsx", Bytes: 19 << 20}, {Entity: "customers", Format: "csv", Bytes: 41 << 20}},
			[]string{"products", "lines", "customers"}},
		{"XML between",
			[]runs.EntityRecord{{Entity: "c", Format: "csv", Bytes: 500}, {Entity: "x", Format: "xml", Bytes: 100}, {Entity: "w", Format: "xlsx", Bytes: 100}},
			[]string{"w", "x", "c"}},
		{"equal costs keep manifest order",
			[]runs.EntityRecord{{Entity: "b", Format: "csv", Bytes: 60}, {Entity: "a", Format: "xml", Bytes: 10}, {Entity: "c", Format: "csv", Bytes: 60}, {Entity: "d", Format: "fixed-width", Bytes: 60}},
			[]string{"b", "a", "c", "d"}},
		{"empty and absent files last",
			[]runs.EntityRecord{{Entity: "absent", Format: "csv", Absent: true}, {Entity: "empty", Format: "xlsx"}, {Entity: "one", Format: "unknown", Bytes: 1}},
			[]string{"one", "absent", "empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			todo := make([]int, len(tt.entities))
			for i := range todo {
				todo[i] = i
			}
			costliestFirst(tt.entities, todo)
			var got []string
			for _, i := range todo {
				got = append(got, tt.entities[i].Entity)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("want order %q, got %q", tt.want, got)
			}
		})
	}
}

// TestRunPublishesCostliestFirst runs a package whose manifest lists the
// small entities first: one entity at a time, the run publishes the XLSX
// entity first, then the CSV ones by size, the two of equal size in
// manifest order.
func TestRunPublishesCostliestFirst(t *testing.T) {
	bubble(t, func(t *testing.T) {
		rows := [][]string{{"ID", "NAME"}}
		for i := 0; i < 300; i++ {
			rows = append(rows, []string{strconv.Itoa(i), fmt.Sprintf("Name %d", i)})
		}
		ents := []dmftest.Entity{
			csvEntity("Small A", 10), csvEntity("Small B", 10),
			{Name: "Products", SourceFormat: "EXCEL", Data: dmftest.FOWorkbook("Products", rows)},
			csvEntity("Large", 900), csvEntity("Middle", 300),
		}
		sim := newSim(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": ents}, ExecutionTime: 20 * time.Millisecond})
		defer sim.Close()
		exp := fileExport(sim, t.TempDir())
		exp.ParallelEntities = 1
		sink := &barrierSink{want: 1, started: map[string]bool{}, all: make(chan struct{}), order: map[string][]int{}}
		r := &Runner{NewSink: func(context.Context, *Export) (publish.Sink, error) { return sink, nil }}
		rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		want := []string{"Products", "Large", "Middle", "Small A", "Small B"}
		if !slices.Equal(sink.starts, want) {
			t.Errorf("want entities published in the order %q, got %q (sizes: %v)", want, sink.starts, sizes(rec.Entities))
		}
	})
}

func sizes(es []runs.EntityRecord) map[string]string {
	m := map[string]string{}
	for _, e := range es {
		m[e.Entity] = fmt.Sprintf("%s %d bytes", e.Format, e.Bytes)
	}
	return m
}
