package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/dmfexport/dmfexport/jobs"
)

// exportsCommand lists the configured exports. It is also reachable as
// "jobs", its name before exports were called exports everywhere; name is
// the one it was called by ("" means exports), so usage and errors use it.
type exportsCommand struct {
	g    globalFlags
	name string
}

func (c *exportsCommand) called() string {
	if c.name == "" {
		return "exports"
	}
	return c.name
}

func (c *exportsCommand) Usage() string {
	return fmt.Sprintf(`Usage: dmfexport %s [--config FILE]

Lists every export in the configuration with its schedule, definition group, legal entity,
routing and next run time (in the schedule's time zone, or local time).
"dmfexport exports" and "dmfexport jobs" (its former name) are the same command.
`, c.called())
}

func (c *exportsCommand) Line(cl *commandLine) {
	cl.Config(&c.g, "warn")
	cl.NoArgs()
}

func (c *exportsCommand) Run(context.Context, []string) error {
	cfg, err := c.g.load()
	if err != nil {
		return err
	}
	now := time.Now()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EXPORT\tSCHEDULE\tNEXT RUN\tDEFINITION GROUP\tLEGAL ENTITY\tEXCHANGE\tROUTING KEY")
	for _, e := range cfg.Exports {
		next := "disabled"
		if e.Enabled {
			t, err := jobs.NextRun(e.Schedule, now)
			if err != nil {
				return fmt.Errorf("export %s: %w", e.Name, err)
			}
			next = t.Format("2006-01-02 15:04:05 MST")
		}
		exchange := e.Exchange
		if exchange == "" {
			exchange = "(default)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, e.Schedule, next, e.DefinitionGroup, e.LegalEntity, exchange, e.RoutingKey)
	}
	return tw.Flush()
}
