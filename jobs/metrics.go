package jobs

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the Prometheus series of a running service. Labels carry job,
// entity, step and outcome names only: never IDs with unbounded values, and
// nothing secret. A nil *Metrics records nothing.
type Metrics struct {
	reg         *prometheus.Registry
	runs        *prometheus.CounterVec
	inProgress  *prometheus.GaugeVec
	rows        *prometheus.CounterVec
	batches     *prometheus.CounterVec
	steps       *prometheus.HistogramVec
	lastSuccess *prometheus.GaugeVec
	retries     *prometheus.CounterVec
	fires       *prometheus.CounterVec

	// Per F&O environment (label: its URL, from the configuration).
	queue     *prometheus.GaugeVec
	queueWait *prometheus.HistogramVec
	inFlight  *prometheus.GaugeVec
	pacing    *prometheus.GaugeVec
	throttles *prometheus.CounterVec
}

// NewMetrics registers every series, plus the Go runtime and process
// collectors, on a registry of its own.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_runs_total", Help: "Finished export runs by final state.",
		}, []string{"job", "state"}),
		inProgress: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dmfexport_runs_in_progress", Help: "Export runs going on now.",
		}, []string{"job"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_rows_published_total", Help: "Entity rows the broker confirmed.",
		}, []string{"job", "entity"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_batches_published_total", Help: "Batch messages the broker confirmed.",
		}, []string{"job", "entity"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dmfexport_step_duration_seconds", Help: "Duration of each step of a run: export, download, unpack, publish.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2.5, 12), // 0.1 s .. ~6 h
		}, []string{"job", "step"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dmfexport_last_success_timestamp_seconds", Help: "Unix time the last successful run of a job finished.",
		}, []string{"job"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_fo_retries_total", Help: `F&O API calls retried, by reason: "HTTP 429" (throttled), "HTTP 503", "timeout", "connection reset", ...`,
		}, []string{"job", "action", "reason"}),
		fires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_scheduler_fires_total", Help: "Scheduled fires by outcome as the scheduler saw them (success, fail, singleton_rescheduled = skipped because the previous run was going).",
		}, []string{"job", "status"}),
		queue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dmfexport_fo_queue_length", Help: "Runs waiting for an execution slot of their F&O environment (fo.max_concurrent_exports).",
		}, []string{"environment"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dmfexport_fo_queue_wait_seconds", Help: "How long runs waited for an execution slot of their F&O environment.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2.5, 12),
		}, []string{"environment"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dmfexport_fo_exports_in_flight", Help: "Executions this process has in flight in each F&O environment.",
		}, []string{"environment"}),
		pacing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dmfexport_fo_requests_per_minute", Help: "Pace of F&O calls per environment now: fo.max_requests_per_minute, or less while recovering from 429s.",
		}, []string{"environment"}),
		throttles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_fo_throttled_total", Help: "429 Too Many Requests answers per F&O environment.",
		}, []string{"environment"}),
	}
	m.reg.MustRegister(m.runs, m.inProgress, m.rows, m.batches, m.steps, m.lastSuccess, m.retries, m.fires,
		m.queue, m.queueWait, m.inFlight, m.pacing, m.throttles,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

func (m *Metrics) runStarted(job string) {
	if m != nil {
		m.inProgress.WithLabelValues(job).Inc()
	}
}

func (m *Metrics) runFinished(rec *RunRecord, steps map[string]time.Duration) {
	if m == nil {
		return
	}
	m.inProgress.WithLabelValues(rec.Job).Dec()
	m.runs.WithLabelValues(rec.Job, string(rec.State)).Inc()
	if rec.State == StateSucceeded {
		m.lastSuccess.WithLabelValues(rec.Job).Set(float64(rec.FinishedAt.UnixNano()) / 1e9)
	}
	for step, d := range steps {
		m.steps.WithLabelValues(rec.Job, step).Observe(d.Seconds())
	}
}

// runSkipped counts a run that never started (its data project was busy).
func (m *Metrics) runSkipped(job string) {
	if m != nil {
		m.runs.WithLabelValues(job, string(StateSkipped)).Inc()
	}
}

// published counts rows and batches the broker confirmed. Counters only
// grow: a negative count (from a record that overcounted) is dropped rather
// than allowed to panic.
func (m *Metrics) published(job, entity string, rows, batches int64) {
	rows, batches = max(rows, 0), max(batches, 0)
	if m == nil || (rows == 0 && batches == 0) {
		return
	}
	m.rows.WithLabelValues(job, entity).Add(float64(rows))
	m.batches.WithLabelValues(job, entity).Add(float64(batches))
}

// Retried counts an F&O call retried for job; reason is the client's small
// fixed set, e.g. "HTTP 429", "HTTP 503", "timeout", "connection reset".
func (m *Metrics) Retried(job, action, reason string) {
	if m != nil {
		m.retries.WithLabelValues(job, action, reason).Inc()
	}
}

func (m *Metrics) fired(job, status string) {
	if m != nil {
		m.fires.WithLabelValues(job, status).Inc()
	}
}

// runDropped forgets a run stopped while queued: it never started.
func (m *Metrics) runDropped(job string) {
	if m != nil {
		m.inProgress.WithLabelValues(job).Dec()
	}
}

func (m *Metrics) queueChanged(env string, length int) {
	if m != nil {
		m.queue.WithLabelValues(env).Set(float64(length))
	}
}

func (m *Metrics) queueWaited(env string, d time.Duration) {
	if m != nil {
		m.queueWait.WithLabelValues(env).Observe(d.Seconds())
	}
}

func (m *Metrics) exportsInFlight(env string, delta float64) {
	if m != nil {
		m.inFlight.WithLabelValues(env).Add(delta)
	}
}

func (m *Metrics) pace(env string, perMinute float64) {
	if m != nil {
		m.pacing.WithLabelValues(env).Set(perMinute)
	}
}

func (m *Metrics) throttled(env string) {
	if m != nil {
		m.throttles.WithLabelValues(env).Inc()
	}
}
