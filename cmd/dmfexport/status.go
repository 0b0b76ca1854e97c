package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/dmfexport/dmfexport/internal/human"
	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/sink"
)

type statusCommand struct {
	g     globalFlags
	json  bool
	limit int
}

func (c *statusCommand) Usage() string {
	return `Usage: dmfexport status [--config FILE] [--json] [--limit 10] [EXPORT]

Shows the recent runs of every export (or of EXPORT), newest first, from the run records in the
store: state, start, duration, rows, batches, entities and errors. A run cut off by a stop or a
crash that no live process owns shows as interrupted: dmfexport run resumes it at its next start.
A run that stopped because the broker stayed unreachable shows as waiting for broker: dmfexport
run takes it up again with backoff. A run waiting for an execution slot of its F&O environment
(fo.max_concurrent_exports) shows as "queued since" the time it began to wait.
A run record that cannot be read (damaged outside dmfexport) shows as one "damaged record" line
naming it, and never hides the other runs. --json prints the records themselves (damaged ones
are named on stderr). status only reads: it never creates the store.

With sinks configured (and no EXPORT named), a second table shows per sink and entity the run it
applied last (batches and rows of it, when), read from the sink's ledger, and the depth of the
sink's dead-letter queue.
`
}

func (c *statusCommand) Line(cl *commandLine) {
	cl.Config(&c.g, "warn")
	cl.BoolVar(&c.json, "json", false, "print the run records as JSON")
	cl.IntVar(&c.limit, "limit", 10, "runs shown per export (0: all)")
	cl.Args(0, 1, "name at most one export")
}

func (c *statusCommand) Run(ctx context.Context, pos []string) error {
	cfg, err := c.g.load()
	if err != nil {
		return err
	}
	exps := cfg.Exports
	if len(pos) == 1 {
		e, ok := cfg.Export(pos[0])
		if !ok {
			return fmt.Errorf("%w: no export named %q in %s (known: %s)", errUsage, pos[0], cfg.Path, exportNames(cfg))
		}
		exps = []jobs.Export{*e}
	}
	var all []*runs.Record
	var damaged []runs.DamagedRecord
	owned := map[*runs.Record]bool{}
	for i := range exps {
		e := &exps[i]
		if jobs.StoreMissing(e) {
			continue // nothing was ever run; opening the store would create it
		}
		h, err := jobs.RunHistory(ctx, e, c.limit)
		if err != nil {
			return err
		}
		recs := h.Records
		damaged = append(damaged, h.Damaged...)
		for _, r := range recs {
			if !r.State.Final() {
				if owned[r], err = jobs.RunOwned(ctx, e, r.RunID, cfg.LeaseTTL, newClock()); err != nil {
					return err
				}
			}
		}
		all = append(all, recs...)
	}
	slices.SortStableFunc(all, func(a, b *runs.Record) int { return b.StartedAt.Compare(a.StartedAt) })
	if c.json {
		// The records only, as ever; the damaged ones are named on stderr.
		for _, d := range damaged {
			fmt.Fprintf(os.Stderr, "dmfexport status: export %s run %s: %s\n", d.Job, printable(d.RunID), printable(damagedText(d)))
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if all == nil {
			all = []*runs.Record{}
		}
		return enc.Encode(all)
	}
	if len(pos) == 0 && len(cfg.Sinks) > 0 {
		defer printSinks(ctx, cfg)
	}
	if len(all) == 0 && len(damaged) == 0 {
		fmt.Println("no runs yet")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EXPORT\tRUN\tSTATE\tSTARTED\tDURATION\tENTITIES\tROWS\tBATCHES\tERROR")
	for _, d := range damaged {
		started := "-"
		if !d.StartedAt.IsZero() {
			started = d.StartedAt.Local().Format("2006-01-02 15:04:05")
		}
		state := "damaged record"
		if d.Quarantined {
			state = "damaged record (quarantined)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t-\t-\t-\t%s\n", printable(d.Job), printable(d.RunID), state, started, printable(damagedText(d)))
	}
	for _, r := range all {
		l := describeRun(r, owned[r])
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", printable(r.Job), printable(r.RunID), printable(l.state),
			r.StartedAt.Local().Format("2006-01-02 15:04:05"), l.duration, len(r.Entities), l.rows, l.batches, printable(oneLine(l.cause, 120)))
	}
	return tw.Flush()
}

// runLine is what status and the status page show of one run.
type runLine struct {
	state    string // see runState
	duration string // "running" for a run a live process owns, "-" for one cut off
	cause    string // why it failed or waits, or where it stopped
	rows     int64  // confirmed by the broker
	batches  int64
}

// describeRun tells run r as status shows it; owned says whether a live
// process works on it (see jobs.RunOwned).
func describeRun(r *runs.Record, owned bool) runLine {
	l := runLine{state: runState(r, owned), duration: "-", cause: recordCause(r)}
	for _, e := range r.Entities {
		l.rows += e.Rows
		l.batches += e.Batches
	}
	switch {
	case !r.FinishedAt.IsZero():
		l.duration = r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond).String()
	case owned:
		l.duration = "running"
	case r.Waiting != "":
		// The cause says why it waits.
	default:
		l.cause = "stopped while " + string(r.State)
	}
	return l
}

// damagedText says what is wrong with a damaged record, where it is and
// what becomes of its run, whole: the ERROR column is the only place that
// names the key.
func damagedText(d runs.DamagedRecord) string {
	text := d.Key + ": " + d.Cause
	switch {
	case d.Quarantined && d.Lost != "":
		text += "; " + d.Lost
	case d.Quarantined:
	case d.State.Final():
		text += "; the run had ended " + string(d.State) + "; retention deletes the record with its run, or delete it by hand"
	default:
		text += "; dmfexport run or trigger quarantines it and rebuilds the run from its stored package if it has one; dmfexport abandon ends it"
	}
	return text
}

// runState is the STATE column: the record's state (the step a running run
// is in), but "interrupted" for an unfinished run no live process owns, and
// with the warnings of a run that succeeded with some.
func runState(r *runs.Record, owned bool) string {
	switch {
	case !r.State.Final() && !owned && r.Waiting != "":
		return jobs.WaitingText(r.Waiting) + " (retried with backoff)"
	case !r.State.Final() && !owned:
		return "interrupted (resumes on next start)"
	case r.State == runs.StatePending && !r.QueuedAt.IsZero():
		return "queued since " + r.QueuedAt.Local().Format("15:04:05")
	case r.State == runs.StateSucceeded && len(r.Warnings) == 1:
		return "succeeded (1 warning)"
	case r.State == runs.StateSucceeded && len(r.Warnings) > 1:
		return fmt.Sprintf("succeeded (%d warnings)", len(r.Warnings))
	}
	return string(r.State)
}

// oneLine shortens s to one line of at most n characters for a table.
var oneLine = human.OneLine

// printSinks prints, per sink and entity, the run the sink applied last
// and the sink's dead letters. A sink whose database or broker cannot be
// reached says so on its line; the other sinks are still shown.
func printSinks(ctx context.Context, cfg *jobs.Config) {
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SINK\tENTITY\tTABLE\tLAST RUN\tBATCHES\tROWS\tAPPLIED\tDEAD LETTERS")
	for i := range cfg.Sinks {
		s := &cfg.Sinks[i]
		var dead string
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if n, err := sink.DeadLetters(dctx, s.BrokerURL.Reveal(), s.Queue); err != nil {
			dead = printable(oneLine("unknown: "+err.Error(), 60))
		} else {
			dead = fmt.Sprint(n)
		}
		runs, err := sinkRuns(dctx, s)
		cancel()
		if err != nil {
			fmt.Fprintf(tw, "%s\t-\t-\t%s\t-\t-\t-\t%s\n", printable(s.Name), printable(oneLine(err.Error(), 80)), dead)
			continue
		}
		if len(runs) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\tnothing applied yet\t-\t-\t-\t%s\n", printable(s.Name), dead)
		}
		for _, r := range runs {
			batches := fmt.Sprint(r.Batches)
			if r.BatchCount > 0 {
				batches = fmt.Sprintf("%d of %d", r.Batches, r.BatchCount)
			}
			if r.Stale > 0 {
				batches += fmt.Sprintf(" (%d stale)", r.Stale)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", printable(s.Name), printable(r.Entity), printable(r.Table), printable(r.Run),
				batches, r.Rows, r.AppliedAt.Local().Format("2006-01-02 15:04:05"), dead)
		}
	}
	_ = tw.Flush()
}

// sinkRuns reads the run each entity of sink s applied last.
func sinkRuns(ctx context.Context, s *jobs.SinkConfig) ([]sink.EntityRun, error) {
	led, err := openLedger(ctx, s)
	if err != nil {
		return nil, err
	}
	defer led.Close()
	return led.LastRuns(ctx)
}
