package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/google/uuid"
	"github.com/robfig/cron/v3"
)

// Scheduler fires each enabled export on its cron schedule through a Runner.
// A fire that comes while the previous run of the same job is still going is
// skipped (and logged), never queued behind it.
type Scheduler struct {
	cfg    *Config
	runner *Runner
	log    *slog.Logger
	s      gocron.Scheduler
	jobs   map[string]gocron.Job
}

// NewScheduler registers every enabled export of cfg. stopTimeout is how long
// Stop waits for running exports to reach a safe point.
func NewScheduler(cfg *Config, runner *Runner, log *slog.Logger, stopTimeout time.Duration) (*Scheduler, error) {
	s, err := gocron.NewScheduler(
		gocron.WithStopTimeout(stopTimeout),
		gocron.WithLogger(gocronLogger{log}),
		gocron.WithGlobalJobOptions(gocron.WithSingletonMode(gocron.LimitModeReschedule)),
	)
	if err != nil {
		return nil, fmt.Errorf("create scheduler: %w", err)
	}
	sch := &Scheduler{cfg: cfg, runner: runner, log: log, s: s, jobs: map[string]gocron.Job{}}
	for i := range cfg.Exports {
		exp := &cfg.Exports[i]
		if !exp.Enabled {
			log.Info("export disabled, not scheduled", "job", exp.Name)
			continue
		}
		expr, seconds := CronSpec(exp.Schedule)
		j, err := s.NewJob(
			gocron.CronJob(expr, seconds),
			gocron.NewTask(sch.fire, exp),
			gocron.WithName(exp.Name),
			gocron.WithEventListeners(gocron.AfterJobRunsWithPanic(func(_ uuid.UUID, name string, recovered any) {
				log.Error("export panicked", "job", name, "panic", recovered)
			})),
		)
		if err != nil {
			_ = s.Shutdown()
			return nil, fmt.Errorf("schedule export %s (%q): %w", exp.Name, exp.Schedule, err)
		}
		sch.jobs[exp.Name] = j
	}
	return sch, nil
}

// fire is the gocron task of one export.
func (s *Scheduler) fire(ctx context.Context, exp *Export) {
	rec, err := s.runner.Run(ctx, exp, RunOptions{Trigger: "schedule", ScheduledAt: time.Now().UTC()})
	switch {
	case errors.Is(err, ErrAlreadyRunning):
		s.log.Warn("scheduled run skipped: previous run still in progress", "job", exp.Name)
	case err != nil:
		s.log.Error("scheduled run failed", "job", exp.Name, "err", err)
	default:
		s.log.Info("scheduled run done", "job", exp.Name, "run", rec.RunID, "state", rec.State)
	}
}

// Start begins firing jobs; it does not block.
func (s *Scheduler) Start() { s.s.Start() }

// NextRuns returns each scheduled job's next fire time (after Start).
func (s *Scheduler) NextRuns() map[string]time.Time {
	out := map[string]time.Time{}
	for name, j := range s.jobs {
		t, err := j.NextRun()
		if err == nil {
			out[name] = t
		}
	}
	return out
}

// Stop stops firing and waits for running exports to return (they are
// cancelled and stop at their next safe point), up to the stop timeout.
func (s *Scheduler) Stop() error {
	if err := s.s.Shutdown(); err != nil {
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

// gocronLogger routes gocron's own messages into slog.
type gocronLogger struct{ l *slog.Logger }

func (g gocronLogger) Debug(msg string, args ...any) { g.l.Debug("scheduler: "+msg, args...) }
func (g gocronLogger) Info(msg string, args ...any)  { g.l.Info("scheduler: "+msg, args...) }
func (g gocronLogger) Warn(msg string, args ...any)  { g.l.Warn("scheduler: "+msg, args...) }
func (g gocronLogger) Error(msg string, args ...any) { g.l.Error("scheduler: "+msg, args...) }

// cronParser accepts what the config allows: five fields, or six with
// seconds first, descriptors such as @daily, and a CRON_TZ= prefix.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// NextRun returns when schedule fires next after t.
func NextRun(schedule string, t time.Time) (time.Time, error) {
	sched, err := cronParser.Parse(strings.TrimSpace(schedule))
	if err != nil {
		return time.Time{}, fmt.Errorf("parse schedule %q: %w", schedule, err)
	}
	return sched.Next(t), nil
}
