package sink

import "strings"

// Exported is what the exporter's run record says one entity of one run
// published: the batches and rows the broker confirmed.
type Exported struct {
	Export, Run, Entity string
	Batches, Rows       int64
	// Finished: the run is in a final state; the counts of a run still
	// going may yet grow, so a difference is not one yet.
	Finished bool
}

// Landed is what a sink's ledger holds of one entity of one run.
type Landed struct {
	Export, Run, Entity string
	Batches, Rows       int64 // every outcome: applied and stale
	Stale               int64 // batches skipped as older than the table's snapshot
	// TableRows, for the snapshot in the table now, is how many rows the
	// table holds and SwappedRows how many the swap put in (-1 when the
	// run is not the table's current snapshot).
	TableRows, SwappedRows int64
	// Upserted: later runs upserted into the snapshot's table, which may
	// then hold more rows than the swap put in, never fewer (an increment
	// never deletes).
	Upserted bool
}

// TableDiffers reports whether the table of the snapshot in it now lost
// rows since the swap, or gained some no later run upserted.
func (l Landed) TableDiffers() bool {
	return l.SwappedRows >= 0 && (l.TableRows < l.SwappedRows || !l.Upserted && l.TableRows != l.SwappedRows)
}

// CurrentSnapshot is the snapshot a table holds now, as a backend's
// ledger reads it: the run swapped in last, the rows the swap put in and
// the rows the table holds.
type CurrentSnapshot struct {
	Table, Run, Entity     string
	SwappedRows, TableRows int64
	Upserted               bool // later runs upserted into the table
}

// MarkCurrent fills in, on each of landed that is its table's current
// snapshot, the rows the swap put in and the rows the table holds.
func MarkCurrent(landed []Landed, current []CurrentSnapshot) {
	for i, x := range landed {
		for _, s := range current {
			if s.Run == x.Run && s.Entity == x.Entity {
				landed[i].SwappedRows, landed[i].TableRows, landed[i].Upserted = s.SwappedRows, s.TableRows, s.Upserted
			}
		}
	}
}

// Reconciliation compares one entity of one run on both sides.
type Reconciliation struct {
	Exported
	Applied Landed
	// Note says why a row is not compared: "running" (the run is not
	// finished) or "before the sink" (older than the first batch the
	// ledger holds of its export). Empty when compared.
	Note string
}

// Differs reports whether the sink does not hold what was exported: other
// batch or row counts in its ledger, or a snapshot table that lost or
// gained rows since its swap.
func (r Reconciliation) Differs() bool {
	if r.Note != "" {
		return false
	}
	return r.Batches != r.Applied.Batches || r.Rows != r.Applied.Rows || r.Applied.TableDiffers()
}

// DifferenceRows is the exported rows the sink lacks (negative: rows it
// has more), counting a snapshot table's rows gone since the swap.
func (r Reconciliation) DifferenceRows() int64 {
	if r.Note != "" {
		return 0
	}
	d := r.Rows - r.Applied.Rows
	if a := r.Applied; a.SwappedRows >= 0 {
		gone := a.SwappedRows - a.TableRows
		if a.Upserted {
			gone = max(gone, 0) // the rows later runs inserted are theirs
		}
		d += gone
	}
	return d
}

// Reconcile pairs each exported entity of a run with what the ledger holds
// of it, in the order of exported. A run older than the first run the
// ledger holds of its export (by run ID, which starts with the run's time)
// is noted "before the sink", not compared: it was published before the
// sink consumed. first maps each export to that run ID.
func Reconcile(exported []Exported, landed []Landed, first map[string]string) []Reconciliation {
	type key struct{ export, run, entity string }
	got := map[key]Landed{}
	for _, l := range landed {
		got[key{l.Export, l.Run, l.Entity}] = l
	}
	out := make([]Reconciliation, 0, len(exported))
	for _, e := range exported {
		l, ok := got[key{e.Export, e.Run, e.Entity}]
		if !ok {
			l = Landed{Export: e.Export, Run: e.Run, Entity: e.Entity, SwappedRows: -1}
		}
		r := Reconciliation{Exported: e, Applied: l}
		switch {
		case !e.Finished:
			r.Note = "running"
		case !ok && first[e.Export] != "" && e.Run < first[e.Export]:
			r.Note = "before the sink"
		}
		out = append(out, r)
	}
	return out
}

// TopicMatches reports whether an AMQP topic exchange routes key by
// pattern: words separated by ".", "*" matching one word and "#" zero or
// more.
func TopicMatches(pattern, key string) bool {
	return topicMatch(strings.Split(pattern, "."), strings.Split(key, "."))
}

func topicMatch(p, k []string) bool {
	for len(p) > 0 {
		switch p[0] {
		case "#":
			for i := 0; i <= len(k); i++ {
				if topicMatch(p[1:], k[i:]) {
					return true
				}
			}
			return false
		case "*":
			if len(k) == 0 {
				return false
			}
		default:
			if len(k) == 0 || k[0] != p[0] {
				return false
			}
		}
		p, k = p[1:], k[1:]
	}
	return len(k) == 0
}
