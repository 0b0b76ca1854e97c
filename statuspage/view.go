// Package statuspage serves the exporter's status page: one read-only
// HTML page, rendered on the server with html/template, that shows each
// export's schedule and next fire, its recent runs (outcome, rows,
// duration, cause), the progress of a run going on per entity, the F&O
// queue of each environment and the dead letters of each sink. It
// refreshes itself with a meta refresh and needs no JavaScript.
//
// The page is a view, not a source of truth: a Source fills a View from
// the run records in the store (as dmfexport status reads them, telling
// each run as status does) and from the events of the runs going on in
// this process (Live); the command only wires it.
package statuspage

import (
	"time"
)

// View is everything one rendering of the page shows.
type View struct {
	Generated time.Time     // when the view was read
	Refresh   time.Duration // how often the page reloads itself; 0: never
	Exports   []Export
	Queues    []Queue
	Sinks     []Sink
}

// Export is one export of the configuration.
type Export struct {
	Name     string
	Schedule string
	Enabled  bool
	NextRun  time.Time // zero: not scheduled (disabled, or not in this process)
	// Running is the run going on, nil when none is.
	Running *Run
	// Runs are the other recent runs, newest first.
	Runs []Run
	// Problem says why the runs could not be read (the store is down, a
	// record is damaged); "" when they could.
	Problem string
}

// Run is one run as dmfexport status shows it.
type Run struct {
	ID        string
	State     string // the STATE column of dmfexport status
	Outcome   Outcome
	StartedAt time.Time
	Duration  string // "" while running
	Rows      int64  // confirmed by the broker
	Cause     string // the ERROR column of dmfexport status, or a warning
	// Detail is the latest word of a run going on, such as the F&O status.
	Detail string
	// Elsewhere is set for a run going on in another process (a replica):
	// its progress is the record's last checkpoint, not live.
	Elsewhere bool
	Entities  []Entity
}

// Outcome classes a run for the eye: its colour on the page.
type Outcome string

// Outcomes.
const (
	OutcomeRunning   Outcome = "running"
	OutcomeSucceeded Outcome = "succeeded"
	OutcomeWarning   Outcome = "warning" // partially succeeded, succeeded with warnings, waiting, interrupted
	OutcomeFailed    Outcome = "failed"
	OutcomeOther     Outcome = "other" // skipped, abandoned
)

// Entity is one entity of a run going on.
type Entity struct {
	Name  string
	State string // "" while publishing, else the entity's state
	Rows  int64  // confirmed by the broker
	// Done bytes of the entity's stored file read, of Total (0: unknown).
	Done, Total int64
}

// Percent is how far the entity is read, 0..100, or -1 when unknown.
func (e Entity) Percent() int {
	if e.Total <= 0 {
		return -1
	}
	return int(min(100*e.Done/e.Total, 100))
}

// Queue is the execution slots of one F&O environment in this process.
type Queue struct {
	Environment string
	Limit       int // fo.max_concurrent_exports
	InUse       int
	Waiting     int
}

// Sink is one sink of the configuration and its dead letters.
type Sink struct {
	Name        string
	Queue       string
	DeadLetters int64
	// Problem says why the dead letters could not be counted; "" when
	// they were.
	Problem string
}
