package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/cause"
	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/runs"
)

// TestRunCause holds the ERROR column (and so the status page) to the
// cause the record carries: F&O's text, the broker's refusal, the
// network's answer; never the summary link, the execution ID or the state
// the STATE column already says. A record without a cause (one of an
// earlier version) shows its error whole.
func TestRunCause(t *testing.T) {
	const exec = "G-2026-12-07_16-10-17-0e7616b4b0e8f6b6"
	rec := func(waiting string, err error) *runs.Record {
		r := &runs.Record{Job: "x", RunID: "20261207T161017Z-add78499", ExecutionID: exec, DefinitionGroup: "G", Waiting: waiting,
			Error: err.Error(), Cause: cause.Of(err), State: runs.StateFailed, StartedAt: time.Unix(0, 0), FinishedAt: time.Unix(1, 0)}
		if waiting != "" {
			r.State, r.FinishedAt = runs.StatePending, time.Time{}
		}
		return r
	}
	// What the steps make, as the run's error wraps it.
	noDetails := &dmf.ExecutionReport{ExecutionID: exec, Status: dmf.StatusFailed, Errors: []dmf.ExecutionError{},
		SummaryURL: "http://fo.example/?mi=DMFExecutionSummary&executionId=" + exec}
	withErrors := &dmf.ExecutionReport{ExecutionID: exec, Status: dmf.StatusFailed, SummaryURL: "http://fo.example/x",
		Errors: []dmf.ExecutionError{{RecordID: "5637144576", Message: "Entity 'Things': simulated failure"}}}
	refused := cause.Mark(errors.New("dial tcp 127.0.0.1:1: connect: connection refused"))
	noRoute := cause.Mark(errors.New(`312 NO_ROUTE: no queue is bound to exchange "amq.topic" with routing key "k" (unroutable)`))
	denied := cause.Mark(errors.New(`Exception (403) Reason: "ACCESS_REFUSED - access to exchange 'e' refused"`))
	notDir := cause.Mark(errors.New("open directory store /s: mkdir /s: not a directory"))
	tests := []struct {
		name      string
		rec       *runs.Record
		wantFirst string // the text must start so
		notWant   []string
	}{
		{"F&O failed without details", rec("", noDetails),
			"F&O execution ended Failed; F&O gave no error details", []string{"http://", exec}},
		{"F&O failed with errors", rec("", withErrors),
			"F&O execution ended Failed with 1 error: record 5637144576: Entity 'Things': simulated failure", []string{"http://"}},
		{"partial is fail", rec("", cause.Errorf("partial is fail (set partial: publish to publish what F&O did export): %w", withErrors)),
			"partial is fail (set partial: publish to publish what F&O did export): F&O execution ended Failed with 1 error", []string{"http://", exec}},
		{"broker down", rec(jobs.WaitingForBroker, fmt.Errorf("waiting for broker: broker check before exporting: connect to broker amqp://guest:xxxxx@127.0.0.1:1/: %w (broker unavailable): check broker.url and that RabbitMQ is running; nothing was exported in F&O yet", refused)),
			"dial tcp 127.0.0.1:1: connect: connection refused", []string{"waiting for broker"}},
		{"no bound queue", rec(jobs.WaitingForQueue, fmt.Errorf("waiting for a queue bound to the exchange: entity Things (file Things.csv, source format CSV-Unicode): confirm batches: message %s/Things/0 was returned by the broker: %w; the run stays unfinished", exec, noRoute)),
			`312 NO_ROUTE: no queue is bound to exchange "amq.topic"`, []string{"waiting for a queue"}},
		{"broker refusal", rec("", fmt.Errorf(`publish: declare exchange "e": %w`, denied)),
			`Exception (403) Reason: "ACCESS_REFUSED`, []string{"publish:"}},
		{"context of the run left out", rec("", fmt.Errorf("store package: %w", notDir)),
			"open directory store /s: mkdir /s: not a directory", []string{"store package"}},
		{"record of an earlier version", &runs.Record{Job: "x", State: runs.StateFailed, FinishedAt: time.Unix(1, 0), Error: "export x run R: something broke"},
			"export x run R: something broke", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := describeRun(tt.rec, false).cause
			if !strings.HasPrefix(got, tt.wantFirst) {
				t.Errorf("ERROR column %q, want it to start with %q", got, tt.wantFirst)
			}
			for _, bad := range tt.notWant {
				if strings.Contains(got, bad) {
					t.Errorf("ERROR column %q holds %q", got, bad)
				}
			}
		})
	}
	// No record: the run's error says it alone.
	o := outcomeOf(context.Background(), "x", nil, fmt.Errorf("export x: %w", notDir))
	if want := "open directory store /s: mkdir /s: not a directory"; o.why != want {
		t.Errorf("without a record: cause %q, want %q", o.why, want)
	}
}

// TestOutcomes holds each way a run can end to its exit code: failed (1),
// stopped or waiting (75), succeeded (0); a failure beside a run that
// resumes makes 1, and the closing text names both.
func TestOutcomes(t *testing.T) {
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	live := context.Background()
	waiting := &runs.Record{Job: "w", State: runs.StatePending, Waiting: jobs.WaitingForBroker, Error: "waiting for broker: dial tcp 127.0.0.1:1: connect: connection refused",
		Cause: "dial tcp 127.0.0.1:1: connect: connection refused"}
	partial := &runs.Record{Job: "p", State: runs.StatePartiallySucceeded, RunID: "R1",
		Error: "1 of 2 entities failed: B; once fixed, " + jobs.ReplayCommand("p", "R1", []string{"B"}) + " publishes their stored files again"}
	tests := []struct {
		name     string
		outs     []runOutcome
		wantCode int
		want     []string
	}{
		{"succeeded", []runOutcome{outcomeOf(live, "s", &runs.Record{State: runs.StateSucceeded}, nil)}, 0, nil},
		{"waiting", []runOutcome{outcomeOf(live, "w", waiting, fmt.Errorf("export w: %w", jobs.ErrWaiting))}, 75,
			[]string{"will resume: w (waiting for broker: dial tcp"}},
		{"stopped", []runOutcome{outcomeOf(stopped, "c", &runs.Record{State: runs.StateExporting}, context.Canceled)}, 75,
			[]string{"will resume: c (stopped while exporting"}},
		{"stopped while queued", []runOutcome{outcomeOf(stopped, "q", nil, jobs.ErrNotStarted)}, 75, []string{"will resume: q (stopped while queued"}},
		{"busy", []runOutcome{outcomeOf(live, "b", nil, fmt.Errorf("export b: %w", jobs.ErrAlreadyRunning))}, 75, []string{"will resume: b ("}},
		{"failed", []runOutcome{outcomeOf(live, "f", nil, fmt.Errorf("export f: %w", cause.Mark(errors.New("boom"))))}, 1, []string{"failed: f (boom)"}},
		{"entities failed at publishing", []runOutcome{outcomeOf(live, "p", partial, nil)}, 1, []string{"failed: p (1 of 2 entities failed: B; once fixed, dmfexport replay --entity B p/R1"}},
		{"failed beside waiting", []runOutcome{outcomeOf(live, "f", nil, errors.New("boom")), outcomeOf(live, "w", waiting, jobs.ErrWaiting)}, 1,
			[]string{"failed: f (boom); will resume: w (waiting for broker"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := closing(tt.outs)
			if code := exitCode(err); code != tt.wantCode {
				t.Errorf("exit code %d (%v), want %d", code, err, tt.wantCode)
			}
			for _, w := range tt.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("closing %v, want it to hold %q", err, w)
				}
			}
		})
	}
}

// TestStatusTruth runs the binary: the ERROR column of status says F&O's
// own words (not the summary link) for a run F&O failed without details;
// a store path that is a file gives its error without blank lines before
// it; F&O's "not registered yet" answers print one line, not one per poll.
func TestStatusTruth(t *testing.T) {
	sim := dmftest.NewServer(dmftest.Options{
		Projects:         map[string][]dmftest.Entity{"G": {{Name: "Things", Data: []byte("ID\r\n1\r\n")}}},
		FinalStatus:      map[string]string{"G": "Failed"},
		EmptyErrorsEvery: 1, // every failed execution answers no errors
		ExecutionTime:    100 * time.Millisecond,
		RegisterDelay:    time.Second,
	})
	defer sim.Close()
	dir := t.TempDir()
	writeFile(t, dir, "dmfexport.yaml", exitConfig(fileBroker, fastPoll))
	env := []string{"DMFSIM_URL=" + sim.URL, "FO_TOKEN=" + dmftest.DefaultToken, "DMFEXPORT_CONFIG="}

	stdout, stderr, code := runBinaryIn(t, dir, env, "trigger", "x")
	if code != 1 {
		t.Fatalf("trigger: exit %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if n := strings.Count(stdout, "F&O status Unknown after 0s"); n > 1 {
		t.Errorf("F&O status Unknown after 0s printed %d times, want at most once:\n%s", n, stdout)
	}
	stdout, stderr, code = runBinaryIn(t, dir, env, "status")
	if code != 0 {
		t.Fatalf("status: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	header, row, _ := strings.Cut(strings.TrimSpace(stdout), "\n")
	errCol := row[strings.Index(header, "ERROR"):]
	if !strings.HasPrefix(errCol, "F&O execution ended Failed; F&O gave no error details") || strings.Contains(errCol, "http") {
		t.Errorf("status ERROR column %q, want F&O's text first and no summary link", errCol)
	}

	if err := os.RemoveAll(filepath.Join(dir, "store")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "store", "a file where the store should be\n")
	stdout, stderr, code = runBinaryIn(t, dir, env, "trigger", "x")
	if code != 1 || !strings.Contains(stderr, "not a directory") {
		t.Fatalf("trigger with a file as store: exit %d, want 1 naming the file\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if strings.HasPrefix(stdout, "\n") || strings.Contains(stdout, "\n\n") {
		t.Errorf("trigger with a file as store: blank lines in stdout:\n%q", stdout)
	}
}
