package promcheck

import (
	"strings"
	"testing"
)

func TestUnknownLabels(t *testing.T) {
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
		{"a target's instance", `sum by (instance) (x) {{ $labels.instance }}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unknown := UnknownLabels(tt.text, served)
			if (len(unknown) > 0) != tt.bad {
				t.Errorf("UnknownLabels(%q) = %q, want unknown labels: %v", tt.text, unknown, tt.bad)
			}
		})
	}
}

func TestOwned(t *testing.T) {
	sink := func(m string) bool { return len(m) > 15 && m[:15] == "dmfexport_sink_" }
	tests := []struct {
		expr string
		want bool
	}{
		{`rate(dmfexport_sink_batches_total[5m])`, true},
		{`rate(dmfexport_runs_total[5m])`, false},
		{`dmfexport_runs_total and dmfexport_sink_lag_seconds`, true},
		{`dmfexport_runs_total and ignoring (export) process_start_time_seconds`, false},
	}
	for _, tt := range tests {
		if got := owned(tt.expr, sink); got != tt.want {
			t.Errorf("owned(%q) = %v, want %v", tt.expr, got, tt.want)
		}
	}
}

func TestReferenced(t *testing.T) {
	rules := []Rule{{Expr: `increase(dmfexport_runs_total[15m]) > 0 and ignoring (export) time() - process_start_time_seconds < 900`}}
	var d Dashboard
	d.Panels = []Panel{{Targets: []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	}{{Expr: `rate(dmfexport_sink_batches_total[5m])`}, {Expr: `histogram_quantile(0.9, rate(dmfexport_step_duration_seconds_bucket[1h]))`}}}}
	d.Templating.List = append(d.Templating.List, struct {
		Name  string `json:"name"`
		Query any    `json:"query"`
	}{Name: "export", Query: `label_values(dmfexport_schedule_interval_seconds, export)`})
	exporter := func(m string) bool { return len(m) < 15 || m[:15] != "dmfexport_sink_" }
	want := "dmfexport_runs_total dmfexport_schedule_interval_seconds dmfexport_step_duration_seconds_bucket process_start_time_seconds"
	if got := strings.Join(Referenced(rules, d, exporter), " "); got != want {
		t.Errorf("Referenced = %s, want %s", got, want)
	}
}
