package dmf

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/dmfexport/dmfexport/internal/cause"
)

// Defaults of PollOptions and WaitPackageURL, for a zero value.
const (
	// DefaultPollInterval is the first wait between status asks.
	DefaultPollInterval = 10 * time.Second
	// DefaultPollMaxInterval caps the growing wait between status asks.
	DefaultPollMaxInterval = time.Minute
	// DefaultPackageURLTimeout is how long WaitPackageURL waits when given no timeout.
	DefaultPackageURLTimeout = 5 * time.Minute
)

// PollStatus asks the status of an execution until it is final and returns
// it: Succeeded, PartiallySucceeded, Failed and Canceled come back with a nil
// error. NotRun and Executing keep polling. Unknown, and F&O's HTTP 400
// "Execution details were not found" (its answer before it registers a new
// execution), keep polling too, for ClientOptions.RegisterTimeout from the
// first such answer in a row: then the error wraps ErrNotRegistered. Any
// other name is an error wrapping ErrUnexpectedStatus. Waits start at
// o.Interval (default 10 s) and grow ×1.5 with ±20% jitter up to
// o.MaxInterval (default 1 min). With o.Deadline > 0, running out of time
// gives an error wrapping ErrDeadline. Cancelling ctx returns promptly with
// an error wrapping ctx.Err().
func (c *Client) PollStatus(ctx context.Context, executionID string, o PollOptions) (Status, error) {
	interval := o.Interval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	maxInterval := o.MaxInterval
	if maxInterval <= 0 {
		maxInterval = DefaultPollMaxInterval
	}
	if maxInterval < interval {
		maxInterval = interval
	}

	start := time.Now()
	heard := waitLog{every: c.waitLogEvery, last: start}
	var unknownSince time.Time // first of the Unknown answers in a row
	unknowns := 0
	var last Status
	for {
		st, answer, err := c.statusOf(ctx, executionID)
		if err != nil {
			if ctx.Err() != nil {
				return last, fmt.Errorf("poll status of execution %q: %w", executionID, ctx.Err())
			}
			return last, fmt.Errorf("poll status of execution %q: %w", executionID, err)
		}
		last = st
		now := time.Now()
		elapsed := now.Sub(start)
		if o.OnStatus != nil {
			o.OnStatus(st, elapsed)
		}
		var registerLeft time.Duration // > 0 while waiting for F&O to register
		switch canonical := canonicalStatus(st); canonical {
		case StatusSucceeded, StatusPartiallySucceeded, StatusFailed, StatusCanceled:
			return canonical, nil
		case StatusNotRun, StatusExecuting:
			unknownSince, unknowns = time.Time{}, 0
		case StatusUnknown:
			if unknownSince.IsZero() {
				unknownSince = now
			}
			unknowns++
			registerLeft = c.registerTimeout - now.Sub(unknownSince)
			if registerLeft <= 0 {
				return canonical, fmt.Errorf("poll status of execution %q: %w",
					executionID, c.notRegisteredError(executionID, now.Sub(unknownSince), unknowns, answer))
			}
			if heard.due(now) {
				c.log.Info("still waiting for F&O to register the execution", "execution_id", executionID,
					"waited", now.Sub(unknownSince).Round(time.Second), "window", c.registerTimeout, "asks", unknowns, "answer", answer)
			}
		default:
			return st, fmt.Errorf("poll status of execution %q: %w %q", executionID, ErrUnexpectedStatus, string(st))
		}

		wait := jitter(interval, 0.2)
		if wait > maxInterval {
			wait = maxInterval
		}
		if registerLeft > 0 {
			wait = min(wait, registerLeft, heard.untilDue(time.Now()))
		}
		if o.Deadline > 0 {
			remaining := o.Deadline - time.Since(start)
			if remaining <= 0 {
				// F&O's status, not the poll, is the cause.
				return last, fmt.Errorf("poll status of execution %q: %w", executionID, cause.Mark(fmt.Errorf("%w: still %s after %s",
					ErrDeadline, last, time.Since(start).Round(time.Millisecond))))
			}
			wait = min(wait, remaining)
		}
		if err := c.pollSleep(ctx, wait); err != nil {
			return last, fmt.Errorf("poll status of execution %q: %w", executionID, err)
		}
		interval = min(time.Duration(float64(interval)*1.5), maxInterval)
	}
}

// canonicalStatus maps a status name to the contract's spelling, ignoring
// case and surrounding space; unknown names are returned unchanged.
func canonicalStatus(s Status) Status {
	name := strings.TrimSpace(string(s))
	for _, known := range []Status{StatusUnknown, StatusNotRun, StatusExecuting, StatusSucceeded,
		StatusPartiallySucceeded, StatusFailed, StatusCanceled} {
		if strings.EqualFold(name, string(known)) {
			return known
		}
	}
	return s
}

// jitter returns d scaled by a random factor in [1-frac, 1+frac].
func jitter(d time.Duration, frac float64) time.Duration {
	f := 1 - frac + 2*frac*rand.Float64()
	return time.Duration(float64(d) * f)
}

// WaitPackageURL asks for the package URL of an execution until F&O gives a
// non-empty one, waiting ClientOptions.PackageURLDelay (500 ms) then twice
// as long each time (with jitter, at most PackageURLMaxDelay, 30 s, between
// asks), for at most timeout (0 means
// DefaultPackageURLTimeout). When time runs out the error wraps
// ErrPackageNotReady and says how long it waited. The URL is https or http
// to a loopback host; it embeds a SAS token: log it only through RedactURL.
func (c *Client) WaitPackageURL(ctx context.Context, executionID string, timeout time.Duration) (string, error) {
	if timeout <= 0 {
		timeout = DefaultPackageURLTimeout
	}
	start := time.Now()
	delay := c.urlWaitBase
	heard := waitLog{every: c.waitLogEvery, last: start}
	for asks := 1; ; asks++ {
		u, err := c.PackageURL(ctx, executionID)
		if err != nil {
			return "", fmt.Errorf("wait for package URL: %w", err)
		}
		if u != "" {
			return u, nil
		}
		remaining := timeout - time.Since(start)
		if remaining <= 0 {
			return "", fmt.Errorf("wait for package URL of execution %q: %w after %s (%d asks): "+
				"F&O may still be writing the package; try again later or raise the wait",
				executionID, ErrPackageNotReady, time.Since(start).Round(time.Millisecond), asks)
		}
		if heard.due(time.Now()) {
			c.log.Info("still waiting for F&O's package URL", "execution_id", executionID,
				"waited", time.Since(start).Round(time.Second), "timeout", timeout, "asks", asks)
		}
		wait := min(jitter(delay, 0.2), c.urlWaitMax, remaining, heard.untilDue(time.Now()))
		c.log.Debug("F&O package URL not ready yet", "execution_id", executionID, "delay", wait)
		if err := c.pollSleep(ctx, wait); err != nil {
			return "", fmt.Errorf("wait for package URL of execution %q: %w", executionID, err)
		}
		delay = min(delay*2, c.urlWaitMax)
	}
}

// waitLog says when a long wait on F&O is due its next log line, so that
// an operator never watches a silent process for more than every.
type waitLog struct {
	every time.Duration
	last  time.Time // of the last line, or of the start of the wait
}

// due reports whether a line is due at now, and if so counts it as written.
func (w *waitLog) due(now time.Time) bool {
	if now.Sub(w.last) < w.every {
		return false
	}
	w.last = now
	return true
}

// untilDue is how long after now the next line is due: a wait capped by it
// asks again, and so logs, in time.
func (w *waitLog) untilDue(now time.Time) time.Duration {
	return max(w.last.Add(w.every).Sub(now), time.Millisecond)
}
