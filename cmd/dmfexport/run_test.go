package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
)

// logWatcher collects a process's JSON log lines and lets a test wait for
// one matching a predicate.
type logWatcher struct {
	mu    sync.Mutex
	lines []map[string]any
	raw   strings.Builder
	added chan struct{}
}

// startRun starts dmfexport run on the configuration cfgPath, in its
// folder, against the simulator at simURL, with its operations listener on
// a free port and JSON logs; it returns the process, killed when the test
// ends, and a watcher of its logs.
func startRun(t *testing.T, cfgPath, simURL string) (*exec.Cmd, *logWatcher) {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), binary, "run", "--config", cfgPath, "--listen", "127.0.0.1:0", "--log-format", "json", "--stop-timeout", "20s")
	cmd.Dir = filepath.Dir(cfgPath)
	cmd.Env = append(os.Environ(), "DMFSIM_URL="+simURL, "FO_TOKEN="+dmftest.DefaultToken)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, watchLog(stderr)
}

func watchLog(r io.Reader) *logWatcher {
	w := &logWatcher{added: make(chan struct{}, 1)}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			_ = json.Unmarshal(sc.Bytes(), &m)
			w.mu.Lock()
			w.lines = append(w.lines, m)
			w.raw.WriteString(sc.Text() + "\n")
			w.mu.Unlock()
			select {
			case w.added <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

// wait returns the first line for which match is true, failing the test
// after timeout.
func (w *logWatcher) wait(t *testing.T, what string, timeout time.Duration, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		for _, l := range w.lines {
			if l != nil && match(l) {
				w.mu.Unlock()
				return l
			}
		}
		w.mu.Unlock()
		select {
		case <-w.added:
		case <-deadline:
			w.mu.Lock()
			raw := w.raw.String()
			w.mu.Unlock()
			t.Fatalf("no log line %s within %s; log:\n%s", what, timeout, raw)
		}
	}
}

func msgIs(msg string) func(map[string]any) bool {
	return func(l map[string]any) bool { return l["msg"] == msg }
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRunServiceLifecycle runs the real binary as a service: a job fires
// every second, /healthz, /readyz and /metrics answer with the documented
// series, SIGHUP adds a job from the edited file, SIGTERM stops cleanly.
func TestRunServiceLifecycle(t *testing.T) {
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"G": {{Name: "Things", Data: []byte("ID,NAME\r\n1,a\r\n2,b\r\n")}}},
		ExecutionTime: 100 * time.Millisecond,
	})
	defer sim.Close()
	dir := t.TempDir()
	base := simConfig + `  - {name: every-second, schedule: "* * * * * *", definition_group: G, legal_entity: USMF}
`
	cfgPath := writeFile(t, dir, "dmfexport.yaml", base)
	cmd, logs := startRun(t, cfgPath, sim.URL)

	addr := logs.wait(t, "with the listener address", 20*time.Second, msgIs("operations listener"))["addr"].(string)
	logs.wait(t, "saying the scheduler runs", 10*time.Second, msgIs("scheduler running"))
	logs.wait(t, "of a finished scheduled run", 20*time.Second, msgIs("scheduled run done"))

	if code, body := httpGet(t, "http://"+addr+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, _ := httpGet(t, "http://"+addr+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d, want 200 while running", code)
	}
	// The status page shows the export and the run that succeeded.
	if code, body := httpGet(t, "http://"+addr+"/"); code != 200 || !strings.Contains(body, "every-second") || !strings.Contains(body, `class="badge succeeded"`) {
		t.Errorf("/ = %d, want the status page with every-second's run that succeeded:\n%s", code, body)
	}
	if code, _ := httpGet(t, "http://"+addr+"/nothing-here"); code != 404 {
		t.Errorf("/nothing-here = %d, want 404", code)
	}
	// gocron counts a fire only after the job function has returned, so
	// after the "scheduled run done" line: wait for every series.
	var metrics string
	var missing []string
	testenv.Await(10*time.Second, func() bool {
		_, metrics = httpGet(t, "http://"+addr+"/metrics")
		missing = missing[:0]
		for _, series := range []string{
			`dmfexport_runs_total{export="every-second",state="succeeded"}`,
			`dmfexport_rows_published_total{entity="Things",export="every-second"}`,
			`dmfexport_batches_published_total{entity="Things",export="every-second"}`,
			`dmfexport_step_duration_seconds_bucket{export="every-second",step="export"`,
			`dmfexport_last_success_timestamp_seconds{export="every-second"}`,
			`dmfexport_runs_in_progress{export="every-second"}`,
			`go_goroutines`,
		} {
			if !strings.Contains(metrics, series) {
				missing = append(missing, series)
			}
		}
		return len(missing) == 0
	})
	for _, series := range missing {
		t.Errorf("/metrics lacks %s", series)
	}
	// Served at 0 from the start: the fire must have counted by its outcome.
	if fired := regexp.MustCompile(`(?m)^dmfexport_scheduler_fires_total\{export="every-second",status="succeeded"\} [1-9]`); !fired.MatchString(metrics) {
		t.Errorf("/metrics lacks a succeeded fire of every-second:\n%s", grepLines(metrics, "dmfexport_scheduler_fires_total"))
	}
	if strings.Contains(metrics, dmftest.DefaultToken) || strings.Contains(metrics, "sig=") {
		t.Error("/metrics exposes a secret")
	}

	// Reload: add a disabled job and a new one; a broken file is refused.
	writeFile(t, dir, "dmfexport.yaml", base+"  - {name: shedule-typo, shedule: x}\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	logs.wait(t, "refusing a broken reload", 10*time.Second, msgIs("reload refused, keeping the running configuration"))
	writeFile(t, dir, "dmfexport.yaml", base+"  - {name: nightly, schedule: \"@daily\", definition_group: G, legal_entity: USMF}\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	l := logs.wait(t, "of a reload", 10*time.Second, msgIs("configuration reloaded"))
	if added, _ := l["added"].([]any); len(added) != 1 || added[0] != "nightly" {
		t.Errorf("reload added %v, want [nightly]", l["added"])
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		// A run going at the SIGTERM (one fires every second) is cut off
		// and resumes at the next start: 75, and the log says so.
		var ee *exec.ExitError
		switch {
		case err == nil:
			logs.wait(t, "saying the scheduler stopped", 5*time.Second, msgIs("scheduler stopped"))
		case errors.As(err, &ee) && ee.ExitCode() == 75:
			logs.wait(t, "saying runs are left to resume", 5*time.Second, msgIs("scheduler stopped; runs left to resume at the next start"))
		default:
			t.Errorf("run exited with %v after SIGTERM, want 0, or 75 with runs left to resume", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop within 30 s of SIGTERM")
	}
	if _, err := os.Stat(filepath.Join(dir, "batches")); err != nil {
		t.Errorf("no batches written by the scheduled runs: %v", err)
	}
}
