package sink

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dmfexport/dmfexport/internal/buildinfo"
)

// Metrics are the Prometheus series of dmfexport sink, on a registry of
// their own (a sink process serves them; dmfexport run serves the
// exporter's). Labels carry sink, entity and outcome names only. A nil
// *Metrics records nothing.
type Metrics struct {
	reg     *prometheus.Registry
	batches *prometheus.CounterVec
	rows    *prometheus.CounterVec
	apply   *prometheus.HistogramVec
	swaps   *prometheus.CounterVec
	dead    *prometheus.CounterVec
	lag     *prometheus.GaugeVec
	queued  *prometheus.GaugeVec
}

// NewMetrics registers every series, plus the Go runtime and process
// collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_sink_batches_total", Help: "Batches taken from the queue by outcome: applied, duplicate (already in the ledger), stale (a run older than the table's snapshot).",
		}, []string{"sink", "entity", "outcome"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_sink_rows_total", Help: "Rows of the batches taken from the queue, by the batch's outcome.",
		}, []string{"sink", "entity", "outcome"}),
		apply: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dmfexport_sink_apply_seconds", Help: "Time to apply one batch: its transaction with the ledger entry, retries included, and a snapshot's swap.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14), // 1 ms .. ~150 s
		}, []string{"sink"}),
		swaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_sink_snapshot_swaps_total", Help: "Snapshots swapped into their table (a full run's rows replacing the table's).",
		}, []string{"sink", "entity"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_sink_dead_letters_total", Help: "Batches that could not be applied, moved to the dead-letter queue <queue>.dead.",
		}, []string{"sink"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dmfexport_sink_lag_seconds", Help: "Time from a batch's making (its event time) to its commit, for the last batch applied of each entity.",
		}, []string{"sink", "entity"}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dmfexport_sink_queue_messages", Help: "Messages ready in the sink's queue (waiting, not yet delivered to a consumer), sampled by each sink process every 15 seconds.",
		}, []string{"sink"}),
	}
	m.reg.MustRegister(m.batches, m.rows, m.apply, m.swaps, m.dead, m.lag, m.queued,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ServeBuildInfo adds dmfexport_build_info for a process of version.
func (m *Metrics) ServeBuildInfo(version string) {
	m.reg.MustRegister(buildinfo.Collector(version))
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// started creates a sink's counters at zero, and those of each entity its
// configuration names, so that the first dead letter, batch or swap is an
// increase a rule over increase() sees, not a series appearing at 1.
func (m *Metrics) started(sink string, entities map[string]EntityOptions) {
	if m == nil {
		return
	}
	m.dead.WithLabelValues(sink)
	for e := range entities {
		m.batches.WithLabelValues(sink, e, Applied.String())
		m.rows.WithLabelValues(sink, e, Applied.String())
		m.swaps.WithLabelValues(sink, e)
	}
}

func (m *Metrics) queueDepth(sink string, ready int) {
	if m != nil {
		m.queued.WithLabelValues(sink).Set(float64(ready))
	}
}

func (m *Metrics) batch(sink string, b *Batch, out Outcome, took time.Duration) {
	if m == nil {
		return
	}
	m.batches.WithLabelValues(sink, b.Entity, out.String()).Inc()
	m.rows.WithLabelValues(sink, b.Entity, out.String()).Add(float64(len(b.Rows)))
	m.apply.WithLabelValues(sink).Observe(took.Seconds())
	if out == Applied && !b.Time.IsZero() {
		m.lag.WithLabelValues(sink, b.Entity).Set(time.Since(b.Time).Seconds())
	}
}

func (m *Metrics) swapped(sink, entity string) {
	if m != nil {
		m.swaps.WithLabelValues(sink, entity).Inc()
	}
}

func (m *Metrics) deadLettered(sink string) {
	if m != nil {
		m.dead.WithLabelValues(sink).Inc()
	}
}

// NewReconcileDifference returns the gauge dmfexport reconcile writes for
// node_exporter's textfile collector: per sink, export and entity, the rows
// exported minus the rows the sink's ledger holds (a snapshot table's rows
// gone since its swap counted as missing), over the runs compared.
func NewReconcileDifference() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dmfexport_sink_reconcile_difference_rows",
		Help: "Rows an export published that its sink did not apply (negative: applied more), over the runs dmfexport reconcile compared.",
	}, []string{"sink", "export", "entity"})
}
