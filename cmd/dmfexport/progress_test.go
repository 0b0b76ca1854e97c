package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/runs"
)

// liveConsole is a console drawing on out as a terminal width columns wide,
// with logs to the same terminal.
func liveConsole(out *bytes.Buffer, width int) *console {
	return &console{out: out, errw: out, live: true, shared: true, width: func() int { return width }}
}

func TestProgressPrinters(t *testing.T) {
	events := []jobs.Event{
		{Job: "a", State: runs.StateExporting, Detail: "execution X"},
		{Job: "b", State: runs.StateExporting},
		{Job: "b", State: runs.StateExporting, Detail: "F&O status Unknown after 0s"},
		{Job: "b", State: runs.StateExporting, Detail: "F&O status Unknown after 0s"},
		{Job: "a", State: runs.StatePublishing, Entity: "Customers V3", Sent: 5000, Done: 100, Total: 1000},
		{Job: "a", State: runs.StatePublishing, Entity: "Customers V3", Rows: 5000, Confirmed: true},
		{Job: "a", State: runs.StatePublishing, Entity: "Customers V3", Rows: 5000, Sent: 12345, Done: 900, Total: 1000},
		{Job: "a", State: runs.StateSucceeded},
		{Job: "b", State: runs.StateFailed, Detail: "F&O execution ended Failed"},
	}
	tests := []struct {
		name    string
		printer func(*bytes.Buffer) func(jobs.Event)
		want    []string
		notWant []string
		once    []string // lines printed once, though their event came twice
	}{
		{"plain", func(b *bytes.Buffer) func(jobs.Event) { return plainProgress(b) },
			[]string{"a: exporting: execution X\n", "a: Customers V3: 5000 rows published\n", "b: failed: F&O execution ended Failed\n"},
			[]string{"\r", "\033[", "12345"}, []string{"b: exporting: F&O status Unknown after 0s\n"}},
		{"live", func(b *bytes.Buffer) func(jobs.Event) {
			clock := time.Date(2026, 11, 24, 20, 0, 0, 0, time.UTC)
			return liveProgress(liveConsole(b, 200), func() time.Time { clock = clock.Add(time.Second); return clock })
		},
			[]string{"\r\033[K", "a publishing Customers V3 90% 5000 rows confirmed 3672 rows/s ETA 1s | b exporting", "a: succeeded\n", "b: failed: F&O execution ended Failed\n", "a succeeded | b failed\n"},
			[]string{"12345 rows"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			p := tt.printer(&b)
			for _, e := range events {
				p(e)
			}
			out := b.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%q", w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output holds %q:\n%q", w, out)
				}
			}
			for _, w := range tt.once {
				if n := strings.Count(out, w); n != 1 {
					t.Errorf("output holds %q %d times, want once:\n%q", w, n, out)
				}
			}
		})
	}
}

// TestLiveProgressParallelEntities: entities published at once are summed
// up on the job's status line rather than flickering between names.
func TestLiveProgressParallelEntities(t *testing.T) {
	var b bytes.Buffer
	clock := time.Date(2026, 11, 24, 20, 0, 0, 0, time.UTC)
	p := liveProgress(liveConsole(&b, 200), func() time.Time { clock = clock.Add(time.Second); return clock })
	for _, e := range []jobs.Event{
		{Job: "c", State: runs.StatePublishing},
		{Job: "c", State: runs.StatePublishing, Entity: "A", Sent: 500, Done: 100, Total: 400},
		{Job: "c", State: runs.StatePublishing, Entity: "B", Sent: 500, Done: 300, Total: 400},
		{Job: "c", State: runs.StatePublishing, Entity: "A", Rows: 500, Confirmed: true},
		{Job: "c", State: runs.StatePublishing, Entity: "B", Rows: 200, Confirmed: true},
		{Job: "c", State: runs.StatePublishing, Entity: "B", Rows: 200, Sent: 600, Done: 400, Total: 400},
	} {
		p(e)
	}
	draws := strings.Split(b.String(), "\r\033[K")
	last := draws[len(draws)-1]
	if want := "c publishing A [############........] 62% 700 rows confirmed"; !strings.Contains(last, want) {
		t.Errorf("last status line %q, want it to hold %q", last, want)
	}
	if !strings.Contains(b.String(), "c publishing 2 entities") {
		t.Errorf("no status line summed up the two entities:\n%q", b.String())
	}
}
