package dmftest

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/internal/testenv"
)

func TestLimitDefaults(t *testing.T) {
	s := New(Options{})
	if s.opts.MaxConcurrentRequests != 52 || s.opts.RequestBudget != 6000 ||
		s.opts.ExecutionBudget != 1200*time.Second || s.opts.BudgetWindow != 5*time.Minute {
		t.Errorf("want F&O's per-user limits by default (52 concurrent, 6000 requests and 1200s per 5m), got %d concurrent, %d requests and %s per %s",
			s.opts.MaxConcurrentRequests, s.opts.RequestBudget, s.opts.ExecutionBudget, s.opts.BudgetWindow)
	}
	off := New(Options{MaxConcurrentRequests: -1, RequestBudget: -1, ExecutionBudget: -1})
	if off.opts.MaxConcurrentRequests != 0 || off.opts.RequestBudget != 0 || off.opts.ExecutionBudget != 0 {
		t.Errorf("want negative knobs to turn the limits off, got %+v", off.opts)
	}
}

// TestBudgetWindows checks the sliding request and execution budgets: a
// call beyond either gets 429 with a Retry-After saying when the window
// frees, and is admitted again once it has.
func TestBudgetWindows(t *testing.T) {
	slow := Faults{API: []APIFault{{Action: actionStatus, Delay: 60 * time.Millisecond}}}
	tests := []struct {
		name      string
		opts      Options
		calls     int           // calls admitted at the start, one second apart
		wantRetry string        // Retry-After of the next call
		wait      time.Duration // clock advance after which it is admitted
		limit     string
		wantMsg   string
	}{
		{"request budget", Options{RequestBudget: 3, BudgetWindow: 10 * time.Second}, 3, "7", 7 * time.Second, LimitRequests, "limit of 3 over time window of 10s"},
		{"execution budget", Options{ExecutionBudget: 100 * time.Millisecond, BudgetWindow: 10 * time.Second, Faults: slow}, 2, "8", 8 * time.Second, LimitExecutionTime, "Combined execution time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			tt.opts.Projects = map[string][]Entity{"G": twoEntities()}
			s := newTestServer(t, tt.opts, clock)
			for i := range tt.calls {
				if r := call(t, s.URL, actionStatus, DefaultToken, idBody("x")); r.status != http.StatusOK {
					t.Fatalf("call %d: want 200 within the budget, got %d", i+1, r.status)
				}
				clock.Advance(time.Second)
			}
			r := call(t, s.URL, actionStatus, DefaultToken, idBody("x"))
			if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != tt.wantRetry {
				t.Fatalf("want 429 with Retry-After %s beyond the budget, got %d with %q", tt.wantRetry, r.status, r.header.Get("Retry-After"))
			}
			if msg := odataErr(t, r); !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("want a message with %q, got %q", tt.wantMsg, msg)
			}
			clock.Advance(tt.wait - time.Millisecond)
			if r := call(t, s.URL, actionStatus, DefaultToken, idBody("x")); r.status != http.StatusTooManyRequests {
				t.Errorf("want 429 just before the window frees, got %d", r.status)
			}
			clock.Advance(time.Millisecond)
			if r := call(t, s.URL, actionStatus, DefaultToken, idBody("x")); r.status != http.StatusOK {
				t.Errorf("want 200 once the window frees, got %d", r.status)
			}
			if n := s.ThrottledCalls(tt.limit); n != 2 {
				t.Errorf("want 2 calls refused for %s, got %d", tt.limit, n)
			}
			if n := s.Calls(actionStatus); n != tt.calls+1 {
				t.Errorf("want %d counted calls (refused ones excluded), got %d", tt.calls+1, n)
			}
		})
	}
}

// TestConcurrencyLimit holds two slow calls in progress: a third gets 429
// with Retry-After: 1, downloads are not limited, and once the slow ones
// end calls are admitted again.
func TestConcurrencyLimit(t *testing.T) {
	release := make(chan struct{})
	s := newTestServer(t, Options{
		Projects:              map[string][]Entity{"G": twoEntities()},
		MaxConcurrentRequests: 2,
		Faults:                Faults{API: []APIFault{{Action: actionErrors, Delay: time.Hour}}},
	}, nil)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL+actionPrefix+actionErrors, strings.NewReader(idBody("x")))
			req.Header.Set("Authorization", "Bearer "+DefaultToken)
			ctx, cancel := contextUntil(release)
			defer cancel()
			resp, err := http.DefaultClient.Do(req.WithContext(ctx))
			if err == nil {
				_ = resp.Body.Close()
			}
		})
	}
	if !testenv.Await(10*time.Second, func() bool { return s.PeakConcurrency() >= 2 }) {
		t.Fatal("the two slow calls never were in progress together")
	}
	r := call(t, s.URL, actionStatus, DefaultToken, idBody("x"))
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "1" {
		t.Errorf("want 429 with Retry-After 1 beyond 2 calls in progress, got %d with %q", r.status, r.header.Get("Retry-After"))
	}
	if msg := odataErr(t, r); !strings.Contains(msg, "concurrent requests exceeded the limit of 2") {
		t.Errorf("want a message naming the concurrency limit, got %q", msg)
	}
	close(release)
	wg.Wait()
	if !testenv.Await(10*time.Second, func() bool {
		r = call(t, s.URL, actionStatus, DefaultToken, idBody("x"))
		return r.status == http.StatusOK
	}) {
		t.Fatalf("want calls admitted once the slow ones ended, still %d", r.status)
	}
	// The cancelled calls may linger on the server a moment: more
	// refusals may come before the first admitted call.
	if n := s.ThrottledCalls(LimitConcurrency); n < 1 || n != s.ThrottledCalls("") {
		t.Errorf("want only concurrency refusals, at least 1, got %d of %d", n, s.ThrottledCalls(""))
	}
	if s.PeakConcurrency() != 2 {
		t.Errorf("want a peak of 2 calls in progress, got %d", s.PeakConcurrency())
	}
}

// contextUntil is a context cancelled when done closes.
func contextUntil(done <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
