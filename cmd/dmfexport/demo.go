package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/jobs/demo"
)

type demoCommand struct {
	g           globalFlags
	fallbackDir string
}

func (c *demoCommand) Usage() string {
	return `Usage: dmfexport demo [--config FILE] [--fallback-dir DIR]

Runs every export of the demo configuration once against an F&O simulator started in this
process (it serves a demo data package of several entities), stores the package and one file per
entity in the configured store, and publishes the rows to the configured RabbitMQ. When no broker
answers, it says so and writes the batches as NDJSON files instead. Then the configuration's sinks
land the published batches in their database, in this process as dmfexport sink would, and it
prints each table's rows and the first rows of the largest: the built-in configuration lands in
the SQLite file dmfexport-data/demo.db, or, when DATABASE_URL is set, in that database (a
postgres:// URL: schema dmfexport_demo). It prints where everything went and how to clean up.

Without --config (or DMFEXPORT_CONFIG) it runs the demo configuration built into the binary, a copy
of configs/demo.yaml, from any directory: the store is ./dmfexport-data. The simulator's address
and token are given to the configuration as ${DMFSIM_URL} and ${FO_TOKEN}, whatever the
environment holds.
`
}

func (c *demoCommand) Line(cl *commandLine) {
	cl.Config(&c.g, "warn")
	if os.Getenv("DMFEXPORT_CONFIG") == "" {
		cl.Lookup("config").DefValue = demo.BuiltinConfig
		_ = cl.Set("config", demo.BuiltinConfig)
	}
	cl.StringVar(&c.fallbackDir, "fallback-dir", "out/demo-batches", "where batches go as NDJSON files when no broker answers")
	cl.NoArgs()
}

func (c *demoCommand) Run(ctx context.Context, _ []string) error {
	if c.g.config == "" {
		c.g.config = os.Getenv("DMFEXPORT_CONFIG") // demo never searches: without either, the built-in one
	}
	log := c.g.log
	stopTracing, err := startTracing(ctx, log)
	if err != nil {
		return err
	}
	defer stopTracing()

	d, err := demo.Start(ctx, demo.Options{Config: c.g.config, FallbackDir: c.fallbackDir, Out: os.Stdout})
	if err != nil {
		return err
	}
	defer d.Close()
	cfg, exps := d.Config, d.Exports
	landings, err := prepareLandings(ctx, cfg, exps, log, os.Stdout)
	for _, l := range landings {
		defer l.close()
	}
	if err != nil {
		return err
	}
	runner := &jobs.Runner{Logger: log, OnEvent: progressPrinter(os.Stdout), Clock: newClock()}
	defer func() { _ = runner.Close() }()
	outs, runErr := runAll(ctx, runner, exps, "demo", false, os.Stdout)
	errs := []error{runErr}
	for _, l := range landings {
		errs = append(errs, l.land(ctx, os.Stdout))
	}

	if runErr != nil {
		fmt.Println("\nThe demo did not succeed (see the closing line): what went where covers only what was done.")
	}
	fmt.Println("\nWhere everything went:")
	var cleanup []string
	for i, e := range exps {
		if outs[i].failed || outs[i].resumes {
			// Not a word of batches, queues or tables it may not have.
			fmt.Printf("  %s: the run did not succeed; its run record is in the store (dmfexport status)\n", e.Name)
			if e.Store.Type == "dir" {
				cleanup = appendNew(cleanup, "rm -rf "+jobs.ShellQuote(e.Store.Path))
			}
			continue
		}
		if e.Store.Type == "dir" {
			fmt.Printf("  %s: package, entity files and run record under %s\n", e.Name, e.Store.Path)
			cleanup = appendNew(cleanup, "rm -rf "+jobs.ShellQuote(e.Store.Path))
		} else {
			fmt.Printf("  %s: package, entity files and run record in container %s\n", e.Name, e.Store.Container)
		}
		switch e.Broker.Type {
		case "file":
			fmt.Printf("  %s: batches as NDJSON in %s\n", e.Name, e.Broker.Path)
			cleanup = appendNew(cleanup, "rm -rf "+jobs.ShellQuote(e.Broker.Path))
		case "amqp":
			fmt.Printf("  %s: batches published to RabbitMQ exchange %q with routing key %q\n", e.Name, e.Exchange, e.RoutingKey)
			for _, q := range e.Broker.Queues {
				fmt.Printf("  %s: queue %q (binding %q) holds them; inspect with: rabbitmqctl list_queues name messages\n", e.Name, q.Name, q.BindingKey)
				cleanup = appendNew(cleanup, "rabbitmqctl delete_queue "+jobs.ShellQuote(q.Name))
			}
			if e.Broker.Declare && e.Exchange != "" {
				cleanup = appendNew(cleanup, "rabbitmqadmin delete exchange name="+jobs.ShellQuote(e.Exchange))
			}
		}
	}
	for _, l := range landings {
		cleanup = l.where(os.Stdout, cleanup)
	}
	switch {
	case c.g.config != demo.BuiltinConfig:
		// A configuration of the user's: its store, queues and tables
		// may hold more than the demo put there.
		fmt.Printf("\nThe store, queues and tables above belong to %s: the demo suggests no clean-up of them.\n", cfg.Path)
	case len(cleanup) > 0:
		fmt.Println("\nTo clean up the demo:")
		for _, l := range cleanup {
			fmt.Println("  " + l)
		}
	}
	return errors.Join(errs...)
}

func appendNew(list []string, s string) []string {
	for _, l := range list {
		if l == s {
			return list
		}
	}
	return append(list, s)
}
