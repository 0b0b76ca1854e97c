package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dmfexport/dmfexport/configs"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
)

// runBinaryIn runs dmfexport in dir, like runBinary.
func runBinaryIn(t *testing.T, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), binary, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), 0
}

// commandNames lists every command, sorted.
func commandNames() []string {
	var names []string
	for name := range commands() {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// TestFlagsAnywhere checks that flags after or between positional arguments
// are honoured, and that "--" ends the flags. The working directory holds a
// dmfexport.yaml of its own, so a command that ignored --config would read
// the wrong file and say so.
func TestFlagsAnywhere(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", fileSinkConfig)
	writeFile(t, dir, "dmfexport.yaml", strings.Replace(fileSinkConfig, "name: demo", "name: other", 1))
	broken := writeFile(t, dir, "broken.yaml", "fo:\n  url: https://x.example\nexports:\n  - name: a\n    shedule: '@daily'\n")
	env := []string{"DMFSIM_URL=http://127.0.0.1:1", "FO_TOKEN=t", "DMFEXPORT_CONFIG="}
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"trigger flag after job", []string{"trigger", "nosuch", "--config", good}, 2, "", `no export named "nosuch" in ` + good},
		{"validate FILE", []string{"validate", "broken.yaml"}, 1, "", "broken.yaml:5:5"},
		{"validate FILE good", []string{"validate", "good.yaml"}, 0, "good.yaml: valid, 2 exports", ""},
		{"validate FILE and --config", []string{"validate", "--config", good, broken}, 2, "", "two configuration files given"},
		{"status flags after job", []string{"status", "demo", "--json", "--config", good}, 0, "[]", ""},
		{"status flags between", []string{"status", "--limit", "1", "demo", "--json", "--config=" + good}, 0, "[]", ""},
		{"status unknown job after flags", []string{"status", "--config", good, "other"}, 2, "", `no export named "other" in ` + good},
		{"replay flags after run", []string{"replay", "20261101T000000Z-00000000", "--entity", "X", "--config", good}, 1, "", `20261101T000000Z-00000000`},
		{"double dash ends flags", []string{"validate", "--", "--config"}, 1, "", "open --config"},
		{"flag value that looks like a flag", []string{"replay", "--routing-key", "--x", "--config", good}, 2, "", "name exactly one run"},
		{"bool flag with value", []string{"status", "--json=true", "--config", good, "demo"}, 0, "[]", ""},
		{"missing flag value", []string{"status", "--config"}, 2, "", "flag --config needs a value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runBinaryIn(t, dir, env, tt.args...)
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

// TestCommonFlags checks every command takes --log-level and --log-format,
// refuses a bad value of either, and answers an unknown flag with one line
// naming it and the command's usage, once.
func TestCommonFlags(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", fileSinkConfig)
	env := []string{"DMFSIM_URL=http://127.0.0.1:1", "FO_TOKEN=t", "DMFEXPORT_CONFIG=" + good}
	for _, name := range commandNames() {
		t.Run(name, func(t *testing.T) {
			cases := []struct {
				what      string
				args      []string
				wantFirst string // the first line of stderr
			}{
				{"bad level", []string{name, "--log-level", "nope"}, `dmfexport ` + name + `: invalid --log-level "nope": want debug, info, warn or error`},
				{"bad format", []string{name, "--log-format=xml"}, `dmfexport ` + name + `: invalid --log-format "xml": want text or json`},
				{"unknown flag", []string{name, "--frobnicate", "x"}, `dmfexport ` + name + `: unknown flag --frobnicate`},
			}
			for _, c := range cases {
				stdout, stderr, code := runBinaryIn(t, dir, env, c.args...)
				first, _, _ := strings.Cut(stderr, "\n")
				if code != 2 || first != c.wantFirst {
					t.Errorf("%s: exit %d, first line %q; want exit 2 and %q\nstdout: %s\nstderr: %s", c.what, code, first, c.wantFirst, stdout, stderr)
				}
				if n := strings.Count(stderr, "Usage: dmfexport "+name); n != 1 {
					t.Errorf("%s: usage printed %d times, want once:\n%s", c.what, n, stderr)
				}
				if before, _, _ := strings.Cut(stderr, "Usage:"); before != first+"\n" {
					t.Errorf("%s: want one line before the usage, got %q", c.what, before)
				}
			}
			// --help prints the usage on stdout and succeeds.
			stdout, stderr, code := runBinaryIn(t, dir, env, name, "--help")
			if code != 0 || strings.Count(stdout, "Usage: dmfexport "+name) != 1 || !strings.Contains(stdout, "--log-level") || stderr != "" {
				t.Errorf("--help: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
			}
		})
	}
	stdout, stderr, code := runBinary(t, nil, "version", "--log-level", "debug", "--log-format", "json")
	if code != 0 || !strings.HasPrefix(stdout, "dmfexport ") {
		t.Errorf("version with log flags: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}

// putRecord stores rec as the run records of a dir store do.
func putRecord(t *testing.T, st *store.DirStore, rec runs.Record) {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	key := store.EscapeName(rec.Job) + "/" + store.EscapeName(rec.RunID) + "/run.json"
	if _, err := st.Put(t.Context(), key, bytes.NewReader(b), map[string]string{"state": string(rec.State)}); err != nil {
		t.Fatal(err)
	}
}

// TestStatus checks that status only reads (a missing store stays missing),
// tells an interrupted run from a running one by its lease, counts the
// warnings of a run that succeeded with some, and puts an error's cause
// before the IDs the other columns show.
func TestStatus(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "dmfexport.yaml", fileSinkConfig)
	env := []string{"DMFSIM_URL=http://127.0.0.1:1", "FO_TOKEN=t"}
	storeDir := filepath.Join(dir, "store")

	stdout, stderr, code := runBinary(t, env, "status", "--config", cfg)
	if code != 0 || strings.TrimSpace(stdout) != "no runs yet" {
		t.Errorf("status of a missing store: exit %d, want 0 and \"no runs yet\"\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if _, err := os.Stat(storeDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("status created the store directory %s (stat: %v)", storeDir, err)
	}

	st, err := store.NewDirStore(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().UTC().Add(-time.Hour)
	id := func(n int, tag string) string {
		return start.Add(time.Duration(n)*time.Minute).Format("20060102T150405Z") + "-" + tag
	}
	execID := "DemoExport-2026-11-29_08-30-10-2f97df662298bdbe"
	putRecord(t, st, runs.Record{Job: "demo", RunID: id(1, "0000fa11"), State: runs.StateFailed, StartedAt: start.Add(time.Minute),
		FinishedAt: start.Add(2 * time.Minute), ExecutionID: execID, DefinitionGroup: "DemoExport",
		Error: "export demo run " + id(1, "0000fa11") + `: poll status of execution "` + execID + `": execution did not finish before the deadline: still Executing after 2h0m0s (raise poll.deadline if this export needs longer in F&O)`,
		Cause: "execution did not finish before the deadline: still Executing after 2h0m0s (raise poll.deadline if this export needs longer in F&O)"})
	putRecord(t, st, runs.Record{Job: "demo", RunID: id(2, "00000a4e"), State: runs.StateSucceeded, StartedAt: start.Add(2 * time.Minute),
		FinishedAt: start.Add(3 * time.Minute), Warnings: []string{"F&O: entity A had 3 errors", "F&O: entity B had 1 error"}})
	// Unfinished runs past pending have their execution ID, as every real
	// record has (one without is damaged).
	putRecord(t, st, runs.Record{Job: "demo", RunID: id(3, "0000dead"), State: runs.StatePublishing, StartedAt: start.Add(3 * time.Minute), ExecutionID: execID})
	putRecord(t, st, runs.Record{Job: "missing-group", RunID: id(4, "00001ive"), State: runs.StateExporting, StartedAt: start.Add(4 * time.Minute), ExecutionID: "NoSuchGroup-2026-11-29_08-34-10-0123456789abcdef"})
	queuedAt := start.Add(5 * time.Minute)
	putRecord(t, st, runs.Record{Job: "demo", RunID: id(5, "0000ca11"), State: runs.StatePending, StartedAt: queuedAt, QueuedAt: queuedAt})
	// The live runs' leases are fresh and held by this test's process.
	host, _ := os.Hostname()
	lease, _ := json.Marshal(map[string]any{"replica": host + "/" + strconv.Itoa(os.Getpid()) + "/abcd", "at": time.Now().UTC()})
	for _, key := range []string{"_leases/missing-group/" + id(4, "00001ive"), "_leases/demo/" + id(5, "0000ca11")} {
		if _, err := st.Put(t.Context(), key+"/00000001", bytes.NewReader(lease), nil); err != nil {
			t.Fatal(err)
		}
	}

	stdout, stderr, code = runBinary(t, env, "status", "--config", cfg)
	if code != 0 {
		t.Fatalf("status: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(stdout, "\n") {
		for _, tag := range []string{"0000fa11", "00000a4e", "0000dead", "00001ive", "0000ca11"} {
			if strings.Contains(l, tag) {
				lines[tag] = l
			}
		}
	}
	tests := []struct {
		name, tag string
		want      *regexp.Regexp
	}{
		{"interrupted", "0000dead", regexp.MustCompile(`\binterrupted \(resumes on next start\)\s.*stopped while publishing`)},
		{"running", "00001ive", regexp.MustCompile(`\bexporting\s.*\brunning\b`)},
		{"queued", "0000ca11", regexp.MustCompile(`\bqueued since ` + queuedAt.Local().Format("15:04:05") + `\s.*\brunning\b`)},
		{"warnings", "00000a4e", regexp.MustCompile(`\bsucceeded \(2 warnings\)\s`)},
		{"cause first", "0000fa11", regexp.MustCompile(`\bfailed\s.*\s0\s+execution did not finish before the deadline: still Executing`)},
	}
	for _, tt := range tests {
		if !tt.want.MatchString(lines[tt.tag]) {
			t.Errorf("%s: line %q does not match %s\n%s", tt.name, lines[tt.tag], tt.want, stdout)
		}
	}
}

// TestJobsTimeZones checks that next run times are shown in each schedule's
// own zone, and that a schedule that never fires is refused by jobs and
// validate alike.
func TestJobsTimeZones(t *testing.T) {
	dir := t.TempDir()
	zoned := strings.Replace(fileSinkConfig, `schedule: "*/5 * * * *"`, `schedule: "CRON_TZ=Asia/Tokyo 0 9 * * *"`, 1)
	cfg := writeFile(t, dir, "zoned.yaml", zoned)
	env := []string{"DMFSIM_URL=http://127.0.0.1:1", "FO_TOKEN=t", "TZ=America/New_York"}
	stdout, stderr, code := runBinary(t, env, "jobs", "--config", cfg)
	if code != 0 || !regexp.MustCompile(`demo\s+CRON_TZ=Asia/Tokyo 0 9 \* \* \*\s+\d{4}-\d\d-\d\d 09:00:00 JST`).MatchString(stdout) {
		t.Errorf("jobs: exit %d, want the Tokyo export's next run at 09:00:00 JST\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if !regexp.MustCompile(`missing-group\s+@daily\s+\d{4}-\d\d-\d\d 00:00:00 E[SD]T`).MatchString(stdout) {
		t.Errorf("jobs: want the zone-less export at local (New York) midnight\n%s", stdout)
	}

	never := writeFile(t, dir, "never.yaml", strings.Replace(fileSinkConfig, `"*/5 * * * *"`, `"0 0 30 2 *"`, 1))
	for _, cmd := range []string{"jobs", "validate"} {
		stdout, stderr, code := runBinary(t, env, cmd, "--config", never)
		if code != 1 || !strings.Contains(stderr, `cron expression "0 0 30 2 *" never fires`) || strings.Contains(stdout, "0001-") {
			t.Errorf("%s of a schedule that never fires: exit %d, want 1 and a problem naming it\nstdout: %s\nstderr: %s", cmd, code, stdout, stderr)
		}
	}
}

// TestDemoFromAnyDirectory runs demo in an empty directory: with
// DMFEXPORT_CONFIG it runs that file, with the simulator's address winning
// over the environment's DMFSIM_URL; without, it runs the built-in demo
// configuration, keeps its store under ./dmfexport-data and ends by saying
// how to clean up the demo queue.
func TestDemoFromAnyDirectory(t *testing.T) {
	t.Run("DMFEXPORT_CONFIG", func(t *testing.T) {
		cfgDir, work := t.TempDir(), t.TempDir()
		cfg := writeFile(t, cfgDir, "mydemo.yaml", fileSinkConfig)
		env := []string{"DMFEXPORT_CONFIG=" + cfg, "DMFSIM_URL=http://127.0.0.1:1", "FO_TOKEN=wrong"}
		stdout, stderr, code := runBinaryIn(t, work, env, "demo")
		// missing-group fails by design; demo must succeed.
		if code != 1 || !regexp.MustCompile(`demo\s+run \S+\s+succeeded`).MatchString(stdout) {
			t.Fatalf("demo: exit %d, want the demo export to succeed\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		if _, err := os.Stat(filepath.Join(cfgDir, "batches", "fo.demo.ndjson")); err != nil {
			t.Errorf("batches not written beside the configuration: %v", err)
		}
		// The store and batches are the configuration's, not the demo's:
		// nothing of them is to be removed; missing-group published
		// nothing, and the demo says it did not succeed.
		if strings.Contains(stdout, "rm -rf") || !strings.Contains(stdout, "belong to "+cfg+": the demo suggests no clean-up") {
			t.Errorf("clean-up of a user configuration's store suggested, or not said why not:\n%s", stdout)
		}
		for _, want := range []string{"The demo did not succeed", "missing-group: the run did not succeed", "demo: batches as NDJSON in " + filepath.Join(cfgDir, "batches")} {
			if !strings.Contains(stdout, want) {
				t.Errorf("closing text lacks %q:\n%s", want, stdout)
			}
		}
		if strings.Contains(stdout, "missing-group: package, entity files") {
			t.Errorf("closing text claims the failed export stored a package:\n%s", stdout)
		}
	})
	t.Run("built-in", func(t *testing.T) {
		work := t.TempDir()
		// The demo's own queue and exchange go when the test ends (the
		// connection closes after, cleanups run last first).
		ch := testenv.AMQPChannel(t)
		testenv.DeleteOnCleanup(t, ch, "dmfexport.demo", "dmfexport.demo.sink", "dmfexport.demo.sink.dead")
		stdout, stderr, code := runBinaryIn(t, work, []string{"DMFEXPORT_CONFIG=", "DMFSIM_URL=http://127.0.0.1:1", "DATABASE_URL="}, "demo")
		if code != 0 {
			t.Fatalf("demo: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		if _, err := os.Stat(filepath.Join(work, "dmfexport-data", "demo")); err != nil {
			t.Errorf("demo store not under the working directory: %v", err)
		}
		dbPath := filepath.Join(work, "dmfexport-data", "demo.db")
		for _, want := range []string{"To clean up the demo:", "rabbitmqctl delete_queue dmfexport.demo", "rm -rf " + filepath.Join(work, "dmfexport-data"),
			// The landing: every batch, a table per entity, the first rows
			// of the largest.
			"Landing 12 batches with sink demo (queue \"dmfexport.demo.sink\") in SQLite " + dbPath,
			"Landed 12 batches (17415 rows)", "customers_v3 Customers V3 12345", "sales_order_headers_v2 Sales order headers V2 300",
			"The first 10 of the 12345 rows of customers_v3", "CUSTOMERACCOUNT ORGANIZATIONNAME", "000001 Northwind Traders 1",
			"Query it yourself: sqlite3 " + dbPath + " 'SELECT * FROM customers_v3 LIMIT 10'",
			"sink demo: tables in SQLite " + dbPath, "rabbitmqctl delete_queue dmfexport.demo.sink"} {
			if !strings.Contains(strings.Join(strings.Fields(stdout), " "), strings.Join(strings.Fields(want), " ")) {
				t.Errorf("demo output lacks %q:\n%s", want, stdout)
			}
		}
		db, err := sql.Open("sqlite", "file:"+dbPath+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = db.Close() }()
		var n int
		if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM customers_v3").Scan(&n); err != nil || n != 12345 {
			t.Errorf("customers_v3 in %s: %d rows (%v), want 12345", dbPath, n, err)
		}
		if strings.Contains(stdout+stderr, dmftest.DefaultToken) {
			t.Errorf("demo output shows the simulator's token")
		}
	})
}

// TestDemoLandsInPostgres runs demo with DATABASE_URL set: the sink lands
// the batches in PostgreSQL instead of SQLite. The configuration is the
// built-in one with names of its own, so that runs never meet.
func TestDemoLandsInPostgres(t *testing.T) {
	dir, work := t.TempDir(), t.TempDir()
	name := fmt.Sprintf("dmfexport.test.demo.%d", time.Now().UnixNano())
	schema := testenv.PostgresSchema(t)
	ch := testenv.AMQPChannel(t)
	testenv.DeleteOnCleanup(t, ch, name, name+".sink", name+".sink.dead")
	conf := strings.ReplaceAll(string(configs.Demo), "dmfexport.demo", name)
	conf = strings.Replace(conf, "path: ../dmfexport-data", "path: ./data", 1)
	// The sink's database is DATABASE_URL's; its schema the test's.
	conf = strings.Replace(conf, "database_url: sqlite:../dmfexport-data/demo.db", "database_url: ${DATABASE_URL}\n    schema: "+schema, 1)
	cfg := writeFile(t, dir, "demo.yaml", conf)
	stdout, stderr, code := runBinaryIn(t, work, []string{"DMFEXPORT_CONFIG=" + cfg, "DATABASE_URL=" + testenv.PostgresURL()}, "demo")
	if code != 0 {
		t.Fatalf("demo: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, want := range []string{"in PostgreSQL schema " + schema, "Landed 12 batches (17415 rows)", "The first 10 of the 12345 rows of customers_v3",
		`Query it yourself: psql "$DATABASE_URL" -c 'SELECT * FROM ` + schema + `.customers_v3 LIMIT 10'`,
		// A configuration of the user's: its tables are not the demo's to drop.
		"belong to " + cfg + ": the demo suggests no clean-up of them"} {
		if !strings.Contains(strings.Join(strings.Fields(stdout), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("demo output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout+stderr, "postgres://") {
		t.Errorf("demo output shows the database URL:\n%s%s", stdout, stderr)
	}
	var n int
	conn := testenv.PostgresConn(t)
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{schema, "customers_v3"}.Sanitize()).Scan(&n); err != nil || n != 12345 {
		t.Errorf("customers_v3 in schema %s: %d rows (%v), want 12345", schema, n, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "demo.db")); err == nil {
		t.Errorf("the demo made an SQLite file although DATABASE_URL is set")
	}
}

// TestCommandReference checks that the command reference (docs/commands.md)
// and every command's --help list the same flags, and the same commands.
func TestCommandReference(t *testing.T) {
	reference, err := os.ReadFile("../../docs/commands.md")
	if err != nil {
		t.Fatal(err)
	}
	// The synopsis is the first code block; the prose after it describes
	// the flags every command takes.
	_, block, ok := strings.Cut(string(reference), "```\n")
	if !ok {
		t.Fatal("docs/commands.md has no code block with the commands' synopsis")
	}
	block, prose, _ := strings.Cut(block, "```")
	// Flags every command takes are described once, in the prose.
	common := []string{"--log-level", "--log-format", "--help"}
	for _, f := range common {
		if !strings.Contains(prose, f) {
			t.Errorf("the command reference does not describe %s", f)
		}
	}
	flagRE := regexp.MustCompile(`--[a-z][a-z-]*`)
	readmeFlags := map[string][]string{}
	cmd := ""
	for _, line := range strings.Split(block, "\n") {
		if rest, ok := strings.CutPrefix(line, "dmfexport "); ok {
			cmd = strings.Fields(rest)[0]
			readmeFlags[cmd] = []string{}
		}
		if cmd != "" {
			readmeFlags[cmd] = append(readmeFlags[cmd], flagRE.FindAllString(line, -1)...)
		}
	}
	for _, name := range commandNames() {
		t.Run(name, func(t *testing.T) {
			documented, ok := readmeFlags[name]
			if !ok {
				t.Fatalf("the command reference has no line for %s", name)
			}
			stdout, _, code := runBinary(t, nil, name, "--help")
			if code != 0 {
				t.Fatalf("%s --help: exit %d", name, code)
			}
			_, flagsPart, _ := strings.Cut(stdout, "\nFlags:\n")
			var help []string
			for _, line := range strings.Split(flagsPart, "\n") {
				if f := flagRE.FindString(line); f != "" && strings.HasPrefix(line, "  --") && !slices.Contains(common, f) {
					help = append(help, f)
				}
			}
			for _, f := range help {
				if !slices.Contains(documented, f) {
					t.Errorf("%s --help lists %s, the command reference does not", name, f)
				}
			}
			for _, f := range documented {
				if !slices.Contains(help, f) && !slices.Contains(common, f) {
					t.Errorf("the command reference lists %s for %s, its --help does not", f, name)
				}
			}
			if len(help) == 0 && name != "version" && name != "completion" {
				t.Errorf("%s --help lists no flags of its own:\n%s", name, stdout)
			}
		})
	}
	for name := range readmeFlags {
		if _, ok := commands()[name]; !ok {
			t.Errorf("the command reference lists %s, which is no command", name)
		}
	}
}

// TestErrorWording runs failing exports through the binary and checks each
// message: no blank line, no prefix said twice, and a hint only where it
// applies.
func TestErrorWording(t *testing.T) {
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{dmftest.DemoDefinitionGroup: dmftest.DemoProject(), "Slow": dmftest.DemoProject()},
		ExecutionTime: 100 * time.Millisecond,
	})
	defer sim.Close()
	dir := t.TempDir()
	writeFile(t, dir, "afile", "not a directory")
	const export = `  - name: %s
    schedule: "@daily"
    definition_group: %s
    legal_entity: USMF
`
	cfg := fileSinkConfig + fmt.Sprintf(export, "slow", "Slow") + "    poll: {interval: 10ms, max_interval: 10ms, deadline: 30ms}\n" +
		fmt.Sprintf(export, "badtoken", "DemoExport") + "    fo: {auth: {token: '${WRONG_TOKEN}'}}\n" +
		fmt.Sprintf(export, "badsink", "DemoExport") + "    broker: {path: ./afile}\n" +
		fmt.Sprintf(export, "badstore", "DemoExport") + "    store: {path: ./afile}\n"
	path := writeFile(t, dir, "dmfexport.yaml", cfg)
	env := []string{"DMFSIM_URL=" + sim.URL, "FO_TOKEN=" + dmftest.DefaultToken, "WRONG_TOKEN=not-the-token"}
	tests := []struct {
		job     string
		want    []string
		notWant []string
		once    []string // said exactly once
		code    int      // exit code
	}{
		// Past poll.deadline the run waits for F&O: it resumes (75).
		{"slow", []string{"did not finish before the deadline", "raise poll.deadline"}, []string{"replay"}, nil, 75},
		{"badtoken", []string{"HTTP 401", "static token was refused"}, []string{"Microsoft Entra applications", "poll.deadline", "replay"}, nil, 1},
		{"badsink", []string{"not a directory", "check broker.path", "nothing was exported"}, []string{"replay"}, []string{"file sink"}, 1},
		{"badstore", []string{"not a directory"}, []string{"replay"}, []string{"open ", "directory store", "export badstore"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.job, func(t *testing.T) {
			stdout, stderr, code := runBinary(t, env, "trigger", "--config", path, tt.job)
			// The message is the line starting "export JOB" (the first
			// of the output when the run made no record to summarize).
			msg := stdout[max(strings.Index("\n"+stdout, "\nexport "+tt.job), 0):]
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message lacks %q:\n%s", w, msg)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(msg, w) {
					t.Errorf("message holds %q, which does not apply:\n%s", w, msg)
				}
			}
			for _, w := range tt.once {
				if n := strings.Count(msg, w); n != 1 {
					t.Errorf("message says %q %d times, want once:\n%s", w, n, msg)
				}
			}
			if strings.Contains(strings.TrimSpace(stderr), "\n\n") {
				t.Errorf("blank line in stderr:\n%s", stderr)
			}
			if ids := regexp.MustCompile(`[A-Za-z]+-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-[0-9a-f]+`).FindAllString(msg, -1); len(ids) > 1 {
				t.Errorf("execution ID said %d times:\n%s", len(ids), msg)
			}
		})
	}
}
