package statuspage

import (
	"reflect"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/runs"
)

func TestLive(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		events []jobs.Event
		want   *LiveRun // nil: no run going on
	}{
		{name: "nothing heard"},
		{
			name: "a step with its detail",
			events: []jobs.Event{
				{RunID: "r1", State: runs.StatePending},
				{RunID: "r1", State: runs.StateExporting, Detail: "F&O status Executing after 12s"},
			},
			want: &LiveRun{RunID: "r1", State: runs.StateExporting, Detail: "F&O status Executing after 12s", Since: t0},
		},
		{
			name: "entities publishing",
			events: []jobs.Event{
				{RunID: "r1", State: runs.StatePublishing},
				{RunID: "r1", State: runs.StatePublishing, Entity: "A", Sent: 500, Done: 100, Total: 1000},
				{RunID: "r1", State: runs.StatePublishing, Entity: "B", Sent: 10},
				{RunID: "r1", State: runs.StatePublishing, Entity: "A", Rows: 500, Confirmed: true},
				{RunID: "r1", State: runs.StatePublishing, Entity: "A", Rows: 400, Sent: 900, Done: 300, Total: 1000}, // a late progress event
			},
			want: &LiveRun{RunID: "r1", State: runs.StatePublishing, Since: t0, Entities: []LiveEntity{
				{Entity: "A", Rows: 500, Sent: 900, Done: 300, Total: 1000},
				{Entity: "B", Sent: 10},
			}},
		},
		{
			name: "a final state ends it",
			events: []jobs.Event{
				{RunID: "r1", State: runs.StatePublishing, Entity: "A", Rows: 5},
				{RunID: "r1", State: runs.StateFailed, Detail: "broker refused"},
			},
		},
		{
			name: "a new run replaces the last",
			events: []jobs.Event{
				{RunID: "r1", State: runs.StatePublishing, Entity: "A", Rows: 5},
				{RunID: "r2", State: runs.StatePending, Detail: "queued for an execution slot"},
				{RunID: "r1", State: runs.StateSucceeded}, // the old run's end leaves the new one
			},
			want: &LiveRun{RunID: "r2", State: runs.StatePending, Detail: "queued for an execution slot", Since: t0},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := NewLive(func() time.Time { return t0 })
			for _, e := range c.events {
				e.Job = "demo"
				l.Observe(e)
			}
			got, ok := l.Run("demo")
			if c.want == nil {
				if ok {
					t.Errorf("run going on: %+v, want none", got)
				}
				return
			}
			if !ok || !reflect.DeepEqual(got, *c.want) {
				t.Errorf("run going on: %+v (%v), want %+v", got, ok, *c.want)
			}
			if _, ok := l.Run("other"); ok {
				t.Error("another export has a run going on")
			}
		})
	}
}

func TestEntityPercent(t *testing.T) {
	for _, c := range []struct {
		e    Entity
		want int
	}{
		{Entity{}, -1},
		{Entity{Done: 5}, -1},
		{Entity{Done: 0, Total: 10}, 0},
		{Entity{Done: 5, Total: 10}, 50},
		{Entity{Done: 12, Total: 10}, 100},
	} {
		if got := c.e.Percent(); got != c.want {
			t.Errorf("%+v.Percent() = %d, want %d", c.e, got, c.want)
		}
	}
}
