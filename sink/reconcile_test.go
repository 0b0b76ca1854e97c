package sink_test

import (
	"testing"

	"github.com/dmfexport/dmfexport/sink"
)

func TestTopicMatches(t *testing.T) {
	tests := []struct {
		pattern, key string
		want         bool
	}{
		{"#", "fo.customers", true},
		{"fo.#", "fo", true},
		{"fo.#", "fo.a.b", true},
		{"fo.*", "fo.a", true},
		{"fo.*", "fo.a.b", false},
		{"fo.*", "fo", false},
		{"*.a.#", "x.a", true},
		{"fo.customers", "fo.vendors", false},
		{"#.v1", "fo.land.v1", true},
	}
	for _, tt := range tests {
		if got := sink.TopicMatches(tt.pattern, tt.key); got != tt.want {
			t.Errorf("TopicMatches(%q, %q) = %v, want %v", tt.pattern, tt.key, got, tt.want)
		}
	}
}

func TestReconcileNotes(t *testing.T) {
	exp := func(run string, finished bool) sink.Exported {
		return sink.Exported{Export: "e", Run: run, Entity: "E", Batches: 2, Rows: 10, Finished: finished}
	}
	landed := []sink.Landed{{Export: "e", Run: "2", Entity: "E", Batches: 2, Rows: 10, SwappedRows: -1}}
	tests := []struct {
		name     string
		exported sink.Exported
		first    map[string]string
		note     string
		differs  bool
		rows     int64
	}{
		{"equal", exp("2", true), map[string]string{"e": "2"}, "", false, 0},
		{"a run still going is not compared", exp("3", false), map[string]string{"e": "2"}, "running", false, 0},
		{"a run before the sink's first is not compared", exp("1", true), map[string]string{"e": "2"}, "before the sink", false, 0},
		{"a run after the first that never landed differs", exp("3", true), map[string]string{"e": "2"}, "", true, 10},
		{"an export the ledger never saw differs", exp("1", true), nil, "", true, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sink.Reconcile([]sink.Exported{tt.exported}, landed, tt.first)[0]
			if r.Note != tt.note || r.Differs() != tt.differs || r.DifferenceRows() != tt.rows {
				t.Errorf("note %q, differs %v, rows %d; want %q, %v, %d", r.Note, r.Differs(), r.DifferenceRows(), tt.note, tt.differs, tt.rows)
			}
		})
	}
}

// TestReconcileSnapshotTable: a snapshot table that lost rows since its
// swap differs; one that gained rows differs unless later runs upserted
// into it (their increments insert rows; none deletes).
func TestReconcileSnapshotTable(t *testing.T) {
	tests := []struct {
		name           string
		table, swapped int64
		upserted       bool
		differs        bool
		differenceRows int64
	}{
		{"as the swap put it", 5, 5, false, false, 0},
		{"rows gone", 3, 5, false, true, 2},
		{"rows gained, no upsert since", 7, 5, false, true, -2},
		{"rows gained by later upserts", 7, 5, true, false, 0},
		{"rows gone despite later upserts", 4, 5, true, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exported := sink.Exported{Export: "e", Run: "2", Entity: "E", Batches: 1, Rows: 5, Finished: true}
			landed := sink.Landed{Export: "e", Run: "2", Entity: "E", Batches: 1, Rows: 5, TableRows: tt.table, SwappedRows: tt.swapped, Upserted: tt.upserted}
			r := sink.Reconcile([]sink.Exported{exported}, []sink.Landed{landed}, map[string]string{"e": "2"})[0]
			if r.Differs() != tt.differs || r.DifferenceRows() != tt.differenceRows {
				t.Errorf("differs %v, difference %d rows; want %v, %d", r.Differs(), r.DifferenceRows(), tt.differs, tt.differenceRows)
			}
		})
	}
}
