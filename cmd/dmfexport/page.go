package main

import (
	"context"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/sink"
	"github.com/dmfexport/dmfexport/statuspage"
)

// newStatusPage is the page run serves at /, over the run command's
// scheduler, runner and the events of its runs (live).
func newStatusPage(config func() *jobs.Config, sch *jobs.Scheduler, runner *jobs.Runner, live *statuspage.Live) *statuspage.Source {
	p := pageSource(config, live)
	p.Next, p.Queues = sch.NextRuns, runner.Queues
	p.DeadLetters = func(ctx context.Context, s *jobs.SinkConfig) (int, error) {
		return sink.DeadLetters(ctx, s.BrokerURL.Reveal(), s.Queue)
	}
	return p
}

// pageSource is a status page over the configuration config returns that
// tells each run as status does.
func pageSource(config func() *jobs.Config, live *statuspage.Live) *statuspage.Source {
	return &statuspage.Source{Config: config, Live: live, Clock: newClock(), Describe: pageColumns, Damaged: damagedText}
}

// pageColumns are status's columns of run r.
func pageColumns(r *runs.Record, owned bool) statuspage.Columns {
	l := describeRun(r, owned)
	return statuspage.Columns{State: l.state, Duration: l.duration, Cause: l.cause}
}
