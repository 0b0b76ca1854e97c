package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/statuspage"
)

type runCommand struct {
	g           globalFlags
	stopTimeout time.Duration
	listen      string
}

func (c *runCommand) Usage() string {
	return `Usage: dmfexport run [--config FILE] [--stop-timeout 5m] [--listen 127.0.0.1:9310]

Runs the scheduler: every enabled export fires on its cron schedule until the process receives
SIGINT or SIGTERM. A fire that comes while the previous run of the same export is still going is
skipped and logged. On a stop signal no new run starts; running exports are cancelled at their
next safe point and the process waits up to --stop-timeout for them. The exit code is 0 after a
stop that left nothing unfinished, 75 when runs were cut off or left waiting (the next start
resumes them), 1 when the scheduler could not start (a configuration that does not load).

At start, every run the store shows unfinished (cut off by a stop, a crash or kill -9) is resumed
from its record: an export already started in F&O is polled, never started again; a stored package
is not downloaded again; entities already published are not published again.

SIGHUP re-reads the configuration: new exports are scheduled, removed or disabled ones are
unscheduled, changed ones take their new settings from their next run. Runs in progress are never
cut off by a reload. A configuration with problems is reported and the running one is kept.

--listen serves /healthz (the process is alive), /readyz (the scheduler is running), /metrics
(Prometheus) and / (the status page: each export's schedule, recent runs and the progress of the
run going on, read-only) over HTTP; empty disables it. Keep it on loopback, or behind a proxy
that authenticates: the page and the metrics have no authentication of their own.
`
}

func (c *runCommand) Line(cl *commandLine) {
	cl.Config(&c.g, "info")
	cl.DurationVar(&c.stopTimeout, "stop-timeout", 5*time.Minute, "how long a stop waits for running exports")
	cl.StringVar(&c.listen, "listen", "127.0.0.1:9310", "address of the status page, /healthz, /readyz and /metrics listener (empty: none)")
	cl.NoArgs()
}

func (c *runCommand) Run(ctx context.Context, _ []string) error {
	log := c.g.log
	cfg, stopTracing, err := c.g.start(ctx)
	if err != nil {
		return err
	}
	defer stopTracing()
	metrics := jobs.NewMetrics()
	metrics.ServeBuildInfo(Version)
	live := statuspage.NewLive(nil)
	runner := &jobs.Runner{Logger: log, Metrics: metrics, LeaseTTL: cfg.LeaseTTL, Clock: newClock(), OnEvent: live.Observe}
	defer func() { _ = runner.Close() }()
	runner.CleanLeftovers(ctx, cfg)
	sch, err := jobs.NewScheduler(cfg, runner, log, c.stopTimeout)
	if err != nil {
		return err
	}
	var ready atomic.Bool
	var current atomic.Pointer[jobs.Config] // the page shows the configuration in force
	current.Store(cfg)
	if c.listen != "" {
		page := newStatusPage(current.Load, sch, runner, live)
		srv, err := serveOps(ctx, c.listen, metrics.Handler(), page.Handler(log), &ready, log)
		if err != nil {
			_ = sch.Stop()
			return err
		}
		defer func() { _ = srv.Close() }()
	}
	sch.Start()
	sch.ResumeUnfinished()
	ready.Store(true)
	logNextRuns(log, sch)
	for _, w := range cfg.Warnings {
		log.Warn("configuration warning", "warning", w.String())
	}
	log.Info("scheduler running", "config", cfg.Path, "exports", len(cfg.Exports))

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for ctx.Err() == nil {
		select {
		case <-hup:
			if cfg := c.reload(log, sch); cfg != nil {
				current.Store(cfg)
			}
		case <-ctx.Done():
		}
	}
	ready.Store(false)
	log.Info("stop requested: no new runs; waiting for running exports", "timeout", c.stopTimeout)
	if err := sch.Stop(); err != nil {
		return &resumeError{msg: fmt.Sprintf("stopped: %v (runs still going were cut off; their records show how far they got, and the next start resumes them)", err)}
	}
	if n := runner.LeftToResume(); n > 0 {
		log.Info("scheduler stopped; runs left to resume at the next start", "runs", n)
		return &resumeError{msg: fmt.Sprintf("stopped: %d run(s) interrupted or waiting; the next start resumes them", n)}
	}
	log.Info("scheduler stopped")
	return nil
}

// reload applies a re-read configuration and returns it, keeping the
// running one (and returning nil) if the new one has problems.
func (c *runCommand) reload(log *slog.Logger, sch *jobs.Scheduler) *jobs.Config {
	log.Info("SIGHUP: reloading configuration", "config", c.g.config)
	cfg, err := c.g.load()
	if err != nil {
		log.Error("reload refused, keeping the running configuration", "err", err)
		return nil
	}
	ch, err := sch.Apply(cfg)
	if err != nil {
		log.Error("reload refused, keeping the running configuration", "err", err)
		return nil
	}
	log.Info("configuration reloaded", "added", ch.Added, "removed", ch.Removed, "changed", ch.Changed, "unchanged", len(ch.Unchanged))
	logNextRuns(log, sch)
	return cfg
}

func logNextRuns(log *slog.Logger, sch *jobs.Scheduler) {
	for name, next := range sch.NextRuns() {
		log.Info("export scheduled", "export", name, "next_run", next.Format(time.RFC3339))
	}
}

// serveOps starts the operations listener; page, when not nil, is served
// at /.
func serveOps(ctx context.Context, addr string, metrics, page http.Handler, ready *atomic.Bool, log *slog.Logger) (*http.Server, error) {
	mux := http.NewServeMux()
	paths := "/healthz /readyz /metrics"
	if page != nil {
		mux.Handle("/{$}", page)
		paths = "/ " + paths
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready: scheduler not running", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", metrics)
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s for /healthz, /readyz and /metrics: %w (change --listen, or --listen '' to disable)", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("operations listener stopped", "err", err)
		}
	}()
	log.Info("operations listener", "addr", ln.Addr().String(), "paths", paths)
	return srv, nil
}
