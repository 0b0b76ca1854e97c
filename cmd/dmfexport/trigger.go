package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/runs"
)

type triggerCommand struct {
	g      globalFlags
	newRun bool
}

func (c *triggerCommand) Usage() string {
	return `Usage: dmfexport trigger [--config FILE] [--new] EXPORT [EXPORT...]

Runs the named exports now, in the foreground, printing progress and a summary. Exports run in
parallel with each other. The exit code is 0 if every run succeeded, 1 if one failed, and 75
if none failed but some stopped (Ctrl-C, SIGTERM) or were left waiting (broker down, no queue
bound, F&O still exporting past poll.deadline): the next dmfexport run or trigger resumes them.

An export with an unfinished run (a trigger or service stopped or killed mid-run) takes that run
up again instead of starting a second export in F&O; --new starts a new run anyway.
`
}

func (c *triggerCommand) Line(cl *commandLine) {
	cl.Config(&c.g, "warn")
	cl.BoolVar(&c.newRun, "new", false, "start a new run even when the export has an unfinished run (which stays for dmfexport run)")
	cl.Args(1, -1, "name at least one export to run (see dmfexport exports)")
}

func (c *triggerCommand) Run(ctx context.Context, names []string) error {
	log := c.g.log
	cfg, stopTracing, err := c.g.start(ctx)
	if err != nil {
		return err
	}
	defer stopTracing()
	var exps []*jobs.Export
	for _, name := range names {
		e, ok := cfg.Export(name)
		if !ok {
			return fmt.Errorf("%w: no export named %q in %s (known: %s)", errUsage, name, cfg.Path, exportNames(cfg))
		}
		exps = append(exps, e)
	}
	runner := &jobs.Runner{Logger: log, OnEvent: progressPrinter(os.Stdout), LeaseTTL: cfg.LeaseTTL, Clock: newClock()}
	defer func() { _ = runner.Close() }()
	runner.CleanLeftovers(ctx, cfg)
	if c.newRun {
		for _, e := range exps {
			if recs, err := runner.Unfinished(ctx, e); err == nil && len(recs) > 0 {
				fmt.Fprintf(stdio.Logs(), "note: export %s has %d unfinished run(s) (oldest %s, %s); a new run starts anyway (--new); dmfexport run or trigger without --new resumes them\n",
					e.Name, len(recs), recs[0].RunID, recs[0].State)
			}
		}
	}
	_, err = runAll(ctx, runner, exps, "manual", !c.newRun, os.Stdout)
	return err
}

// runAll runs exps in parallel, prints a summary, and returns what became
// of each run and the closing error (see closing): nil if every run
// succeeded. With resume, an export
// that has unfinished runs takes them up, oldest first, instead of
// starting a new export in F&O.
func runAll(ctx context.Context, runner *jobs.Runner, exps []*jobs.Export, trigger string, resume bool, out io.Writer) ([]runOutcome, error) {
	recs := make([]*runs.Record, len(exps))
	errs := make([]error, len(exps))
	var wg sync.WaitGroup
	for i, e := range exps {
		wg.Go(func() {
			if resume {
				if recs[i], errs[i] = resumeUnfinished(ctx, runner, e); recs[i] != nil || errs[i] != nil {
					return
				}
			}
			recs[i], errs[i] = runner.Run(ctx, e, jobs.RunOptions{Trigger: trigger})
		})
	}
	wg.Wait()
	stdio.End()
	sep := printSummary(out, recs)
	outs := make([]runOutcome, len(exps))
	for i, err := range errs {
		outs[i] = outcomeOf(ctx, exps[i].Name, recs[i], err)
		switch {
		case outs[i].resumes:
			// Not the error: a stop's "context canceled" is no cause.
			fmt.Fprintf(out, "%sexport %s: will resume: %s\n", sep, exps[i].Name, printable(outs[i].why))
			sep = ""
		case err != nil:
			fmt.Fprintf(out, "%s%s\n", sep, printable(err.Error())) // it names the export
			sep = ""
			if recs[i] == nil || recs[i].State != runs.StateFailed {
				// A run that ended failed logged its ERROR line itself.
				runner.Logger.Error("run failed", "export", exps[i].Name, "err", err)
			}
		}
	}
	return outs, closing(outs)
}

// resumeUnfinished takes up the unfinished runs of exp, oldest first, and
// returns the record of the last one; (nil, nil) when there is none.
func resumeUnfinished(ctx context.Context, runner *jobs.Runner, exp *jobs.Export) (*runs.Record, error) {
	unfinished, err := runner.Unfinished(ctx, exp)
	if err != nil {
		return nil, err
	}
	var rec *runs.Record
	for _, u := range unfinished {
		fmt.Fprintf(stdio.Logs(), "export %s: resuming unfinished run %s (state %s) instead of starting a second export; use --new to start a new run\n",
			exp.Name, printable(u.RunID), u.State)
		rec, err = runner.Resume(ctx, exp, u)
		if errors.Is(err, runs.ErrLeaseHeld) {
			return rec, fmt.Errorf("export %s: unfinished run %s: %w: wait for it to finish, or use --new to start a new run", exp.Name, u.RunID, err)
		}
		if err != nil {
			return rec, err
		}
	}
	return rec, nil
}

// printSummary prints one block per run: state, timings and per-entity
// rows, after a blank line; nothing when no run has a record. It returns
// what separates the next block from it: a blank line, or nothing when it
// printed nothing (the lines that follow close the progress lines).
func printSummary(w io.Writer, recs []*runs.Record) string {
	if !slices.ContainsFunc(recs, func(r *runs.Record) bool { return r != nil }) {
		return ""
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range recs {
		if r == nil {
			continue
		}
		var rows int64
		var batches int64
		for _, e := range r.Entities {
			rows += e.Rows
			batches += e.Batches
		}
		state := string(r.State)
		if r.Waiting != "" && !r.State.Final() {
			state = jobs.WaitingText(r.Waiting)
		}
		fmt.Fprintf(tw, "%s\trun %s\t%s\t%d entities\t%d rows\t%d batches\t%s\n", r.Job, printable(r.RunID), printable(state),
			len(r.Entities), rows, batches, runDuration(r, time.Now()))
		if r.ExecutionID != "" {
			fmt.Fprintf(tw, "  execution\t%s\t%s\n", printable(r.ExecutionID), printable(r.ExecutionStatus))
		}
		var absent []string
		for _, e := range r.Entities {
			where := e.Key
			if e.Absent {
				where = "absent: " + e.File + " not in the package"
				absent = append(absent, printable(e.File))
			}
			line := fmt.Sprintf("  %s\t%s\t%d rows\t%d batches\t%s", printable(e.Entity), printable(string(e.State)), e.Rows, e.Batches, printable(where))
			if e.Error != "" {
				line += "\t" + printable(e.Error)
			}
			fmt.Fprintln(tw, line)
		}
		if len(absent) > 0 {
			fmt.Fprintf(tw, "  %d absent files\t%s\n", len(absent), strings.Join(absent, ", "))
		}
	}
	_ = tw.Flush()
	return "\n"
}

// runDuration says how long a run took; a run cut off (Ctrl-C) has no end
// yet, so it says how long ago it started instead, never a negative time.
func runDuration(r *runs.Record, now time.Time) string {
	if r.FinishedAt.IsZero() || r.FinishedAt.Before(r.StartedAt) {
		return fmt.Sprintf("unfinished, started %s ago", now.Sub(r.StartedAt).Round(time.Second))
	}
	return r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond).String()
}

func exportNames(cfg *jobs.Config) string {
	var names []string
	for _, e := range cfg.Exports {
		names = append(names, e.Name)
	}
	return strings.Join(names, ", ")
}
