package cause

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
)

// TestOf holds the cause to the mark made where the error was made, the
// outermost when several are, through every way errors are wrapped; and
// the chain stays whole for errors.Is.
func TestOf(t *testing.T) {
	refused := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"none marked", fmt.Errorf("export x: %w", refused), ""},
		{"marked inside", fmt.Errorf("export x: connect to broker: %w: check broker.url", Mark(refused)), refused.Error()},
		{"outermost mark wins", Mark(fmt.Errorf("open store /s: %w", Mark(fs.ErrPermission))), "open store /s: permission denied"},
		{"second of two wrapped", fmt.Errorf("%w; %w", errors.New("publish"), Mark(refused)), refused.Error()},
		{"words around a mark", fmt.Errorf("export x: %w", Errorf("partial is fail: %w", fmt.Errorf("poll: %w", Mark(errors.New("F&O said no"))))), "partial is fail: F&O said no"},
		{"words around nothing marked", Errorf("partial is fail: %w", errors.New("F&O said no")), "partial is fail: F&O said no"},
		{"words after, other arguments", Errorf("%w (raise %s)", fmt.Errorf("poll %q: %w", "G-1", Mark(errors.New("still Executing"))), "poll.deadline"), "still Executing (raise poll.deadline)"},
		{"a type of its own", fmt.Errorf("run: %w", report{}), "F&O ended Failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Of(tt.err); got != tt.want {
				t.Errorf("Of(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
	err := fmt.Errorf("export x: %w", Errorf("context: %w", Mark(refused)))
	if !errors.Is(err, refused) || err.Error() != "export x: context: "+refused.Error() {
		t.Errorf("marks change the chain or the text: %v", err)
	}
	if Mark(nil) != nil {
		t.Error("Mark(nil) is not nil")
	}
}

type report struct{}

func (report) Error() string { return "F&O execution X ended Failed; execution summary: http://fo/x" }
func (report) Cause() string { return "F&O ended Failed" }
