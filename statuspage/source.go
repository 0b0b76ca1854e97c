package statuspage

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dmfexport/dmfexport/internal/human"
	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/sink"
)

// Figures of the page.
const (
	// Refresh is how often the page reloads itself.
	Refresh     = 5 * time.Second
	pageRuns    = 5                // recent runs shown per export
	deadTTL     = 30 * time.Second // how long a dead-letter count is shown before it is asked again
	pageReaders = 8                // exports whose records are read at once
)

// Source reads the View of each rendering: the run records in the store,
// as dmfexport status reads them, with the events of the runs going on in
// this process (Live) over the record of each, the F&O queues and the
// sinks' dead letters. A run's finished record is read from the store
// once: it never changes. Set its fields, then use it; it is safe for
// concurrent use.
type Source struct {
	Config func() *jobs.Config                        // the configuration in force
	Next   func() map[string]time.Time                // next fire per export; nil: none scheduled
	Queues func(*jobs.Config) []jobs.EnvironmentQueue // nil: none
	Live   *Live
	Clock  clockwork.Clock
	// DeadLetters counts a sink's dead letters; needed when the
	// configuration has sinks.
	DeadLetters func(ctx context.Context, s *jobs.SinkConfig) (int, error)
	// Describe tells a run as dmfexport status does; owned says whether a
	// live process works on it (see jobs.RunOwned).
	Describe func(r *runs.Record, owned bool) Columns
	// Damaged says what is wrong with a damaged record, as status does.
	Damaged func(d runs.DamagedRecord) string

	mu   sync.Mutex
	dead map[string]deadCount // by sink name
	// kept holds each export's finished records (by export name) for the
	// configuration keptFor: a reload may point an export at another store.
	kept    map[string]*runs.FinishedRecords
	keptFor *jobs.Config
}

// Columns are what dmfexport status shows of a run in its STATE, DURATION
// and ERROR columns.
type Columns struct {
	State    string
	Duration string
	Cause    string
}

// deadCount is a sink's dead letters as last asked.
type deadCount struct {
	n       int64
	problem string
	at      time.Time
}

// Handler serves the page (see Handler) read from s.
func (s *Source) Handler(log *slog.Logger) http.Handler {
	return Handler(s.View, log)
}

// View reads what the page shows now.
func (s *Source) View(ctx context.Context) *View {
	cfg := s.Config()
	v := &View{Generated: s.Clock.Now(), Refresh: Refresh}
	var next map[string]time.Time
	if s.Next != nil {
		next = s.Next()
	}
	// Each export's records are read apart: several at once, so a store
	// far away and many exports do not add up to a page that never loads.
	v.Exports = make([]Export, len(cfg.Exports))
	var wg sync.WaitGroup
	sem := make(chan struct{}, pageReaders)
	for i := range cfg.Exports {
		e := &cfg.Exports[i]
		kept := s.finished(cfg, e.Name)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			v.Exports[i] = s.export(ctx, cfg, e, next[e.Name], kept)
		})
	}
	wg.Wait()
	if s.Queues != nil {
		for _, q := range s.Queues(cfg) {
			v.Queues = append(v.Queues, Queue{Environment: q.Environment, Limit: q.Limit, InUse: q.InUse, Waiting: q.Waiting})
		}
	}
	for i := range cfg.Sinks {
		sc := &cfg.Sinks[i]
		d := s.deadCount(ctx, sc)
		v.Sinks = append(v.Sinks, Sink{Name: sc.Name, Queue: sink.DeadLetterName(sc.Queue), DeadLetters: d.n, Problem: d.problem})
	}
	return v
}

// finished returns the finished records kept of export under cfg; those
// of an earlier configuration are dropped.
func (s *Source) finished(cfg *jobs.Config, export string) *runs.FinishedRecords {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keptFor != cfg {
		s.kept, s.keptFor = map[string]*runs.FinishedRecords{}, cfg
	}
	f := s.kept[export]
	if f == nil {
		f = &runs.FinishedRecords{}
		s.kept[export] = f
	}
	return f
}

// export reads one export's part of the page: its recent runs from the
// store, the run going on with its live progress when this process runs it.
func (s *Source) export(ctx context.Context, cfg *jobs.Config, e *jobs.Export, next time.Time, kept *runs.FinishedRecords) Export {
	ev := Export{Name: e.Name, Schedule: e.Schedule, Enabled: e.Enabled, NextRun: next}
	live, isLive := s.Live.Run(e.Name)
	var recs []*runs.Record
	if !jobs.StoreMissing(e) { // nothing was ever run: opening the store would create it
		h, err := jobs.RunHistoryKeeping(ctx, e, pageRuns, kept)
		if err != nil {
			ev.Problem = human.OneLine(err.Error(), 300)
		} else {
			recs = h.Records
			for _, d := range h.Damaged {
				ev.Problem = human.OneLine(fmt.Sprintf("damaged record of run %s: %s", d.RunID, s.Damaged(d)), 300)
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
			if owned, err = jobs.RunOwned(ctx, e, r.RunID, cfg.LeaseTTL, s.Clock); err != nil {
				ev.Problem = human.OneLine(err.Error(), 300)
			}
		}
		run := s.run(r, owned)
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
		run := Run{ID: live.RunID, StartedAt: live.Since, Outcome: OutcomeRunning}
		overLive(&run, live)
		ev.Running = &run
	}
	return ev
}

// run is run r as status tells it.
func (s *Source) run(r *runs.Record, owned bool) Run {
	c := s.Describe(r, owned)
	run := Run{ID: r.RunID, State: c.State, StartedAt: r.StartedAt, Cause: c.Cause, Outcome: outcome(r, owned)}
	for _, en := range r.Entities {
		run.Rows += en.Rows
	}
	if !r.FinishedAt.IsZero() {
		run.Duration = c.Duration
	}
	if run.Cause == "" && len(r.Warnings) > 0 {
		run.Cause = r.Warnings[0]
	}
	if owned && !r.State.Final() {
		for _, en := range r.Entities {
			run.Entities = append(run.Entities, Entity{Name: en.Entity, State: string(en.State), Rows: en.Rows})
		}
	}
	return run
}

// overLive lays the events of the run going on over what its record says:
// the step it is in now and each entity's progress.
func overLive(run *Run, live LiveRun) {
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
			run.Entities = append(run.Entities, Entity{Name: le.Entity})
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
func outcome(r *runs.Record, owned bool) Outcome {
	switch {
	case r.State == runs.StateSucceeded && len(r.Warnings) == 0:
		return OutcomeSucceeded
	case r.State == runs.StateFailed:
		return OutcomeFailed
	case r.State == runs.StateSkipped || r.State == runs.StateAbandoned:
		return OutcomeOther
	case !r.State.Final() && owned:
		return OutcomeRunning
	}
	return OutcomeWarning // warnings, partially succeeded, interrupted, waiting
}

// deadCount returns sink sc's dead letters, asking the broker at most
// every deadTTL: a page refreshing every few seconds opens no connection
// each time.
func (s *Source) deadCount(ctx context.Context, sc *jobs.SinkConfig) deadCount {
	now := s.Clock.Now()
	s.mu.Lock()
	d, ok := s.dead[sc.Name]
	s.mu.Unlock()
	if ok && now.Sub(d.at) < deadTTL {
		return d
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d = deadCount{at: now}
	if n, err := s.DeadLetters(ctx, sc); err != nil {
		d.problem = human.OneLine(err.Error(), 200)
	} else {
		d.n = int64(n)
	}
	s.mu.Lock()
	if s.dead == nil {
		s.dead = map[string]deadCount{}
	}
	s.dead[sc.Name] = d
	s.mu.Unlock()
	return d
}
