package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
)

// duplicateKeys returns the keys that occur more than once at the top level
// of one JSON object (encoding/json would keep only the last).
func duplicateKeys(line []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	if _, err := dec.Token(); err != nil { // {
		return nil, err
	}
	seen := map[string]bool{}
	var dups []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k := tok.(string)
		if seen[k] {
			dups = append(dups, k)
		}
		seen[k] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
	}
	return dups, nil
}

func TestDuplicateKeys(t *testing.T) {
	tests := []struct {
		name, line string
		want       []string
	}{
		{"none", `{"a":1,"b":{"a":2}}`, nil},
		{"twice", `{"execution":"x","a":[1],"execution":"x"}`, []string{"execution"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := duplicateKeys([]byte(tt.line))
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("duplicateKeys(%s) = %v, %v; want %v", tt.line, got, err, tt.want)
			}
		})
	}
}

// startLogged starts dmfexport with its stdout and stderr kept, and calls
// ready with each stderr line until it returns true.
func startLogged(t *testing.T, env []string, ready func(line string) bool, args ...string) (*exec.Cmd, <-chan struct{}, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(&stderr, pw)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan struct{})
	go func() {
		buf := make([]byte, 0, 4096)
		b := make([]byte, 4096)
		signalled := false
		for {
			n, err := pr.Read(b)
			buf = append(buf, b[:n]...)
			for {
				i := bytes.IndexByte(buf, '\n')
				if i < 0 {
					break
				}
				if !signalled && ready(string(buf[:i])) {
					signalled = true
					close(found)
				}
				buf = buf[i+1:]
			}
			if err != nil {
				return
			}
		}
	}()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = pw.Close(); close(exited) }()
	select {
	case <-found:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("dmfexport %v: the awaited log line never came\nstderr:\n%s", args, stderr.String())
	}
	return cmd, exited, &stdout, &stderr
}

// waitExit waits for cmd (started by startLogged) to end.
func waitExit(t *testing.T, cmd *exec.Cmd, exited <-chan struct{}) {
	t.Helper()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("dmfexport did not exit within 30 s of the signal")
	}
}

// TestInterruptAndResumeLogs stops runs with Ctrl-C (trigger) and SIGTERM
// (the service) while they download: the interrupted run is logged at WARN
// saying it will resume, nothing at ERROR, and trigger's summary shows no
// negative duration. The resumed run's JSON lines carry each key once and
// give durations in seconds.
func TestInterruptAndResumeLogs(t *testing.T) {
	t.Parallel()
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"G": {slowEntity("A", 12000)}},
		ExecutionTime: 500 * time.Millisecond,
		Faults:        dmftest.Faults{DownloadRate: 50 << 10, DownloadFaultsFirst: 2},
	})
	defer sim.Close()
	env := []string{"DMFSIM_URL=" + sim.URL, "FO_TOKEN=" + dmftest.DefaultToken}
	tests := []struct {
		name string
		sig  syscall.Signal
		args []string
	}{
		{"trigger Ctrl-C", syscall.SIGINT, []string{"trigger", "--log-format", "json", "--log-level", "info", "stopme"}},
		{"service SIGTERM", syscall.SIGTERM, []string{"run", "--listen", "", "--log-format", "json"}},
	}
	dir := t.TempDir()
	// The service fires every second; the trigger runs at once.
	cfg := writeFile(t, dir, "dmfexport.yaml", `fo:
  url: ${DMFSIM_URL}
  auth: {method: token, token: "${FO_TOKEN}"}
store: {path: `+dir+`/store}
broker: {type: file, path: `+dir+`/batches}
poll: {interval: 50ms, max_interval: 100ms, deadline: 1m, package_url_timeout: 10s, register_timeout: 10s}
exports:
  - {name: stopme, schedule: "* * * * * *", definition_group: G, legal_entity: USMF, batch_size: 500}
`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{}, tt.args...), "--config", cfg)
			cmd, exited, stdout, stderr := startLogged(t, env, func(l string) bool { return strings.Contains(l, `"msg":"run downloading"`) }, args...)
			time.Sleep(300 * time.Millisecond) // the dmfexport process is mid-download when signalled
			if err := cmd.Process.Signal(tt.sig); err != nil {
				t.Fatal(err)
			}
			waitExit(t, cmd, exited)
			var warned bool
			for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
				if strings.Contains(l, `"level":"ERROR"`) {
					t.Errorf("a clean stop logged an error: %s", l)
				}
				if strings.Contains(l, `"level":"WARN"`) && strings.Contains(l, "will resume") {
					warned = true
				}
			}
			if !warned {
				t.Errorf("no WARN line says the interrupted run will resume:\n%s", stderr)
			}
			if tt.sig == syscall.SIGINT {
				if regexp.MustCompile(`\s-\d`).MatchString(stdout.String()) || !strings.Contains(stdout.String(), "unfinished, started") {
					t.Errorf("summary after Ctrl-C shows a negative duration or no 'unfinished':\n%s", stdout)
				}
			}
		})
	}

	// The resumed run.
	stdout, stderr, code := runBinary(t, env, "trigger", "--config", cfg, "--log-format", "json", "--log-level", "debug", "stopme")
	if code != 0 {
		t.Fatalf("resuming trigger: exit %d\n%s\n%s", code, stdout, stderr)
	}
	var finished int
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		if dups, err := duplicateKeys([]byte(l)); err != nil || len(dups) > 0 {
			t.Errorf("log line repeats keys %v (%v): %s", dups, err, l)
		}
		var m map[string]any
		_ = json.Unmarshal([]byte(l), &m)
		if m["msg"] == "run finished" {
			finished++
			if _, ok := m["duration_s"].(float64); !ok || m["duration"] != nil {
				t.Errorf("run finished line gives no duration_s in seconds: %s", l)
			}
		}
	}
	// The service took up the trigger's run at its start, so one run is
	// left, interrupted twice.
	if finished != 1 || !strings.Contains(stderr, `"msg":"resuming unfinished run"`) {
		t.Errorf("%d runs finished, want the interrupted one resumed:\n%s", finished, stderr)
	}
}

// TestPublishedCountsConfirmed publishes to an exchange no queue is bound
// to: RabbitMQ returns every batch (NO_ROUTE). Nothing may be reported as
// published, neither in the progress lines nor in the summary, which shows
// the run waiting for a queue.
func TestPublishedCountsConfirmed(t *testing.T) {
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"G": {killEntity("A", 3000)}},
		ExecutionTime: 200 * time.Millisecond,
	})
	defer sim.Close()
	name := fmt.Sprintf("dmfexport.test.noroute.%d", time.Now().UnixNano())
	ch := testenv.AMQPChannel(t)
	if err := ch.ExchangeDeclare(name, "topic", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ch.ExchangeDelete(name, false, false) }()
	dir := t.TempDir()
	cfg := writeFile(t, dir, "dmfexport.yaml", fmt.Sprintf(`fo:
  url: ${DMFSIM_URL}
  auth: {method: token, token: "${FO_TOKEN}"}
store: {path: ./store}
broker: {url: %s}
poll: {interval: 50ms, max_interval: 100ms, deadline: 1m, package_url_timeout: 10s, register_timeout: 10s}
exports:
  - {name: noroute, schedule: "@yearly", definition_group: G, legal_entity: USMF, exchange: %s, routing_key: nowhere, batch_size: 500}
`, testenv.AMQPURL(), name))
	stdout, stderr, code := runBinaryIn(t, dir, []string{"DMFSIM_URL=" + sim.URL, "FO_TOKEN=" + dmftest.DefaultToken}, "trigger", "--config", cfg, "noroute")
	if code != 75 {
		t.Fatalf("exit code %d, want 75 (every batch unroutable: the run waits for a queue and resumes)\n%s\n%s", code, stdout, stderr)
	}
	if strings.Contains(stdout, "rows published") {
		t.Errorf("unroutable batches reported as published:\n%s", stdout)
	}
	if !regexp.MustCompile(`(?m)^noroute\s+run \S+\s+waiting for a queue bound to the exchange\s+1 entities\s+0 rows`).MatchString(stdout) ||
		!regexp.MustCompile(`(?m)^  A\s+pending\s+0 rows\s+0 batches`).MatchString(stdout) {
		t.Errorf("summary does not show the run waiting for a queue, entity A pending with 0 rows:\n%s", stdout)
	}
}
