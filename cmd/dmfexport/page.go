package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/sink"
	"github.com/dmfexport/dmfexport/statuspage"
)

// Figures of the status page.
const (
	pageRefresh = 5 * time.Second  // how often the page reloads itself
	pageRuns    = 5                // recent runs shown per export
	pageDeadTTL = 30 * time.Second // how long a dead-letter count is shown before it is asked again
	pageReaders = 8                // exports whose records are read at once
)

// statusPage reads the view of the page run serves at /: the run records
// as status reads them (describeRun), with the events of the runs going
// on in this process (live) over the record of each.
type statusPage struct {
	config func() *jobs.Config                        // the configuration in force
	next   func() map[string]time.Time                // next fire per export; nil: none scheduled
	queues func(*jobs.Config) []jobs.EnvironmentQueue // nil: none
	live   *statuspage.Live
	clock  clockwork.Clock
	// deadLetters counts a sink's dead letters (sink.DeadLetters).
	deadLetters func(ctx context.Context, s *jobs.SinkConfig) (int, error)

	mu   sync.Mutex
	dead map[string]deadCount // by sink name
}

// deadCount is a sink's dead letters as last asked.
type deadCount struct {
	n       int64
	problem string
	at      time.Time
}

// newStatusPage is the page of the run command's scheduler and runner.
func newStatusPage(config func() *jobs.Config, sch *jobs.Scheduler, runner *jobs.Runner, live *statuspage.Live) *statusPage {
	return &statusPage{
		config: config, next: sch.NextRuns, queues: runner.Queues, live: live, clock: newClock(),
		deadLetters: func(ctx context.Context, s *jobs.SinkConfig) (int, error) {
			return sink.DeadLetters(ctx, s.BrokerURL.Reveal(), s.Queue)
		},
	}
}

// handler serves the page.
func (p *statusPage) handler(log *slog.Logger) http.Handler {
	return statuspage.Handler(p.view, log)
}

// view reads what the page shows now.
func (p *statusPage) view(ctx context.Context) *statuspage.View {
	cfg := p.config()
	v := &statuspage.View{Generated: p.clock.Now(), Refresh: pageRefresh}
	var next map[string]time.Time
	if p.next != nil {
		next = p.next()
	}
	// Each export's records are read apart: several at once, so a store
	// far away and many exports do not add up to a page that never loads.
	v.Exports = make([]statuspage.Export, len(cfg.Exports))
	var wg sync.WaitGroup
	sem := make(chan struct{}, pageReaders)
	for i := range cfg.Exports {
		e := &cfg.Exports[i]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			v.Exports[i] = p.export(ctx, cfg, e, next[e.Name])
		})
	}
	wg.Wait()
	if p.queues != nil {
		for _, q := range p.queues(cfg) {
			v.Queues = append(v.Queues, statuspage.Queue{Environment: q.Environment, Limit: q.Limit, InUse: q.InUse, Waiting: q.Waiting})
		}
	}
	for i := range cfg.Sinks {
		s := &cfg.Sinks[i]
		d := p.deadCount(ctx, s)
		v.Sinks = append(v.Sinks, statuspage.Sink{Name: s.Name, Queue: sink.DeadLetterName(s.Queue), DeadLetters: d.n, Problem: d.problem})
	}
	return v
}

// export reads one export's part of the page: its recent runs from the
// store, the run going on with its live progress when this process runs it.
func (p *statusPage) export(ctx context.Context, cfg *jobs.Config, e *jobs.Export, next time.Time) statuspage.Export {
	ev := statuspage.Export{Name: e.Name, Schedule: e.Schedule, Enabled: e.Enabled, NextRun: next}
	live, isLive := p.live.Run(e.Name)
	var recs []*runs.Record
	if !storeMissing(e) { // nothing was ever run: opening the store would create it
		h, err := jobs.RunHistory(ctx, e, pageRuns)
		if err != nil {
			ev.Problem = oneLine(err.Error(), 300)
		} else {
			recs = h.Records
			for _, d := range h.Damaged {
				ev.Problem = oneLine(fmt.Sprintf("damaged record of run %s: %s", d.RunID, damagedText(d)), 300)
			}
		}
	}
	recorded := false // the live run has a record
	for _, r := range recs {
		here := isLive && live.RunID == r.RunID
		recorded = recorded || here
		owned := here
		if !r.State.Final() && !owned {
			var err error
			if owned, err = jobs.RunOwned(ctx, e, r.RunID, cfg.LeaseTTL, p.clock); err != nil {
				ev.Problem = oneLine(err.Error(), 300)
			}
		}
		run := pageRun(r, owned)
		if !owned || r.State.Final() || ev.Running != nil {
			ev.Runs = append(ev.Runs, run)
			continue
		}
		if here {
			overLive(&run, live)
		} else {
			run.Elsewhere = true
		}
		ev.Running = &run
	}
	if isLive && !recorded && ev.Running == nil { // its record is not written yet
		run := statuspage.Run{ID: live.RunID, StartedAt: live.Since, Outcome: statuspage.OutcomeRunning}
		overLive(&run, live)
		ev.Running = &run
	}
	return ev
}

// pageRun is run r as status tells it.
func pageRun(r *runs.Record, owned bool) statuspage.Run {
	l := describeRun(r, owned)
	run := statuspage.Run{ID: r.RunID, State: l.state, StartedAt: r.StartedAt, Rows: l.rows, Cause: l.cause, Outcome: outcome(r, owned)}
	if !r.FinishedAt.IsZero() {
		run.Duration = l.duration
	}
	if run.Cause == "" && len(r.Warnings) > 0 {
		run.Cause = r.Warnings[0]
	}
	if owned && !r.State.Final() {
		for _, en := range r.Entities {
			run.Entities = append(run.Entities, statuspage.Entity{Name: en.Entity, State: string(en.State), Rows: en.Rows})
		}
	}
	return run
}

// overLive lays the events of the run going on over what its record says:
// the step it is in now and each entity's progress.
func overLive(run *statuspage.Run, live statuspage.LiveRun) {
	if live.State != runs.StatePending || run.State == "" {
		run.State = string(live.State)
	}
	run.Detail = live.Detail
	for _, le := range live.Entities {
		i := -1
		for j := range run.Entities {
			if run.Entities[j].Name == le.Entity {
				i = j
			}
		}
		if i < 0 {
			run.Entities = append(run.Entities, statuspage.Entity{Name: le.Entity})
			i = len(run.Entities) - 1
		}
		en := &run.Entities[i]
		en.Rows = max(en.Rows, le.Rows)
		en.Done, en.Total = le.Done, le.Total
		if !runs.State(en.State).Final() {
			en.State = "" // publishing: its progress shows
		}
	}
	run.Rows = 0
	for _, en := range run.Entities {
		run.Rows += en.Rows
	}
}

// outcome classes run r for the eye.
func outcome(r *runs.Record, owned bool) statuspage.Outcome {
	switch {
	case r.State == runs.StateSucceeded && len(r.Warnings) == 0:
		return statuspage.OutcomeSucceeded
	case r.State == runs.StateFailed:
		return statuspage.OutcomeFailed
	case r.State == runs.StateSkipped || r.State == runs.StateAbandoned:
		return statuspage.OutcomeOther
	case !r.State.Final() && owned:
		return statuspage.OutcomeRunning
	}
	return statuspage.OutcomeWarning // warnings, partially succeeded, interrupted, waiting
}

// deadCount returns sink s's dead letters, asking the broker at most every
// pageDeadTTL: a page refreshing every few seconds opens no connection
// each time.
func (p *statusPage) deadCount(ctx context.Context, s *jobs.SinkConfig) deadCount {
	now := p.clock.Now()
	p.mu.Lock()
	d, ok := p.dead[s.Name]
	p.mu.Unlock()
	if ok && now.Sub(d.at) < pageDeadTTL {
		return d
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d = deadCount{at: now}
	if n, err := p.deadLetters(ctx, s); err != nil {
		d.problem = oneLine(err.Error(), 200)
	} else {
		d.n = int64(n)
	}
	p.mu.Lock()
	if p.dead == nil {
		p.dead = map[string]deadCount{}
	}
	p.dead[s.Name] = d
	p.mu.Unlock()
	return d
}
