package jobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/dmfexport/dmfexport/store"
)

// Several replicas of dmfexport may share one store. The store is then the
// only coordination service, through two create-once primitives
// (store.Store.Create):
//
//   - A schedule slot is claimed by creating "_claims/<export>/<slot time>";
//     the one replica whose create succeeds runs that slot.
//   - A run is owned through leases "_leases/<export>/<run>/<generation>". The
//     owner of the highest generation owns the run and rewrites its lease
//     object every LeaseTTL/3; the object's modification time (the store's
//     clock) is its heartbeat. A replica that finds an unfinished run whose
//     newest lease is older than LeaseTTL creates the next generation and,
//     if that create succeeds, resumes the run. The generation is also
//     written into the run record ("owner_gen", in its metadata too), and
//     an adopter takes the generation after both the newest lease and the
//     record's, so generations never repeat even once leases are deleted.
//     An owner that sees a newer generation than its own, in the leases or
//     in the record, has lost the run ("lease lost"): it cancels its work
//     and stops writing the record. The record is the fence that counts:
//     an adopter deletes every lease generation once it is done, but never
//     the record.
//   - An owner checks before every record write, and before publishing a
//     batch once its last successful heartbeat is older than LeaseTTL/2
//     (it was paused, or the store was away): until then no other replica
//     can have judged its lease lapsed.
//
// A lease's age is measured on the store's clock alone: the observer
// writes "_clock" and compares that object's modification time with the
// lease's (storeNow), so a replica whose own clock runs ahead or behind
// neither takes over a live run nor waits on a dead one. Only status, which
// never writes, falls back to its own clock.

// ErrLeaseHeld is returned when another live replica owns a run.
var ErrLeaseHeld = errors.New("run is owned by another live process")

// ErrLeaseLost is returned when a run was taken over by another replica
// while this one worked on it.
var ErrLeaseLost = errors.New("run was taken over by another replica")

// DefaultLeaseTTL is how long a run's lease lives without a heartbeat.
const DefaultLeaseTTL = 30 * time.Second

// replicaID names this process in claims and leases: host, pid and a random
// part, so a restarted process on the same host is a different replica.
var replicaID = func() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}()

// leaseBody is the content of a lease or claim object.
type leaseBody struct {
	Replica string    `json:"replica"`
	At      time.Time `json:"at"`
	// Holder says what holds a data project lease ("export X run Y"),
	// for the messages of the runs it keeps out; empty for run leases.
	Holder string `json:"holder,omitempty"`
}

func leasePrefix(storePrefix, job, runID string) string {
	return path.Join(storePrefix, "_leases", store.EscapeName(job), store.EscapeName(runID))
}

func genKey(prefix string, gen int) string { return fmt.Sprintf("%s/%08d", prefix, gen) }

// runLease is this process's ownership of one run.
type runLease struct {
	st     store.Store
	prefix string
	gen    int
	ttl    time.Duration
	holder string // leaseBody.Holder

	// record is the run record whose "owner_gen" fences this lease (""
	// for data project leases, which have none); set before keep.
	record string
	// gate, when set, is called before every heartbeat: tests hold it to
	// stand for a paused process.
	gate func()

	mu      sync.Mutex
	lost    bool
	onLost  func() // from keep: stops the run
	started bool   // keep was called: release waits for its goroutine
	// verified is when the last heartbeat that found the lease still ours
	// began (monotonic clock); fence checks the store again past ttl/2.
	verified time.Time
	// parent is the run lease a data project lease belongs to: once the
	// run is lost, so is its hold on the data project.
	parent *runLease
	stop   chan struct{}
	done   chan struct{}

	// beat, if set before keep, runs after each refresh that found the
	// lease still this process's (see run.heartbeat).
	beat func(ctx context.Context)
}

// newestLease returns the highest lease generation of a run and its object;
// gen 0 means none.
func newestLease(ctx context.Context, st store.Store, prefix string) (int, store.Object, error) {
	objs, err := st.List(ctx, prefix+"/")
	if err != nil {
		return 0, store.Object{}, fmt.Errorf("list leases: %w", err)
	}
	gen, newest := 0, store.Object{}
	for _, o := range objs {
		g, err := strconv.Atoi(path.Base(o.Key))
		if err == nil && g > gen {
			gen, newest = g, o
		}
	}
	return gen, newest, nil
}

// localNow is this replica's own clock: schedule slots, claims, leases and
// run IDs read it, so tests (and the fault suite's builds, see
// clockskew_faults.go) can skew it. Lease ages use it only where the
// store's clock cannot be read (see storeNow).
var localNow = time.Now

// clockKey is the object whose modification time tells the store's clock.
func clockKey(storePrefix string) string { return path.Join(storePrefix, "_clock") }

// storeNow returns the time on the store's clock, the clock lease
// modification times are written with: the modification time of an object
// written now. If the store cannot be written (or reports no time), it
// returns this replica's own clock, the best left.
func storeNow(ctx context.Context, st store.Store, storePrefix string) time.Time {
	o, err := st.Put(ctx, clockKey(storePrefix), strings.NewReader(replicaID), nil)
	if err == nil && o.ModTime.IsZero() {
		o, err = st.Stat(ctx, clockKey(storePrefix))
	}
	if err != nil || o.ModTime.IsZero() {
		return localNow()
	}
	return o.ModTime
}

// leaseAlive reports whether lease object o still stands for a live owner:
// refreshed within ttl of now (on the store's clock: see storeNow), and not
// left by a process of this host that is gone (a restart on the same
// machine takes over at once).
func leaseAlive(ctx context.Context, st store.Store, o store.Object, ttl time.Duration, now time.Time) (bool, string) {
	var b leaseBody
	if rc, err := st.Open(ctx, o.Key); err == nil {
		_ = json.NewDecoder(rc).Decode(&b)
		rc.Close()
	}
	owner := b.Replica
	if b.Holder != "" {
		owner = b.Holder + " on " + b.Replica
	}
	if now.Sub(o.ModTime) > ttl {
		return false, owner
	}
	host, _ := os.Hostname()
	parts := strings.Split(b.Replica, "/")
	if len(parts) == 3 && parts[0] == host && b.Replica != replicaID {
		if pid, err := strconv.Atoi(parts[1]); err == nil && !processAlive(pid) {
			return false, owner
		}
	}
	return true, owner
}

// processAlive reports whether a process with this pid exists here.
func processAlive(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// acquireLease takes generation gen of a run's lease. It fails with
// ErrLeaseHeld when another replica created that generation first.
func acquireLease(ctx context.Context, st store.Store, prefix string, gen int, ttl time.Duration) (*runLease, error) {
	return acquireHeldLease(ctx, st, prefix, gen, ttl, "")
}

// acquireHeldLease is acquireLease for a lease whose body names its holder.
func acquireHeldLease(ctx context.Context, st store.Store, prefix string, gen int, ttl time.Duration, holder string) (*runLease, error) {
	body, _ := json.Marshal(leaseBody{Replica: replicaID, At: localNow().UTC(), Holder: holder})
	if _, err := st.Create(ctx, genKey(prefix, gen), bytes.NewReader(body), nil); err != nil {
		if errors.Is(err, store.ErrExist) {
			return nil, ErrLeaseHeld
		}
		return nil, fmt.Errorf("take run lease: %w", err)
	}
	return &runLease{st: st, prefix: prefix, gen: gen, ttl: ttl, holder: holder, verified: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// ownerGenMeta is the run record's metadata key (and JSON field) holding
// the lease generation of the replica that wrote it.
const ownerGenMeta = "owner_gen"

// keep refreshes the lease until release, and calls lost (once) if another
// replica takes the run over.
func (l *runLease) keep(lost func()) {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.started, l.onLost = true, lost
	l.mu.Unlock()
	go func() {
		defer close(l.done)
		t := time.NewTicker(l.ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
			}
			if l.gate != nil {
				l.gate()
			}
			ctx, cancel := context.WithTimeout(context.Background(), l.ttl/3)
			err := l.renew(ctx)
			cancel()
			if errors.Is(err, ErrLeaseLost) {
				return
			}
			if l.beat != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				l.beat(ctx)
				cancel()
			}
		}
	}()
}

// rewrite writes the lease's generation again, for a store that lost it
// (see run.restoreAfterLoss); a lease taken over is not written.
func (l *runLease) rewrite(ctx context.Context) error {
	if l == nil || l.Lost() {
		return nil
	}
	body, _ := json.Marshal(leaseBody{Replica: replicaID, At: localNow().UTC(), Holder: l.holder})
	if _, err := l.st.Put(ctx, genKey(l.prefix, l.gen), bytes.NewReader(body), nil); err != nil {
		return fmt.Errorf("write run lease again: %w", err)
	}
	return nil
}

// renew checks that the lease is still this process's and, if so,
// refreshes its heartbeat. Checking first means a process that was paused
// past the lease never writes a heartbeat over an adopter's takeover.
func (l *runLease) renew(ctx context.Context) error {
	began := time.Now()
	if err := l.check(ctx); err != nil {
		return err
	}
	body, _ := json.Marshal(leaseBody{Replica: replicaID, At: localNow().UTC(), Holder: l.holder})
	if _, err := l.st.Put(ctx, genKey(l.prefix, l.gen), bytes.NewReader(body), nil); err != nil {
		return err
	}
	l.mu.Lock()
	if began.After(l.verified) {
		l.verified = began
	}
	l.mu.Unlock()
	return nil
}

// fence is called before each side effect of the run that is not a record
// write (publishing a batch): it returns ErrLeaseLost once the run is
// known lost, and checks the store first when the last heartbeat is older
// than ttl/2, so a process resumed after a pause (SIGSTOP, a stalled VM)
// past its lease publishes nothing more. A fresher heartbeat needs no
// check: no other replica can have judged the lease lapsed.
func (l *runLease) fence(ctx context.Context) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	lost, age := l.lost, time.Since(l.verified)
	l.mu.Unlock()
	if lost {
		return ErrLeaseLost
	}
	if age < l.ttl/2 {
		return nil
	}
	// As for record writes, a store that cannot answer is no proof of a
	// takeover: only ErrLeaseLost (found here, or meanwhile by a heartbeat,
	// which also cancels ctx) stops the run.
	if err := l.renew(ctx); errors.Is(err, ErrLeaseLost) || l.Lost() {
		return ErrLeaseLost
	}
	return ctx.Err()
}

// check returns ErrLeaseLost, and stops the run, if another replica has
// taken the run over: a newer generation of the lease, a run record
// written by a newer generation (what counts once the adopter deleted its
// leases), or, for a data project lease, the loss of its run. The run's
// record writes call it first, so an owner that stalled past the lease
// writes nothing after a takeover.
func (l *runLease) check(ctx context.Context) error {
	if l == nil {
		return nil
	}
	if l.Lost() {
		return ErrLeaseLost
	}
	l.mu.Lock()
	parent := l.parent
	l.mu.Unlock()
	if parent != nil && errors.Is(parent.check(ctx), ErrLeaseLost) {
		// The run's own lease said so ("lease lost"); this hold ends with it.
		l.mu.Lock()
		l.lost = true
		l.mu.Unlock()
		return ErrLeaseLost
	}
	gen, _, err := newestLease(ctx, l.st, l.prefix)
	newer := err == nil && gen > l.gen // a listing error is not proof of a takeover
	if !newer && l.record != "" {
		if o, err := l.st.Stat(ctx, l.record); err == nil {
			g, err := strconv.Atoi(o.Meta[ownerGenMeta])
			newer = err == nil && g > l.gen
		}
	}
	if !newer {
		return nil
	}
	l.lose()
	return ErrLeaseLost
}

// lose marks the run lost and stops it (once).
func (l *runLease) lose() {
	if l == nil {
		return
	}
	l.mu.Lock()
	first := !l.lost
	l.lost = true
	onLost := l.onLost
	l.mu.Unlock()
	if first && onLost != nil {
		onLost()
	}
}

// bind ties a data project lease to the run lease it serves: the hold is
// lost with the run, so a process paused past the lease never refreshes a
// data project lease an adopter has since released.
func (l *runLease) bind(parent *runLease) {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.parent = parent
	l.mu.Unlock()
}

// Lost reports whether the run was taken over.
func (l *runLease) Lost() bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// release stops refreshing and deletes every lease generation, so another
// replica may take the run up at once (a run stopped unfinished) or no
// lease is left behind (a finished run); a lease lost meanwhile (checked
// once more here) deletes nothing.
func (l *runLease) release(ctx context.Context) {
	if l == nil {
		return
	}
	close(l.stop)
	l.mu.Lock()
	started := l.started
	l.mu.Unlock()
	if started {
		<-l.done
	}
	if errors.Is(l.check(ctx), ErrLeaseLost) {
		return // the new owner's leases are not ours to delete
	}
	objs, err := l.st.List(ctx, l.prefix+"/")
	if err != nil {
		return
	}
	for _, o := range objs {
		_ = l.st.Delete(ctx, o.Key)
	}
}

// claimSlot claims one scheduled fire of exp across replicas. It returns
// false when another replica claimed the slot first.
func claimSlot(ctx context.Context, st store.Store, exp *Export, slot time.Time) (bool, error) {
	key := path.Join(exp.Store.Prefix, "_claims", store.EscapeName(exp.Name), slot.UTC().Format("20060102T150405Z"))
	body, _ := json.Marshal(leaseBody{Replica: replicaID, At: localNow().UTC()})
	if _, err := st.Create(ctx, key, bytes.NewReader(body), nil); err != nil {
		if errors.Is(err, store.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("claim schedule slot %s: %w", slot.Format(time.RFC3339), err)
	}
	return true, nil
}

// slotOf returns the scheduled time a fire at now belongs to: the latest
// time of the schedule not after now (plus a little, for timers that fire
// early). Every replica computes the same slot for the same fire. An
// "@every" schedule is aligned to multiples of its interval.
func slotOf(schedule string, now time.Time) time.Time {
	sched, err := cronParser.Parse(strings.TrimSpace(schedule))
	if err != nil {
		return now.Truncate(time.Second)
	}
	if c, ok := sched.(cron.ConstantDelaySchedule); ok {
		return now.Add(500 * time.Millisecond).Truncate(c.Delay)
	}
	limit := now.Add(500 * time.Millisecond)
	for lookback := time.Second; lookback < 400*24*time.Hour; lookback *= 2 {
		t := sched.Next(limit.Add(-lookback))
		if t.IsZero() || t.After(limit) {
			continue
		}
		for {
			n := sched.Next(t)
			if n.IsZero() || n.After(limit) {
				return t
			}
			t = n
		}
	}
	return now.Truncate(time.Second)
}
