package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/dmfexport/dmfexport/internal/human"
	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/runs"
)

// progressPrinter reports progress on w: on a terminal, one status line
// redrawn in place (every export's state, with a progress bar, rate and ETA
// where the total is known) and a line kept per state change; otherwise
// plain lines, one per state change and per confirmed batch.
func progressPrinter(w io.Writer) func(jobs.Event) {
	if w == io.Writer(os.Stdout) && stdio.live {
		return liveProgress(stdio, time.Now)
	}
	return plainProgress(w)
}

// redrawEvery bounds how often progress alone redraws the status line.
const redrawEvery = 100 * time.Millisecond

// liveProgress draws the status line on c, e.g.
// "[12s] demo downloading [######....] 45% 12.3/27.0 MiB 5.2 MiB/s ETA 3s".
func liveProgress(c *console, now func() time.Time) func(jobs.Event) {
	var mu sync.Mutex
	states := map[string]*jobState{}
	var order []string
	start := now()
	var drawn time.Time
	return func(e jobs.Event) {
		mu.Lock()
		defer mu.Unlock()
		t := now()
		js, ok := states[e.Job]
		if !ok {
			js = &jobState{}
			states[e.Job] = js
			order = append(order, e.Job)
		}
		changed := e.State != js.state || e.State.Final()
		if changed {
			// Keep a line per state change above the status line.
			detail := ""
			if e.Detail != "" && e.Entity == "" {
				detail = ": " + oneLine(e.Detail, 100)
			}
			c.Line(fmt.Sprintf("%s %s: %s%s", t.Format("15:04:05"), e.Job, e.State, detail))
		}
		newEntity := e.Entity != "" && js.ents[e.Entity] == nil
		js.update(e, t)
		if !changed && !newEntity && t.Sub(drawn) < redrawEvery {
			return
		}
		drawn = t
		line := func(bar bool) string {
			parts := make([]string, 0, len(order))
			for _, name := range order {
				parts = append(parts, states[name].render(name, t, bar && len(order) == 1))
			}
			return fmt.Sprintf("[%s] %s", t.Sub(start).Round(time.Second), strings.Join(parts, " | "))
		}
		// The bar goes first when the line is too long for the terminal.
		s := line(true)
		if utf8.RuneCountInString(s) >= c.width() {
			s = line(false)
		}
		c.Status(s)
		if e.State.Final() && allFinal(states) {
			c.End()
		}
	}
}

// jobState is one export's part of the status line. While a run publishes
// several entities at once, it sums them up.
type jobState struct {
	state  runs.State
	entity string // the one entity being published, "" for none or several
	active int    // entities being published
	rows   int64  // confirmed rows of the entities
	sent   int64  // rows of the entities handed to the broker
	done   int64  // bytes of the state's work done
	total  int64  // bytes in all, 0 unknown
	bytes  meter  // over done
	rowsM  meter  // over sent
	ents   map[string]*entityProgress
}

// entityProgress is what the events told of one entity.
type entityProgress struct {
	rows, sent, done, total int64
}

// meter measures a rate from the first value seen in a phase.
type meter struct {
	t0 time.Time
	v0 int64
}

func (m *meter) reset(t time.Time, v int64) { m.t0, m.v0 = t, v }

// rate is units per second since the phase began; 0 until half a second
// has passed, so a first burst does not promise a wild ETA.
func (m *meter) rate(t time.Time, v int64) float64 {
	d := t.Sub(m.t0).Seconds()
	if m.t0.IsZero() || d < 0.5 || v <= m.v0 {
		return 0
	}
	return float64(v-m.v0) / d
}

func (s *jobState) update(e jobs.Event, t time.Time) {
	if e.State != s.state {
		s.done, s.total, s.sent, s.rows, s.entity, s.active = 0, 0, 0, 0, "", 0
		s.ents = map[string]*entityProgress{}
		s.bytes.reset(t, 0)
		s.rowsM.reset(t, 0)
	}
	s.state = e.State
	if e.Entity == "" {
		if e.Done > 0 || e.Total > 0 {
			if e.Done < s.done { // a download that started over
				s.bytes.reset(t, e.Done)
			}
			s.done, s.total = e.Done, e.Total
		}
		return
	}
	ep := s.ents[e.Entity]
	if ep == nil {
		ep = &entityProgress{}
		s.ents[e.Entity] = ep
	}
	ep.rows, ep.sent = max(ep.rows, e.Rows), max(ep.sent, e.Sent)
	if e.Done > 0 || e.Total > 0 {
		ep.done, ep.total = e.Done, e.Total
	}
	wasSent := s.sent
	s.rows, s.sent, s.done, s.total, s.active, s.entity = 0, 0, 0, 0, 0, ""
	for name, p := range s.ents {
		s.rows += p.rows
		s.sent += p.sent
		s.done += p.done
		s.total += p.total
		if p.total == 0 || p.done < p.total {
			s.active++
			s.entity = name
		}
	}
	if s.active != 1 {
		s.entity = ""
	}
	if s.active == 0 {
		s.entity = e.Entity
	}
	if wasSent == 0 && s.sent > 0 {
		s.rowsM.reset(t, s.sent) // a resumed entity starts past its skipped rows
	}
}

// render is the export's part of the status line; with bar, a progress bar
// where the total is known.
func (s *jobState) render(name string, t time.Time, bar bool) string {
	p := fmt.Sprintf("%s %s", name, s.state)
	switch s.state {
	case runs.StateDownloading:
		if s.done == 0 {
			return p
		}
		m, eta := s.measure(t, bar, human.Bytes(s.done), func(r float64) string { return human.Bytes(int64(r)) + "/s" })
		return p + " " + m + eta
	case runs.StatePublishing:
		switch {
		case len(s.ents) == 0:
			return p
		case s.entity != "":
			p += " " + s.entity
		default:
			p += fmt.Sprintf(" %d entities", s.active)
		}
		eta := ""
		if s.total > 0 {
			var m string
			m, eta = s.measure(t, bar, "", nil)
			p += " " + m
		}
		p += fmt.Sprintf(" %d rows confirmed", s.rows)
		if r := s.rowsM.rate(t, s.sent); r > 0 {
			p += fmt.Sprintf(" %.0f rows/s", r)
		}
		return p + eta
	}
	return p
}

// measure renders "[####......] 45% AMOUNT RATE" over done/total, amount
// and rate only when given, and apart " ETA 3s" when it can be told.
func (s *jobState) measure(t time.Time, bar bool, amount string, rate func(float64) string) (string, string) {
	var parts []string
	if s.total > 0 {
		frac := min(float64(s.done)/float64(s.total), 1)
		if bar {
			const width = 20
			n := int(frac * width)
			parts = append(parts, "["+strings.Repeat("#", n)+strings.Repeat(".", width-n)+"]")
		}
		parts = append(parts, fmt.Sprintf("%.0f%%", frac*100))
	}
	if amount != "" {
		if s.total > 0 {
			amount += "/" + human.Bytes(s.total)
		}
		parts = append(parts, amount)
	}
	r := s.bytes.rate(t, s.done)
	if r > 0 && rate != nil {
		parts = append(parts, rate(r))
	}
	eta := ""
	if r > 0 && s.total > s.done {
		d := time.Duration(float64(s.total-s.done) / r * float64(time.Second))
		eta = " ETA " + max(d.Round(time.Second), time.Second).String()
	}
	return strings.Join(parts, " "), eta
}

func allFinal(m map[string]*jobState) bool {
	for _, s := range m {
		if !s.state.Final() {
			return false
		}
	}
	return true
}

// plainProgress prints one line per state change and per confirmed batch:
// "published" counts only rows the broker confirmed. A line that would
// repeat the export's previous one word for word (F&O answering the same
// status within a second) is left out.
func plainProgress(w io.Writer) func(jobs.Event) {
	var mu sync.Mutex
	last := map[string]string{}
	return func(e jobs.Event) {
		if e.Progress() {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		var line string
		switch {
		case e.Entity != "" && e.Confirmed:
			line = fmt.Sprintf("%s: %s: %d rows published", e.Job, e.Entity, e.Rows)
		case e.Entity != "":
			return
		case e.Detail != "":
			line = fmt.Sprintf("%s: %s: %s", e.Job, e.State, e.Detail)
		default:
			line = fmt.Sprintf("%s: %s", e.Job, e.State)
		}
		if last[e.Job] == line {
			return
		}
		last[e.Job] = line
		fmt.Fprintf(w, "%s %s\n", time.Now().Format("15:04:05"), line)
	}
}
