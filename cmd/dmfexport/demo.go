package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dmfexport/dmfexport/configs"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/publish"
)

type demoCommand struct {
	g           globalFlags
	fallbackDir string
}

// builtinDemo names the demo configuration built into the binary, used
// when neither --config nor DMFEXPORT_CONFIG names a file.
const builtinDemo = "built-in configs/demo.yaml"

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
		fs.Lookup("config").DefValue = builtinDemo
		_ = fs.Set("config", builtinDemo)
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

	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{dmftest.DemoDefinitionGroup: dmftest.DemoProject()},
		ExecutionTime: time.Second,
	})
	defer sim.Close()
	fmt.Printf("F&O simulator listening on %s (definition group %s)\n", sim.URL, dmftest.DemoDefinitionGroup)

	cfg, err := c.loadConfig(map[string]string{"DMFSIM_URL": sim.URL, "FO_TOKEN": dmftest.DefaultToken})
	if err != nil {
		return err
	}
	var exps []*jobs.Export
	for i := range cfg.Exports {
		e := &cfg.Exports[i]
		if e.Broker.Type == "amqp" {
			if err := probeBroker(ctx, e); err != nil {
				dir, _ := filepath.Abs(c.fallbackDir)
				fmt.Printf("No RabbitMQ answered for export %s (%v).\nWriting its batches as NDJSON files to %s instead.\n", e.Name, err, dir)
				e.Broker = jobs.BrokerConfig{Type: "file", Path: dir}
			}
		}
		exps = append(exps, e)
	}
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

// loadConfig loads the demo configuration: the file --config or
// DMFEXPORT_CONFIG names, else the built-in one. sim's settings win over
// the environment's for ${VAR} references, without changing the process
// environment.
func (c *demoCommand) loadConfig(sim map[string]string) (*jobs.Config, error) {
	lookup := func(name string) (string, bool) {
		if v, ok := sim[name]; ok {
			return v, true
		}
		return os.LookupEnv(name)
	}
	if c.g.config != builtinDemo {
		data, err := os.ReadFile(c.g.config)
		if err != nil {
			return nil, fmt.Errorf("read demo configuration: %w (leave out --config and DMFEXPORT_CONFIG to run the built-in one)", err)
		}
		return jobs.ParseConfig(c.g.config, data, lookup)
	}
	// The built-in file's relative paths resolve as if it were
	// ./configs/demo.yaml, as make demo runs it from the repository root:
	// its store ../dmfexport-data is ./dmfexport-data.
	wd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("demo: find the working directory: %w", err)
	}
	cfg, err := jobs.ParseConfig(filepath.Join(wd, "configs", "demo.yaml"), configs.Demo, lookup)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", builtinDemo, err)
	}
	cfg.Path = builtinDemo
	return cfg, nil
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

// probeBroker checks that the export's broker accepts a connection.
func probeBroker(ctx context.Context, e *jobs.Export) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := publish.DialAMQP(ctx, publish.AMQPOptions{URL: e.Broker.URL.Reveal(), ConnectionName: "dmfexport/demo-probe"})
	if err != nil {
		return err
	}
	return s.Close()
}
