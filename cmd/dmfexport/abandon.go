package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strings"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/runs"
)

type abandonCommand struct {
	g      globalFlags
	reason string
}

func (c *abandonCommand) Usage() string {
	return `Usage: dmfexport abandon [--config FILE] [--reason TEXT] RUN

Ends the unfinished run RUN (a run ID from dmfexport status, or EXPORT/RUN) on purpose: its record
is written in state abandoned, saying who abandoned it, when and --reason, and it is never resumed;
the next run of its export starts a new export in F&O. The rows the run had not published are not
published (its stored entity files stay, for dmfexport replay). A run with a damaged record is
abandoned too: the damaged record is kept aside as run.json.damaged-<time>.

Refused (exit 1) for a run that has ended already and for a run a live process is working on
(stop that process first, or let it end the run).
`
}

func (c *abandonCommand) Line(cl *commandLine) {
	cl.Config(&c.g, "warn")
	cl.StringVar(&c.reason, "reason", "", "why the run is abandoned, kept in its record")
	cl.Args(1, 1, "name exactly one run to abandon (see dmfexport status)")
}

func (c *abandonCommand) Run(ctx context.Context, pos []string) error {
	cfg, err := c.g.load()
	if err != nil {
		return err
	}
	exp, rec, err := jobs.FindRun(ctx, cfg, pos[0])
	if err != nil && !(exp != nil && errors.Is(err, runs.ErrDamagedRecord)) {
		return err
	}
	runID := pos[0]
	if rec != nil {
		runID = rec.RunID
	} else if _, id, ok := strings.Cut(pos[0], "/"); ok {
		runID = id
	}
	runner := &jobs.Runner{Logger: c.g.log, LeaseTTL: cfg.LeaseTTL, Clock: newClock()}
	defer func() { _ = runner.Close() }()
	done, err := runner.Abandon(ctx, exp, runID, operator(), c.reason)
	if err != nil {
		return err
	}
	fmt.Printf("export %s run %s: %s\n", exp.Name, printable(done.RunID), printable(done.Error))
	return nil
}

// operator names who runs the command: user@host.
func operator() string {
	name := "unknown user"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, _ := os.Hostname()
	if host == "" {
		return name
	}
	return name + "@" + host
}
