package statuspage

import (
	"slices"
	"sync"
	"time"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/runs"
)

// Live keeps what the events of the runs going on in this process tell:
// the step each run is in, its latest detail and each entity's progress.
// It holds nothing durable; the run records stay the truth, and a run's
// entry goes away with its final event. Its Observe is a jobs.Runner's
// OnEvent. The zero value is ready to use and safe for concurrent use.
type Live struct {
	mu   sync.Mutex
	runs map[string]*LiveRun // by export
	now  func() time.Time
}

// LiveRun is one run going on in this process.
type LiveRun struct {
	RunID string
	State runs.State
	// Detail is the latest human-readable word of the run, such as the
	// F&O status or "queued for an execution slot".
	Detail string
	// Since is when the run entered State.
	Since    time.Time
	Entities []LiveEntity // in the order they began to publish
}

// LiveEntity is the progress of one entity being published.
type LiveEntity struct {
	Entity string
	// Rows the broker confirmed; Sent the rows handed to it.
	Rows, Sent int64
	// Done bytes of the entity's stored file read, of Total (0: unknown).
	Done, Total int64
}

// NewLive returns a Live reading the time from now (nil: time.Now).
func NewLive(now func() time.Time) *Live {
	return &Live{now: now}
}

// Observe takes in one event of a run.
func (l *Live) Observe(e jobs.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.State.Final() {
		if r := l.runs[e.Job]; r != nil && r.RunID == e.RunID {
			delete(l.runs, e.Job)
		}
		return
	}
	if l.runs == nil {
		l.runs = map[string]*LiveRun{}
	}
	r := l.runs[e.Job]
	if r == nil || r.RunID != e.RunID {
		r = &LiveRun{RunID: e.RunID}
		l.runs[e.Job] = r
	}
	if e.State != r.State {
		r.State, r.Since, r.Detail = e.State, l.clock(), ""
	}
	if e.Detail != "" && e.Entity == "" {
		r.Detail = e.Detail
	}
	if e.Entity == "" {
		return
	}
	i := slices.IndexFunc(r.Entities, func(x LiveEntity) bool { return x.Entity == e.Entity })
	if i < 0 {
		r.Entities = append(r.Entities, LiveEntity{Entity: e.Entity})
		i = len(r.Entities) - 1
	}
	p := &r.Entities[i]
	p.Rows, p.Sent = max(p.Rows, e.Rows), max(p.Sent, e.Sent)
	if e.Done > 0 || e.Total > 0 {
		p.Done, p.Total = e.Done, e.Total
	}
}

// Run returns the run of export going on in this process, if any: a copy.
func (l *Live) Run(export string) (LiveRun, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.runs[export]
	if r == nil {
		return LiveRun{}, false
	}
	c := *r
	c.Entities = slices.Clone(r.Entities)
	return c, true
}

func (l *Live) clock() time.Time {
	if l.now != nil {
		return l.now()
	}
	return time.Now()
}
