// Package promcheck checks the Grafana dashboard and the Prometheus alert
// rules under docs/ against the series a /metrics endpoint serves, so a
// renamed metric or label cannot leave a panel or an alert silently empty.
// The exporter's series (jobs) and the sink's (sink) are served by
// different processes; each package's tests check the queries over its own
// series, chosen by an Owns function.
package promcheck

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"
)

// Served is what a /metrics endpoint serves: every metric name (histograms
// with their _bucket, _sum and _count) and the label names of its
// dmfexport series.
type Served struct {
	Names, Labels map[string]bool
}

var (
	sampleName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)
	labelName  = regexp.MustCompile(`[{,]([a-zA-Z_][a-zA-Z0-9_]*)="`)
)

// Parse reads the Prometheus text format.
func Parse(exposition string) Served {
	s := Served{Names: map[string]bool{}, Labels: map[string]bool{}}
	s.Add(exposition)
	return s
}

// Add adds the series of another exposition.
func (s Served) Add(exposition string) {
	for _, l := range strings.Split(exposition, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		s.Names[sampleName.FindString(l)] = true
		if strings.HasPrefix(l, "dmfexport_") {
			for _, m := range labelName.FindAllStringSubmatch(l, -1) {
				s.Labels[m[1]] = true
			}
		}
	}
}

// Scrape returns what h serves in the Prometheus text format.
func Scrape(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
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

// targetLabels are on series without being served: le of a histogram's
// buckets, and the instance label Prometheus gives each scraped series.
// Not job: dmfexport's own label for an export was once called job, and a
// rule or panel grouping by job is far likelier that mistake.
var targetLabels = map[string]bool{"le": true, "instance": true}

// UnknownLabels returns the labels text uses that are not in labels (the
// targetLabels aside).
func UnknownLabels(text string, labels map[string]bool) []string {
	var unknown []string
	for _, re := range labelRefs {
		for _, m := range re.FindAllStringSubmatch(text, -1) {
			for _, name := range strings.Split(m[1], ",") {
				name = strings.TrimSpace(name)
				if name != "" && !targetLabels[name] && !labels[name] {
					unknown = append(unknown, name)
				}
			}
		}
	}
	return unknown
}

// MetricRef finds metric names in PromQL: dmfexport's own and the process
// collector's.
var MetricRef = regexp.MustCompile(`\b(dmfexport_[a-z_]+|process_[a-z_]+)\b`)

// Owns tells whether a metric is served by the endpoint under test.
type Owns func(metric string) bool

// ExporterSeries owns the series dmfexport run serves: all but the sink's
// (and the process collector's, which both serve).
func ExporterSeries(metric string) bool { return !SinkSeries(metric) }

// SinkSeries owns the series dmfexport sink serves.
func SinkSeries(metric string) bool { return strings.HasPrefix(metric, "dmfexport_sink_") }

// owned reports whether expr uses a dmfexport metric owns claims (the
// process collector's series are served by every process, so they do not
// tell which endpoint an expression is about).
func owned(expr string, owns Owns) bool {
	for _, m := range MetricRef.FindAllString(expr, -1) {
		if strings.HasPrefix(m, "dmfexport_") && owns(m) {
			return true
		}
	}
	return false
}

// checkExpr checks that expr is plausible PromQL over series s serves:
// balanced brackets, at least one metric, every metric served; and that
// text (the expression with its legend or annotations) names only served
// labels.
func checkExpr(t testing.TB, where, expr, text string, s Served) {
	t.Helper()
	for _, pair := range []string{"()", "{}", "[]"} {
		if strings.Count(expr, pair[:1]) != strings.Count(expr, pair[1:]) {
			t.Errorf("%s: unbalanced %s in %q", where, pair, expr)
		}
	}
	refs := MetricRef.FindAllString(expr, -1)
	if len(refs) == 0 {
		t.Errorf("%s: no dmfexport metric in %q", where, expr)
	}
	for _, name := range refs {
		if !s.Names[name] {
			t.Errorf("%s: metric %s is not served by /metrics", where, name)
		}
	}
	if unknown := UnknownLabels(text, s.Labels); len(unknown) > 0 {
		t.Errorf("%s: labels %q are on no dmfexport series in %q", where, unknown, text)
	}
}

// Dashboard is what the checks read of a Grafana dashboard.
type Dashboard struct {
	Title  string  `json:"title"`
	UID    string  `json:"uid"`
	Panels []Panel `json:"panels"`
	// Templating holds the variables.
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// Panel is one panel; a "row" panel only groups the panels below it.
type Panel struct {
	ID      int    `json:"id"`
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
}

// LoadDashboard reads a dashboard, failing the test if it is not JSON or
// lacks a title, a uid or panels.
func LoadDashboard(t testing.TB, path string) Dashboard {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard %s is not JSON: %v", path, err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard %s lacks a title, uid or panels", path)
	}
	return d
}

// CheckDashboard checks every panel's shape (a unique id, a title, a type
// and, but for a row, a query), the queries and variables over the
// metrics owns claims against s, and that each dmfexport series s serves
// and owns claims is on a panel.
func CheckDashboard(t testing.TB, d Dashboard, s Served, owns Owns) {
	t.Helper()
	used := map[string]bool{}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if p.Title == "" || p.Type == "" || (len(p.Targets) == 0) != (p.Type == "row") || ids[p.ID] {
			t.Errorf("panel %d %q: needs a unique id, a title, a type and a query (a row: none)", p.ID, p.Title)
		}
		ids[p.ID] = true
		for _, q := range p.Targets {
			if !owned(q.Expr, owns) && MetricRef.MatchString(q.Expr) {
				continue // another endpoint's series
			}
			checkExpr(t, "panel "+p.Title, q.Expr, q.Expr+" "+q.LegendFormat, s)
			for _, m := range MetricRef.FindAllString(q.Expr, -1) {
				used[m] = true
			}
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(string); ok && strings.Contains(q, "dmfexport_") && owned(q, owns) {
			checkExpr(t, "variable "+v.Name, q, q, s)
		}
	}
	for name := range s.Names {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if strings.HasPrefix(name, "dmfexport_") && owns(name) && !used[name] && !used[base] && !used[base+"_bucket"] {
			t.Errorf("metric %s is on no panel", name)
		}
	}
}

// Rule is one alerting rule.
type Rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// LoadRules reads a Prometheus rule file's alerting rules, failing the
// test on a key a rule file does not have.
func LoadRules(t testing.TB, path string) []Rule {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []Rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Load(b, &file, yaml.WithKnownFields()); err != nil {
		t.Fatalf("%s is not a Prometheus rule file: %v", path, err)
	}
	var rules []Rule
	for _, g := range file.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// CheckRules checks the rules over the metrics owns claims against s, and
// that each has a severity, a summary and a "for" that is a duration. It
// returns the names of the rules it checked.
func CheckRules(t testing.TB, rules []Rule, s Served, owns Owns) []string {
	t.Helper()
	var names []string
	for _, r := range rules {
		if !owned(r.Expr, owns) && MetricRef.MatchString(r.Expr) {
			continue
		}
		names = append(names, r.Alert)
		text := r.Expr
		for _, a := range r.Annotations {
			text += " " + a
		}
		checkExpr(t, "alert "+r.Alert, r.Expr, text, s)
		if r.For != "" {
			if _, err := time.ParseDuration(r.For); err != nil {
				t.Errorf("alert %s: for %q is not a duration", r.Alert, r.For)
			}
		}
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
			t.Errorf("alert %s needs a severity label and a summary", r.Alert)
		}
	}
	return names
}

// RequirePromtool is the environment variable that makes a missing
// promtool fail the test instead of skipping it (.ci/test.sh sets it after
// installing promtool, so make test never passes without the rules' own
// unit tests).
const RequirePromtool = "DMFEXPORT_REQUIRE_PROMTOOL"

// Promtool runs promtool with args in dir and returns its output. Without
// promtool (Debian/Ubuntu: apt-get install prometheus) the test is skipped,
// or fails when RequirePromtool is set to 1.
func Promtool(t testing.TB, dir string, args ...string) (string, error) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		const missing = "promtool not installed (apt-get install prometheus): rule files not checked by Prometheus itself"
		if os.Getenv(RequirePromtool) == "1" {
			t.Fatalf("%s, and %s=1 requires it", missing, RequirePromtool)
		}
		t.Skip(missing)
	}
	cmd := exec.CommandContext(context.Background(), path, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Referenced returns, sorted, the metrics owns claims that the rules'
// expressions and the dashboard's queries and variables name.
func Referenced(rules []Rule, d Dashboard, owns Owns) []string {
	var exprs []string
	for _, r := range rules {
		exprs = append(exprs, r.Expr)
	}
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(string); ok {
			exprs = append(exprs, q)
		}
	}
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, m := range MetricRef.FindAllString(e, -1) {
			if owns(m) {
				seen[m] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}
