package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/google/uuid"
	"github.com/robfig/cron/v3"

	"github.com/dmfexport/dmfexport/runs"
)

// Scheduler fires each enabled export on its cron schedule through a Runner.
// A fire that comes while the previous run of the same job is still going is
// skipped (and logged), never queued behind it.
//
// Runs execute under the scheduler's own context, not gocron's: removing or
// changing a job on Reload never cuts off a run in progress, and Stop
// cancels runs only once no new fire can start.
type Scheduler struct {
	runner *Runner
	log    *slog.Logger
	s      gocron.Scheduler

	runCtx     context.Context
	cancelRuns context.CancelFunc

	mu      sync.Mutex
	jobs    map[string]*scheduledJob
	all     []*Export // every export of the configuration, for resuming
	resumes sync.WaitGroup

	// OnSkip, if set, is called when a fire is dropped because the job's
	// previous run is still going (for metrics).
	OnSkip func(job string)
}

type scheduledJob struct {
	job gocron.Job
	exp *Export
}

// NewScheduler registers every enabled export of cfg. stopTimeout is how long
// Stop waits for running exports to reach a safe point.
func NewScheduler(cfg *Config, runner *Runner, log *slog.Logger, stopTimeout time.Duration, opts ...gocron.SchedulerOption) (*Scheduler, error) {
	ctx, cancel := context.WithCancel(context.Background())
	sch := &Scheduler{runner: runner, log: log, runCtx: ctx, cancelRuns: cancel, jobs: map[string]*scheduledJob{}}
	s, err := gocron.NewScheduler(append([]gocron.SchedulerOption{
		gocron.WithClock(runner.clock()),
		gocron.WithStopTimeout(stopTimeout),
		gocron.WithLogger(gocronLogger{log}),
		gocron.WithMonitor(schedulerMonitor{sch}),
		gocron.WithGlobalJobOptions(gocron.WithSingletonMode(gocron.LimitModeReschedule)),
	}, opts...)...)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("create scheduler: %w", err)
	}
	sch.s = s
	if _, err := sch.Apply(cfg); err != nil {
		cancel()
		_ = s.Shutdown()
		return nil, err
	}
	return sch, nil
}

// Changes says what Apply did.
type Changes struct {
	Added, Removed, Changed, Unchanged []string
}

// Apply makes the schedule match cfg: exports that are new or enabled are
// added, removed or disabled ones are taken out, changed ones are
// rescheduled with their new settings. Runs in progress are not touched;
// a changed job's next run uses the new settings.
func (s *Scheduler) Apply(cfg *Config) (Changes, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ch Changes
	s.all = s.all[:0]
	for i := range cfg.Exports {
		s.all = append(s.all, &cfg.Exports[i])
	}
	want := map[string]*Export{}
	for i := range cfg.Exports {
		if e := &cfg.Exports[i]; e.Enabled {
			want[e.Name] = e
		}
	}
	// Check every new definition before changing anything, so a bad
	// reload leaves the running schedule as it was.
	for _, e := range want {
		if _, err := cronParser.Parse(strings.TrimSpace(e.Schedule)); err != nil {
			return ch, fmt.Errorf("schedule export %s (%q): %w", e.Name, e.Schedule, err)
		}
	}
	for name, sj := range s.jobs {
		e, keep := want[name]
		switch {
		case !keep:
			ch.Removed = append(ch.Removed, name)
		case reflect.DeepEqual(*e, *sj.exp):
			ch.Unchanged = append(ch.Unchanged, name)
			continue
		default:
			ch.Changed = append(ch.Changed, name)
		}
		if err := s.s.RemoveJob(sj.job.ID()); err != nil {
			return ch, fmt.Errorf("unschedule export %s: %w", name, err)
		}
		delete(s.jobs, name)
		s.runner.Metrics.unscheduled(name)
	}
	for _, e := range s.all {
		s.runner.Metrics.configured(e)
		s.runner.environment(e) // its pace and queue series from the start
	}
	for name, e := range want {
		if _, ok := s.jobs[name]; ok {
			continue
		}
		if !slices.Contains(ch.Changed, name) {
			ch.Added = append(ch.Added, name)
		}
		expr, seconds := CronSpec(e.Schedule)
		j, err := s.s.NewJob(
			gocron.CronJob(expr, seconds),
			gocron.NewTask(s.fire, e),
			gocron.WithName(e.Name),
			gocron.WithEventListeners(gocron.AfterJobRunsWithPanic(func(_ uuid.UUID, name string, recovered any) {
				s.log.Error("export panicked", "export", name, "panic", recovered)
			})),
		)
		if err != nil {
			return ch, fmt.Errorf("schedule export %s (%q): %w", e.Name, e.Schedule, err)
		}
		s.jobs[name] = &scheduledJob{job: j, exp: e}
		s.runner.Metrics.scheduled(name, scheduleInterval(e.Schedule, s.runner.clock().Now()))
	}
	for _, l := range []*[]string{&ch.Added, &ch.Removed, &ch.Changed, &ch.Unchanged} {
		slices.Sort(*l)
	}
	return ch, nil
}

// Outcomes of a scheduled fire other than a run's final state, for the
// status label of dmfexport_scheduler_fires_total.
const (
	fireSlotTaken = "slot_taken" // another replica claimed the slot
	fireWaiting   = "waiting"    // a run left waiting for the broker or its queue
	fireStopped   = "stopped"    // the process stopped first; what started resumes at the next start
)

// fire is the gocron task of one export; it counts the fire by its outcome.
func (s *Scheduler) fire(exp *Export) {
	s.runner.Metrics.fired(exp.Name, s.fireOnce(exp))
}

// fireOutcome is the outcome of a fire that ran (or took up) a run which
// ended with rec and err.
func fireOutcome(ctx context.Context, rec *runs.Record, err error) string {
	switch {
	case rec != nil && rec.State.Final():
		return string(rec.State)
	case errors.Is(err, ErrAlreadyRunning), errors.Is(err, ErrGroupBusy), errors.Is(err, runs.ErrLeaseHeld):
		return string(runs.StateSkipped)
	case errors.Is(err, ErrNotStarted), err != nil && ctx.Err() != nil:
		return fireStopped
	case errors.Is(err, ErrWaiting), waitingOf(err) != "":
		return fireWaiting
	case err != nil:
		return string(runs.StateFailed)
	case rec == nil:
		return fireStopped
	}
	return string(rec.State)
}

// fireOnce claims the fire's slot and runs exp, returning the outcome.
func (s *Scheduler) fireOnce(exp *Export) string {
	ctx := s.runCtx
	clock := s.runner.clock()
	scheduled := clock.Now().UTC()
	if exp.Jitter > 0 {
		d := rand.N(exp.Jitter)
		s.log.Debug("jitter before run", "export", exp.Name, "delay", d)
		select {
		case <-clock.After(d):
		case <-ctx.Done():
			return fireStopped
		}
	}
	if ctx.Err() != nil {
		return fireStopped
	}
	// Every replica fires every job; the one that claims the slot runs it.
	// A replica still running this export (a run it took over from a
	// replica that stalled, or that stalled itself) leaves the slot to the
	// others: claiming a slot it cannot run would skip it for all.
	slot := slotOf(exp.Schedule, scheduled)
	if s.runner.busy(exp.Name) {
		s.log.Warn("scheduled run skipped here: a run of this export is still in progress in this process; another replica may take the slot",
			"export", exp.Name, "slot", slot.Format(time.RFC3339))
		if s.OnSkip != nil {
			s.OnSkip(exp.Name)
		}
		return string(runs.StateSkipped)
	}
	if st, err := s.runner.store(ctx, exp); err != nil {
		s.log.Error("scheduled run not started: store unavailable", "export", exp.Name, "err", err)
		return fireOutcome(ctx, nil, err)
	} else if ok, err := s.runner.ledger(st, exp).ClaimSlot(ctx, slot); err != nil && ctx.Err() != nil {
		s.log.Debug("scheduled run not started: stopping", "export", exp.Name)
		return fireStopped
	} else if err != nil {
		s.log.Error("scheduled run not started", "export", exp.Name, "err", err)
		return string(runs.StateFailed)
	} else if !ok {
		s.log.Info("schedule slot taken by another replica", "export", exp.Name, "slot", slot.Format(time.RFC3339))
		return fireSlotTaken
	}
	if outcome, ok := s.runner.takeUpWaiting(ctx, exp); ok {
		return outcome
	}
	rec, err := s.runner.Run(ctx, exp, RunOptions{Trigger: "schedule", ScheduledAt: slot})
	switch {
	case errors.Is(err, ErrAlreadyRunning):
		s.log.Warn("scheduled run skipped: previous run still in progress", "export", exp.Name)
		if s.OnSkip != nil {
			s.OnSkip(exp.Name)
		}
	case errors.Is(err, ErrNotStarted):
		s.log.Info("scheduled run not started: stopping while it was queued", "export", exp.Name)
	case errors.Is(err, ErrGroupBusy):
		s.log.Warn("scheduled run skipped: its data project is being exported by another run", "export", exp.Name, "err", err)
	case errors.Is(err, ErrWaiting):
		s.log.Warn("scheduled run left waiting; it is taken up again with backoff", "export", exp.Name, "err", err)
	case err != nil && ctx.Err() != nil:
		// Stopped: the run logged that it will resume.
		s.log.Debug("scheduled run interrupted by the stop", "export", exp.Name, "err", err)
	case err != nil && rec != nil && rec.State == runs.StateFailed:
		// The run logged its ERROR line, with its run and execution keys.
		s.log.Debug("scheduled run failed", "export", exp.Name, "run", rec.RunID, "execution", rec.ExecutionID, "err", err)
	case err != nil:
		s.log.Error("scheduled run failed", append(runKeys(exp.Name, rec), "err", err)...)
	default:
		s.log.Info("scheduled run done", "export", exp.Name, "run", rec.RunID, "state", rec.State)
	}
	return fireOutcome(ctx, rec, err)
}

// Start begins firing jobs; it does not block.
func (s *Scheduler) Start() { s.s.Start() }

// ResumeUnfinished takes up, in the background, every run the store shows
// unfinished (cut off by a stop or a crash) and not owned by a live
// process: at once, then every interval (half the lease TTL), so runs of a
// replica that died are adopted by another. Stop interrupts them like any
// run.
func (s *Scheduler) ResumeUnfinished() {
	interval := s.runner.leaseTTL() / 2
	s.resumes.Go(func() {
		var jobs sync.WaitGroup
		defer jobs.Wait()
		if m := s.runner.Metrics; m != nil {
			s.mu.Lock()
			exps := slices.Clone(s.all)
			s.mu.Unlock()
			for _, exp := range exps {
				m.seedFromRecords(s.runCtx, s.runner, exp)
			}
		}
		busy := map[string]bool{}
		var mu sync.Mutex
		for {
			s.mu.Lock()
			exps := slices.Clone(s.all)
			s.mu.Unlock()
			for _, exp := range exps {
				mu.Lock()
				skip := busy[exp.Name]
				busy[exp.Name] = true
				mu.Unlock()
				if skip {
					continue // still resuming this job's runs
				}
				jobs.Go(func() {
					s.runner.ResumeAll(s.runCtx, []*Export{exp})
					mu.Lock()
					delete(busy, exp.Name)
					mu.Unlock()
				})
			}
			select {
			case <-s.runCtx.Done():
				return
			case <-s.runner.clock().After(interval):
			}
		}
	})
}

// NextRuns returns each scheduled job's next fire time (after Start).
func (s *Scheduler) NextRuns() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]time.Time{}
	for name, sj := range s.jobs {
		t, err := sj.job.NextRun()
		if err == nil {
			out[name] = t
		}
	}
	return out
}

// Stop stops firing, cancels running exports (they stop at their next safe
// point: a confirmed batch, a committed object) and waits for them up to the
// stop timeout.
func (s *Scheduler) Stop() error {
	// Cancel first: a fire that starts from here on returns at once, and
	// Shutdown then waits only for runs reaching their next safe point.
	s.cancelRuns()
	err := s.s.Shutdown()
	s.resumes.Wait()
	if err != nil {
		return fmt.Errorf("stop scheduler: %w", err)
	}
	return nil
}

// CronSpec splits a validated schedule into what gocron takes: the
// expression and whether it has a leading seconds field.
func CronSpec(schedule string) (expr string, withSeconds bool) {
	expr = strings.TrimSpace(schedule)
	body := expr
	if strings.HasPrefix(body, "CRON_TZ=") || strings.HasPrefix(body, "TZ=") {
		if i := strings.IndexByte(body, ' '); i > 0 {
			body = strings.TrimSpace(body[i:])
		}
	}
	if strings.HasPrefix(body, "@") {
		return expr, false
	}
	return expr, len(strings.Fields(body)) == 6
}

// schedulerMonitor hears from gocron about each fire; a fire dropped
// because the job's previous run is still going is logged and counted as
// skipped.
type schedulerMonitor struct{ s *Scheduler }

// gocron counts every fire that ran the task as a success (fire returns
// nothing); fire counts those by their outcome itself.
func (m schedulerMonitor) IncrementJob(_ uuid.UUID, name string, _ []string, status gocron.JobStatus) {
	if status != gocron.SingletonRescheduled {
		return
	}
	m.s.runner.Metrics.fired(name, string(runs.StateSkipped))
	m.s.log.Warn("scheduled fire skipped: previous run still in progress", "export", name)
	if m.s.OnSkip != nil {
		m.s.OnSkip(name)
	}
}

func (schedulerMonitor) RecordJobTiming(time.Time, time.Time, uuid.UUID, string, []string) {}

// gocronLogger routes gocron's own messages into slog.
type gocronLogger struct{ l *slog.Logger }

func (g gocronLogger) Debug(msg string, args ...any) { g.l.Debug("scheduler: "+msg, args...) }
func (g gocronLogger) Info(msg string, args ...any)  { g.l.Info("scheduler: "+msg, args...) }
func (g gocronLogger) Warn(msg string, args ...any)  { g.l.Warn("scheduler: "+msg, args...) }
func (g gocronLogger) Error(msg string, args ...any) { g.l.Error("scheduler: "+msg, args...) }

// cronParser accepts what the config allows: five fields, or six with
// seconds first, descriptors such as @daily, and a CRON_TZ= prefix.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// NextRun returns when schedule fires next after t, in the schedule's own
// time zone (its CRON_TZ=, else t's). A schedule that never fires (such as
// February 30th) is an error.
func NextRun(schedule string, t time.Time) (time.Time, error) {
	sched, err := cronParser.Parse(strings.TrimSpace(schedule))
	if err != nil {
		return time.Time{}, fmt.Errorf("parse schedule %q: %w", schedule, err)
	}
	next := sched.Next(t)
	if next.IsZero() {
		return time.Time{}, fmt.Errorf("schedule %q never fires", schedule)
	}
	if s, ok := sched.(*cron.SpecSchedule); ok && s.Location != time.Local {
		next = next.In(s.Location)
	}
	return next, nil
}

// slotOf returns the scheduled time a fire at now belongs to: the latest
// time of the schedule not after now (plus a little, for timers that fire
// early). Every replica computes the same slot for the same fire, which
// it claims in the store (runs.Ledger.ClaimSlot). An "@every" schedule is
// aligned to multiples of its interval.
func slotOf(schedule string, now time.Time) time.Time {
	sched, err := cronParser.Parse(strings.TrimSpace(schedule))
	if err != nil {
		return now.Truncate(time.Second)
	}
	if c, ok := sched.(cron.ConstantDelaySchedule); ok {
		return now.Add(500 * time.Millisecond).Truncate(c.Delay)
	}
	limit := now.Add(500 * time.Millisecond)
	for lookback := time.Second; lookback < 400*24*time.Hour; lookback *= 2 {
		t := sched.Next(limit.Add(-lookback))
		if t.IsZero() || t.After(limit) {
			continue
		}
		for {
			n := sched.Next(t)
			if n.IsZero() || n.After(limit) {
				return t
			}
			t = n
		}
	}
	return now.Truncate(time.Second)
}

// runKeys are the log keys naming an export and, when known, its run and
// F&O execution.
func runKeys(job string, rec *runs.Record) []any {
	keys := []any{"export", job}
	if rec != nil && rec.RunID != "" {
		keys = append(keys, "run", rec.RunID)
	}
	if rec != nil && rec.ExecutionID != "" {
		keys = append(keys, "execution", rec.ExecutionID)
	}
	return keys
}
