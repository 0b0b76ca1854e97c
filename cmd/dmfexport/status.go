package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dmfexport/dmfexport/jobs"
)

type statusCommand struct {
	g     globalFlags
	json  bool
	limit int
}

func (c *statusCommand) Usage() string {
	return `Usage: dmfexport status [--config FILE] [--json] [--limit 10] [JOB]

Shows the recent runs of every export (or of JOB), newest first, from the run records in the
store: state, start, duration, rows, batches, entities and errors. --json prints the records
themselves.
`
}

func (c *statusCommand) Run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	c.g.register(fs, "warn")
	fs.BoolVar(&c.json, "json", false, "print the run records as JSON")
	fs.IntVar(&c.limit, "limit", 10, "runs shown per export (0: all)")
	pos, err := c.g.parse(fs, c.Usage(), args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return &flagError{msg: "name at most one export", usage: usageText(fs, c.Usage())}
	}
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
	var all []*jobs.RunRecord
	for i := range exps {
		recs, err := jobs.Records(ctx, &exps[i], c.limit)
		if err != nil {
			return err
		}
		all = append(all, recs...)
	}
	slices.SortStableFunc(all, func(a, b *jobs.RunRecord) int { return b.StartedAt.Compare(a.StartedAt) })
	if c.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if all == nil {
			all = []*jobs.RunRecord{}
		}
		return enc.Encode(all)
	}
	if len(all) == 0 {
		fmt.Println("no runs recorded yet")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tRUN\tSTATE\tSTARTED\tDURATION\tENTITIES\tROWS\tBATCHES\tERROR")
	for _, r := range all {
		var rows, batches int64
		for _, e := range r.Entities {
			rows += e.Rows
			batches += e.Batches
		}
		dur := "running"
		if !r.FinishedAt.IsZero() {
			dur = r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", r.Job, r.RunID, r.State,
			r.StartedAt.Local().Format("2006-01-02 15:04:05"), dur, len(r.Entities), rows, batches, oneLine(r.Error, 100))
	}
	return tw.Flush()
}

// oneLine shortens s to one line of at most n characters for a table.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
