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

// TestConfigSearch checks where a command finds its configuration:
// --config, else $DMFEXPORT_CONFIG, else ./dmfexport.yaml, else
// /etc/dmfexport/dmfexport.yaml; with none, the error says where it looked.
// Each file has an export of its own name, so exports tells them apart.
func TestConfigSearch(t *testing.T) {
	dir := t.TempDir()
	named := func(name string) string {
		return strings.Replace(fileSinkConfig, "name: demo", "name: "+name, 1)
	}
	flagFile := writeFile(t, dir, "flag.yaml", named("from-flag"))
	envFile := writeFile(t, dir, "env.yaml", named("from-env"))
	withLocal := t.TempDir()
	writeFile(t, withLocal, "dmfexport.yaml", named("from-working-dir"))
	empty := t.TempDir()
	base := []string{"DMFSIM_URL=http://127.0.0.1:1", "FO_TOKEN=t"}
	tests := []struct {
		name     string
		dir      string
		env      string // DMFEXPORT_CONFIG
		args     []string
		wantCode int
		want     string // in stdout, or in stderr for an error
	}{
		{"--config first", withLocal, envFile, []string{"exports", "--config", flagFile}, 0, "from-flag"},
		{"then DMFEXPORT_CONFIG", withLocal, envFile, []string{"exports"}, 0, "from-env"},
		{"then ./dmfexport.yaml", withLocal, "", []string{"exports"}, 0, "from-working-dir"},
		{"none: where it looked", empty, "", []string{"exports"}, 1,
			"no configuration file: looked for --config FILE, $DMFEXPORT_CONFIG (not set), ./dmfexport.yaml, /etc/dmfexport/dmfexport.yaml: none exists"},
		{"validate searches too", withLocal, "", []string{"validate"}, 0, "dmfexport.yaml: valid, 2 exports"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := os.Stat("/etc/dmfexport/dmfexport.yaml"); err == nil && tt.wantCode != 0 {
				t.Skip("this machine has /etc/dmfexport/dmfexport.yaml: the search finds it")
			}
			stdout, stderr, code := runBinaryIn(t, tt.dir, append(base, "DMFEXPORT_CONFIG="+tt.env), tt.args...)
			out := stdout
			if tt.wantCode != 0 {
				out = stderr
			}
			if code != tt.wantCode || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, want %d with %q\nstdout: %s\nstderr: %s", code, tt.wantCode, tt.want, stdout, stderr)
			}
		})
	}
}

// TestConfigPathOrder checks the search list in order, /etc included,
// with a search list of temporary files standing in for the real places.
func TestConfigPathOrder(t *testing.T) {
	dir := t.TempDir()
	local, etc := filepath.Join(dir, "local.yaml"), filepath.Join(dir, "etc.yaml")
	search := []string{local, etc}
	t.Setenv("DMFEXPORT_CONFIG", "")
	if _, err := configPath("", search); err == nil || !strings.Contains(err.Error(), local+", "+etc) {
		t.Errorf("nothing to find: error %v, want it to list %s, %s", err, local, etc)
	}
	writeFile(t, dir, "etc.yaml", "x")
	if got, err := configPath("", search); got != etc || err != nil {
		t.Errorf("only the second place exists: %q, %v; want %s", got, err, etc)
	}
	writeFile(t, dir, "local.yaml", "x")
	if got, err := configPath("", search); got != local || err != nil {
		t.Errorf("both exist: %q, %v; want the first, %s", got, err, local)
	}
	t.Setenv("DMFEXPORT_CONFIG", "env.yaml")
	if got, _ := configPath("", search); got != "env.yaml" {
		t.Errorf("DMFEXPORT_CONFIG set: %q, want env.yaml", got)
	}
	if got, _ := configPath("flag.yaml", search); got != "flag.yaml" {
		t.Errorf("--config given: %q, want flag.yaml", got)
	}
}

// TestValidateNoEnv checks validate --no-env on a file whose secrets and
// URLs come from variables that are not set: its structure is valid (exit
// 0, saying what was not checked), while plain validate needs them; a
// ${VAR:-default} is used by both.
func TestValidateNoEnv(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "ci.yaml", `fo:
  url: ${FO_URL_UNSET_IN_TEST}
  auth: {method: token, token: "${FO_TOKEN_UNSET_IN_TEST}"}
store: {path: "${STORE_UNSET_IN_TEST:-./store}"}
broker: {url: "amqp://app:${MQ_PASSWORD_UNSET_IN_TEST}@127.0.0.1:5672/"}
poll: {interval: "${POLL_UNSET_IN_TEST:-30s}"}
exports:
  - {name: nightly, schedule: "@daily", definition_group: G, legal_entity: USMF}
`)
	stdout, stderr, code := runBinary(t, nil, "validate", "--no-env", cfg)
	if code != 0 || !strings.Contains(stdout, "ci.yaml: structure valid (--no-env: values from the environment not checked), 1 exports (1 enabled)") {
		t.Errorf("validate --no-env: exit %d\nstdout: %s\nstderr: %s\nwant 0, structure valid", code, stdout, stderr)
	}
	stdout, stderr, code = runBinary(t, nil, "validate", cfg)
	if code != 1 || !strings.Contains(stderr, "environment variable FO_TOKEN_UNSET_IN_TEST is not set") || strings.Contains(stderr, "STORE_UNSET_IN_TEST") {
		t.Errorf("validate: exit %d\nstdout: %s\nstderr: %s\nwant 1 naming the unset variable without a default, and not the one with", code, stdout, stderr)
	}
	bad := writeFile(t, dir, "bad.yaml", strings.Replace(mustRead(t, cfg), "${POLL_UNSET_IN_TEST:-30s}", "${POLL_UNSET_IN_TEST:-soon}", 1))
	if _, stderr, code := runBinary(t, nil, "validate", "--no-env", bad); code != 1 || !strings.Contains(stderr, `poll.interval: "soon" is not a duration`) {
		t.Errorf("validate --no-env of a bad default: exit %d\nstderr: %s\nwant 1 naming it", code, stderr)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
