package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

// binary is the dmfexport program built once for the command tests: exit
// codes and output are only visible from a real process. The long tests,
// which mostly wait on such processes and on the simulator, run in
// parallel (t.Parallel): each has its own simulator, directory, queue,
// container and schema.
var binary string

// waitingParallel is how many parallel tests run at once unless -parallel
// says otherwise: they wait on processes rather than use the CPU, so more
// of them than GOMAXPROCS (go test's default) overlap their waits.
const waitingParallel = 4

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", strconv.Itoa(max(waitingParallel, runtime.GOMAXPROCS(0))))
	}
	dir, err := os.MkdirTemp("", "dmfexport-cmd-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "dmfexport")
	out, err := exec.CommandContext(context.Background(), "go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		_, _ = os.Stderr.Write(out)
		panic("build dmfexport: " + err.Error())
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// runBinary runs dmfexport with args and env, returning stdout, stderr and
// the exit code.
func runBinary(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// simConfig is the head of a configuration for the simulator at
// $DMFSIM_URL, a local store and NDJSON files: a test appends its exports.
const simConfig = `fo:
  url: ${DMFSIM_URL}
  auth: {method: token, token: "${FO_TOKEN}"}
store: {path: ./store}
broker: {type: file, path: ./batches}
poll: {interval: 50ms, max_interval: 100ms, deadline: 1m, package_url_timeout: 10s}
exports:
`

// fileSinkConfig is a valid configuration exporting the simulator's demo
// project to a local store and NDJSON files.
const fileSinkConfig = `fo:
  url: ${DMFSIM_URL}
  auth:
    method: token
    token: ${FO_TOKEN}
store:
  type: dir
  path: ./store
broker:
  type: file
  path: ./batches
poll:
  interval: 50ms
  max_interval: 200ms
  deadline: 1m
  package_url_timeout: 10s
exports:
  - name: demo
    schedule: "*/5 * * * *"
    definition_group: DemoExport
    legal_entity: USMF
    routing_key: fo.demo
    batch_size: 5000
  - name: missing-group
    schedule: "@daily"
    definition_group: NoSuchGroup
    legal_entity: USMF
`

func TestCommandExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", fileSinkConfig)
	bad := writeFile(t, dir, "bad.yaml", "fo:\n  url: https://x.example\nexports:\n  - name: a\n    shedule: '@daily'\n")
	env := []string{"DMFSIM_URL=http://127.0.0.1:1", "FO_TOKEN=t"}
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"no command", nil, 2, "Commands:", ""},
		{"help", []string{"--help"}, 0, "Commands:", ""},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"version", []string{"version"}, 0, "dmfexport ", ""},
		{"command help", []string{"trigger", "--help"}, 0, "Usage: dmfexport trigger", ""},
		{"validate good", []string{"validate", "--config", good}, 0, "valid, 2 exports", ""},
		{"validate bad", []string{"validate", "--config", bad}, 1, "", `bad.yaml:5:5`},
		{"validate bad suggests", []string{"validate", "--config", bad}, 1, "", `did you mean "schedule"`},
		{"config from env", []string{"validate"}, 0, "valid, 2 exports", ""},
		{"exports", []string{"exports", "--config", good}, 0, "EXPORT  ", ""},
		{"exports lists", []string{"exports", "--config", good}, 0, "missing-group", ""},
		{"jobs is exports", []string{"jobs", "--config", good}, 0, "EXPORT  ", ""},
		{"exports takes no arguments", []string{"exports", "--config", good, "demo"}, 2, "", "exports takes no arguments"},
		{"trigger usage says EXPORT", []string{"trigger", "--help"}, 0, "[--new] EXPORT [EXPORT...]", ""},
		{"help lists exports", []string{"--help"}, 0, "exports    list the exports", ""},
		{"trigger nothing", []string{"trigger", "--config", good}, 2, "", "name at least one export"},
		{"trigger unknown", []string{"trigger", "--config", good, "nope"}, 2, "", `no export named "nope"`},
		{"bad log level", []string{"trigger", "--config", good, "--log-level", "loud", "demo"}, 2, "", "--log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := env
			if tt.name == "config from env" {
				e = append(e, "DMFEXPORT_CONFIG="+good)
			}
			stdout, stderr, code := runBinary(t, e, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, stdout, stderr)
			}
			if !strings.Contains(stdout, tt.wantStdout) {
				t.Errorf("stdout does not contain %q:\n%s", tt.wantStdout, stdout)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantStderr, stderr)
			}
		})
	}
}

// TestTriggerFileSink runs the real binary against the simulator: a good
// export succeeds and writes every demo row as NDJSON batches; an export of
// an unknown definition group fails with exit code 1 and names it, without
// harming the other.
func TestTriggerFileSink(t *testing.T) {
	t.Parallel()
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{dmftest.DemoDefinitionGroup: dmftest.DemoProject()},
		ExecutionTime: 100 * time.Millisecond,
	})
	defer sim.Close()
	dir := t.TempDir()
	cfg := writeFile(t, dir, "dmfexport.yaml", fileSinkConfig)
	env := []string{"DMFSIM_URL=" + sim.URL, "FO_TOKEN=" + dmftest.DefaultToken}

	stdout, stderr, code := runBinary(t, env, "trigger", "--config", cfg, "demo")
	if code != 0 {
		t.Fatalf("trigger demo: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "succeeded") {
		t.Errorf("summary does not say succeeded:\n%s", stdout)
	}
	if strings.Contains(stdout+stderr, dmftest.DefaultToken) || strings.Contains(stdout+stderr, "sig=") && !strings.Contains(stdout+stderr, "REDACTED") {
		t.Errorf("output leaks a secret:\n%s\n%s", stdout, stderr)
	}

	wantRows := dmftest.DemoRowCounts()
	f, err := os.Open(filepath.Join(dir, "batches", "fo.demo.ndjson"))
	if err != nil {
		t.Fatalf("file sink output: %v", err)
	}
	defer func() { _ = f.Close() }()
	got := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var m struct {
			Data struct {
				Entity string            `json:"entity"`
				Rows   []json.RawMessage `json:"rows"`
			} `json:"data"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("NDJSON line is not JSON: %v", err)
		}
		got[m.Data.Entity] += len(m.Data.Rows)
	}
	if sc.Err() != nil {
		t.Fatal(sc.Err())
	}
	for name, n := range wantRows {
		if got[name] != n {
			t.Errorf("entity %s: %d rows in NDJSON, want %d", name, got[name], n)
		}
	}

	stdout, stderr, code = runBinary(t, env, "trigger", "--config", cfg, "missing-group", "demo")
	if code != 1 {
		t.Fatalf("trigger with a failing export: exit %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if !strings.Contains(stdout+stderr, "NoSuchGroup") {
		t.Errorf("failure does not name the definition group:\n%s\n%s", stdout, stderr)
	}
	if !strings.Contains(stdout, "demo") || strings.Count(stdout, "succeeded") < 1 {
		t.Errorf("the good export did not succeed beside the failing one:\n%s", stdout)
	}

	// status shows the three runs from the records; --json gives the records.
	stdout, stderr, code = runBinary(t, env, "status", "--config", cfg)
	if code != 0 || strings.Count(stdout, "succeeded") != 2 || !strings.Contains(stdout, "missing-group") || !strings.Contains(stdout, "failed") {
		t.Errorf("status: exit %d, want 2 succeeded demo runs and a failed missing-group run:\n%s\n%s", code, stdout, stderr)
	}
	stdout, _, code = runBinary(t, env, "status", "--config", cfg, "--json", "demo")
	var recs []struct {
		Job      string `json:"export"`
		State    string `json:"state"`
		Entities []struct {
			Rows int64 `json:"rows"`
		} `json:"entities"`
	}
	if err := json.Unmarshal([]byte(stdout), &recs); err != nil || code != 0 {
		t.Fatalf("status --json: exit %d, %v:\n%s", code, err, stdout)
	}
	if len(recs) != 2 || recs[0].Job != "demo" || recs[0].State != "succeeded" || len(recs[0].Entities) != len(dmftest.DemoProject()) {
		t.Errorf("status --json demo = %+v, want 2 succeeded demo runs with %d entities", recs, len(dmftest.DemoProject()))
	}
}
