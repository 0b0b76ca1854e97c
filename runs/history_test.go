package runs

import (
	"bytes"
	"maps"
	"slices"
	"testing"
	"time"
)

// TestHistoryKeeping checks what a FinishedRecords keeps: the finished
// records among the newest limit read, neither an unfinished nor a damaged
// one, nor one that fell out of the newest limit.
func TestHistoryKeeping(t *testing.T) {
	now := time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC)
	l, st, _ := testLedger(t, now, time.Minute)
	id := func(n int) string {
		return now.Add(time.Duration(n)*time.Minute).Format("20060102T150405Z") + "-0000000" + string(rune('0'+n))
	}
	for n, state := range []State{StateSucceeded, StateFailed, StatePublishing, StateSucceeded} {
		rec := &Record{Job: "job", RunID: id(n), State: state, StartedAt: now, ExecutionID: "E"}
		if err := l.Save(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
	}
	// The newest is damaged: it is listed, not read, not kept.
	if _, err := st.Put(t.Context(), l.Record(id(3)), bytes.NewReader([]byte("{")), map[string]string{"state": string(StateSucceeded)}); err != nil {
		t.Fatal(err)
	}
	var kept FinishedRecords
	for _, c := range []struct {
		limit int
		want  []string // the runs kept
	}{
		{0, []string{id(0), id(1)}},
		{3, []string{id(1)}},
	} {
		h, err := l.HistoryKeeping(t.Context(), c.limit, &kept)
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Damaged) != 1 {
			t.Errorf("limit %d: damaged %v, want the newest record", c.limit, h.Damaged)
		}
		var got []string
		for _, r := range kept.recs {
			got = append(got, r.RunID)
		}
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("limit %d: kept %v, want %v (keys %v)", c.limit, got, c.want, slices.Collect(maps.Keys(kept.recs)))
		}
	}
}
