package jobs

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/internal/promcheck"
	"github.com/dmfexport/dmfexport/runs"
)

// servedMetrics records a value in every series and returns what /metrics
// serves.
func servedMetrics(t *testing.T) promcheck.Served {
	t.Helper()
	m := NewMetrics()
	m.ServeBuildInfo("test")
	m.configured(&Export{Name: "j"})
	m.pace("https://fo.example.com", 600)
	rec := &runs.Record{Job: "j", State: runs.StateSucceeded, FinishedAt: time.Now()}
	m.runStarted("j")
	m.runFinished(rec, map[string]time.Duration{"export": time.Second})
	m.published("j", "E", 10, 1)
	m.Retried("j", "ExportToPackage", "HTTP 429")
	m.fired("j", "success")
	m.scheduled("j", time.Hour)
	m.unfinishedRuns("j", 1)
	return promcheck.Parse(promcheck.Scrape(t, m.Handler()))
}

func TestGrafanaDashboard(t *testing.T) {
	d := promcheck.LoadDashboard(t, "../docs/grafana-dashboard.json")
	promcheck.CheckDashboard(t, d, servedMetrics(t), promcheck.ExporterSeries)
}

func TestPrometheusAlerts(t *testing.T) {
	names := promcheck.CheckRules(t, promcheck.LoadRules(t, "../docs/prometheus-alerts.yml"), servedMetrics(t), promcheck.ExporterSeries)
	for _, want := range []string{"DmfexportRunFailed", "DmfexportExportLate", "DmfexportFOThrottled", "DmfexportResumeBacklog", "DmfexportPackageLost"} {
		if !slices.Contains(names, want) {
			t.Errorf("alert %s missing; have %v", want, names)
		}
	}
}

// TestPrometheusAlertsPromtool has Prometheus's own promtool check the rule
// file and run its unit tests (docs/prometheus-alerts.test.yml), which feed
// each alert series and say when it must fire and with which labels.
func TestPrometheusAlertsPromtool(t *testing.T) {
	for _, args := range [][]string{{"check", "rules", "prometheus-alerts.yml"}, {"test", "rules", "prometheus-alerts.test.yml"}} {
		if out, err := promcheck.Promtool(t, "../docs", args...); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestScheduleInterval checks the interval the late-export alert doubles.
func TestScheduleInterval(t *testing.T) {
	mon := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC) // a Monday
	tests := []struct {
		schedule string
		want     time.Duration
	}{
		{"*/15 * * * *", 15 * time.Minute},
		{"@daily", 24 * time.Hour},
		{"0 9 * * 1-5", 72 * time.Hour}, // Friday to Monday
		{"*/10 * * * * *", 10 * time.Second},
		{"0 0 30 2 *", 0}, // never fires
	}
	for _, tt := range tests {
		t.Run(tt.schedule, func(t *testing.T) {
			if got := scheduleInterval(tt.schedule, mon); got != tt.want {
				t.Errorf("scheduleInterval(%q) = %s, want %s", tt.schedule, got, tt.want)
			}
		})
	}
}
