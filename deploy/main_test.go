package deploy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/internal/testenv"
)

// testVersion is stamped into the binary the tests build, so that they can
// tell it from any other dmfexport.
const testVersion = "v0.0.0-deploytest"

var (
	binaryDir  string
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "deploy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binaryDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// testBinary returns the dmfexport binary built as the image holds it
// (BuildBinary, version testVersion), building it once for every test of
// the package. It skips the test when there is no go command to build with.
func testBinary(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("no go command on PATH to build dmfexport with (%v): the image and the binary's checks are skipped", err)
	}
	binaryOnce.Do(func() {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		binaryPath = filepath.Join(binaryDir, "dmfexport")
		binaryErr = BuildBinary(ctx, "..", binaryPath, testVersion, runtime.GOARCH)
		t.Logf("built the image's binary in %s", time.Since(start).Round(100*time.Millisecond))
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// serving is a dmfexport process (run or sink) serving its operations
// listener.
type serving struct {
	cmd    *exec.Cmd
	addr   string
	output *testenv.SyncBuffer
	done   chan struct{} // closed when its output ends
}

// listenerLine finds the listener's address in the log line "operations
// listener", text or JSON.
var listenerLine = regexp.MustCompile(`operations listener.*?"?addr"?[=:]"?([^"\s]+)`)

// startServing starts cmd, which must listen on a port of its own choosing
// (--listen 127.0.0.1:0), and waits until it logs the listener's address.
// The process is killed when the test ends if still running.
func startServing(t *testing.T, cmd *exec.Cmd) *serving {
	t.Helper()
	s := &serving{cmd: cmd, output: &testenv.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout = s.output
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-s.done
		_ = cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(s.output, sc.Text())
			if m := listenerLine.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case s.addr = <-addr:
	case <-s.done:
		t.Fatalf("%s ended before serving its listener:\n%s", cmd.Args, s.output)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not log its listener's address within 30s:\n%s", cmd.Args, s.output)
	}
	return s
}

// get fetches path from the listener and returns the status code.
func (s *serving) get(t *testing.T, path string) int {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+s.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s of %s: %v\n%s", path, s.cmd.Args, err, s.output)
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// awaitReady polls path until it answers 200 (a process is ready some
// moments after its listener is up), failing after 30s.
func (s *serving) awaitReady(t *testing.T, path string) {
	t.Helper()
	s.await(t, "GET "+path+" answering 200", func() bool { return s.get(t, path) == http.StatusOK })
}

// await polls cond until it holds, failing after 30s or when the process
// ends first.
func (s *serving) await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s after 30s\n%s", s.cmd.Args, what, s.output)
		}
		select {
		case <-s.done:
			t.Fatalf("%s ended before %s:\n%s", s.cmd.Args, what, s.output)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and returns the exit code.
func (s *serving) stop(t *testing.T) int {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not stop within 60s of SIGTERM:\n%s", s.cmd.Args, s.output)
	}
	err := s.cmd.Wait()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	default:
		t.Fatalf("wait for %s: %v", s.cmd.Args, err)
		return -1
	}
}
