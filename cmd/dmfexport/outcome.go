package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/dmfexport/dmfexport/internal/cause"
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
		o.failed, o.why = true, recordCause(rec)
	case errors.Is(err, jobs.ErrNotStarted):
		o.resumes, o.why = true, "stopped while queued for an execution slot; nothing was started in F&O, the next trigger starts it"
	case ctx.Err() != nil:
		o.resumes, o.why = true, "stopped before it ended; the next dmfexport run or trigger resumes it"
		if rec != nil {
			o.why = fmt.Sprintf("stopped while %s; the next dmfexport run or trigger resumes it from there", rec.State)
		}
	case errors.Is(err, jobs.ErrWaiting) && rec != nil && rec.Waiting != "":
		o.resumes, o.why = true, jobs.WaitingText(rec.Waiting)+": "+recordCause(rec)
	case errors.Is(err, jobs.ErrAlreadyRunning), errors.Is(err, jobs.ErrGroupBusy), errors.Is(err, runs.ErrLeaseHeld):
		o.resumes, o.why = true, errorCause(err)
	default:
		o.failed, o.why = true, errorCause(err)
		if rec != nil && rec.Error != "" {
			o.why = recordCause(rec)
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

// recordCause is why run rec failed or waits: the cause the step that met
// it named, else its whole error (an error dmfexport made itself, or a
// record of a version before causes were kept).
func recordCause(rec *runs.Record) string {
	if rec.Cause != "" {
		return rec.Cause
	}
	return rec.Error
}

// errorCause is why err happened: the cause marked where it was made,
// else its whole text.
func errorCause(err error) string {
	if c := cause.Of(err); c != "" {
		return c
	}
	return err.Error()
}
