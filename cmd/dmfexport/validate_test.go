package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
)

// TestValidateWarnsOfIncrementalWithoutKeys runs validate on a file whose
// sink lands an entity that the consumed export's run records say F&O
// exports incrementally, without keys: the file is valid (exit 0) and the
// warning names the file, the sink entry's line and the fix. Before any
// run there is nothing to warn of, and the store is not created.
func TestValidateWarnsOfIncrementalWithoutKeys(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "dmfexport.yaml", `fo:
  url: ${DMFSIM_URL}
  auth: {method: token, token: "${FO_TOKEN}"}
store: {path: ./store}
broker: {url: "amqp://guest:guest@127.0.0.1:5672/"}
exports:
  - {name: groups, schedule: "@daily", definition_group: G, legal_entity: USMF, exchange: erp, routing_key: fo.groups}
sinks:
  - name: dw
    queue: dw
    exchange: erp
    database_url: postgres://127.0.0.1/dw
    entities:
      "Customer groups": {table: groups}
      "Customers V3": {keys: [ACCOUNT]}
`)
	env := []string{"DMFSIM_URL=http://127.0.0.1:1", "FO_TOKEN=t"}
	stdout, stderr, code := runBinary(t, env, "validate", cfg)
	if code != 0 || strings.Contains(stdout, "warning") || stderr != "" {
		t.Errorf("validate before any run: exit %d\nstdout: %s\nstderr: %s\nwant 0 and no warning", code, stdout, stderr)
	}
	storeDir := filepath.Join(dir, "store")
	if _, err := os.Stat(storeDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("validate created the store (stat: %v); it only reads", err)
	}

	st, err := store.NewDirStore(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	putRecord(t, st, runs.Record{Job: "groups", RunID: "20261201T020000Z-aaaaaaaa", ExecutionID: "x", State: runs.StateSucceeded, StartedAt: time.Now(),
		Entities: []runs.EntityRecord{{Entity: "Customer groups", RefreshType: "IncrementalPush"}, {Entity: "Customers V3", RefreshType: "IncrementalPush"}}})
	stdout, stderr, code = runBinary(t, env, "validate", cfg)
	want := `warning: dmfexport.yaml:14:7: sinks[0](dw).entities."Customer groups": export "groups" exports entity "Customer groups" incrementally`
	if code != 0 || !strings.Contains(stdout, want) || !strings.Contains(stdout, `give sinks[].entities."Customer groups" keys`) ||
		strings.Count(stdout, "warning:") != 1 || !strings.Contains(stdout, "valid, 1 exports") {
		t.Errorf("validate: exit %d\nstdout: %s\nstderr: %s\nwant 0, one warning: %s", code, stdout, stderr, want)
	}

	// The sink logs the same warning as it starts, before it connects
	// (here to a database that is not there).
	stdout, stderr, code = runBinary(t, env, "sink", "--config", cfg, "--listen", "")
	want = `dmfexport.yaml:14:7: sinks[0](dw).entities.\"Customer groups\": export \"groups\" exports entity \"Customer groups\" incrementally`
	if code == 0 || !strings.Contains(stderr, "configuration warning") || !strings.Contains(stderr, want) {
		t.Errorf("sink: exit %d\nstdout: %s\nstderr: %s\nwant a failure (no database) after the warning: %s", code, stdout, stderr, want)
	}
}
