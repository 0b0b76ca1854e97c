package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/promcheck"
)

// TestMetricsServedAtStart restarts the exporter after a run of a previous
// process and reads /metrics before any run of its own: every series the
// alert rules and the dashboard name is there, the counters at 0, so the
// first failure after a restart is an increase a rule sees.
func TestMetricsServedAtStart(t *testing.T) {
	sim := dmftest.NewServer(dmftest.Options{
		Projects: map[string][]dmftest.Entity{"G": {
			{Name: "Things", Data: []byte("ID,NAME\r\n1,a\r\n2,b\r\n")},
			{Name: "Others", Data: []byte("ID\r\n1\r\n")},
		}},
		ExecutionTime: 50 * time.Millisecond,
	})
	defer sim.Close()
	dir := t.TempDir()
	cfgPath := writeFile(t, dir, "dmfexport.yaml", simConfig+`  - {name: yearly, schedule: "0 3 1 1 *", definition_group: G, legal_entity: USMF}
  - {name: spare, schedule: "@daily", definition_group: G, legal_entity: USMF, enabled: false}
`)
	env := []string{"DMFSIM_URL=" + sim.URL, "FO_TOKEN=" + dmftest.DefaultToken}
	if stdout, stderr, code := runBinary(t, env, "trigger", "--config", cfgPath, "yearly"); code != 0 {
		t.Fatalf("trigger yearly: exit %d\n%s\n%s", code, stdout, stderr)
	}

	cmd, logs := startRun(t, cfgPath, sim.URL)
	addr := logs.wait(t, "with the listener address", 20*time.Second, msgIs("operations listener"))["addr"].(string)
	logs.wait(t, "saying the scheduler runs", 10*time.Second, msgIs("scheduler running"))

	want := promcheck.Referenced(promcheck.LoadRules(t, "../../docs/prometheus-alerts.yml"),
		promcheck.LoadDashboard(t, "../../docs/grafana-dashboard.json"), promcheck.ExporterSeries)
	if len(want) < 10 {
		t.Fatalf("the rules and the dashboard name only %v: are they read whole?", want)
	}
	// What the records tell (last success, the entities of the last run)
	// is read in the background at start: wait for it.
	var metrics string
	var missing []string
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, metrics = httpGet(t, "http://"+addr+"/metrics")
		served := promcheck.Parse(metrics)
		missing = missing[:0]
		for _, name := range want {
			if !served.Names[name] {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the process reads the store
	}
	for _, name := range missing {
		t.Errorf("/metrics at start lacks %s, named by the alert rules or the dashboard", name)
	}

	for _, line := range []string{
		`dmfexport_runs_total{export="yearly",state="failed"} 0`,
		`dmfexport_runs_total{export="yearly",state="partially_succeeded"} 0`,
		`dmfexport_runs_total{export="spare",state="failed"} 0`,
		`dmfexport_packages_lost_total{export="yearly"} 0`,
		`dmfexport_scheduler_fires_total{export="yearly",status="failed"} 0`,
		`dmfexport_fo_retries_total{action="ExportToPackage",export="yearly",reason="HTTP 429"} 0`,
		`dmfexport_rows_published_total{entity="Things",export="yearly"} 0`,
		`dmfexport_rows_published_total{entity="Others",export="yearly"} 0`,
		`dmfexport_fo_queue_length{environment="` + strings.ToLower(sim.URL) + `"} 0`,
		`dmfexport_fo_queue_wait_seconds_count{environment="` + strings.ToLower(sim.URL) + `"} 0`,
		`dmfexport_build_info{goversion="go`,
	} {
		if !strings.Contains(metrics, line) {
			t.Errorf("/metrics at start lacks %s", line)
		}
	}
	if !strings.Contains(metrics, `dmfexport_last_success_timestamp_seconds{export="yearly"}`) {
		t.Error("/metrics at start lacks the last success the store records")
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	logs.wait(t, "saying the scheduler stopped", 20*time.Second, msgIs("scheduler stopped"))
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
