package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/dmfexport/dmfexport/jobs"
)

func TestProgressPrinters(t *testing.T) {
	events := []jobs.Event{
		{Job: "a", State: jobs.StateExporting, Detail: "execution X"},
		{Job: "b", State: jobs.StateExporting},
		{Job: "a", State: jobs.StatePublishing, Entity: "Customers V3", Rows: 5000},
		{Job: "a", State: jobs.StateSucceeded},
		{Job: "b", State: jobs.StateFailed, Detail: "F&O execution ended Failed"},
	}
	tests := []struct {
		name    string
		printer func(*bytes.Buffer) func(jobs.Event)
		want    []string
		notWant []string
	}{
		{"plain", func(b *bytes.Buffer) func(jobs.Event) { return plainProgress(b) },
			[]string{"a: exporting: execution X\n", "a: Customers V3: 5000 rows published\n", "b: failed: F&O execution ended Failed\n"},
			[]string{"\r", "\033["}},
		{"live", func(b *bytes.Buffer) func(jobs.Event) { return liveProgress(b) },
			[]string{"\r\033[K", "a publishing Customers V3 5000 rows | b exporting", "a: succeeded\n", "b: failed: F&O execution ended Failed\n", "a succeeded | b failed\n"},
			nil},
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
		})
	}
}
