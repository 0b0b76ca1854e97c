package jobs

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dmfexport/dmfexport/dmf"
	"github.com/dmfexport/dmfexport/runs"
)

// F&O limits requests per user, whatever export makes them, and each
// execution loads the environment. So every export of one environment
// (same fo.url) in this process shares one dmf.Pacer for its calls and one
// queue of execution slots (fo.max_concurrent_exports): a fired export
// beyond the limit waits in the queue, in fire order, before it calls
// ExportToPackage, instead of starting at once and being throttled. Each
// replica applies the limits to what it runs (docs/publishing.md, "Many exports").

// ErrNotStarted is returned for a run stopped while it waited in its
// environment's queue: nothing was started in F&O and its record is
// removed, so it leaves no trace to resume; it runs at its next trigger.
var ErrNotStarted = errors.New("stopped while queued for an execution slot; nothing was started in F&O")

// environmentKey identifies an F&O environment: its URL in lower case
// without a trailing slash.
func environmentKey(u *url.URL) string {
	if u == nil {
		return ""
	}
	return strings.ToLower(strings.TrimRight(u.String(), "/"))
}

// environment is what the exports of one F&O environment share.
type environment struct {
	name  string // environmentKey, the metrics label
	pacer *dmf.Pacer
	slots *slotQueue
	// excel is the environment's one Excel slot: F&O runs one Excel import
	// or export at a time (DMF2039), so an export whose data project holds
	// an Excel entity starts only when no other such export of this
	// process runs there.
	excel *slotQueue
}

// environment returns the shared limits of exp's environment, made on
// first use; the limits follow exp's configuration (a reload may change
// them).
func (r *Runner) environment(exp *Export) *environment {
	key := environmentKey(exp.FO.URL)
	tick := pollTick(exp)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.envs == nil {
		r.envs = map[string]*environment{}
	}
	env, ok := r.envs[key]
	if !ok {
		m := r.Metrics
		env = &environment{name: key, slots: newSlotQueue(exp.FO.MaxConcurrentExports), excel: newSlotQueue(1)}
		env.pacer = dmf.NewPacer(dmf.PacerOptions{
			RequestsPerMinute: exp.FO.MaxRequestsPerMinute,
			PollTick:          tick,
			OnThrottled:       func() { m.throttled(key) },
			OnRate:            func(rate float64) { m.pace(key, rate) },
		})
		m.pace(key, env.pacer.RequestsPerMinute())
		r.envs[key] = env
		return env
	}
	env.slots.setLimit(exp.FO.MaxConcurrentExports)
	env.pacer.SetLimit(exp.FO.MaxRequestsPerMinute, 0)
	env.pacer.SetPollTick(tick)
	return env
}

// pollTick is the period of an environment's poll ticker: a second, or
// exp's shortest poll interval when shorter, so that short intervals (in
// tests, or for quick exports) are kept.
func pollTick(exp *Export) time.Duration {
	tick := dmf.DefaultPollTick
	for _, d := range []time.Duration{exp.Poll.Interval, exp.Poll.PackageURLInterval} {
		if d > 0 {
			tick = min(tick, d)
		}
	}
	return tick
}

// slotQueue hands out a fixed number of execution slots, first come first
// served: the runs waiting get slots in the order they asked.
type slotQueue struct {
	mu      sync.Mutex
	limit   int
	inUse   int
	waiting []*slotTicket
}

// slotTicket is a place in the queue.
type slotTicket struct {
	ready   chan struct{} // closed when the slot is granted
	granted bool
}

// DefaultMaxConcurrentExports is how many executions of one F&O
// environment a process has in flight at once; more wait in a queue.
const DefaultMaxConcurrentExports = 4

// newSlotQueue hands out limit slots; 0 means DefaultMaxConcurrentExports.
func newSlotQueue(limit int) *slotQueue {
	q := &slotQueue{}
	q.setLimit(limit)
	return q
}

// join takes a slot at once (nil ticket) or returns a place at the end of
// the queue and how many wait ahead of it.
func (q *slotQueue) join() (*slotTicket, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.inUse < q.limit && len(q.waiting) == 0 {
		q.inUse++
		return nil, 0
	}
	t := &slotTicket{ready: make(chan struct{})}
	q.waiting = append(q.waiting, t)
	return t, len(q.waiting) - 1
}

// await waits for t's slot. When ctx ends first, t leaves the queue (or
// gives back a slot granted meanwhile) and ctx's error is returned.
func (q *slotQueue) await(ctx context.Context, t *slotTicket) error {
	select {
	case <-t.ready:
		if ctx.Err() == nil {
			return nil
		}
	case <-ctx.Done():
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.granted {
		q.inUse--
	} else if i := slices.Index(q.waiting, t); i >= 0 {
		q.waiting = slices.Delete(q.waiting, i, i+1)
	}
	q.grant()
	return ctx.Err()
}

// release gives a slot back.
func (q *slotQueue) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.inUse--
	q.grant()
}

// setLimit changes the number of slots (0: DefaultMaxConcurrentExports);
// slots in use above a lowered limit are kept until released.
func (q *slotQueue) setLimit(n int) {
	if n <= 0 {
		n = DefaultMaxConcurrentExports
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.limit = n
	q.grant()
}

// grant hands free slots to the first waiting; q.mu must be held.
func (q *slotQueue) grant() {
	for q.inUse < q.limit && len(q.waiting) > 0 {
		t := q.waiting[0]
		q.waiting = q.waiting[1:]
		t.granted = true
		q.inUse++
		close(t.ready)
	}
}

// length is how many runs wait.
func (q *slotQueue) length() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiting)
}

// waitSlot takes an execution slot of the run's environment before F&O is
// asked to export, waiting in the queue when every slot is in use: the
// record then says since when (status shows "queued since …"). It returns
// the function that gives the slot back.
func (u *run) waitSlot(ctx context.Context, env *environment) (func(), error) {
	t, ahead := env.slots.join()
	if t != nil {
		queuedAt := u.r.clock().Now()
		u.rec.QueuedAt = queuedAt.UTC()
		u.log.Info("run queued: its F&O environment has fo.max_concurrent_exports executions in flight", "ahead", ahead, "environment", env.name)
		u.r.Metrics.queueChanged(env.name, env.slots.length())
		err := u.save(ctx)
		if err == nil {
			u.emit(Event{Detail: "queued for an execution slot"})
			err = env.slots.await(ctx, t)
		} else {
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			_ = env.slots.await(cancelled, t)
		}
		waited := u.r.clock().Since(queuedAt)
		u.r.Metrics.queueChanged(env.name, env.slots.length())
		u.r.Metrics.queueWaited(env.name, waited)
		if err != nil {
			if ctx.Err() != nil && !u.resuming {
				return nil, ErrNotStarted
			}
			return nil, err
		}
		u.steps["queue"] = waited
		u.rec.Durations["queue"] = waited.Round(time.Millisecond).String()
		u.log.Info("run dequeued", "waited", waited.Round(time.Millisecond))
	}
	u.r.Metrics.exportsInFlight(env.name, 1)
	return func() {
		env.slots.release()
		u.r.Metrics.exportsInFlight(env.name, -1)
	}, nil
}

// waitExcelSlot takes the environment's Excel slot before a new export
// whose data project holds an Excel entity (as the export's latest record
// listing entities shows; an export's first run cannot know), and returns
// the function that gives it back once the execution has ended.
func (u *run) waitExcelSlot(ctx context.Context, env *environment) (func(), error) {
	if !slices.ContainsFunc(u.knownEntities(ctx), func(e runs.EntityRecord) bool { return e.Format == "xlsx" }) {
		return func() {}, nil
	}
	t, ahead := env.excel.join()
	if t != nil {
		u.log.Info("run waits for its F&O environment's Excel slot: F&O runs one Excel import or export at a time (DMF2039)", "ahead", ahead, "environment", env.name)
		u.emit(Event{Detail: "waiting for the environment's Excel slot"})
		if err := env.excel.await(ctx, t); err != nil {
			if !u.resuming {
				return nil, ErrNotStarted
			}
			return nil, err
		}
	}
	return env.excel.release, nil
}
