package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/publish"
)

type demoCommand struct {
	g           globalFlags
	fallbackDir string
}

func (c *demoCommand) Usage() string {
	return `Usage: dmfexport demo [--config configs/demo.yaml]

Runs every export of the demo configuration once against an F&O simulator started in this
process (it serves a demo data package of several entities), stores the package and one file per
entity in the configured store, and publishes the rows to the configured RabbitMQ. When no broker
answers, it says so and writes the batches as NDJSON files instead. It prints where everything went.
The simulator's address and token are passed to the configuration as ${DMFSIM_URL} and ${FO_TOKEN}.
`
}

func (c *demoCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	c.g.register(fs, "warn")
	fs.Lookup("config").DefValue = "configs/demo.yaml"
	_ = fs.Set("config", "configs/demo.yaml")
	fs.StringVar(&c.fallbackDir, "fallback-dir", "out/demo-batches", "where batches go as NDJSON files when no broker answers")
	if err := parseFlags(fs, c.Usage(), args); err != nil {
		return err
	}
	log, err := c.g.logger()
	if err != nil {
		return err
	}

	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{dmftest.DemoDefinitionGroup: dmftest.DemoProject()},
		ExecutionTime: time.Second,
	})
	defer sim.Close()
	os.Setenv("DMFSIM_URL", sim.URL)
	os.Setenv("FO_TOKEN", dmftest.DefaultToken)
	fmt.Printf("F&O simulator listening on %s (definition group %s)\n", sim.URL, dmftest.DemoDefinitionGroup)

	cfg, err := c.g.load()
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
	runner := &jobs.Runner{Logger: log, OnEvent: progressPrinter(os.Stdout)}
	runErr := runAll(ctx, runner, exps, "demo", false, os.Stdout)

	fmt.Println("\nWhere everything went:")
	for _, e := range exps {
		fmt.Printf("  %s: package, entity files and run record under %s\n", e.Name, e.Store.Path)
		switch e.Broker.Type {
		case "file":
			fmt.Printf("  %s: batches as NDJSON in %s\n", e.Name, e.Broker.Path)
		case "amqp":
			fmt.Printf("  %s: batches published to RabbitMQ exchange %q with routing key %q\n", e.Name, e.Exchange, e.RoutingKey)
			for _, q := range e.Broker.Queues {
				fmt.Printf("  %s: queue %q (binding %q) holds them; inspect with: rabbitmqctl list_queues name messages\n", e.Name, q.Name, q.BindingKey)
			}
		}
	}
	return runErr
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
