// Package cause marks, where an error is made, the part of its text that
// says why it happened: F&O's own words, the broker's refusal, the
// network's answer, the store's failure. The marked error keeps its whole
// text and its %w chain; run records keep the cause beside the whole
// error, and status lines print it without the context that wrapped it on
// the way up (the export, the run, the step).
package cause

import (
	"errors"
	"fmt"
)

// causer is an error that knows its cause: an error type of its own
// (dmf.ExecutionReport says F&O's verdict without the execution ID and the
// summary link), or one made by Mark or Errorf.
type causer interface {
	Cause() string
}

// Of returns the cause of err: the Cause of the outermost error in its
// tree that has one, so a step that knows better than the call below it
// (an advice, a setting to change) can mark a wider cause; "" when none
// is marked.
func Of(err error) string {
	var c causer
	if err == nil || !errors.As(err, &c) {
		return ""
	}
	return c.Cause()
}

// Mark returns err whose whole text is the cause of the errors that wrap
// it; nil for nil. It unwraps to err.
func Mark(err error) error {
	if err == nil {
		return nil
	}
	return &marked{err: err}
}

// Errorf is fmt.Errorf for an error whose own words belong to the cause,
// such as the setting that made F&O's answer fail the run or the one that
// gives F&O more time: its cause is its text with the cause of each error
// it formats (that error's whole text when none is marked in it) in place
// of that error's text. Its result unwraps as fmt.Errorf's does.
func Errorf(format string, args ...any) error {
	causes := make([]any, len(args))
	for i, a := range args {
		causes[i] = a
		if err, ok := a.(error); ok {
			if c := Of(err); c != "" {
				causes[i] = errors.New(c)
			}
		}
	}
	return &marked{err: fmt.Errorf(format, args...), cause: fmt.Errorf(format, causes...).Error()}
}

// marked is an error with its cause: cause, or err's whole text when "".
type marked struct {
	err   error
	cause string
}

func (m *marked) Error() string { return m.err.Error() }
func (m *marked) Unwrap() error { return m.err }
func (m *marked) Cause() string {
	if m.cause == "" {
		return m.err.Error()
	}
	return m.cause
}
