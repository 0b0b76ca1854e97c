package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/dmfexport/dmfexport/jobs"
)

type runCommand struct {
	g           globalFlags
	stopTimeout time.Duration
}

func (c *runCommand) Usage() string {
	return `Usage: dmfexport run [--config FILE] [--stop-timeout 5m]

Runs the scheduler: every enabled export fires on its cron schedule until the process receives
SIGINT or SIGTERM. A fire that comes while the previous run of the same export is still going is
skipped and logged. On a stop signal no new run starts; running exports are cancelled at their
next safe point and the process waits up to --stop-timeout for them.
`
}

func (c *runCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	c.g.register(fs, "info")
	fs.DurationVar(&c.stopTimeout, "stop-timeout", 5*time.Minute, "how long a stop waits for running exports")
	if err := parseFlags(fs, c.Usage(), args); err != nil {
		return err
	}
	log, err := c.g.logger()
	if err != nil {
		return err
	}
	cfg, err := c.g.load()
	if err != nil {
		return err
	}
	runner := &jobs.Runner{Logger: log}
	sch, err := jobs.NewScheduler(cfg, runner, log, c.stopTimeout)
	if err != nil {
		return err
	}
	sch.Start()
	for name, next := range sch.NextRuns() {
		log.Info("export scheduled", "job", name, "next_run", next.Format(time.RFC3339))
	}
	log.Info("scheduler running", "config", cfg.Path, "exports", len(cfg.Exports))
	<-ctx.Done()
	log.Info("stop requested: no new runs; waiting for running exports", "timeout", c.stopTimeout)
	if err := sch.Stop(); err != nil {
		return fmt.Errorf("%w (runs still going were cut off; their records show how far they got)", err)
	}
	log.Info("scheduler stopped")
	return nil
}
