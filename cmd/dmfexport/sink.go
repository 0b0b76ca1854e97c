package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/sink"
)

type sinkCommand struct {
	g      globalFlags
	listen string
}

func (c *sinkCommand) Usage() string {
	return `Usage: dmfexport sink [--config FILE] [--listen 127.0.0.1:9311] [NAME...]
       dmfexport sink replay-dead [--config FILE] NAME

Consumes the queues of the named sinks (all of them when none is named) and lands every batch in
its database: one table per entity, each batch applied exactly once with its ledger entry, a full
export replacing its table in one transaction once all its batches are in. Runs until stopped
(SIGINT or SIGTERM): the batch in hand is committed and acknowledged, the others stay in the queue.
--listen serves /healthz, /readyz and /metrics (the dmfexport_sink_* series). With the
OpenTelemetry variables set (as for run), each delivery is a span in the trace of the run that
published the batch.
"replay-dead" moves a sink's dead letters back to its queue (see its --help).
See docs/landing.md, "Landing the data".
`
}

func (c *sinkCommand) subcommand(name string) (command, bool) {
	if name == "replay-dead" {
		return &replayDeadCommand{}, true
	}
	return nil, false
}

func (c *sinkCommand) Line(cl *commandLine) {
	cl.Config(&c.g, "info")
	cl.StringVar(&c.listen, "listen", "127.0.0.1:9311", "address of the /healthz, /readyz and /metrics listener (empty: none)")
}

func (c *sinkCommand) Run(ctx context.Context, names []string) error {
	log := c.g.log
	cfg, stopTracing, err := c.g.start(ctx)
	if err != nil {
		return err
	}
	defer stopTracing()
	var sinks []*jobs.SinkConfig
	for _, name := range names {
		s, ok := cfg.Sink(name)
		if !ok {
			return fmt.Errorf("%w: no sink named %q in %s (known: %s)", errUsage, name, cfg.Path, sinkNames(cfg))
		}
		sinks = append(sinks, s)
	}
	if len(names) == 0 {
		for i := range cfg.Sinks {
			sinks = append(sinks, &cfg.Sinks[i])
		}
	}
	if len(sinks) == 0 {
		return fmt.Errorf("%w: %s has no sinks: section", errUsage, cfg.Path)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// What load set counts the exports, which this process does not
		// run.
		debug.SetMemoryLimit(jobs.SinkMemoryLimit(len(sinks)))
	}
	logSinkWarnings(ctx, cfg, sinks, log)
	metrics := sink.NewMetrics()
	metrics.ServeBuildInfo(Version)
	if c.listen != "" {
		var ready atomic.Bool
		ready.Store(true)
		srv, err := serveOps(ctx, c.listen, metrics.Handler(), nil, &ready, log)
		if err != nil {
			return err
		}
		defer func() { _ = srv.Close() }()
	}
	var consumers []*sink.Consumer
	for _, s := range sinks {
		be, err := openBackend(ctx, s)
		if err != nil {
			return fmt.Errorf("sink %s: %w", s.Name, err)
		}
		defer be.Close()
		consumers = append(consumers, newConsumer(s, be, log, metrics))
	}
	errs := make([]error, len(consumers))
	var wg sync.WaitGroup
	for i, cons := range consumers {
		wg.Go(func() { errs[i] = cons.Run(ctx) })
	}
	wg.Wait()
	for _, cons := range consumers {
		st := cons.Stats()
		cons.Logger.Info("sink stopped", "batches", st.Batches.Load(), "rows", st.Rows.Load(), "duplicates", st.Duplicates.Load(),
			"stale", st.Stale.Load(), "snapshots", st.Swaps.Load(), "dead_letters", st.DeadLetters.Load())
	}
	return errors.Join(errs...)
}

// logSinkWarnings logs what validate warns of the sinks about to run:
// the configuration's warnings on them and jobs.SinkWarnings (entities
// the consumed exports' run records say F&O exports incrementally, landed
// without keys or as snapshots). Records that cannot be read are logged
// too, and do not stop the sink.
func logSinkWarnings(ctx context.Context, cfg *jobs.Config, sinks []*jobs.SinkConfig, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, sinkCheckTimeout)
	defer cancel()
	more, err := jobs.SinkWarnings(ctx, cfg)
	if err != nil {
		log.Warn("sink settings not checked against the exports' run records", "error", err)
	}
	for _, w := range append(slices.Clone(cfg.Warnings), more...) {
		for i := range cfg.Sinks {
			if slices.Contains(sinks, &cfg.Sinks[i]) && strings.HasPrefix(w.Path, fmt.Sprintf("sinks[%d]", i)) {
				log.Warn("configuration warning", "sink", cfg.Sinks[i].Name, "warning", w.String())
			}
		}
	}
}

// newConsumer is the consumer of sink s landing through be.
func newConsumer(s *jobs.SinkConfig, be sink.Backend, log *slog.Logger, metrics *sink.Metrics) *sink.Consumer {
	return &sink.Consumer{
		Name: s.Name, URL: s.BrokerURL.Reveal(), Queue: s.Queue, Quorum: s.Quorum, Exchange: s.Exchange, Bindings: s.Bindings,
		Prefetch: s.Prefetch, MaxDeliveries: s.MaxDeliveries, Entities: s.Entities, Backend: be,
		Logger: log.With("sink", s.Name), Metrics: metrics,
	}
}

func sinkNames(cfg *jobs.Config) string {
	var out []string
	for _, s := range cfg.Sinks {
		out = append(out, s.Name)
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}
