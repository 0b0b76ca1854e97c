package sink

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dmfexport/dmfexport/internal/promcheck"
)

// servedMetrics records a value in every series of a sink process and of
// dmfexport reconcile's textfile, and returns what they serve.
func servedMetrics(t *testing.T) promcheck.Served {
	t.Helper()
	m := NewMetrics()
	m.started("s", nil)
	b := &Batch{Entity: "E", Rows: make([][]*string, 3), Time: time.Now()}
	m.batch("s", b, Applied, time.Millisecond)
	m.swapped("s", "E")
	m.deadLettered("s")
	m.queueDepth("s", 2)
	served := promcheck.Parse(promcheck.Scrape(t, m.Handler()))
	reg := prometheus.NewRegistry()
	diff := NewReconcileDifference()
	reg.MustRegister(diff)
	diff.WithLabelValues("s", "x", "E").Set(1)
	served.Add(promcheck.Scrape(t, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	return served
}

func TestGrafanaDashboard(t *testing.T) {
	d := promcheck.LoadDashboard(t, "../docs/grafana-dashboard.json")
	promcheck.CheckDashboard(t, d, servedMetrics(t), promcheck.SinkSeries)
}

func TestPrometheusAlerts(t *testing.T) {
	names := promcheck.CheckRules(t, promcheck.LoadRules(t, "../docs/prometheus-alerts.yml"), servedMetrics(t), promcheck.SinkSeries)
	for _, want := range []string{"DmfexportSinkDeadLetters", "DmfexportSinkStalled", "DmfexportSinkLagging", "DmfexportSinkReconcileDiffers"} {
		if !slices.Contains(names, want) {
			t.Errorf("alert %s missing; have %v", want, names)
		}
	}
}
