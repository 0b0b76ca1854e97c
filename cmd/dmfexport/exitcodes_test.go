package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
)

// exitConfig is a configuration of one export "x" of definition group G;
// broker is its broker: section, poll its poll: section.
func exitConfig(broker, poll string) string {
	return fmt.Sprintf(`fo:
  url: ${DMFSIM_URL}
  auth: {method: token, token: "${FO_TOKEN}"}
store: {path: ./store}
broker: %s
poll: %s
exports:
  - {name: x, schedule: "@yearly", definition_group: G, legal_entity: USMF, exchange: amq.topic, routing_key: %s}
`, broker, poll, "dmfexport.exitcodes.unbound."+fmt.Sprint(time.Now().UnixNano()))
}

const (
	fastPoll   = "{interval: 50ms, max_interval: 100ms, deadline: 1m, package_url_timeout: 10s}"
	fileBroker = "{type: file, path: ./batches}"
)

// startBinary starts dmfexport with args in dir; its stdout and stderr
// fill the buffers returned. wait gives the exit code.
func startBinary(t *testing.T, dir string, env []string, args ...string) (cmd *exec.Cmd, stdout, stderr *testenv.SyncBuffer, wait func() int) {
	t.Helper()
	cmd = exec.CommandContext(context.Background(), binary, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	stdout, stderr = &testenv.SyncBuffer{}, &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, stdout, stderr, func() int {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode()
			} else if err != nil {
				t.Fatalf("wait: %v", err)
			}
			return 0
		case <-time.After(60 * time.Second):
			t.Fatalf("dmfexport %v did not end within 60 s\nstdout: %s\nstderr: %s", args, stdout, stderr)
			return -1
		}
	}
}

// untilExporting waits until F&O was asked for the status of an execution
// of sim, so a stop comes while the run exports.
func untilExporting(t *testing.T, sim *dmftest.Server, stderr *testenv.SyncBuffer) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); sim.Calls("GetExecutionSummaryStatus") == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no status asked of F&O within 30 s; stderr:\n%s", stderr)
		}
		time.Sleep(20 * time.Millisecond) // the child process must act
	}
}

// TestExitCodes runs the built binary into each exit code of the table in
// docs (0 succeeded, 1 failed, 2 usage, 75 stopped or waiting: the next
// start resumes) and checks that the closing line says which, with the
// cause, and never "failed" nor "context canceled" for a run that resumes.
func TestExitCodes(t *testing.T) {
	amqp := `{type: amqp, url: "` + testenv.AMQPURL() + `"}`
	tests := []struct {
		name     string
		opts     dmftest.Options
		broker   string
		poll     string
		args     []string
		signal   os.Signal // sent while the run exports
		wantCode int
		// wantClosing are substrings of the last line of stderr.
		wantClosing []string
		// wantStderr are substrings of stderr as a whole.
		wantStderr []string
	}{
		{name: "succeeded", broker: fileBroker, poll: fastPoll, args: []string{"trigger", "x"}, wantCode: 0},
		{name: "failed", opts: dmftest.Options{FinalStatus: map[string]string{"G": "Failed"}, EmptyErrorsEvery: -1}, broker: fileBroker, poll: fastPoll,
			args: []string{"trigger", "x"}, wantCode: 1,
			wantClosing: []string{"dmfexport trigger: failed: x (F&O execution ended Failed with", "simulated failure"},
			wantStderr:  []string{"level=ERROR", "run=", "execution=G-"}},
		{name: "usage", broker: fileBroker, poll: fastPoll, args: []string{"trigger", "nope"}, wantCode: 2,
			wantClosing: []string{`no export named "nope"`}},
		{name: "partially succeeded names partial: publish", opts: dmftest.Options{FinalStatus: map[string]string{"G": "PartiallySucceeded"}}, broker: fileBroker, poll: fastPoll,
			args: []string{"trigger", "x"}, wantCode: 1,
			wantClosing: []string{"failed: x (partial is fail (set partial: publish to publish what F&O did export): F&O execution ended PartiallySucceeded"}},
		{name: "broker down", broker: `{type: amqp, url: "amqp://guest:guest@127.0.0.1:1/", reconnect_timeout: 1s}`, poll: fastPoll,
			args: []string{"trigger", "x"}, wantCode: 75,
			wantClosing: []string{"dmfexport trigger: will resume: x (waiting for broker: dial tcp 127.0.0.1:1"}},
		{name: "no bound queue", broker: amqp, poll: fastPoll, args: []string{"trigger", "x"}, wantCode: 75,
			wantClosing: []string{"dmfexport trigger: will resume: x (waiting for a queue bound to the exchange: 312 NO_ROUTE"}},
		{name: "past poll.deadline", opts: dmftest.Options{ExecutionTime: time.Minute}, broker: fileBroker,
			poll: "{interval: 50ms, max_interval: 100ms, deadline: 400ms, package_url_timeout: 10s}", args: []string{"trigger", "x"}, wantCode: 75,
			wantClosing: []string{"dmfexport trigger: will resume: x (waiting for F&O to end the execution"}},
		{name: "trigger stopped by SIGTERM", opts: dmftest.Options{ExecutionTime: time.Minute}, broker: fileBroker, poll: fastPoll,
			args: []string{"trigger", "x"}, signal: syscall.SIGTERM, wantCode: 75,
			wantClosing: []string{"dmfexport trigger: will resume: x (stopped while exporting; the next dmfexport run or trigger resumes it"}},
		{name: "trigger stopped by Ctrl-C", opts: dmftest.Options{ExecutionTime: time.Minute}, broker: fileBroker, poll: fastPoll,
			args: []string{"trigger", "x"}, signal: os.Interrupt, wantCode: 75,
			wantClosing: []string{"dmfexport trigger: will resume: x (stopped while exporting"}},
		{name: "run stopped mid-run", opts: dmftest.Options{ExecutionTime: time.Minute}, broker: fileBroker, poll: fastPoll,
			args: []string{"run", "--listen", "", "--stop-timeout", "20s"}, signal: syscall.SIGTERM, wantCode: 75,
			wantClosing: []string{"dmfexport run: stopped: 1 run(s) interrupted or waiting; the next start resumes them"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			o.Projects = map[string][]dmftest.Entity{"G": {{Name: "Things", Data: []byte("ID,NAME\r\n1,a\r\n2,b\r\n")}}}
			o.ExecutionTime = max(o.ExecutionTime, 100*time.Millisecond)
			sim := dmftest.NewServer(o)
			defer sim.Close()
			dir := t.TempDir()
			cfg := exitConfig(tt.broker, tt.poll)
			if tt.args[0] == "run" {
				// A fire every second: the first comes at once.
				cfg = strings.Replace(cfg, `"@yearly"`, `"* * * * * *"`, 1)
			}
			writeFile(t, dir, "dmfexport.yaml", cfg)
			env := []string{"DMFSIM_URL=" + sim.URL, "FO_TOKEN=" + dmftest.DefaultToken, "DMFEXPORT_CONFIG="}
			cmd, stdout, stderr, wait := startBinary(t, dir, env, tt.args...)
			if tt.signal != nil {
				untilExporting(t, sim, stderr)
				if err := cmd.Process.Signal(tt.signal); err != nil {
					t.Fatal(err)
				}
			}
			code := wait()
			out, errOut := stdout.String(), stderr.String()
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errOut)
			}
			lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n")
			closingLine := lines[len(lines)-1]
			for _, w := range tt.wantClosing {
				if !strings.Contains(closingLine, w) {
					t.Errorf("closing line %q does not contain %q", closingLine, w)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, errOut)
				}
			}
			if tt.wantCode == 75 {
				if strings.Contains(closingLine, "failed") {
					t.Errorf("a run that resumes: closing line %q says failed", closingLine)
				}
				for _, bad := range []string{"context canceled", "level=ERROR"} {
					if strings.Contains(out+errOut, bad) {
						t.Errorf("a run that resumes: output says %q\nstdout: %s\nstderr: %s", bad, out, errOut)
					}
				}
			}
			if tt.wantCode == 0 && (errOut != "" || !strings.Contains(out, "succeeded")) {
				t.Errorf("a run that succeeded: want a summary saying so and nothing on stderr\nstdout: %s\nstderr: %s", out, errOut)
			}
		})
	}
}

// TestRunLogsFailedRunOnce runs the scheduler on an export F&O fails: each
// failed run gets one ERROR line, carrying its run and execution keys.
func TestRunLogsFailedRunOnce(t *testing.T) {
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"G": {{Name: "Things", Data: []byte("ID\r\n1\r\n")}}},
		FinalStatus:   map[string]string{"G": "Failed"},
		ExecutionTime: 100 * time.Millisecond,
	})
	defer sim.Close()
	dir := t.TempDir()
	cfg := writeFile(t, dir, "dmfexport.yaml", strings.Replace(exitConfig(fileBroker, fastPoll), `"@yearly"`, `"* * * * * *"`, 1))
	_, logs := startRun(t, cfg, sim.URL)
	first := logs.wait(t, "at ERROR for a failed run", 30*time.Second, func(l map[string]any) bool { return l["level"] == "ERROR" })
	run, _ := first["run"].(string)
	if run == "" || first["execution"] == nil || first["export"] != "x" || first["state"] != "failed" {
		t.Fatalf("ERROR line of a failed run %v: want its export, run, execution and state keys", first)
	}
	// The fire ends (and the scheduler logs it) before the next run
	// starts: by then every line about the failed run is written.
	logs.wait(t, "of the next run", 10*time.Second, func(l map[string]any) bool { return l["msg"] == "run exporting" && l["run"] != run })
	n := 0
	logs.mu.Lock()
	for _, l := range logs.lines {
		if l != nil && l["level"] == "ERROR" && l["run"] == run {
			n++
		}
	}
	logs.mu.Unlock()
	if n != 1 {
		t.Errorf("%d ERROR lines for failed run %s, want 1", n, run)
	}
}
