package dmftest

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// F&O's published service protection limits per user (shared/dmf-api.md),
// which the Simulator enforces by default. The Simulator has one bearer
// token, so every call counts for the same user.
const (
	// DefaultMaxConcurrentRequests is how many API calls a user may have in
	// progress at once; one more is answered 429 with Retry-After: 1.
	DefaultMaxConcurrentRequests = 52
	// DefaultRequestBudget is how many API calls a user may make in any
	// DefaultBudgetWindow; beyond it calls are answered 429 with a
	// Retry-After that says when the oldest call leaves the window.
	DefaultRequestBudget = 6000
	// DefaultExecutionBudget is the combined time the Simulator may spend
	// answering one user's calls in any DefaultBudgetWindow.
	DefaultExecutionBudget = 1200 * time.Second
	// DefaultBudgetWindow is the sliding window of the request and
	// execution budgets.
	DefaultBudgetWindow = 5 * time.Minute
)

// Limit names, as ThrottledCalls counts them.
const (
	LimitConcurrency   = "concurrency"
	LimitRequests      = "requests"
	LimitExecutionTime = "execution_time"
	LimitEveryNth      = "every_nth" // Options.Throttle
)

// limiter keeps the sliding-window accounts of the per-user limits; the
// Simulator's mu guards it.
type limiter struct {
	inFlight, peak int
	calls          []time.Time // accepted calls in the window, oldest first
	spent          []spentTime // answer times in the window, oldest first
	spentSum       time.Duration
	refused        map[string]int
}

type spentTime struct {
	at time.Time // when the answer ended
	d  time.Duration
}

// admit counts a routed, authorized API call against the per-user limits
// and the Throttle knob. When the call is refused it returns the limit's
// name and the Retry-After seconds; otherwise the caller must call done
// with the time the answer took.
func (s *Simulator) admit() (limit string, retryAfter int) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &s.limits
	if l.refused == nil {
		l.refused = map[string]int{}
	}
	window := s.opts.BudgetWindow
	for len(l.calls) > 0 && now.Sub(l.calls[0]) >= window {
		l.calls = l.calls[1:]
	}
	for len(l.spent) > 0 && now.Sub(l.spent[0].at) >= window {
		l.spentSum -= l.spent[0].d
		l.spent = l.spent[1:]
	}
	s.apiCalls++
	switch {
	case s.opts.MaxConcurrentRequests > 0 && l.inFlight >= s.opts.MaxConcurrentRequests:
		limit, retryAfter = LimitConcurrency, 1
	case s.opts.RequestBudget > 0 && len(l.calls) >= s.opts.RequestBudget:
		limit, retryAfter = LimitRequests, secondsUntil(l.calls[len(l.calls)-s.opts.RequestBudget].Add(window), now)
	case s.opts.ExecutionBudget > 0 && l.spentSum >= s.opts.ExecutionBudget:
		limit, retryAfter = LimitExecutionTime, secondsUntil(s.budgetFreed(now), now)
	case s.opts.Throttle > 0 && s.apiCalls%s.opts.Throttle == 0:
		limit, retryAfter = LimitEveryNth, 1
	}
	if limit != "" {
		l.refused[limit]++
		return limit, retryAfter
	}
	l.calls = append(l.calls, now)
	l.inFlight++
	l.peak = max(l.peak, l.inFlight)
	return "", 0
}

// budgetFreed is when enough answer time leaves the window for the
// execution budget to admit calls again; s.mu must be held.
func (s *Simulator) budgetFreed(now time.Time) time.Time {
	over := s.limits.spentSum - s.opts.ExecutionBudget
	for _, sp := range s.limits.spent {
		over -= sp.d
		if over < 0 {
			return sp.at.Add(s.opts.BudgetWindow)
		}
	}
	return now
}

// done ends a call admit accepted, charging the time its answer took.
func (s *Simulator) done(took time.Duration) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits.inFlight--
	if s.opts.ExecutionBudget > 0 {
		s.limits.spent = append(s.limits.spent, spentTime{at: now, d: took})
		s.limits.spentSum += took
	}
}

// secondsUntil is the Retry-After for a limit that frees at t: whole
// seconds, rounded up, at least 1.
func secondsUntil(t, now time.Time) int {
	d := t.Sub(now)
	secs := int((d + time.Second - 1) / time.Second)
	return max(secs, 1)
}

// refuse answers a call over a limit as F&O does: 429 with Retry-After and
// an OData error naming the limit.
func (s *Simulator) refuse(w http.ResponseWriter, limit string, retryAfter int) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	s.odataError(w, http.StatusTooManyRequests, s.limitMessage(limit))
}

func (s *Simulator) limitMessage(limit string) string {
	switch limit {
	case LimitConcurrency:
		return fmt.Sprintf("Number of concurrent requests exceeded the limit of %d of the service protection API; retry after the number of seconds in Retry-After.",
			s.opts.MaxConcurrentRequests)
	case LimitRequests:
		return fmt.Sprintf("Number of requests exceeded the limit of %d over time window of %s of the service protection API; retry after the number of seconds in Retry-After.",
			s.opts.RequestBudget, s.opts.BudgetWindow)
	case LimitExecutionTime:
		return fmt.Sprintf("Combined execution time of incoming requests exceeded the limit of %s over time window of %s of the service protection API; retry after the number of seconds in Retry-After.",
			s.opts.ExecutionBudget, s.opts.BudgetWindow)
	}
	return "Number of requests exceeded the limit of the service protection API; retry after the number of seconds in Retry-After."
}

// ThrottledCalls reports how many API calls were answered 429 because of
// limit (LimitConcurrency, LimitRequests, LimitExecutionTime or
// LimitEveryNth), or of any of them when limit is "".
func (s *Simulator) ThrottledCalls(limit string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if limit != "" {
		return s.limits.refused[limit]
	}
	n := 0
	for _, c := range s.limits.refused {
		n += c
	}
	return n
}

// PeakConcurrency reports the most API calls the Simulator answered at once.
func (s *Simulator) PeakConcurrency() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limits.peak
}
