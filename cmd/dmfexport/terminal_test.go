package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/creack/pty"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

// screen is what a terminal shows after a byte stream: enough of a VT100 to
// read dmfexport's output as a person sees it (printable text, \r, \n,
// erase-in-line, automatic wrap at the right margin). Rows it wrapped into
// are marked, so wrapped text can be told from lines of its own.
type screen struct {
	width   int
	rows    [][]rune
	wrapped []bool // rows[i] continues rows[i-1] after an automatic wrap
	row     int
	col     int
}

func newScreen(width int) *screen {
	return &screen{width: width, rows: [][]rune{nil}, wrapped: []bool{false}}
}

func (s *screen) newRow(wrap bool) {
	s.row++
	if s.row == len(s.rows) {
		s.rows = append(s.rows, nil)
		s.wrapped = append(s.wrapped, wrap)
	} else {
		s.wrapped[s.row] = wrap
	}
	s.col = 0
}

func (s *screen) put(r rune) {
	if s.col == s.width { // deferred wrap, as xterm does
		s.newRow(true)
	}
	line := s.rows[s.row]
	for len(line) <= s.col {
		line = append(line, ' ')
	}
	line[s.col] = r
	s.rows[s.row] = line
	s.col++
}

// write interprets b.
func (s *screen) write(b []byte) {
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		b = b[n:]
		switch {
		case r == '\r':
			s.col = 0
		case r == '\n':
			s.newRow(false)
		case r == 0x1b && len(b) > 0 && b[0] == '[':
			// CSI: parameters, then one final byte.
			i := 1
			for i < len(b) && (b[i] < 0x40 || b[i] > 0x7e) {
				i++
			}
			if i == len(b) {
				return
			}
			params, final := string(b[1:i]), b[i]
			b = b[i+1:]
			if final == 'K' {
				line := s.rows[s.row]
				switch params {
				case "", "0":
					if s.col < len(line) {
						s.rows[s.row] = line[:s.col]
					}
				case "2":
					s.rows[s.row] = nil
				}
			}
		case r < 0x20:
		default:
			s.put(r)
		}
	}
}

// lines returns the logical lines: rows joined where the terminal wrapped
// them, each with the number of rows it took.
func (s *screen) lines() (lines []string, rowsOf []int) {
	for i, r := range s.rows {
		text := strings.TrimRight(string(r), " ")
		if i > 0 && s.wrapped[i] {
			lines[len(lines)-1] += text
			rowsOf[len(rowsOf)-1]++
			continue
		}
		lines = append(lines, text)
		rowsOf = append(rowsOf, 1)
	}
	return lines, rowsOf
}

func TestScreen(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  []string
		wraps []int
	}{
		{"plain", "ab\r\ncd\r\n", []string{"ab", "cd", ""}, []int{1, 1, 1}},
		{"redraw", "[1s] x\r\033[K[2s] y", []string{"[2s] y"}, []int{1}},
		{"erase", "abcdef\r\033[Kxy", []string{"xy"}, []int{1}},
		{"erase from cursor", "abcdef\rab\033[K", []string{"ab"}, []int{1}},
		{"wrap", "abcdefghij\r\n", []string{"abcdefghij", ""}, []int{2, 1}},
		{"redraw after wrap leaves a fragment", "abcdefghij\r\033[Kxy", []string{"abcdefghxy"}, []int{2}},
		{"exact width", "abcdefgh\r\nx", []string{"abcdefgh", "x"}, []int{1, 1}},
		{"colour codes", "\033[1mab\033[0m", []string{"ab"}, []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScreen(8)
			s.write([]byte(tt.in))
			got, wraps := s.lines()
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || fmt.Sprint(wraps) != fmt.Sprint(tt.wraps) {
				t.Errorf("screen %q (rows %v), want %q (rows %v)", got, wraps, tt.want, tt.wraps)
			}
		})
	}
}

// slowEntity is an entity of n rows of random text, so its package hardly
// compresses and a throttled download takes a while.
func slowEntity(name string, n int) dmftest.Entity {
	rng := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	b.WriteString("ID,TEXT\r\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%d,%016x%016x\r\n", i, rng.Uint64(), rng.Uint64())
	}
	return dmftest.Entity{Name: name, Data: b.Bytes()}
}

// terminalConfig exports group G of the simulator to a file sink.
const terminalConfig = `fo:
  url: ${DMFSIM_URL}
  auth: {method: token, token: "${FO_TOKEN}"}
store: {path: ./store}
broker: {type: file, path: ./batches}
poll: {interval: 50ms, max_interval: 100ms, deadline: 1m, package_url_timeout: 10s, register_timeout: 10s}
exports:
  - {name: %s, schedule: "@yearly", definition_group: G, legal_entity: USMF, batch_size: 500}
`

// runOnTerminal runs dmfexport with args under a pseudo-terminal of the
// given width (stdout and stderr both on it) and returns everything it
// wrote to the terminal.
func runOnTerminal(t *testing.T, dir string, env []string, width int, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), binary, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 50, Cols: uint16(width)})
	if err != nil {
		t.Fatalf("start under a pseudo-terminal: %v", err)
	}
	defer func() { _ = tty.Close() }()
	var out bytes.Buffer
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(&out, tty) // ends with EIO once the program exits: the output is what is checked
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("dmfexport %v did not end within 60 s; output:\n%s", args, out.String())
	}
	if err := cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}

// TestTriggerOnTerminal runs trigger under a pseudo-terminal narrower than
// its status line, with debug logs on the same terminal, and reads the
// screen: log lines and the status line never share a line, the status line
// never wraps, and the download shows a progress bar with rate and ETA.
// Piped, the same run prints plain lines without control sequences.
func TestTriggerOnTerminal(t *testing.T) {
	t.Parallel()
	const width = 100
	ent := slowEntity("Customers with a rather long entity name for the status line V3", 12000) // ~ 500 KB
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"G": {ent}},
		ExecutionTime: time.Second,
		Faults:        dmftest.Faults{DownloadRate: 200 << 10},
	})
	defer sim.Close()
	env := []string{"DMFSIM_URL=" + sim.URL, "FO_TOKEN=" + dmftest.DefaultToken}
	job := "terminal-job"

	t.Run("terminal", func(t *testing.T) {
		dir := t.TempDir()
		cfg := writeFile(t, dir, "dmfexport.yaml", fmt.Sprintf(terminalConfig, job))
		raw := runOnTerminal(t, dir, env, width, "trigger", "--config", cfg, "--log-level", "debug", job)
		scr := newScreen(width)
		scr.write(raw)
		lines, rows := scr.lines()
		var logs, statuses int
		for i, l := range lines {
			switch {
			case strings.HasPrefix(l, "time="):
				logs++
				if strings.Count(l, "time=") > 1 {
					t.Errorf("line %d holds two log lines: %q", i, l)
				}
			case strings.HasPrefix(l, "["):
				statuses++
				if rows[i] > 1 {
					t.Errorf("status line %d wrapped over %d rows: %q", i, rows[i], l)
				}
			}
			if j := strings.Index(l, "time="); j > 0 {
				t.Errorf("line %d has a log line after other text (status line not cleared): %q", i, l)
			}
			if j := strings.Index(l, "level="); j >= 0 && !strings.HasPrefix(l, "time=") {
				t.Errorf("line %d is a log line fragment: %q", i, l)
			}
		}
		if logs < 5 || statuses != 1 {
			t.Errorf("screen has %d log lines and %d status lines, want several and exactly 1 (the last status):\n%s", logs, statuses, strings.Join(lines, "\n"))
		}
		// Every status line drawn fits the terminal, and the download
		// showed a bar with rate and ETA.
		bar := regexp.MustCompile(`downloading \[[#.]+\] \d+% [\d.]+ [KM]iB/[\d.]+ [KM]iB [\d.]+ [KM]iB/s ETA \d+s`)
		var sawBar, sawCut bool
		for _, d := range strings.Split(string(raw), "\r\033[K") {
			d, _, _ = strings.Cut(d, "\n")
			if !strings.HasPrefix(d, "[") {
				continue
			}
			if n := utf8.RuneCountInString(d); n >= width {
				t.Errorf("status line of %d characters on a %d-column terminal: %q", n, width, d)
			}
			sawBar = sawBar || bar.MatchString(d)
			sawCut = sawCut || strings.HasSuffix(d, "…") && utf8.RuneCountInString(d) == width-1
		}
		if !sawBar {
			t.Errorf("no status line showed the download's progress bar with rate and ETA:\n%q", raw)
		}
		if !sawCut {
			t.Errorf("no status line was cut to the terminal's width:\n%q", raw)
		}
	})

	t.Run("piped", func(t *testing.T) {
		dir := t.TempDir()
		cfg := writeFile(t, dir, "dmfexport.yaml", fmt.Sprintf(terminalConfig, job))
		stdout, stderr, code := runBinaryIn(t, dir, env, "trigger", "--config", cfg, "--log-level", "debug", job)
		if code != 0 {
			t.Fatalf("exit code %d\n%s\n%s", code, stdout, stderr)
		}
		for _, out := range []string{stdout, stderr} {
			if strings.ContainsAny(out, "\r\033") {
				t.Errorf("piped output holds control characters:\n%q", out)
			}
		}
		for _, want := range []string{job + ": downloading\n", job + ": Customers with a rather long entity name for the status line V3: 12000 rows published\n"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("piped output lacks %q:\n%s", want, stdout)
			}
		}
	})
}
