package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/runs"
)

// Exit codes, one table in the operations docs: 0 succeeded, 1 failed,
// 2 a usage mistake, 75 (EX_TEMPFAIL) stopped or waiting: the next start
// resumes.
const (
	exitSucceeded = 0
	exitFailed    = 1
	exitUsage     = 2
	exitResume    = 75
)

// resumeError is the error of a command that stopped (Ctrl-C, SIGTERM) or
// left runs waiting for something outside dmfexport: nothing failed, and
// the next start resumes. It exits 75.
type resumeError struct{ msg string }

func (e *resumeError) Error() string { return e.msg }

// exitCode is the exit code of a command that returned err (not a usage
// mistake, which run handles).
func exitCode(err error) int {
	var re *resumeError
	switch {
	case err == nil:
		return exitSucceeded
	case errors.As(err, &re):
		return exitResume
	}
	return exitFailed
}

// runOutcome is what became of one export's run in trigger or demo.
type runOutcome struct {
	export  string
	resumes bool   // stopped or waiting: the next start resumes it
	failed  bool   // failed: the run or its start ended in an error
	why     string // the cause first, one line
}

// outcomeOf classifies the run rec (nil if none was recorded) of export
// job that returned err under ctx.
func outcomeOf(ctx context.Context, job string, rec *runs.Record, err error) runOutcome {
	o := runOutcome{export: job}
	switch {
	case err == nil && (rec == nil || rec.State == runs.StateSucceeded):
		return o
	case err == nil:
		o.failed, o.why = true, causeFirst(rec, rec.Error)
	case errors.Is(err, jobs.ErrNotStarted):
		o.resumes, o.why = true, "stopped while queued for an execution slot; nothing was started in F&O, the next trigger starts it"
	case ctx.Err() != nil:
		o.resumes, o.why = true, "stopped before it ended; the next dmfexport run or trigger resumes it"
		if rec != nil {
			o.why = fmt.Sprintf("stopped while %s; the next dmfexport run or trigger resumes it from there", rec.State)
		}
	case errors.Is(err, jobs.ErrWaiting) && rec != nil && rec.Waiting != "":
		o.resumes, o.why = true, jobs.WaitingText(rec.Waiting)+": "+causeFirst(rec, rec.Error)
	case errors.Is(err, jobs.ErrAlreadyRunning), errors.Is(err, jobs.ErrGroupBusy), errors.Is(err, runs.ErrLeaseHeld):
		o.resumes, o.why = true, causeFirst(rec, err.Error())
	default:
		o.failed, o.why = true, causeFirst(rec, err.Error())
		if rec != nil && rec.Error != "" {
			o.why = causeFirst(rec, rec.Error)
		}
	}
	return o
}

// closing is the closing error of trigger and demo: nil if every run
// succeeded; else the exports that failed (exit 1) and those that will
// resume (exit 75 when none failed), each with its cause.
func closing(outs []runOutcome) error {
	var failed, resumes []string
	for _, o := range outs {
		item := o.export + " (" + oneLine(o.why, 200) + ")"
		switch {
		case o.failed:
			failed = append(failed, item)
		case o.resumes:
			resumes = append(resumes, item)
		}
	}
	var parts []string
	if len(failed) > 0 {
		parts = append(parts, "failed: "+strings.Join(failed, ", "))
	}
	if len(resumes) > 0 {
		parts = append(parts, "will resume: "+strings.Join(resumes, ", "))
	}
	switch {
	case len(parts) == 0:
		return nil
	case len(failed) > 0:
		return errors.New(printable(strings.Join(parts, "; ")))
	}
	return &resumeError{msg: printable(parts[0])}
}

// summaryURL is the F&O execution summary link of an error: the ERROR
// column and the closing line leave it out (the record keeps it).
var summaryURL = regexp.MustCompile(`; execution summary: \S+`)

// causeMarkers start the cause inside an error's text: the broker's
// refusal, the network's answer. The text from the earliest one comes
// first, the context that led to it after.
var causeMarkers = []struct {
	marker string
	skip   bool // the marker itself is context, not cause
}{
	{"was returned by the broker: ", true},
	{"Exception (", false},
	{"dial tcp ", false},
	{"lookup ", false},
}

// causeFirst is msg, an error of run rec (nil if none was recorded), with
// the cause first: leading context that only repeats other columns (the
// export, the run, the execution ID, the definition group, the waiting
// state) is left out, then the broker's or the network's answer is moved
// first. The F&O summary link is left out.
func causeFirst(rec *runs.Record, msg string) string {
	var ids []string
	if rec != nil {
		ids = []string{rec.Job, rec.RunID, rec.ExecutionID, rec.DefinitionGroup}
		if rec.ExecutionID != "" {
			msg = strings.ReplaceAll(msg, "F&O execution "+rec.ExecutionID+" ", "F&O execution ")
		}
		if rec.Waiting != "" {
			msg = strings.TrimPrefix(msg, jobs.WaitingText(rec.Waiting)+": ")
		}
	}
	msg = summaryURL.ReplaceAllString(msg, "")
	for {
		head, rest, ok := strings.Cut(msg, ": ")
		// A head holding "; " is a sentence of its own (F&O's text
		// without details), not context.
		if !ok || rest == "" || strings.Contains(head, "; ") || !strings.HasPrefix(head, "export ") && !mentionsAny(head, ids) {
			break
		}
		msg = rest
	}
	if rec != nil && rec.Waiting != "" {
		msg = strings.TrimPrefix(msg, jobs.WaitingText(rec.Waiting)+": ")
	}
	best, cut := -1, 0
	for _, m := range causeMarkers {
		if i := strings.Index(msg, m.marker); i > 0 && (best < 0 || i < best) {
			best, cut = i, i
			if m.skip {
				cut = i + len(m.marker)
			}
		}
	}
	if best < 0 {
		return msg
	}
	cause, context := msg[cut:], strings.TrimSuffix(strings.TrimSpace(msg[:best]), ":")
	advice := ""
	if c, a, ok := strings.Cut(cause, "; "); ok {
		cause, advice = c, "; "+a
	}
	return cause + " (in: " + context + ")" + advice
}
