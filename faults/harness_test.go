//go:build faults

package faults

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

// The suite's shared state, set up by TestMain.
var (
	binDir string // the built dmfexport and dmfsim
	broker *rabbitNode
)

func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "dmfexport-faults-")
	if err != nil {
		return 0, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	binDir = filepath.Join(dir, "bin")
	// -tags faults: a replica's clock can be skewed (DMFEXPORT_FAULTS_CLOCK_SKEW).
	build := exec.CommandContext(context.Background(), "go", "build", "-tags", "faults", "-o", binDir+"/", "../cmd/dmfexport", "../cmd/dmfsim")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return 0, fmt.Errorf("build the binaries: %w", err)
	}
	broker, err = startRabbit(dir)
	if err != nil {
		return 0, err
	}
	defer broker.stop()
	fmt.Printf("faults: broker %s (%s)\n", broker.url, broker.kind())
	return m.Run(), nil
}

// rabbitNode is the broker the suite publishes to: a private node it
// started (and may stop, alarm or reconfigure), or, where it cannot start
// one, the test broker, which it never stops or cuts.
type rabbitNode struct {
	url, name string
	private   bool
	cmd       *exec.Cmd
}

func (n *rabbitNode) kind() string {
	if n.private {
		return "private node " + n.name
	}
	return "shared test broker: cases that control the node are skipped"
}

// startRabbit starts a private RabbitMQ node on its own ports, with its
// own data and log folders (owned by user rabbitmq, as the Debian wrapper
// drops root) and a config file of its own (the system one names 5672).
func startRabbit(dir string) (*rabbitNode, error) {
	shared := os.Getenv("DMFEXPORT_TEST_AMQP_URL")
	if shared == "" {
		shared = "amqp://guest:guest@127.0.0.1:5672/"
	}
	u, uerr := user.Lookup("rabbitmq")
	if _, err := exec.LookPath("rabbitmq-server"); err != nil || uerr != nil || os.Getuid() != 0 {
		return &rabbitNode{url: shared}, nil
	}
	base := filepath.Join(dir, "rabbit")
	port, dist := freePort(), freePort()
	for _, d := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			return nil, err
		}
	}
	files := map[string]string{
		"rabbitmq.conf":   fmt.Sprintf("listeners.tcp.local = 127.0.0.1:%d\n", port),
		"enabled_plugins": "[].\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(base, name), []byte(body), 0o644); err != nil {
			return nil, err
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	_ = os.Chown(dir, uid, gid)
	_ = filepath.Walk(base, func(p string, _ os.FileInfo, _ error) error { return os.Chown(p, uid, gid) })
	_ = os.Chmod(dir, 0o755)
	name := fmt.Sprintf("dmffaults%d@localhost", port)
	cmd := exec.CommandContext(context.Background(), "rabbitmq-server")
	cmd.Dir = base
	cmd.Env = append(os.Environ(),
		"RABBITMQ_NODENAME="+name,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(base, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(base, "log"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(base, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(base, "enabled_plugins"),
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start a private RabbitMQ node: %w", err)
	}
	n := &rabbitNode{url: fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port), name: name, private: true, cmd: cmd}
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) { // the private RabbitMQ node starts
		if c, err := amqp.Dial(n.url); err == nil {
			_ = c.Close()
			return n, nil
		}
	}
	n.stop()
	return nil, fmt.Errorf("private RabbitMQ node %s did not start within 90s (logs in %s)", name, filepath.Join(base, "log"))
}

// ctl runs rabbitmqctl against the private node.
func (n *rabbitNode) ctl(args ...string) error {
	out, err := exec.CommandContext(context.Background(), "rabbitmqctl", append([]string{"-n", n.name}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("rabbitmqctl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (n *rabbitNode) stop() {
	if !n.private || n.cmd == nil {
		return
	}
	_ = n.ctl("stop")
	done := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	}
}

func freePort() int {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is a started binary whose JSON (dmfexport) or text (dmfsim) log
// lines are kept.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	code int

	mu    sync.Mutex
	lines []string
	added chan struct{}
}

// startProc starts bin: one of the built binaries by name (its stderr
// kept), or a tool by absolute path (its stdout and stderr kept).
func startProc(t *testing.T, env []string, dir, bin string, args ...string) *proc {
	t.Helper()
	path := bin
	if !filepath.IsAbs(bin) {
		path = filepath.Join(binDir, bin)
	}
	cmd := exec.CommandContext(context.Background(), path, args...)
	cmd.Env = env
	cmd.Dir = dir
	stderr, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr, cmd.Stdout = w, io.Discard
	if filepath.IsAbs(bin) {
		cmd.Stdout = w
	}
	err = cmd.Start()
	_ = w.Close()
	if err != nil {
		_ = stderr.Close()
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), added: make(chan struct{}, 1)}
	go func() {
		br := bufio.NewReaderSize(stderr, 64<<10)
		for {
			line, err := readLine(br, 1<<20)
			if err != nil {
				break
			}
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
			select {
			case p.added <- struct{}{}:
			default:
			}
		}
		_ = stderr.Close()
		err := cmd.Wait()
		p.code = 0
		ee := &exec.ExitError{}
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.done })
	return p
}

// readLine reads one line of a child's output, keeping at most max bytes
// of it: the rest is read and dropped, so a long line never stops the
// reading (a child whose output is not read blocks on its next write).
func readLine(br *bufio.Reader, max int) (string, error) {
	var b []byte
	for {
		frag, more, err := br.ReadLine()
		if len(b) < max {
			b = append(b, frag[:min(len(frag), max-len(b))]...)
		}
		if err != nil || !more {
			return string(b), err
		}
	}
}

// waitLine waits until a log line contains every one of parts; false after
// timeout or when the process ended first.
func (p *proc) waitLine(timeout time.Duration, parts ...string) bool {
	deadline := time.After(timeout)
	seen := 0
	for {
		p.mu.Lock()
		for ; seen < len(p.lines); seen++ {
			if containsAll(p.lines[seen], parts) {
				p.mu.Unlock()
				return true
			}
		}
		p.mu.Unlock()
		select {
		case <-p.added:
		case <-p.done:
			p.mu.Lock()
			n := len(p.lines)
			p.mu.Unlock()
			if seen >= n {
				return false
			}
		case <-deadline:
			return false
		}
	}
}

func containsAll(s string, parts []string) bool {
	for _, x := range parts {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

// count returns how many log lines contain every one of parts.
func (p *proc) count(parts ...string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if containsAll(l, parts) {
			n++
		}
	}
	return n
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// wait waits for the process to exit; ok false after timeout (a hang).
func (p *proc) wait(timeout time.Duration) (code int, ok bool) {
	select {
	case <-p.done:
		return p.code, true
	case <-time.After(timeout):
		return -1, false
	}
}

func (p *proc) signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

// pauseUnlocked SIGSTOPs the process at a moment it holds no flock. A
// directory store's guarded write (a run record's) holds one on the
// record's folder for the tens of microseconds of its check and renames;
// a process stopped inside them stops the folder's other writers with it
// (see store.DirStore.PutGuarded), which is not what a paused owner's case
// is about. It reports how many pauses fell inside.
func (p *proc) pauseUnlocked() (inside int) {
	pid := strconv.Itoa(p.cmd.Process.Pid)
	for {
		p.signal(syscall.SIGSTOP)
		for deadline := time.Now().Add(time.Second); !stopped(pid) && time.Now().Before(deadline); {
			time.Sleep(100 * time.Microsecond)
		}
		if !holdsFlock(pid) || inside == 100 {
			return inside
		}
		inside++
		p.signal(syscall.SIGCONT)
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
	}
}

// stopped tells whether process pid is stopped by a signal, by
// /proc/PID/stat.
func stopped(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'T'
}

// holdsFlock tells whether process pid holds a flock, by /proc/locks.
func holdsFlock(pid string) bool {
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// 1: FLOCK  ADVISORY  WRITE 12345 08:01:1234 0 EOF
		if f := strings.Fields(line); len(f) > 4 && f[1] == "FLOCK" && f[4] == pid {
			return true
		}
	}
	return false
}

// goroutines ends a hung Go process with SIGQUIT and returns the stacks
// it printed, for the report of the hang.
func (p *proc) goroutines() string {
	p.mu.Lock()
	from := len(p.lines)
	p.mu.Unlock()
	p.signal(syscall.SIGQUIT)
	if _, ok := p.wait(10 * time.Second); !ok {
		return "(no stacks: the process did not end on SIGQUIT)"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines[from:], "\n")
}

// sim is a running dmfsim.
type sim struct {
	*proc
	url  string
	base int // exports counted by simulators this one replaced
}

// startSim serves entity A of rows rows (and B of 100 rows) as group G.
func startSim(t *testing.T, dir string, rows int, flags ...string) *sim {
	t.Helper()
	data := filepath.Join(dir, "project")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{"A": rows, "B": 100} {
		var b strings.Builder
		b.WriteString("ID,TEXT\r\n")
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&b, "%d,\"row %d, with a comma\"\r\n", i, i)
		}
		if err := os.WriteFile(filepath.Join(data, name+".csv"), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return startSimData(t, dir, data, flags...)
}

// startSimData serves every file in data as an entity of group G.
func startSimData(t *testing.T, dir, data string, flags ...string) *sim {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort())
	args := append([]string{"--addr", addr, "--project", "G=" + data, "--execution-time", "1500ms"}, flags...)
	p := startProc(t, os.Environ(), dir, "dmfsim", args...)
	s := &sim{proc: p, url: "http://" + addr}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) { // the dmfsim process starts listening
		if c, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", addr); err == nil {
			_ = c.Close()
			return s
		}
	}
	t.Fatalf("dmfsim did not listen on %s:\n%s", addr, p.log())
	return nil
}

// exports counts the executions ExportToPackage started.
func (s *sim) exports() int { return s.count("dmftest execution started") }

// delivery tallies what reached the queue, per run.
type delivery struct {
	rows       map[string]map[string]int // run → row key → copies
	msgs       map[string]int            // message ID → copies
	rowMsg     map[string]string         // run/row → first message ID
	badDups    int                       // a row delivered twice under different message IDs
	dupBatches int                       // extra copies of a message ID
}

// runStatus is what dmfexport status --json says of a run.
type runStatus struct {
	RunID       string `json:"run_id"`
	Trigger     string `json:"trigger"`
	ScheduledAt string `json:"scheduled_at"`
	State       string `json:"state"`
	Error       string `json:"error"`
	Waiting     string `json:"waiting"`
}

func (r runStatus) final() bool {
	switch r.State {
	case "succeeded", "partially_succeeded", "failed", "skipped", "abandoned":
		return true
	}
	return false
}

// azuriteVersion is the Azurite .ci/test.sh installs into .tools/.
const azuriteVersion = "3.37.0"

var (
	azuriteOnce sync.Once
	azuriteBin  string
	azuriteErr  error
)

// findAzurite returns the azurite-blob of .tools/, installing it there as
// .ci/test.sh does when it is missing and npm is at hand.
func findAzurite() (string, error) {
	azuriteOnce.Do(func() {
		tools, err := filepath.Abs("../.tools")
		if err != nil {
			azuriteErr = err
			return
		}
		azuriteBin = filepath.Join(tools, "node_modules", ".bin", "azurite-blob")
		if _, err := os.Stat(azuriteBin); err == nil {
			return
		}
		if _, err := exec.LookPath("npm"); err != nil {
			azuriteErr = fmt.Errorf("no %s and no npm to install azurite@%s there (run .ci/test.sh once, or install Node.js)", azuriteBin, azuriteVersion)
			return
		}
		fmt.Printf("faults: installing azurite@%s into .tools/\n", azuriteVersion)
		if err := os.MkdirAll(tools, 0o755); err != nil {
			azuriteErr = err
			return
		}
		out, err := exec.CommandContext(context.Background(), "npm", "install", "--prefix", tools, "--no-audit", "--no-fund", "--loglevel=error", "azurite@"+azuriteVersion).CombinedOutput()
		if err != nil {
			azuriteErr = fmt.Errorf("npm install azurite@%s: %w: %s", azuriteVersion, err, out)
		}
	})
	return azuriteBin, azuriteErr
}

// azurite is a private Azure Blob Storage emulator on its own port whose
// data lives in a folder (--location), so a stop and restart keep it, as
// an outage of the real service keeps what it acknowledged.
type azurite struct {
	t        *testing.T
	bin, dir string
	port     int
	p        *proc
}

// startAzurite starts a private Azurite, or skips the case when none can
// be had.
func startAzurite(t *testing.T, dir string) *azurite {
	t.Helper()
	bin, err := findAzurite()
	if err != nil {
		t.Skipf("needs Azurite: %v", err)
	}
	a := &azurite{t: t, bin: bin, dir: filepath.Join(dir, "azurite"), port: freePort()}
	if err := os.MkdirAll(a.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	a.start()
	if t.Failed() {
		t.FailNow()
	}
	return a
}

// endpoint is the blob endpoint of the emulator's development account.
func (a *azurite) endpoint() string {
	return fmt.Sprintf("http://127.0.0.1:%d/devstoreaccount1", a.port)
}

// connString is a shared-key connection string for it (a well-known,
// public development key).
func (a *azurite) connString() string {
	return "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + azuriteKey + ";BlobEndpoint=" + a.endpoint() + ";"
}

const azuriteKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

// start starts the emulator on its port and waits until it listens (the
// case fails if it does not).
func (a *azurite) start() {
	a.t.Helper()
	// --skipApiVersionCheck: azblob sends a newer x-ms-version than Azurite knows.
	a.p = startProc(a.t, os.Environ(), a.dir, a.bin, "--location", a.dir, "--blobHost", "127.0.0.1",
		"--blobPort", strconv.Itoa(a.port), "--skipApiVersionCheck", "--disableTelemetry", "--silent")
	if !a.p.waitLine(60*time.Second, "successfully listens on") {
		a.t.Errorf("Azurite did not start on port %d:\n%s", a.port, tail(a.p.log(), 20))
	}
}

// stop ends the emulator as a service stop does (SIGTERM: it saves its
// data and closes its port).
func (a *azurite) stop() {
	a.p.signal(syscall.SIGCONT)
	a.p.signal(syscall.SIGTERM)
	if _, ok := a.p.wait(30 * time.Second); !ok {
		a.t.Errorf("Azurite did not stop within 30s")
		a.p.signal(syscall.SIGKILL)
		a.p.wait(10 * time.Second)
	}
}

// restartEmpty kills the emulator (SIGKILL: it saves nothing) and starts a
// fresh one on the same port that keeps its data in memory: the store is
// back, empty, its container gone, as after losing an emulator run with
// --inMemoryPersistence.
func (a *azurite) restartEmpty() {
	a.t.Helper()
	a.p.signal(syscall.SIGCONT)
	a.p.signal(syscall.SIGKILL)
	a.p.wait(10 * time.Second)
	a.p = startProc(a.t, os.Environ(), a.dir, a.bin, "--inMemoryPersistence", "--blobHost", "127.0.0.1",
		"--blobPort", strconv.Itoa(a.port), "--skipApiVersionCheck", "--disableTelemetry", "--silent")
	if !a.p.waitLine(60*time.Second, "successfully listens on") {
		a.t.Errorf("Azurite did not start again on port %d:\n%s", a.port, tail(a.p.log(), 20))
	}
}

var _ = dmftest.DefaultToken

// TestReadLine: a line longer than the limit is cut, and the lines after
// it are still read.
func TestReadLine(t *testing.T) {
	long := strings.Repeat("x", 3<<20)
	br := bufio.NewReaderSize(strings.NewReader(long+"\nnext\nlast"), 64<<10)
	var got []string
	for {
		line, err := readLine(br, 1<<20)
		if err != nil {
			break
		}
		got = append(got, line)
	}
	if len(got) != 3 || len(got[0]) != 1<<20 || got[1] != "next" || got[2] != "last" {
		t.Fatalf("lines read: %d, want 3 (the first cut to 1 MiB, then next, last)", len(got))
	}
}
