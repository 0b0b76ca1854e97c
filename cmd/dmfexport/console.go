package main

import (
	"io"
	"os"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/term"
)

// console is where a command writes its live status line (stdout) and its
// log lines (stderr). On a terminal the two never mix: a log line clears the
// status line first and redraws it after; the status line is cut to the
// terminal's width, so it never wraps into fragments. Off a terminal there
// is no status line, and both streams get plain lines.
type console struct {
	mu     sync.Mutex
	out    io.Writer // stdout: the status line and kept lines
	errw   io.Writer // stderr: the log lines
	live   bool      // out is a terminal: the status line is drawn
	shared bool      // errw writes to the same terminal as out
	width  func() int
	status string // the status line as drawn, "" when none
}

// stdio is the process's console.
var stdio = newConsole(os.Stdout, os.Stderr)

// newConsole makes the console of out and errw, live when out is a
// terminal.
func newConsole(out, errw io.Writer) *console {
	c := &console{out: out, errw: errw, width: func() int { return 80 }}
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		c.live = true
		ef, ok := errw.(*os.File)
		c.shared = ok && term.IsTerminal(int(ef.Fd()))
		fd := int(f.Fd())
		c.width = func() int {
			if w, _, err := term.GetSize(fd); err == nil && w > 0 {
				return w
			}
			return 80
		}
	}
	return c
}

// Logs is the writer for log lines: each Write is one whole line (slog
// writes a record at once).
func (c *console) Logs() io.Writer { return logWriter{c} }

type logWriter struct{ c *console }

func (w logWriter) Write(p []byte) (int, error) {
	c := w.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.shared || c.status == "" {
		return c.errw.Write(p)
	}
	io.WriteString(c.out, "\r\033[K")
	n, err := c.errw.Write(p)
	io.WriteString(c.out, c.status)
	return n, err
}

// Line writes a line that stays, above the status line.
func (c *console) Line(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live && c.status != "" {
		io.WriteString(c.out, "\r\033[K")
	}
	io.WriteString(c.out, s+"\n")
	if c.live {
		io.WriteString(c.out, c.status)
	}
}

// Status draws s as the status line, cut to the terminal's width. Off a
// terminal it does nothing.
func (c *console) Status(s string) {
	if !c.live {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status = cut(s, c.width()-1)
	io.WriteString(c.out, "\r\033[K"+c.status)
}

// End keeps the status line as it is and moves below it, so what follows
// starts on a line of its own.
func (c *console) End() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status != "" {
		io.WriteString(c.out, "\n")
		c.status = ""
	}
}

// cut shortens s to at most width characters, ending in "…" when cut. The
// status line holds only single-width characters.
func cut(s string, width int) string {
	if width < 1 {
		return ""
	}
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == width-1 {
			break
		}
		b.WriteRune(r)
		n++
	}
	b.WriteString("…")
	return b.String()
}
