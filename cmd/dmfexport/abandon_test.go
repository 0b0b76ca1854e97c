package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

// writeUnfinished writes the record and active marker of an unfinished run
// of export demo into the directory store, as a run killed mid-publish
// leaves them, and a lease of a live replica on another host if owned.
func writeUnfinished(t *testing.T, storeDir, runID string, owned bool) string {
	t.Helper()
	rec := map[string]any{"export": "demo", "job": "demo", "run_id": runID, "trigger": "manual", "state": "publishing",
		"started_at": time.Now().UTC().Format(time.RFC3339), "definition_group": "DemoExport", "legal_entity": "USMF",
		"execution_id": "DemoExport-2026-01-01_00-00-00-0123456789abcdef", "unpacked": true}
	b, _ := json.Marshal(rec)
	key := filepath.Join(storeDir, "demo", runID, "run.json")
	for p, body := range map[string][]byte{key: b, filepath.Join(storeDir, "_active", "demo", runID): []byte(runID)} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if owned {
		lease := filepath.Join(storeDir, "_leases", "demo", runID, "00000001")
		if err := os.MkdirAll(filepath.Dir(lease), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(lease, []byte(`{"replica":"another-host/4242/0badcafe","at":"`+time.Now().UTC().Format(time.RFC3339)+`"}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return key
}

// TestAbandonCommand ends an unfinished run with dmfexport abandon and
// checks the exit codes of every refusal: no run named, an unknown run, a
// finished run, a run a live replica owns. Then status, with a damaged
// final record beside the others, lists every run and names the damaged
// record, exit 0.
func TestAbandonCommand(t *testing.T) {
	t.Parallel()
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{dmftest.DemoDefinitionGroup: dmftest.DemoProject()},
		ExecutionTime: 100 * time.Millisecond,
	})
	defer sim.Close()
	dir := t.TempDir()
	cfg := writeFile(t, dir, "dmfexport.yaml", fileSinkConfig)
	env := []string{"DMFSIM_URL=" + sim.URL, "FO_TOKEN=" + dmftest.DefaultToken}
	if stdout, stderr, code := runBinary(t, env, "trigger", "--config", cfg, "demo"); code != 0 {
		t.Fatalf("trigger demo: exit %d\n%s\n%s", code, stdout, stderr)
	}
	stdout, _, _ := runBinary(t, env, "status", "--config", cfg, "--json", "demo")
	var runs []struct {
		RunID string `json:"run_id"`
	}
	if err := json.Unmarshal([]byte(stdout), &runs); err != nil || len(runs) != 1 {
		t.Fatalf("status --json: want one run, got %v:\n%s", err, stdout)
	}
	finished := runs[0].RunID
	storeDir := filepath.Join(dir, "store")
	const unfinished, owned = "20260101T000000Z-0000000b", "20260101T000001Z-0000000c"
	key := writeUnfinished(t, storeDir, unfinished, false)
	writeUnfinished(t, storeDir, owned, true)

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"no run named", []string{"abandon", "--config", cfg}, 2, "", "name exactly one run to abandon"},
		{"unknown run", []string{"abandon", "--config", cfg, "nope"}, 1, "", `no run "nope"`},
		{"finished run", []string{"abandon", "--config", cfg, finished}, 1, "", "has ended already (succeeded): nothing to abandon"},
		{"run owned by a live replica", []string{"abandon", "--config", cfg, owned}, 1, "", "owned by another live process (another-host/4242/0badcafe)"},
		{"unfinished run", []string{"abandon", "--config", cfg, "--reason", "F&O restored from a backup", "demo/" + unfinished}, 0, "abandoned by ", ""},
		{"the same run again", []string{"abandon", "--config", cfg, unfinished}, 1, "", "has ended already (abandoned)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runBinary(t, env, tt.args...)
			if code != tt.wantCode || !strings.Contains(stdout, tt.wantStdout) || !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("exit %d, want %d; stdout want %q:\n%s\nstderr want %q:\n%s", code, tt.wantCode, tt.wantStdout, stdout, tt.wantStderr, stderr)
			}
		})
	}
	var rec struct {
		State     string `json:"state"`
		Error     string `json:"error"`
		Abandoned struct {
			By, Reason string
		} `json:"abandoned"`
	}
	b, err := os.ReadFile(key)
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err != nil || rec.State != "abandoned" || rec.Abandoned.By == "" || rec.Abandoned.Reason != "F&O restored from a backup" || !strings.Contains(rec.Error, "F&O restored from a backup") {
		t.Errorf("abandoned record: want state abandoned with who and why, got %v %+v", err, rec)
	}
	if _, err := os.Stat(filepath.Join(storeDir, "_active", "demo", unfinished)); !os.IsNotExist(err) {
		t.Errorf("active marker of the abandoned run: want deleted, got %v", err)
	}

	// A damaged final record: status shows the others and names it.
	damaged := filepath.Join("demo", finished, "run.json")
	if err := os.WriteFile(filepath.Join(storeDir, damaged), []byte(`{"export": "demo", "run_id": `), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runBinary(t, env, "status", "--config", cfg, "demo")
	if code != 0 || !strings.Contains(stdout, "damaged record") || !strings.Contains(stdout, damaged) ||
		!strings.Contains(stdout, "the run had ended succeeded") || !strings.Contains(stdout, "abandoned") || !strings.Contains(stdout, owned) {
		t.Errorf("status with a damaged final record: exit %d, want 0 with a line naming %s, the abandoned run and the owned one:\n%s\n%s", code, damaged, stdout, stderr)
	}
	stdout, stderr, code = runBinary(t, env, "status", "--config", cfg, "--json", "demo")
	if err := json.Unmarshal([]byte(stdout), &runs); err != nil || code != 0 || len(runs) != 2 || !strings.Contains(stderr, damaged) {
		t.Errorf("status --json with a damaged final record: exit %d, want the 2 readable records and the damaged one named on stderr, got %v %+v\n%s", code, err, runs, stderr)
	}
}
