package jobs

import (
	"context"
	"errors"
	"time"

	"github.com/dmfexport/dmfexport/internal/cause"
)

// A run that meets a fault outside dmfexport that an operator or time can
// clear (the broker away, no queue bound to the exchange, a queue full past
// broker.backpressure_timeout, an F&O execution still running past
// poll.deadline) is not failed: it is left unfinished,
// with what the broker confirmed, its record's Waiting naming what it waits
// for, and it is taken up again — by dmfexport run with backoff, by the
// next scheduled fire of its export, or by dmfexport trigger.

// ErrWaiting is wrapped by the error of every run left waiting.
var ErrWaiting = errors.New("run waiting")

// ErrWaitingForBroker is wrapped by the error of a run left waiting because
// the broker stayed unreachable (past broker.reconnect_timeout), before or
// after its export started in F&O.
var ErrWaitingForBroker = errors.New("waiting for broker")

// The record's Waiting values.
const (
	// WaitingForBroker: the broker was unreachable, or its exchange or
	// declared queues could not be had.
	WaitingForBroker = "broker"
	// WaitingForQueue: the broker returned batches as unroutable, since no
	// queue is bound to the exchange with the routing key.
	WaitingForQueue = "queue"
	// WaitingForQueueSpace: the broker refused (nacked) batches for
	// broker.backpressure_timeout, its queue full (x-max-length with
	// x-overflow reject-publish) and its consumers taking too little.
	WaitingForQueueSpace = "queue_space"
	// WaitingForExecution: F&O's execution had not ended by poll.deadline,
	// or its status could not be had (answers refused or unreadable past
	// the retries).
	WaitingForExecution = "execution"
	// WaitingForPackage: F&O exported, but its package could not be
	// fetched, stored or unpacked (disk or store full, URLs refused, a
	// broken download): the run fetches the same execution's package
	// again, never exports again, for as long as F&O keeps it.
	WaitingForPackage = "package"
)

// waitingError marks a run's error as one that leaves the run waiting for
// what.
type waitingError struct {
	what string
	err  error
}

func newWaiting(what string, err error) *waitingError { return &waitingError{what: what, err: err} }

func (e *waitingError) Error() string { return WaitingText(e.what) + ": " + e.err.Error() }
func (e *waitingError) Unwrap() error { return e.err }

// Cause is the cause marked in the error the run waits on, or its whole
// text: never the waiting text, which the record's Waiting says.
func (e *waitingError) Cause() string {
	if c := cause.Of(e.err); c != "" {
		return c
	}
	return e.err.Error()
}
func (e *waitingError) Is(target error) bool {
	return target == ErrWaiting || target == ErrWaitingForBroker && e.what == WaitingForBroker
}

// waitingOf returns what err leaves its run waiting for, or "".
func waitingOf(err error) string {
	var w *waitingError
	if errors.As(err, &w) {
		return w.what
	}
	return ""
}

// WaitingText says what a run whose record's Waiting is what waits for,
// for status lines: "waiting for broker", ...
func WaitingText(what string) string {
	switch what {
	case WaitingForQueue:
		return "waiting for a queue bound to the exchange"
	case WaitingForQueueSpace:
		return "waiting for room in the queue"
	case WaitingForExecution:
		return "waiting for F&O to end the execution"
	case WaitingForPackage:
		return "waiting for the exported package to be fetched again"
	}
	return "waiting for broker"
}

// waitingAdvice ends the error of a run left waiting: what happens next,
// and only what does.
func waitingAdvice(what string) string {
	const retried = "(dmfexport run retries it with backoff and at each scheduled time of the export; dmfexport trigger takes it up)"
	switch what {
	case WaitingForQueue:
		return "the run stays unfinished with what the broker confirmed, and publishes the rest once a queue is bound to the exchange with the routing key " + retried
	case WaitingForQueueSpace:
		return "the run stays unfinished with what the broker confirmed, and publishes the rest once the queue's consumers make room " + retried +
			"; if they are stopped, start them, or raise the queue's x-max-length or broker.backpressure_timeout"
	case WaitingForExecution:
		return "the run stays unfinished and polls the execution again " + retried +
			"; if the execution is stuck in F&O, cancel it there (Data management > Job history): the run then ends with F&O's status"
	case WaitingForPackage:
		return "F&O exported and keeps the package for about 7 days: the run stays unfinished and fetches the same execution's package again, without exporting again, once the cause is fixed (disk or store space, network) " + retried
	}
	return "the run stays unfinished and resumes from here once the broker is reachable " + retried
}

// runWait is the backoff of one run left waiting.
type runWait struct {
	attempts int
	next     time.Time
}

// Backoff of ResumeAll for runs left waiting: the first retry comes after
// waitRetryMin, each next one after twice the wait before, at most
// waitRetryMax.
const (
	waitRetryMin = 10 * time.Second
	waitRetryMax = 5 * time.Minute
)

// retryDue reports whether a run left waiting may be taken up now. A run
// this process has not tried yet always may.
func (r *Runner) retryDue(job, runID string, now time.Time) bool {
	next, ok := r.nextRetry(job, runID)
	return !ok || !now.Before(next)
}

// nextRetry returns when a run left waiting may be taken up again, if this
// process has tried it.
func (r *Runner) nextRetry(job, runID string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.waits[job+"/"+runID]
	return w.next, ok
}

// noteWait records the outcome of taking up a run: still waiting pushes its
// next retry back; anything else forgets it.
func (r *Runner) noteWait(job, runID string, waiting bool, now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := job + "/" + runID
	if !waiting {
		delete(r.waits, key)
		return 0
	}
	if r.waits == nil {
		r.waits = map[string]runWait{}
	}
	w := r.waits[key]
	d := waitRetryMin
	for i := 0; i < w.attempts && d < waitRetryMax; i++ {
		d *= 2
	}
	d = min(d, waitRetryMax)
	w.attempts++
	w.next = now.Add(d)
	r.waits[key] = w
	return d
}

// takeUpWaiting is what a scheduled fire of exp does first: if a run of
// exp is left waiting, the fire takes that run up (once its backoff allows)
// instead of starting another, so a broker or a queue away for hours leaves
// one run waiting, not one per fire. It reports whether such a run exists,
// and the fire's outcome then.
func (r *Runner) takeUpWaiting(ctx context.Context, exp *Export) (outcome string, ok bool) {
	recs, err := r.Unfinished(ctx, exp)
	if err != nil {
		return "", false // Run meets the same store and says so
	}
	for _, rec := range recs {
		if rec.Waiting == "" {
			continue
		}
		log := r.logger().With("export", exp.Name, "run", rec.RunID)
		if next, ok := r.nextRetry(exp.Name, rec.RunID); ok && r.clock().Now().Before(next) {
			log.Info("scheduled run skipped: a run of this export is left "+WaitingText(rec.Waiting)+"; it is retried then", "retry_at", next.Format(time.RFC3339))
			return fireWaiting, true
		}
		log.Info("scheduled run takes up the run left " + WaitingText(rec.Waiting))
		ended, err := r.resumeWaiting(ctx, exp, rec)
		return fireOutcome(ctx, ended, err), true
	}
	return "", false
}
