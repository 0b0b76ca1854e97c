package jobs

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dmfexport/dmfexport/dmf"
	"github.com/dmfexport/dmfexport/internal/buildinfo"
	"github.com/dmfexport/dmfexport/runs"
)

// Metrics are the Prometheus series of a running service. Labels carry export,
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
	interval    *prometheus.GaugeVec
	unfinished  *prometheus.GaugeVec
	lost        *prometheus.CounterVec

	// mu guards successAt, the newest success seen of each export, so a
	// success read from the records at start never moves the gauge back.
	mu        sync.Mutex
	successAt map[string]time.Time

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
		}, []string{"export", "state"}),
		inProgress: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dmfexport_runs_in_progress", Help: "Export runs going on now.",
		}, []string{"export"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_rows_published_total", Help: "Entity rows the broker confirmed.",
		}, []string{"export", "entity"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_batches_published_total", Help: "Batch messages the broker confirmed.",
		}, []string{"export", "entity"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dmfexport_step_duration_seconds", Help: "Duration of each step of a run: export, download, unpack, publish.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2.5, 12), // 0.1 s .. ~6 h
		}, []string{"export", "step"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dmfexport_last_success_timestamp_seconds", Help: "Unix time the last successful run of an export finished.",
		}, []string{"export"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_fo_retries_total", Help: `F&O API calls retried, by reason: "HTTP 429" (throttled), "HTTP 503", "timeout", "connection reset", ...`,
		}, []string{"export", "action", "reason"}),
		fires: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_scheduler_fires_total", Help: "Scheduled fires by outcome: succeeded, partially_succeeded, failed (the run's end), skipped (the previous run still going, or the data project busy), slot_taken (another replica runs it), waiting (left waiting for the broker or its queue), stopped (the process stopped first).",
		}, []string{"export", "status"}),
		interval: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dmfexport_schedule_interval_seconds", Help: "Longest gap between two of the next fires of a scheduled export: an export without a success for twice this long is late.",
		}, []string{"export"}),
		unfinished: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dmfexport_unfinished_runs", Help: "Runs of an export the store shows unfinished (cut off by a stop or a crash) at the last scan: the resume backlog.",
		}, []string{"export"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dmfexport_packages_lost_total", Help: "Runs ended because F&O no longer had their exported package (kept about 7 days): the export is repeated, and the changes it held for IncrementalPush entities are lost downstream.",
		}, []string{"export"}),
		successAt: map[string]time.Time{},
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
	m.reg.MustRegister(m.runs, m.inProgress, m.rows, m.batches, m.steps, m.lastSuccess, m.retries, m.fires, m.interval, m.unfinished, m.lost,
		m.queue, m.queueWait, m.inFlight, m.pacing, m.throttles,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ServeBuildInfo adds dmfexport_build_info for a process of version.
func (m *Metrics) ServeBuildInfo(version string) {
	m.reg.MustRegister(buildinfo.Collector(version))
}

// finalStates are the states a run ends in within the process that ran it
// (abandoned is set by the abandon command, not by a run).
var finalStates = []runs.State{runs.StateSucceeded, runs.StatePartiallySucceeded, runs.StateFailed, runs.StateSkipped}

// fireStatuses are the outcomes of a scheduled fire (the status label).
var fireStatuses = []string{
	string(runs.StateSucceeded), string(runs.StatePartiallySucceeded), string(runs.StateFailed), string(runs.StateSkipped),
	fireSlotTaken, fireWaiting, fireStopped,
}

// runSteps are the timed steps of every run (queue only when it waited).
var runSteps = []string{"export", "download", "unpack", "publish"}

// configured serves exp's counters at 0 from the start, each outcome and
// each step, and its F&O environment's queue series: a rule over
// increase() then sees the first failure after a restart as an increase,
// not as a series appearing at 1. Existing series keep their values.
func (m *Metrics) configured(exp *Export) {
	if m == nil {
		return
	}
	name := exp.Name
	for _, st := range finalStates {
		m.runs.WithLabelValues(name, string(st))
	}
	for _, status := range fireStatuses {
		m.fires.WithLabelValues(name, status)
	}
	for _, step := range runSteps {
		m.steps.WithLabelValues(name, step)
	}
	for _, action := range dmf.Actions() {
		m.retries.WithLabelValues(name, action, dmf.ReasonThrottled)
	}
	m.lost.WithLabelValues(name)
	m.inProgress.WithLabelValues(name)
	env := environmentKey(exp.FO.URL)
	m.queue.WithLabelValues(env)
	m.queueWait.WithLabelValues(env)
	m.inFlight.WithLabelValues(env)
	m.throttles.WithLabelValues(env)
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

func (m *Metrics) runStarted(export string) {
	if m != nil {
		m.inProgress.WithLabelValues(export).Inc()
	}
}

func (m *Metrics) runFinished(rec *runs.Record, steps map[string]time.Duration) {
	if m == nil {
		return
	}
	m.inProgress.WithLabelValues(rec.Job).Dec()
	m.runs.WithLabelValues(rec.Job, string(rec.State)).Inc()
	if rec.State == runs.StateSucceeded {
		m.succeeded(rec.Job, rec.FinishedAt)
	}
	for step, d := range steps {
		m.steps.WithLabelValues(rec.Job, step).Observe(d.Seconds())
	}
}

// runSkipped counts a run that never started (its data project was busy).
func (m *Metrics) runSkipped(export string) {
	if m != nil {
		m.runs.WithLabelValues(export, string(runs.StateSkipped)).Inc()
	}
}

// published counts rows and batches the broker confirmed. Counters only
// grow: a negative count (from a record that overcounted) is dropped rather
// than allowed to panic.
func (m *Metrics) published(export, entity string, rows, batches int64) {
	rows, batches = max(rows, 0), max(batches, 0)
	if m == nil || (rows == 0 && batches == 0) {
		return
	}
	m.rows.WithLabelValues(export, entity).Add(float64(rows))
	m.batches.WithLabelValues(export, entity).Add(float64(batches))
}

// Retried counts an F&O call retried for export; reason is the client's small
// fixed set, e.g. "HTTP 429", "HTTP 503", "timeout", "connection reset".
func (m *Metrics) Retried(export, action, reason string) {
	if m != nil {
		m.retries.WithLabelValues(export, action, reason).Inc()
	}
}

func (m *Metrics) fired(export, status string) {
	if m != nil {
		m.fires.WithLabelValues(export, status).Inc()
	}
}

// succeeded moves an export's last success forward to t (never back).
func (m *Metrics) succeeded(export string, t time.Time) {
	if m == nil || t.IsZero() {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !t.After(m.successAt[export]) {
		return
	}
	m.successAt[export] = t
	m.lastSuccess.WithLabelValues(export).Set(float64(t.UnixNano()) / 1e9)
}

// scheduled records an export's schedule; 0 (a schedule with no gap to
// measure) removes the series.
func (m *Metrics) scheduled(export string, interval time.Duration) {
	if m == nil {
		return
	}
	if interval <= 0 {
		m.interval.DeleteLabelValues(export)
		return
	}
	m.interval.WithLabelValues(export).Set(interval.Seconds())
}

// unscheduled drops the series of an export taken out of the schedule.
func (m *Metrics) unscheduled(export string) {
	if m != nil {
		m.interval.DeleteLabelValues(export)
		m.unfinished.DeleteLabelValues(export)
		m.lost.DeleteLabelValues(export)
	}
}

// unfinishedRuns records how many runs of export wait to be resumed.
func (m *Metrics) unfinishedRuns(export string, n int) {
	if m != nil {
		m.unfinished.WithLabelValues(export).Set(float64(n))
	}
}

// scheduleInterval is the longest gap between the next few fires of
// schedule after now (weekday-only schedules have their weekend gap in
// it), or 0 if they cannot be computed.
func scheduleInterval(schedule string, now time.Time) time.Duration {
	const fires = 8
	var longest time.Duration
	prev, err := NextRun(schedule, now)
	if err != nil {
		return 0
	}
	for range fires {
		next, err := NextRun(schedule, prev)
		if err != nil {
			return 0
		}
		longest = max(longest, next.Sub(prev))
		prev = next
	}
	return longest
}

// seedFromRecords reads exp's run records in the store r keeps for it: its
// last success comes from its newest succeeded run, so a restarted service
// still knows when the export last succeeded; and the entity series of the
// newest run that lists entities are served at 0, so the first rows
// published after a restart are an increase.
func (m *Metrics) seedFromRecords(ctx context.Context, r *Runner, exp *Export) {
	if m == nil {
		return
	}
	l, _, err := r.openLedger(ctx, exp)
	if err != nil {
		return
	}
	listed, err := l.List(ctx)
	if err != nil {
		return
	}
	const looked = 10 // records read for entities, newest first; an unreadable one is skipped
	entitiesSeen, succeededSeen := false, false
	for i, ref := range listed {
		wantEntities := !entitiesSeen && i < looked
		wantSuccess := !succeededSeen && ref.State == runs.StateSucceeded
		if !wantEntities && !wantSuccess {
			if succeededSeen && (entitiesSeen || i >= looked) {
				return
			}
			continue
		}
		rec, err := l.Find(ctx, ref.RunID)
		if err != nil {
			continue
		}
		if wantEntities && len(rec.Entities) > 0 {
			entitiesSeen = true
			for _, e := range rec.Entities {
				m.rows.WithLabelValues(exp.Name, e.Entity)
				m.batches.WithLabelValues(exp.Name, e.Entity)
			}
		}
		if wantSuccess {
			succeededSeen = true
			m.succeeded(exp.Name, rec.FinishedAt)
		}
	}
}

// runDropped forgets a run stopped while queued: it never started.
func (m *Metrics) runDropped(export string) {
	if m != nil {
		m.inProgress.WithLabelValues(export).Dec()
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

// packageLost counts a run whose exported package F&O deleted before it
// was published.
func (m *Metrics) packageLost(export string) {
	if m != nil {
		m.lost.WithLabelValues(export).Inc()
	}
}
