package deploy

import (
	"bufio"
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

	"github.com/dmfexport/dmfexport/jobs"
)

// unitFile is a systemd unit: section → key → values in file order (a key
// may repeat).
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, file string) unitFile {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", file, n, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// value is the last value of key in [Service] ("" and false if unset).
func (u unitFile) value(key string) (string, bool) {
	vs := u["Service"][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// flagValue is the value of --name in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// hardening is what every unit must set in [Service].
var hardening = map[string]string{
	"User":                    UserName,
	"NoNewPrivileges":         "yes",
	"CapabilityBoundingSet":   "",
	"AmbientCapabilities":     "",
	"ProtectSystem":           "strict",
	"ProtectHome":             "yes",
	"PrivateTmp":              "yes",
	"PrivateDevices":          "yes",
	"ProtectKernelTunables":   "yes",
	"ProtectKernelModules":    "yes",
	"ProtectControlGroups":    "yes",
	"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
	"RestrictNamespaces":      "yes",
	"RestrictSUIDSGID":        "yes",
	"LockPersonality":         "yes",
	"MemoryDenyWriteExecute":  "yes",
	"SystemCallArchitectures": "native",
	"Restart":                 "on-failure",
}

var systemdUnits = []struct {
	file, command, config, envFile string
	port                           int
}{
	{"systemd/dmfexport.service", "run", "/etc/dmfexport/dmfexport.yaml", "/etc/dmfexport/secrets.env", MetricsPort},
	{"systemd/dmfexport-sink.service", "sink", "/etc/dmfexport/sink.yaml", "/etc/dmfexport/sink.env", SinkMetricsPort},
}

// TestSystemdUnits holds the units against the binary (their command lines
// parse), the hardening they promise, the exit code that means "the next
// start resumes", the example configuration's store path, and, where it is
// installed, systemd-analyze verify and security.
func TestSystemdUnits(t *testing.T) {
	bin := testBinary(t)
	sysusers := readSysusers(t, "systemd/dmfexport.sysusers")
	for _, tc := range systemdUnits {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			u := parseUnit(t, tc.file)
			for k, want := range hardening {
				if got, ok := u.value(k); !ok || got != want {
					t.Errorf("%s: %s=%q, want %q", tc.file, k, got, want)
				}
			}
			if !slices.Contains(u["Service"]["SystemCallFilter"], "@system-service") {
				t.Errorf("%s: SystemCallFilter %q, want @system-service among them", tc.file, u["Service"]["SystemCallFilter"])
			}
			for _, k := range []string{"SuccessExitStatus", "RestartForceExitStatus"} {
				if v, _ := u.value(k); !slices.Contains(strings.Fields(v), "75") {
					t.Errorf("%s: %s=%q: 75 (stopped or waiting, the next start resumes) is missing", tc.file, k, v)
				}
			}
			if v, _ := u.value("EnvironmentFile"); v != tc.envFile {
				t.Errorf("%s: EnvironmentFile=%q, want %s", tc.file, v, tc.envFile)
			}
			if user, _ := u.value("User"); !slices.Contains(sysusers, user) {
				t.Errorf("%s: User=%s, which dmfexport.sysusers does not create (it creates %q)", tc.file, user, sysusers)
			}

			exec0, _ := u.value("ExecStart")
			args := strings.Fields(exec0)
			if len(args) < 2 || args[0] != BinaryPath || args[1] != tc.command {
				t.Fatalf("%s: ExecStart=%s, want %s %s ...", tc.file, exec0, BinaryPath, tc.command)
			}
			if v, _ := flagValue(args, "config"); v != tc.config {
				t.Errorf("%s: --config %q, want %s", tc.file, v, tc.config)
			}
			if v, _ := flagValue(args, "listen"); v != fmt.Sprintf("127.0.0.1:%d", tc.port) {
				t.Errorf("%s: --listen %q, want 127.0.0.1:%d (metrics on loopback; a scraper elsewhere needs another address)", tc.file, v, tc.port)
			}
			// The binary accepts the unit's flags: --help after them
			// prints the command's usage and exits 0.
			out, err := exec.CommandContext(t.Context(), bin, append(slices.Clone(args[1:]), "--help")...).CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "Usage: dmfexport "+tc.command) {
				t.Errorf("%s: dmfexport %s --help: %v\n%s", tc.file, strings.Join(args[1:], " "), err, out)
			}
			stopTimeout := 5 * time.Minute // run's default
			if v, ok := flagValue(args, "stop-timeout"); ok {
				if stopTimeout, err = time.ParseDuration(v); err != nil {
					t.Errorf("%s: --stop-timeout %q: %v", tc.file, v, err)
				}
			}
			v, _ := u.value("TimeoutStopSec")
			sec, err := strconv.Atoi(v)
			if tc.command == "run" && (err != nil || time.Duration(sec)*time.Second <= stopTimeout) {
				t.Errorf("%s: TimeoutStopSec=%s, want seconds beyond --stop-timeout %s so runs reach a safe point", tc.file, v, stopTimeout)
			}

			// What it writes is its state directory, its working directory.
			state, _ := u.value("StateDirectory")
			if wd, _ := u.value("WorkingDirectory"); state == "" || wd != "/var/lib/"+state {
				t.Errorf("%s: StateDirectory=%q, WorkingDirectory=%q: want the working directory in the state directory", tc.file, state, wd)
			}
			if tc.command == "run" {
				// The example configuration's directory store is the one
				// the unit lets the service write.
				data, err := os.ReadFile("../configs/example.yaml")
				if err != nil {
					t.Fatal(err)
				}
				cfg, err := jobs.ParseConfig("../configs/example.yaml", data, func(string) (string, bool) { return "dummy", true })
				if err != nil {
					t.Fatal(err)
				}
				if p := cfg.Exports[0].Store.Path; p != "/var/lib/"+state {
					t.Errorf("configs/example.yaml's store.path is %s, but %s lets the service write /var/lib/%s only", p, tc.file, state)
				}
			}

			verifyUnit(t, tc.file, bin)
			unitSecurity(t, tc.file)
		})
	}
}

// verifyUnit runs systemd-analyze verify on the unit, its ExecStart
// pointed at the binary the tests built (verify checks that it exists);
// any line it prints about the unit fails the test (verify exits 0 on
// unknown keys and bad values).
func verifyUnit(t *testing.T, file, bin string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Logf("systemd-analyze is not installed: %s is not verified by systemd", file)
		return
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Base(file)
	check := func(content string) []string {
		dir := t.TempDir()
		p := filepath.Join(dir, unit)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(content, BinaryPath, bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(t.Context(), "systemd-analyze", "verify", p).CombinedOutput()
		var about []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.Contains(line, unit) {
				about = append(about, line)
			} else if line != "" {
				t.Logf("systemd-analyze verify %s: %s", unit, line)
			}
		}
		if err != nil && len(about) == 0 {
			about = append(about, fmt.Sprintf("systemd-analyze verify: %v", err))
		}
		return about
	}
	if problems := check(string(data)); len(problems) > 0 {
		t.Errorf("systemd-analyze verify %s:\n%s", file, strings.Join(problems, "\n"))
	}
	// The check can fail: a misspelled value is reported.
	if problems := check(strings.Replace(string(data), "ProtectSystem=strict", "ProtectSystem=strictly", 1)); len(problems) == 0 {
		t.Errorf("systemd-analyze verify did not report ProtectSystem=strictly in %s: the check cannot fail", file)
	}
}

var exposureLine = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// maxExposure is the highest systemd-analyze security score accepted
// (0 safest, 10 least; up to 2.0 systemd calls OK).
const maxExposure = 2.0

// unitSecurity runs systemd-analyze security on the unit file (offline,
// systemd 250 and later) and holds its overall exposure to maxExposure.
func unitSecurity(t *testing.T, file string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		return
	}
	out, err := exec.CommandContext(t.Context(), "systemd-analyze", "security", "--offline=true", file).CombinedOutput()
	m := exposureLine.FindSubmatch(out)
	if m == nil {
		t.Logf("systemd-analyze security --offline=true %s gave no score (systemd older than 250?): %v\n%s", file, err, out)
		return
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("%s: systemd-analyze security exposure %.1f", file, score)
	if score > maxExposure {
		t.Errorf("%s: systemd-analyze security exposure %.1f, want at most %.1f:\n%s", file, score, maxExposure, out)
	}
}

// readSysusers returns the users the sysusers.d file creates, checking it
// with systemd-sysusers in a scratch root where that is installed.
func readSysusers(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "u" {
			users = append(users, f[1])
		}
	}
	if _, err := exec.LookPath("systemd-sysusers"); err != nil {
		return users
	}
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(t.Context(), "systemd-sysusers", "--root="+root, abs).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers %s: %v\n%s", file, err, out)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if !strings.Contains(string(passwd), u+":x:") {
			t.Errorf("systemd-sysusers %s did not create user %s:\n%s", file, u, passwd)
		}
	}
	return users
}
