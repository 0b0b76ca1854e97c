package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

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

func (c *demoCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	c.g.register(fs, "warn")
	if os.Getenv("DMFEXPORT_CONFIG") == "" {
		fs.Lookup("config").DefValue = demo.BuiltinConfig
		_ = fs.Set("config", demo.BuiltinConfig)
	}
	fs.StringVar(&c.fallbackDir, "fallback-dir", "out/demo-batches", "where batches go as NDJSON files when no broker answers")
	pos, err := c.g.parse(fs, c.Usage(), args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &flagError{msg: fmt.Sprintf("unexpected argument %q: demo takes no arguments", pos[0]), usage: usageText(fs, c.Usage())}
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
	runErr := runAll(ctx, runner, exps, "demo", false, os.Stdout)
	errs := []error{runErr}
	for _, l := range landings {
		errs = append(errs, l.land(ctx, os.Stdout))
	}

	fmt.Println("\nWhere everything went:")
	var cleanup []string
	for _, e := range exps {
		if e.Store.Type == "dir" {
			fmt.Printf("  %s: package, entity files and run record under %s\n", e.Name, e.Store.Path)
			cleanup = appendNew(cleanup, "rm -rf "+shellQuote(e.Store.Path))
		} else {
			fmt.Printf("  %s: package, entity files and run record in container %s\n", e.Name, e.Store.Container)
		}
		switch e.Broker.Type {
		case "file":
			fmt.Printf("  %s: batches as NDJSON in %s\n", e.Name, e.Broker.Path)
			cleanup = appendNew(cleanup, "rm -rf "+shellQuote(e.Broker.Path))
		case "amqp":
			fmt.Printf("  %s: batches published to RabbitMQ exchange %q with routing key %q\n", e.Name, e.Exchange, e.RoutingKey)
			for _, q := range e.Broker.Queues {
				fmt.Printf("  %s: queue %q (binding %q) holds them; inspect with: rabbitmqctl list_queues name messages\n", e.Name, q.Name, q.BindingKey)
				cleanup = appendNew(cleanup, "rabbitmqctl delete_queue "+shellQuote(q.Name))
			}
			if e.Broker.Declare && e.Exchange != "" {
				cleanup = appendNew(cleanup, "rabbitmqadmin delete exchange name="+shellQuote(e.Exchange))
			}
		}
	}
	for _, l := range landings {
		cleanup = l.where(os.Stdout, cleanup)
	}
	if len(cleanup) > 0 {
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

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
