package main

import (
	"context"
	"github.com/dmfexport/dmfexport/internal/testenv"

	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

// killEntity is an entity of n rows whose first column numbers them.
func killEntity(name string, n int) dmftest.Entity {
	var b bytes.Buffer
	b.WriteString("ID,TEXT\r\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%d,\"row %d, with a comma\"\r\n", i, i)
	}
	return dmftest.Entity{Name: name, Data: b.Bytes()}
}

// TestKillAndResume kills the real binary with SIGKILL at each stage of a
// run and starts it again: the restarted service resumes the run from its
// record, F&O sees exactly one export, and every row reaches RabbitMQ; a
// batch delivered twice carries the same message ID both times.
func TestKillAndResume(t *testing.T) {
	t.Parallel()
	stages := []struct {
		name   string
		killOn func(l map[string]any, sim *dmftest.Server) bool
	}{
		{"exporting", func(l map[string]any, _ *dmftest.Server) bool { return l["msg"] == "run exporting" }},
		{"polling", func(l map[string]any, sim *dmftest.Server) bool {
			return sim.Exports() == 1 && sim.Calls("GetExecutionSummaryStatus") >= 1
		}},
		{"downloading", func(l map[string]any, _ *dmftest.Server) bool { return l["msg"] == "run downloading" }},
		{"unpacking", func(l map[string]any, _ *dmftest.Server) bool { return l["msg"] == "run unpacking" }},
		{"publishing", func(l map[string]any, _ *dmftest.Server) bool { return l["msg"] == "publishing entity" }},
	}
	const rowsA, rowsB = 40000, 1500
	for _, st := range stages {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			sim := dmftest.NewServer(dmftest.Options{
				Projects:      map[string][]dmftest.Entity{"G": {killEntity("A", rowsA), killEntity("B", rowsB)}},
				ExecutionTime: 1500 * time.Millisecond,
			})
			defer sim.Close()
			name, ch := testQueue(t, "kill."+st.name)
			dir := t.TempDir()
			cfg := writeFile(t, dir, "dmfexport.yaml", simBrokerConfig(name, "fo.kill", false)+fmt.Sprintf(
				`  - {name: kill, schedule: "@yearly", definition_group: G, legal_entity: USMF, exchange: %s, routing_key: fo.kill, batch_size: 50}
`, name))
			env := append(os.Environ(), "DMFSIM_URL="+sim.URL, "FO_TOKEN="+dmftest.DefaultToken)

			// First attempt: killed at the stage.
			first := exec.CommandContext(context.Background(), binary, "trigger", "--config", cfg, "--log-level", "debug", "--log-format", "json", "kill")
			first.Env = env
			stderr, _ := first.StderrPipe()
			if err := first.Start(); err != nil {
				t.Fatal(err)
			}
			logs := watchLog(stderr)
			logs.wait(t, "of stage "+st.name, 30*time.Second, func(l map[string]any) bool { return st.killOn(l, sim) })
			if st.name == "publishing" {
				// Let some batches through first, so the kill lands mid-entity.
				testenv.Await(20*time.Second, func() bool {
					q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
					return err == nil && q.Messages >= 400
				})
			}
			if err := first.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = first.Wait()

			// Restart as a service: it resumes the run.
			second := exec.CommandContext(context.Background(), binary, "run", "--config", cfg, "--listen", "", "--log-format", "json")
			second.Env = env
			stderr2, _ := second.StderrPipe()
			if err := second.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = second.Process.Kill() }()
			logs2 := watchLog(stderr2)
			fin := logs2.wait(t, "of the resumed run finishing", 60*time.Second, msgIs("run finished"))
			if fin["state"] != "succeeded" {
				t.Fatalf("resumed run ended %v, want succeeded", fin["state"])
			}
			_ = second.Process.Signal(syscall.SIGTERM)
			_ = second.Wait()

			if n := sim.Exports(); n != 1 {
				t.Errorf("F&O saw %d exports for one run, want exactly 1", n)
			}
			// Every row arrived; duplicates only as whole batches with the same ID.
			seen := map[string]int{}
			idCount := map[string]int{}
			rowIDs := map[string][]string{}
			for _, d := range testenv.Drain(t, ch, name) {
				var b struct {
					ID   string `json:"id"`
					Data struct {
						Entity string              `json:"entity"`
						Rows   []map[string]string `json:"rows"`
					} `json:"data"`
				}
				if err := json.Unmarshal(d.Body, &b); err != nil {
					t.Fatal(err)
				}
				if d.MessageId != b.ID {
					t.Errorf("message_id %q differs from the event id %q", d.MessageId, b.ID)
				}
				idCount[b.ID]++
				for _, r := range b.Data.Rows {
					k := b.Data.Entity + "/" + r["ID"]
					seen[k]++
					rowIDs[k] = append(rowIDs[k], b.ID)
				}
			}
			for ent, n := range map[string]int{"A": rowsA, "B": rowsB} {
				for i := 1; i <= n; i++ {
					k := fmt.Sprintf("%s/%d", ent, i)
					switch {
					case seen[k] == 0:
						t.Fatalf("row %s never arrived", k)
					case seen[k] > 1 && (len(rowIDs[k]) < 2 || rowIDs[k][0] != rowIDs[k][1] || idCount[rowIDs[k][0]] < 2):
						t.Fatalf("row %s arrived %d times in batches %v: a duplicate must repeat its message ID", k, seen[k], rowIDs[k])
					}
				}
			}
			dups := 0
			for _, c := range idCount {
				dups += c - 1
			}
			t.Logf("stage %s: %d batches, %d delivered twice; F&O downloads %d", st.name, len(idCount), dups, sim.Downloads())
			if st.name == "publishing" && dups >= 300 {
				t.Errorf("%d batches delivered twice: the resumed run did not start after its checkpoint", dups)
			}
			if strings.Contains(logs.raw.String()+logs2.raw.String(), dmftest.DefaultToken) {
				t.Error("a log line holds the F&O token")
			}
		})
	}
}
