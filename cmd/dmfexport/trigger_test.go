package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

// TestTriggerAfterCrashedTrigger kills a trigger while F&O runs its export,
// then triggers the export again: the second trigger must take up the
// unfinished run (F&O sees one export, not two), and only --new starts a
// second export.
func TestTriggerAfterCrashedTrigger(t *testing.T) {
	t.Parallel()
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"G": {killEntity("A", 300)}},
		ExecutionTime: 1500 * time.Millisecond,
	})
	defer sim.Close()
	dir := t.TempDir()
	cfg := writeFile(t, dir, "dmfexport.yaml", simConfig+`  - {name: crash, schedule: "@yearly", definition_group: G, legal_entity: USMF, batch_size: 50}
`)
	env := append(os.Environ(), "DMFSIM_URL="+sim.URL, "FO_TOKEN="+dmftest.DefaultToken)

	first := exec.CommandContext(context.Background(), binary, "trigger", "--config", cfg, "--log-format", "json", "--log-level", "info", "crash")
	first.Env = env
	stderr, _ := first.StderrPipe()
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	logs := watchLog(stderr)
	logs.wait(t, "of the export started in F&O", 30*time.Second, func(map[string]any) bool {
		return sim.Exports() == 1 && sim.Calls("GetExecutionSummaryStatus") >= 1
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()

	// --new starts a second export and leaves the unfinished run alone.
	if stdout, errOut, code := runBinary(t, env, "trigger", "--config", cfg, "--new", "crash"); code != 0 {
		t.Fatalf("trigger --new: exit %d, want 0\nstdout: %s\nstderr: %s", code, stdout, errOut)
	}
	if n := sim.Exports(); n != 2 {
		t.Errorf("trigger --new after a crashed trigger: F&O saw %d exports in all, want 2", n)
	}

	// A plain trigger takes up the unfinished run: F&O sees no new export.
	stdout, errOut, code := runBinary(t, env, "trigger", "--config", cfg, "crash")
	if code != 0 {
		t.Fatalf("plain trigger: exit %d, want 0\nstdout: %s\nstderr: %s", code, stdout, errOut)
	}
	if n := sim.Exports(); n != 2 {
		t.Errorf("plain trigger after a crashed trigger: F&O saw %d exports in all, want still 2 (the unfinished run taken up)", n)
	}
	if !strings.Contains(stdout+errOut, "resuming unfinished run") || !strings.Contains(stdout+errOut, "--new") {
		t.Errorf("plain trigger: want it to say it resumes the unfinished run and name --new\nstdout: %s\nstderr: %s", stdout, errOut)
	}
	if !strings.Contains(stdout, "succeeded") || !strings.Contains(stdout, "300 rows") {
		t.Errorf("plain trigger summary: want the resumed run succeeded with 300 rows\n%s", stdout)
	}
}
