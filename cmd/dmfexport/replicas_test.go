package main

import (
	"context"
	"errors"
	"github.com/dmfexport/dmfexport/internal/testenv"
	"slices"

	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

// replicaConfig is a configuration whose store is a fresh Azurite container
// shared by every replica; each replica writes batches to its own directory.
func replicaConfig(t *testing.T, dir, schedule string) string {
	return writeFile(t, dir, "dmfexport.yaml", fmt.Sprintf(`fo:
  url: ${DMFSIM_URL}
  auth: {method: token, token: "${FO_TOKEN}"}
store:
  type: azblob
  connection_string: ${AZ_CONN}
  container: replicas-%d
broker: {type: file, path: "${REPLICA_DIR}"}
poll: {interval: 50ms, max_interval: 200ms, deadline: 1m, package_url_timeout: 10s}
replicas: {lease_ttl: 3s}
exports:
  - {name: shared, schedule: "%s", definition_group: G, legal_entity: USMF, batch_size: 100}
`, time.Now().UnixNano(), schedule))
}

type replica struct {
	cmd  *exec.Cmd
	logs *logWatcher
}

func startReplica(t *testing.T, env []string, args ...string) *replica {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), binary, args...)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return &replica{cmd: cmd, logs: watchLog(stderr)}
}

func (r *replica) count(msg string) int {
	r.logs.mu.Lock()
	defer r.logs.mu.Unlock()
	n := 0
	for _, l := range r.logs.lines {
		if l != nil && l["msg"] == msg {
			n++
		}
	}
	return n
}

// records returns the run records of the shared export, via dmfexport status.
func records(t *testing.T, env []string, cfg string) []map[string]any {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), binary, "status", "--config", cfg, "--json", "--limit", "0")
	cmd.Env = append(slices.Clip(env), "REPLICA_DIR="+filepath.Dir(cfg))
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		ee := &exec.ExitError{}
		if errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("status: %v\n%s", err, stderr)
	}
	var recs []map[string]any
	if err := json.Unmarshal(out, &recs); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return recs
}

// TestReplicasRunEachSlotOnce runs three replicas on one Azure Blob store
// with a job every six seconds: every slot runs exactly once across them,
// no slot is skipped, and the work spreads over more than one replica.
func TestReplicasRunEachSlotOnce(t *testing.T) {
	// Not parallel: beside the other command tests a run can outlast its slot.
	conn := testenv.AzuriteConnString(t)
	// Slot timing is what this test checks: a run must end well within
	// its slot even on a loaded machine, so F&O's registration window and
	// package delay are short here (other tests cover them at length) and
	// a slot is six seconds.
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"G": {killEntity("A", 300)}},
		ExecutionTime: 100 * time.Millisecond,
		RegisterDelay: 200 * time.Millisecond,
		PackageDelay:  -1,
	})
	defer sim.Close()
	dir := t.TempDir()
	const every = 6 * time.Second
	cfg := replicaConfig(t, dir, "*/6 * * * * *")
	base := append(os.Environ(), "DMFSIM_URL="+sim.URL, "FO_TOKEN="+dmftest.DefaultToken, "AZ_CONN="+conn)
	duration := time.Minute
	if testing.Short() {
		duration = 15 * time.Second
	}
	var reps []*replica
	for i := range 3 {
		env := append(slices.Clip(base), "REPLICA_DIR="+filepath.Join(dir, fmt.Sprintf("r%d", i)))
		reps = append(reps, startReplica(t, env, "run", "--config", cfg, "--listen", "", "--log-format", "json"))
	}
	time.Sleep(duration) // the replica processes run the schedule for this long
	for _, r := range reps {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, r := range reps {
		_ = r.cmd.Wait()
	}

	recs := records(t, base, cfg)
	slots := map[string]int{}
	var times []time.Time
	for _, r := range recs {
		// The SIGTERM at the end may cut off the slot running then: it is
		// left resumable, which is right.
		errText, _ := r["error"].(string)
		if r["state"] != "succeeded" && !strings.HasPrefix(errText, "interrupted") {
			t.Errorf("run %v ended %v: %v", r["run_id"], r["state"], r["error"])
		}
		s, _ := r["scheduled_at"].(string)
		slots[s]++
		if ts, err := time.Parse(time.RFC3339, s); err == nil {
			times = append(times, ts)
		}
	}
	for s, n := range slots {
		if n != 1 {
			t.Errorf("slot %s ran %d times, want once", s, n)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap != every {
			t.Errorf("slots %s and %s are %s apart: a slot in between was skipped", times[i-1].Format(time.TimeOnly), times[i].Format(time.TimeOnly), gap)
		}
	}
	if want := int(duration/every) - 2; len(recs) < want {
		t.Errorf("%d runs in %s of a %s schedule, want at least %d", len(recs), duration, every, want)
	}
	// A run the SIGTERM stopped before it exported is left resumable with
	// no execution: it exports when resumed.
	exported := 0
	for _, r := range recs {
		if id, _ := r["execution_id"].(string); id != "" {
			exported++
		}
	}
	if n := sim.Exports(); n != exported {
		t.Errorf("F&O saw %d exports for %d runs with an execution, want one each", n, exported)
	}
	ran := 0
	for _, r := range reps {
		if r.count("scheduled run done") > 0 {
			ran++
		}
	}
	if ran < 2 {
		t.Errorf("only %d of 3 replicas ran slots: the work did not spread", ran)
	}
	t.Logf("%d slots over %s, run by %d replicas", len(recs), duration, ran)
}

// TestReplicaTakesOverKilledRun kills the process running an export with
// SIGKILL; one of two other replicas adopts the run from its record and
// finishes it, without a second F&O export.
func TestReplicaTakesOverKilledRun(t *testing.T) {
	t.Parallel()
	conn := testenv.AzuriteConnString(t)
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"G": {killEntity("A", 3000)}},
		ExecutionTime: 3 * time.Second,
	})
	defer sim.Close()
	dir := t.TempDir()
	cfg := replicaConfig(t, dir, "@yearly")
	base := append(os.Environ(), "DMFSIM_URL="+sim.URL, "FO_TOKEN="+dmftest.DefaultToken, "AZ_CONN="+conn)
	env := func(name string) []string { return append(base, "REPLICA_DIR="+filepath.Join(dir, name)) }

	first := startReplica(t, env("first"), "trigger", "--config", cfg, "--log-format", "json", "--log-level", "info", "shared")
	first.logs.wait(t, "of the export being polled", 30*time.Second, msgIs("run exporting"))
	time.Sleep(500 * time.Millisecond) // the replica process is into its polling when killed
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.cmd.Wait()

	b := startReplica(t, env("b"), "run", "--config", cfg, "--listen", "", "--log-format", "json")
	c := startReplica(t, env("c"), "run", "--config", cfg, "--listen", "", "--log-format", "json")
	if !testenv.Await(60*time.Second, func() bool { return b.count("run finished")+c.count("run finished") > 0 }) {
		t.Fatalf("no replica finished the killed run within 60 s\nb:\n%s\nc:\n%s", b.logs.raw.String(), c.logs.raw.String())
	}
	time.Sleep(2 * time.Second) // the other replica process's scan must see the finished run
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	_ = b.cmd.Wait()
	_ = c.cmd.Wait()

	if n := b.count("resuming unfinished run") + c.count("resuming unfinished run"); n != 1 {
		t.Errorf("%d adoptions of the killed run, want exactly 1", n)
	}
	recs := records(t, base, cfg)
	if len(recs) != 1 || recs[0]["state"] != "succeeded" || recs[0]["resumes"] != float64(1) {
		t.Fatalf("records %v, want one succeeded run resumed once", recs)
	}
	if n := sim.Exports(); n != 1 {
		t.Errorf("F&O saw %d exports, want exactly 1", n)
	}
}
