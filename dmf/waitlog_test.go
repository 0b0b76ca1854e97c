package dmf

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// recordLog keeps every log record with its (fake) time.
type recordLog struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *recordLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordLog) WithGroup(string) slog.Handler      { return h }

// longestSilence is the longest time between two records at Info or above
// from start to end.
func (h *recordLog) longestSilence(start, end time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	last, longest := start, time.Duration(0)
	for _, r := range h.recs {
		if r.Level < slog.LevelInfo {
			continue
		}
		longest = max(longest, r.Time.Sub(last))
		last = r.Time
	}
	return max(longest, end.Sub(last))
}

func (h *recordLog) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if r.Message == msg {
			n++
		}
	}
	return n
}

// TestRegisterWindowIsNeverSilent: an ExportToPackage answered with an HTML
// page (or another unreadable 200) starts a wait of the whole register
// window (10 minutes) for the chosen ID. The wait is announced at once,
// with what was wrong with the answer, and logged at least every minute;
// so is a PollStatus that waits for F&O to register an execution.
func TestRegisterWindowIsNeverSilent(t *testing.T) {
	tests := []struct {
		name string
		run  func(ctx context.Context, c *Client) error
	}{
		{name: "ExportToPackage answered with HTML, never registered", run: func(ctx context.Context, c *Client) error {
			_, err := c.ExportToPackage(ctx, ExportRequest{DefinitionGroupID: "G", PackageName: "G", ExecutionID: "G-1", LegalEntityID: "USMF"})
			return err
		}},
		{name: "PollStatus of an execution F&O never registers", run: func(ctx context.Context, c *Client) error {
			_, err := c.PollStatus(ctx, "G-1", PollOptions{Interval: 10 * time.Second, MaxInterval: 5 * time.Minute})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := newMemFO(t, func(action, _ string, _ time.Duration) (int, string, error) {
					if action == actionExport {
						return 200, "<html>Sign in</html>", nil
					}
					return 400, notFound("G-1"), nil
				})
				c := memClient(t, m, ClientOptions{MaxRetries: -1, RegisterInterval: 2 * time.Minute})
				logs := &recordLog{}
				c.log = slog.New(logs)
				start := time.Now()
				err := tt.run(context.Background(), c)
				end := time.Now()
				if !errors.Is(err, ErrNotRegistered) {
					t.Fatalf("want an error wrapping ErrNotRegistered after the window, got %v", err)
				}
				if waited := end.Sub(start); waited < DefaultRegisterTimeout {
					t.Errorf("gave up after %s, want the whole window of %s", waited, DefaultRegisterTimeout)
				}
				if s := logs.longestSilence(start, end); s > time.Minute {
					t.Errorf("the log was silent for %s while waiting, want at most 1m", s)
				}
				if n := logs.count("still waiting for F&O to register the execution"); n < 9 {
					t.Errorf("%d progress lines over the 10 minute window, want at least 9", n)
				}
				if strings.Contains(tt.name, "HTML") {
					logs.mu.Lock()
					var first slog.Record
					for _, r := range logs.recs {
						if r.Level >= slog.LevelInfo {
							first = r
							break
						}
					}
					logs.mu.Unlock()
					var answer string
					first.Attrs(func(a slog.Attr) bool {
						if a.Key == "answer" {
							answer = a.Value.String()
						}
						return true
					})
					if first.Level != slog.LevelWarn || !first.Time.Equal(start) || answer != "Content-Type application/json; odata.metadata=minimal, 20 bytes" {
						t.Errorf("first line %s %q at +%s answer %q; want a WARN at once naming the answer's type and size",
							first.Level, first.Message, first.Time.Sub(start), answer)
					}
				}
			})
		})
	}
}
