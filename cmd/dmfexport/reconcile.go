package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/sink"
)

type reconcileCommand struct {
	g        globalFlags
	limit    int
	textfile string
}

func (c *reconcileCommand) Usage() string {
	return `Usage: dmfexport reconcile [--config FILE] [--limit 10] [--textfile FILE] [EXPORT...]

Compares, per run and entity, what each export published (the batches and rows the broker
confirmed, from its run records) with what the sinks consuming it applied (their ledger,
dmfexport_ledger), and for the snapshot a table holds now, the rows the swap put in with the rows
the table holds. Prints a table and exits 1 when anything differs, 0 when all is equal.

A sink consumes an export when the export's exchange is the sink's and one of the sink's bindings
matches its routing key. Runs still going are shown but not compared; runs older than the first
run a sink's ledger holds of the export ("before the sink") neither. --limit is the newest runs
compared per export (0: all). --textfile writes the gauge
dmfexport_sink_reconcile_difference_rows{sink,export,entity} (rows exported minus rows applied)
to FILE in the Prometheus text format, for node_exporter's textfile collector.
`
}

func (c *reconcileCommand) Line(cl *commandLine) {
	cl.Config(&c.g, "warn")
	cl.IntVar(&c.limit, "limit", 10, "newest runs compared per export (0: all)")
	cl.StringVar(&c.textfile, "textfile", "", "write the difference gauge to `FILE` (Prometheus text format)")
}

func (c *reconcileCommand) Run(ctx context.Context, names []string) error {
	cfg, err := c.g.load()
	if err != nil {
		return err
	}
	if len(cfg.Sinks) == 0 {
		return fmt.Errorf("%w: %s has no sinks: section", errUsage, cfg.Path)
	}
	exps := cfg.Exports
	if len(names) > 0 {
		exps = nil
		for _, n := range names {
			e, ok := cfg.Export(n)
			if !ok {
				return fmt.Errorf("%w: no export named %q in %s (known: %s)", errUsage, n, cfg.Path, exportNames(cfg))
			}
			if len(sinksOf(cfg, e)) == 0 {
				return fmt.Errorf("%w: no sink consumes export %q (exchange %q, routing key %q): check the sinks' exchange and bindings", errUsage, n, e.Exchange, e.RoutingKey)
			}
			exps = append(exps, *e)
		}
	}
	diff := sink.NewReconcileDifference()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SINK\tEXPORT\tRUN\tENTITY\tBATCHES\tROWS\tAPPLIED BATCHES\tAPPLIED ROWS\tRESULT")
	differ, compared := 0, 0
	for i := range cfg.Sinks {
		s := &cfg.Sinks[i]
		var exported []sink.Exported
		var expNames, runs []string
		for j := range exps {
			e := &exps[j]
			if !s.Consumes(e) || jobs.StoreMissing(e) {
				continue
			}
			recs, err := jobs.Records(ctx, e, c.limit)
			if err != nil {
				return err
			}
			expNames = append(expNames, e.Name)
			for _, r := range recs {
				runs = append(runs, r.RunID)
				for _, en := range r.Entities {
					exported = append(exported, sink.Exported{Export: r.Job, Run: r.RunID, Entity: en.Entity,
						Batches: en.Batches, Rows: en.Rows, Finished: r.State.Final()})
				}
			}
		}
		if len(exported) == 0 {
			continue
		}
		led, err := openLedger(ctx, s)
		if err != nil {
			return fmt.Errorf("sink %s: %w", s.Name, err)
		}
		landed, first, err := led.Landed(ctx, expNames, runs)
		led.Close()
		if err != nil {
			return fmt.Errorf("sink %s: %w", s.Name, err)
		}
		for _, r := range sink.Reconcile(exported, landed, first) {
			if r.Note == "" {
				compared++
				diff.WithLabelValues(s.Name, r.Export, r.Entity).Add(float64(r.DifferenceRows()))
			}
			if r.Differs() {
				differ++
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", printable(s.Name), printable(r.Export), printable(r.Run), printable(r.Entity),
				r.Batches, r.Rows, r.Applied.Batches, r.Applied.Rows, reconcileResult(r))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if c.textfile != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(diff)
		if err := prometheus.WriteToTextfile(c.textfile, reg); err != nil {
			return fmt.Errorf("write %s: %w", c.textfile, err)
		}
	}
	if differ > 0 {
		return fmt.Errorf("%d of %d entities of runs compared differ between export and sink", differ, compared)
	}
	return nil
}

// reconcileResult is the RESULT column: equal, why a row is not compared,
// or what differs.
func reconcileResult(r sink.Reconciliation) string {
	if r.Note != "" {
		return "not compared: " + r.Note
	}
	var out []string
	if d := r.Batches - r.Applied.Batches; d != 0 {
		out = append(out, fmt.Sprintf("%+d batches not in the ledger", d))
	}
	if d := r.Rows - r.Applied.Rows; d != 0 {
		out = append(out, fmt.Sprintf("%+d rows not in the ledger", d))
	}
	if a := r.Applied; a.TableDiffers() {
		out = append(out, fmt.Sprintf("the table holds %d rows, its snapshot put in %d", a.TableRows, a.SwappedRows))
	}
	if len(out) == 0 {
		if r.Applied.Stale > 0 {
			return fmt.Sprintf("equal (%d batches stale: older than the table's snapshot)", r.Applied.Stale)
		}
		return "equal"
	}
	return "DIFFERS: " + strings.Join(out, "; ")
}

// sinksOf returns the sinks consuming export e.
func sinksOf(cfg *jobs.Config, e *jobs.Export) []*jobs.SinkConfig {
	var out []*jobs.SinkConfig
	for i := range cfg.Sinks {
		if cfg.Sinks[i].Consumes(e) {
			out = append(out, &cfg.Sinks[i])
		}
	}
	return out
}
