package jobs

import (
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"
)

// servedMetrics records a value in every series and returns the metric
// names /metrics serves (histograms with their _bucket, _sum and _count).
func servedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, l := range strings.Split(scrapeMetrics(t), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		names[regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`).FindString(l)] = true
	}
	return names
}

// servedLabels returns the label names the dmfexport series carry.
func servedLabels(t *testing.T) map[string]bool {
	t.Helper()
	labels := map[string]bool{}
	for _, l := range strings.Split(scrapeMetrics(t), "\n") {
		if !strings.HasPrefix(l, "dmfexport_") {
			continue
		}
		for _, m := range regexp.MustCompile(`[{,]([a-zA-Z_][a-zA-Z0-9_]*)="`).FindAllStringSubmatch(l, -1) {
			labels[m[1]] = true
		}
	}
	return labels
}

// scrapeMetrics records a value in every series and returns what
// /metrics serves.
func scrapeMetrics(t *testing.T) string {
	t.Helper()
	m := NewMetrics()
	rec := &RunRecord{Job: "j", State: StateSucceeded, FinishedAt: time.Now()}
	m.runStarted("j")
	m.runFinished(rec, map[string]time.Duration{"export": time.Second})
	m.published("j", "E", 10, 1)
	m.Retried("j", "ExportToPackage", "HTTP 429")
	m.fired("j", "success")
	m.scheduled("j", time.Hour)
	m.unfinishedRuns("j", 1)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// labelRefs finds the label names a PromQL expression, a Grafana legend or
// variable query, or an alert annotation uses: in by/without/on/ignoring
// lists, selectors, label_values, {{label}} and $labels.label.
var labelRefs = []*regexp.Regexp{
	regexp.MustCompile(`\b(?:by|without|on|ignoring)\s*\(([^)]*)\)`),
	regexp.MustCompile(`[{,]\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`),
	regexp.MustCompile(`label_values\([^,]*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\)`),
	regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`),
	regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`),
}

// unknownLabels returns the labels text uses that no dmfexport series
// carries (a histogram's le aside), so a renamed label cannot leave a
// panel or an alert silently empty.
func unknownLabels(text string, served map[string]bool) []string {
	var unknown []string
	for _, re := range labelRefs {
		for _, m := range re.FindAllStringSubmatch(text, -1) {
			for _, name := range strings.Split(m[1], ",") {
				name = strings.TrimSpace(name)
				if name != "" && name != "le" && !served[name] {
					unknown = append(unknown, name)
				}
			}
		}
	}
	return unknown
}

// checkLabels reports the labels text uses that dmfexport does not serve.
func checkLabels(t *testing.T, where, text string, served map[string]bool) {
	t.Helper()
	if unknown := unknownLabels(text, served); len(unknown) > 0 {
		t.Errorf("%s: labels %q are on no dmfexport series in %q", where, unknown, text)
	}
}

func TestLabelRefsFindLabels(t *testing.T) {
	served := map[string]bool{"export": true, "state": true}
	tests := []struct {
		name, text string
		bad        bool
	}{
		{"by list", `sum by (export, state) (x)`, false},
		{"by unknown", `sum by (job) (x)`, true},
		{"selector unknown", `x{job=~"$export"}`, true},
		{"legend unknown", `{{job}} {{state}}`, true},
		{"alert annotation unknown", `{{ $labels.job }}`, true},
		{"label_values unknown", `label_values(x, job)`, true},
		{"all known", `x{export=~"$export"} {{export}} {{ $labels.state }} label_values(x, export)`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unknown := unknownLabels(tt.text, served)
			if (len(unknown) > 0) != tt.bad {
				t.Errorf("unknownLabels(%q) = %q, want unknown labels: %v", tt.text, unknown, tt.bad)
			}
		})
	}
}

// metricRef finds metric names in PromQL: dmfexport's own and the process
// collector's.
var metricRef = regexp.MustCompile(`\b(dmfexport_[a-z_]+|process_[a-z_]+)\b`)

// checkExpr checks that expr is plausible PromQL over series /metrics
// serves: balanced brackets, at least one metric, and every metric served.
func checkExpr(t *testing.T, where, expr string, served map[string]bool) {
	t.Helper()
	for _, pair := range []string{"()", "{}", "[]"} {
		if strings.Count(expr, pair[:1]) != strings.Count(expr, pair[1:]) {
			t.Errorf("%s: unbalanced %s in %q", where, pair, expr)
		}
	}
	refs := metricRef.FindAllString(expr, -1)
	if len(refs) == 0 {
		t.Errorf("%s: no dmfexport metric in %q", where, expr)
	}
	for _, name := range refs {
		if !served[name] {
			t.Errorf("%s: metric %s is not served by /metrics", where, name)
		}
	}
}

func TestGrafanaDashboard(t *testing.T) {
	served, labels := servedMetrics(t), servedLabels(t)
	b, err := os.ReadFile("../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			ID      int    `json:"id"`
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr         string `json:"expr"`
				LegendFormat string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard lacks a title, uid or panels")
	}
	used := map[string]bool{}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if p.Title == "" || p.Type == "" || len(p.Targets) == 0 || ids[p.ID] {
			t.Errorf("panel %d %q: needs a unique id, a title, a type and a query", p.ID, p.Title)
		}
		ids[p.ID] = true
		for _, q := range p.Targets {
			checkExpr(t, "panel "+p.Title, q.Expr, served)
			checkLabels(t, "panel "+p.Title, q.Expr+" "+q.LegendFormat, labels)
			for _, m := range metricRef.FindAllString(q.Expr, -1) {
				used[m] = true
			}
		}
	}
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(string); ok && strings.Contains(q, "dmfexport_") {
			checkExpr(t, "variable "+v.Name, q, served)
			checkLabels(t, "variable "+v.Name, q, labels)
		}
	}
	// Every dmfexport series is on the dashboard.
	for name := range served {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if strings.HasPrefix(name, "dmfexport_") && !used[name] && !used[base] && !used[base+"_bucket"] {
			t.Errorf("metric %s is on no panel", name)
		}
	}
}

func TestPrometheusAlerts(t *testing.T) {
	served, labels := servedMetrics(t), servedLabels(t)
	b, err := os.ReadFile("../docs/prometheus-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Load(b, &rules, yaml.WithKnownFields()); err != nil {
		t.Fatalf("alert rules are not a Prometheus rule file: %v", err)
	}
	var names []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
			checkExpr(t, "alert "+r.Alert, r.Expr, served)
			checkLabels(t, "alert "+r.Alert, r.Expr, labels)
			for _, text := range r.Annotations {
				checkLabels(t, "alert "+r.Alert+" annotation", text, labels)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q is not a duration", r.Alert, r.For)
				}
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %s needs a severity label and a summary", r.Alert)
			}
		}
	}
	for _, want := range []string{"DmfexportRunFailed", "DmfexportExportLate", "DmfexportFOThrottled", "DmfexportResumeBacklog"} {
		if !slices.Contains(names, want) {
			t.Errorf("alert %s missing; have %v", want, names)
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
