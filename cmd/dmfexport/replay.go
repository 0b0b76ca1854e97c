package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/dmfexport/dmfexport/jobs"
)

type replayCommand struct {
	g          globalFlags
	entities   stringList
	routingKey string
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func (c *replayCommand) Usage() string {
	return `Usage: dmfexport replay [--config FILE] [--entity NAME]... [--routing-key KEY] RUN

Publishes the entity files stored for run RUN (a run ID from dmfexport status, or EXPORT/RUN) again,
for a downstream system that lost data. F&O is not called. Messages carry the same message IDs as
the first time (<execution id>/<entity>/<batch>), so consumers that already hold a batch can drop
it. --entity limits the replay to the named entities (repeatable); --routing-key sends the batches
with another routing key (e.g. to one consumer's queue) instead of the export's.
`
}

func (c *replayCommand) Line(cl *commandLine) {
	cl.Config(&c.g, "warn")
	cl.Var(&c.entities, "entity", "replay only this entity (repeatable)")
	cl.StringVar(&c.routingKey, "routing-key", "", "routing key for the replayed batches (default: the export's)")
	cl.Args(1, 1, "name exactly one run to replay (see dmfexport status)")
}

func (c *replayCommand) Run(ctx context.Context, pos []string) error {
	log := c.g.log
	cfg, stopTracing, err := c.g.start(ctx)
	if err != nil {
		return err
	}
	defer stopTracing()
	exp, rec, err := jobs.FindRun(ctx, cfg, pos[0])
	if err != nil {
		return err
	}
	fmt.Printf("replaying run %s of export %s (execution %s)\n", printable(rec.RunID), exp.Name, printable(rec.ExecutionID))
	runner := &jobs.Runner{Logger: log, OnEvent: progressPrinter(os.Stdout), Clock: newClock()}
	defer func() { _ = runner.Close() }()
	ents, err := runner.Replay(ctx, exp, rec, jobs.ReplayOptions{Entities: c.entities, RoutingKey: c.routingKey})
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	for _, e := range ents {
		fmt.Fprintf(tw, "  %s\t%s\t%d rows\t%d batches\t%s\n", e.Entity, e.State, e.Rows, e.Batches, oneLine(e.Error, 120))
	}
	_ = tw.Flush()
	return err
}
