package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

func TestParseArgs(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{"Customers V3.csv": "A\r\n1\r\n", "Products.XLSX": "PK", "notes": "x", "Groups.xml": "<Document/>"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	tests := []struct {
		name       string
		args       []string
		env        string
		wantErr    string
		wantGroups []string
		check      func(t *testing.T, c config)
	}{
		{"defaults serve the demo", nil, "", "", []string{dmftest.DemoDefinitionGroup}, func(t *testing.T, c config) {
			if c.addr != "127.0.0.1:8089" || c.opts.Token != dmftest.DefaultToken || c.opts.ExecutionTime != 2*time.Second || c.opts.URLTTL != time.Hour {
				t.Errorf("want defaults 127.0.0.1:8089, %s, 2s, 1h; got %s, %s, %v, %v", dmftest.DefaultToken, c.addr, c.opts.Token, c.opts.ExecutionTime, c.opts.URLTTL)
			}
		}},
		{"defaults behave as F&O", nil, "", "", nil, func(t *testing.T, c config) {
			o := c.opts
			if o.RegisterDelay != dmftest.DefaultRegisterDelay || o.History != dmftest.DefaultHistory || o.EmptyURLAsks != dmftest.DefaultEmptyURLAsks ||
				o.EmptyErrorsEvery != dmftest.DefaultEmptyErrorsEvery || o.ConcurrentExports || o.NestedValue {
				t.Errorf("want F&O's behaviour by default, got register %v, history %v, empty URL asks %d, empty errors every %d, concurrent %v, nested %v",
					o.RegisterDelay, o.History, o.EmptyURLAsks, o.EmptyErrorsEvery, o.ConcurrentExports, o.NestedValue)
			}
		}},
		{"zero turns behaviours off", []string{"--register-delay", "0", "--history", "0", "--empty-url-asks", "0", "--empty-errors-every", "0", "--allow-concurrent-exports"}, "", "", nil, func(t *testing.T, c config) {
			o := c.opts
			if o.RegisterDelay >= 0 || o.History >= 0 || o.EmptyURLAsks >= 0 || o.EmptyErrorsEvery >= 0 || !o.ConcurrentExports {
				t.Errorf("want every behaviour off (negative knobs, concurrent exports allowed), got %+v", o)
			}
		}},
		{"tuned", []string{"--register-delay", "3s", "--history", "24h", "--empty-url-asks", "2", "--empty-errors-every", "3"}, "", "", nil, func(t *testing.T, c config) {
			o := c.opts
			if o.RegisterDelay != 3*time.Second || o.History != 24*time.Hour || o.EmptyURLAsks != 2 || o.EmptyErrorsEvery != 3 {
				t.Errorf("want 3s, 24h, 2, 3; got %v, %v, %d, %d", o.RegisterDelay, o.History, o.EmptyURLAsks, o.EmptyErrorsEvery)
			}
		}},
		{"negative knobs refused", []string{"--register-delay", "-1s", "--history", "-1h", "--empty-errors-every", "-2"}, "", "--empty-errors-every must not be negative; --history must not be negative; --register-delay must not be negative", nil, nil},
		{"token from environment", nil, "env-token", "", nil, func(t *testing.T, c config) {
			if c.opts.Token != "env-token" {
				t.Errorf("want token from DMFSIM_TOKEN, got %q", c.opts.Token)
			}
		}},
		{"flag beats environment", []string{"--token", "flag-token"}, "env-token", "", nil, func(t *testing.T, c config) {
			if c.opts.Token != "flag-token" {
				t.Errorf("want token from --token, got %q", c.opts.Token)
			}
		}},
		{"project directory", []string{"--project", "P=" + dir, "--final-status", "P=Failed", "--throttle", "5", "--empty-url-asks", "2", "--execution-time", "1s", "--url-ttl", "5m"}, "", "", []string{"P"}, func(t *testing.T, c config) {
			ents := c.opts.Projects["P"]
			var got []string
			for _, e := range ents {
				got = append(got, e.Name+"|"+e.File+"|"+e.SourceFormat)
			}
			want := []string{"Customers V3|Customers V3.csv|CSV-Unicode", "Groups|Groups.xml|XML-Element", "Products|Products.XLSX|EXCEL", "notes|notes|CSV-Unicode"}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("want entities %q, got %q", want, got)
			}
			if c.opts.FinalStatus["P"] != "Failed" || c.opts.Throttle != 5 || c.opts.EmptyURLAsks != 2 || c.opts.ExecutionTime != time.Second || c.opts.URLTTL != 5*time.Minute {
				t.Errorf("knobs not applied: %+v", c.opts)
			}
		}},
		{"project and demo", []string{"--project", "P=" + dir, "--demo"}, "", "", []string{"P", dmftest.DemoDefinitionGroup}, nil},
		{"incremental entity", []string{"--project", "P=" + dir, "--incremental", "Customers V3"}, "", "", []string{"P"}, func(t *testing.T, c config) {
			for _, e := range c.opts.Projects["P"] {
				if want := map[bool]string{true: dmftest.IncrementalPush}[e.Name == "Customers V3"]; e.RefreshType != want {
					t.Errorf("entity %s: refresh type %q, want %q", e.Name, e.RefreshType, want)
				}
			}
		}},
		{"incremental entity not served", []string{"--project", "P=" + dir, "--incremental", "Nope"}, "", "--incremental Nope: no entity of that name is served", nil, nil},
		{"bad project flag", []string{"--project", "P"}, "", "want NAME=VALUE", nil, nil},
		{"missing directory", []string{"--project", "P=" + filepath.Join(dir, "nope")}, "", "read project directory", nil, nil},
		{"empty directory", []string{"--project", "P=" + empty}, "", "holds no regular files", nil, nil},
		{"bad status", []string{"--final-status", dmftest.DemoDefinitionGroup + "=Done"}, "", "status must be", nil, nil},
		{"status of unknown group", []string{"--final-status", "X=Failed"}, "", `no definition group "X"`, nil, nil},
		{"every problem reported", []string{"--final-status", "X=Failed", "--execution-time", "0s", "--throttle", "-1"}, "", "--throttle must not be negative", nil, nil},
		{"stray argument", []string{"extra"}, "", "unexpected arguments", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("DMFSIM_TOKEN", tt.env)
			c, err := parseArgs(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want error containing %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("want no error, got %v", err)
			}
			for _, g := range tt.wantGroups {
				if len(c.opts.Projects[g]) == 0 {
					t.Errorf("want definition group %s served, got none", g)
				}
			}
			if tt.wantGroups != nil && len(c.opts.Projects) != len(tt.wantGroups) {
				t.Errorf("want %d groups, got %d", len(tt.wantGroups), len(c.opts.Projects))
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := parseArgs([]string{"--help"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("want flag.ErrHelp, got %v", err)
	}
	for _, want := range []string{"Usage: dmfsim", "-project NAME=DIR", "-final-status GROUP=STATUS", "-execution-time",
		"-register-delay", "-history", "-allow-concurrent-exports", "-empty-errors-every N", "behaves as F&O does",
		"-format ENTITY=SPEC", "codepage=N", "fixed=W1/W2", "-concurrent-excel"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
}

// TestBinaryServesAndStops builds the command, runs it, makes an API call
// and checks that SIGTERM stops it cleanly with exit code 0.
func TestBinaryServesAndStops(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	bin := filepath.Join(t.TempDir(), "dmfsim")
	if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.CommandContext(context.Background(), bin, "--addr", "127.0.0.1:0", "--token", "t0k", "--execution-time", "10ms")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		t.Fatalf("no start line; stderr: %s", stderr.String())
	}
	base, ok := strings.CutPrefix(sc.Text(), "dmfsim listening on ")
	if !ok {
		t.Fatalf("want \"dmfsim listening on <url>\", got %q", sc.Text())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()

	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.GetExecutionSummaryStatus",
		strings.NewReader(`{"executionId":"x"}`))
	req.Header.Set("Authorization", "Bearer t0k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("call the simulator: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"value":"Unknown"`) {
		t.Errorf("want 200 with value Unknown, got %d %s", resp.StatusCode, body)
	}
	// Without flags the binary behaves as F&O: a new execution is not
	// registered at once.
	post := func(action, body string) (int, string) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."+action, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer t0k")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("call the simulator: %v", err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, b := post("ExportToPackage", `{"definitionGroupId":"`+dmftest.DemoDefinitionGroup+`","packageName":"p","executionId":"e1","reExecute":false,"legalEntityId":"USMF"}`); code != 200 {
		t.Fatalf("export: want 200, got %d %s", code, b)
	}
	if code, b := post("GetExecutionSummaryStatus", `{"executionId":"e1"}`); code != 400 || !strings.Contains(b, "Execution details were not found for execution id e1") {
		t.Errorf("status right after the export: want 400 \"Execution details were not found\", got %d %s", code, b)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("want exit code 0 after SIGTERM, got %v; stderr: %s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after SIGTERM")
	}
	log := stderr.String()
	if !strings.Contains(log, "action=GetExecutionSummaryStatus status=200") || !strings.Contains(log, "dmfsim stopped") {
		t.Errorf("want the request and the stop logged, got:\n%s", log)
	}
	if strings.Contains(log, "t0k") {
		t.Errorf("log reveals the token:\n%s", log)
	}
}
