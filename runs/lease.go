package runs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dmfexport/dmfexport/internal/cause"
	"github.com/dmfexport/dmfexport/internal/process"
	"github.com/dmfexport/dmfexport/store"
)

// Several replicas of dmfexport may share one store. The store is then the
// only coordination service, through two create-once primitives
// (store.Store.Create):
//
//   - A schedule slot is claimed by creating "_claims/<export>/<slot time>";
//     the one replica whose create succeeds runs that slot (claims.go).
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
// lease's (Ledger.storeNow), so a replica whose own clock runs ahead or
// behind neither takes over a live run nor waits on a dead one. Only a
// read-only ledger (status), which never writes, judges on its own clock.

// ErrLeaseHeld is returned when another live replica owns a run.
var ErrLeaseHeld = errors.New("run is owned by another live process")

// ErrLeaseLost is returned when a run was taken over by another replica
// while this one worked on it.
var ErrLeaseLost = errors.New("run was taken over by another replica")

// DefaultLeaseTTL is how long a run's lease lives without a heartbeat.
const DefaultLeaseTTL = 30 * time.Second

// leaseBody is the content of a lease or claim object.
type leaseBody struct {
	Replica string    `json:"replica"`
	At      time.Time `json:"at"`
	// Holder says what holds a data project lease ("export X run Y"),
	// for the messages of the runs it keeps out; empty for run leases.
	Holder string `json:"holder,omitempty"`
}

// Holder is the newest lease of a run or data project.
type Holder struct {
	Gen   int    // its generation; 0: no lease
	Owner string // the replica (and, for a data project, the run) holding it
	// Alive: refreshed within the lease TTL, by a process that is not
	// known to be gone.
	Alive bool
}

// Lease is this process's ownership of one run, or its hold on a data
// project, taken from a Ledger. Its methods may be called on nil (a run
// without a lease): they then do nothing and report nothing lost.
type Lease struct {
	st      store.Store
	clock   clockwork.Clock
	replica string
	folder  string // the lease's generations
	gen     int
	ttl     time.Duration
	holder  string // leaseBody.Holder

	// record is the run record whose "owner_gen" fences this lease (""
	// for data project leases, which have none).
	record string

	mu      sync.Mutex
	lost    bool
	onLost  func() // from Keep: stops the run
	started bool   // Keep was called: Release waits for its goroutine
	// verified is when the last heartbeat that found the lease still ours
	// began; Fence checks the store again past ttl/2.
	verified time.Time
	// parent is the run lease a data project lease belongs to: once the
	// run is lost, so is its hold on the data project.
	parent *Lease
	stop   chan struct{}
	done   chan struct{}
	// beat and gate: see KeepOptions.
	beat func(ctx context.Context)
	gate func()
}

// KeepOptions say what a kept lease does besides refreshing itself.
type KeepOptions struct {
	// Lost is called once if another replica takes the run over.
	Lost func()
	// Beat, if set, runs after each refresh that found the lease still
	// this process's.
	Beat func(ctx context.Context)
	// Gate, if set, is called before every heartbeat: tests hold it to
	// stand for a paused process.
	Gate func()
}

// Gen is the lease's generation.
func (l *Lease) Gen() int {
	if l == nil {
		return 0
	}
	return l.gen
}

// newestLease returns the highest lease generation in folder and its
// object; gen 0 means none.
func newestLease(ctx context.Context, st store.Store, folder string) (int, store.Object, error) {
	objs, err := st.List(ctx, folder+"/")
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

// holder describes the newest lease in folder, judged at now (see
// leaseAlive); now is asked for only when there is a lease.
func (l *Ledger) holder(ctx context.Context, folder string, now func() time.Time) (Holder, error) {
	gen, obj, err := newestLease(ctx, l.st, folder)
	if err != nil || gen == 0 {
		return Holder{}, err
	}
	alive, owner := l.leaseAlive(ctx, obj, now())
	return Holder{Gen: gen, Owner: owner, Alive: alive}, nil
}

// leaseAlive reports whether lease object o still stands for a live owner:
// refreshed within the lease TTL of now (on the store's clock: see
// storeNow), and not left by a process of this host that is gone (a
// restart on the same machine takes over at once).
func (l *Ledger) leaseAlive(ctx context.Context, o store.Object, now time.Time) (bool, string) {
	var b leaseBody
	if rc, err := l.st.Open(ctx, o.Key); err == nil {
		_ = json.NewDecoder(rc).Decode(&b)
		_ = rc.Close()
	}
	owner := b.Replica
	if b.Holder != "" {
		owner = b.Holder + " on " + b.Replica
	}
	if now.Sub(o.ModTime) > l.leaseTTL {
		return false, owner
	}
	host, _ := os.Hostname()
	parts := strings.Split(b.Replica, "/")
	if len(parts) == 3 && parts[0] == host && b.Replica != l.replica {
		if pid, err := strconv.Atoi(parts[1]); err == nil && !process.Alive(pid) {
			return false, owner
		}
	}
	return true, owner
}

// storeNow returns the time on the store's clock, the clock lease
// modification times are written with: the modification time of an object
// written now. If the store cannot be written (or reports no time), or the
// ledger is read-only, it returns the ledger's own clock, the best left.
func (l *Ledger) storeNow(ctx context.Context) time.Time {
	if l.readOnly {
		return l.clock.Now()
	}
	o, err := l.st.Put(ctx, l.Clock(), strings.NewReader(l.replica), nil)
	if err == nil && o.ModTime.IsZero() {
		o, err = l.st.Stat(ctx, l.Clock())
	}
	if err != nil || o.ModTime.IsZero() {
		return l.clock.Now()
	}
	return o.ModTime
}

// storeClock is storeNow as the lazy argument of holder.
func (l *Ledger) storeClock(ctx context.Context) func() time.Time {
	return func() time.Time { return l.storeNow(ctx) }
}

// RunHolder describes the newest lease of run runID, judged on the
// store's clock.
func (l *Ledger) RunHolder(ctx context.Context, runID string) (Holder, error) {
	return l.holder(ctx, l.Leases(runID), l.storeClock(ctx))
}

// Owned reports whether a live process is working on the unfinished run
// runID: its newest lease was refreshed within the lease TTL by a process
// that still exists. false means the run was cut off (a stop, a crash,
// kill -9) and waits for the next start to resume it.
func (l *Ledger) Owned(ctx context.Context, runID string) (bool, error) {
	h, err := l.RunHolder(ctx, runID)
	if err != nil {
		return false, fmt.Errorf("export %s run %s: %w", l.Export, runID, err)
	}
	return h.Alive, nil
}

// TakeLease takes generation gen of run runID's lease. It fails with
// ErrLeaseHeld when another replica created that generation first. The
// lease is fenced by the run's record: a record written by a newer
// generation means the run was lost.
func (l *Ledger) TakeLease(ctx context.Context, runID string, gen int) (*Lease, error) {
	lease, err := l.takeLease(ctx, l.Leases(runID), gen, "")
	if err != nil {
		return nil, err
	}
	lease.record = l.Record(runID)
	return lease, nil
}

// takeLease creates generation gen of the lease in folder, whose body
// names holder.
func (l *Ledger) takeLease(ctx context.Context, folder string, gen int, holder string) (*Lease, error) {
	now := l.clock.Now()
	body, _ := json.Marshal(leaseBody{Replica: l.replica, At: now.UTC(), Holder: holder})
	if _, err := l.st.Create(ctx, generation(folder, gen), bytes.NewReader(body), nil); err != nil {
		if errors.Is(err, store.ErrExist) {
			return nil, ErrLeaseHeld
		}
		return nil, fmt.Errorf("take run lease: %w", err)
	}
	return &Lease{st: l.st, clock: l.clock, replica: l.replica, folder: folder, gen: gen, ttl: l.leaseTTL, holder: holder,
		verified: now, stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// TakeOver takes up rec, an unfinished run cut off by a stop or a crash,
// if no live process owns it, by creating the next lease generation: of
// several replicas trying, one succeeds. The generation follows the
// record's too, as the leases of earlier owners may be deleted: a paused
// owner's generation is never handed out again. It returns the lease and
// the record as it is now, which may have moved while the lease was
// taken; a run that ended meanwhile comes back without a lease. A run a
// live process owns fails with ErrLeaseHeld, naming the owner.
func (l *Ledger) TakeOver(ctx context.Context, rec *Record) (*Lease, *Record, error) {
	h, err := l.RunHolder(ctx, rec.RunID)
	if err != nil {
		return nil, nil, err
	}
	if h.Alive {
		return nil, nil, cause.Mark(fmt.Errorf("%w (%s)", ErrLeaseHeld, h.Owner))
	}
	lease, err := l.TakeLease(ctx, rec.RunID, max(h.Gen, rec.OwnerGen)+1)
	if err != nil {
		return nil, nil, err
	}
	if fresh, err := l.Find(ctx, rec.RunID); err == nil {
		rec = fresh
	}
	if rec.State.Final() || rec.OwnerGen >= lease.gen {
		// Finished, or taken by another replica meanwhile with the
		// generation this one had in mind: only this lease object is
		// this replica's to delete.
		_ = l.st.Delete(context.WithoutCancel(ctx), generation(lease.folder, lease.gen))
		if rec.State.Final() {
			return nil, rec, nil
		}
		return nil, nil, cause.Mark(fmt.Errorf("%w (taken over by generation %d meanwhile)", ErrLeaseHeld, rec.OwnerGen))
	}
	return lease, rec, nil
}

// Keep refreshes the lease every third of its TTL until Release.
func (l *Lease) Keep(o KeepOptions) {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.started, l.onLost, l.beat, l.gate = true, o.Lost, o.Beat, o.Gate
	l.mu.Unlock()
	t := l.clock.NewTicker(l.ttl / 3)
	go func() {
		defer close(l.done)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-t.Chan():
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

// Rewrite writes the lease's generation again, for a store that lost it;
// a lease taken over is not written.
func (l *Lease) Rewrite(ctx context.Context) error {
	if l == nil || l.Lost() {
		return nil
	}
	body, _ := json.Marshal(leaseBody{Replica: l.replica, At: l.clock.Now().UTC(), Holder: l.holder})
	if _, err := l.st.Put(ctx, generation(l.folder, l.gen), bytes.NewReader(body), nil); err != nil {
		return fmt.Errorf("write run lease again: %w", err)
	}
	return nil
}

// renew checks that the lease is still this process's and, if so,
// refreshes its heartbeat. Checking first means a process that was paused
// past the lease never writes a heartbeat over an adopter's takeover.
func (l *Lease) renew(ctx context.Context) error {
	began := l.clock.Now()
	if err := l.Check(ctx); err != nil {
		return err
	}
	body, _ := json.Marshal(leaseBody{Replica: l.replica, At: l.clock.Now().UTC(), Holder: l.holder})
	if _, err := l.st.Put(ctx, generation(l.folder, l.gen), bytes.NewReader(body), nil); err != nil {
		return err
	}
	l.mu.Lock()
	if began.After(l.verified) {
		l.verified = began
	}
	l.mu.Unlock()
	return nil
}

// Fence is called before each side effect of the run that is not a record
// write (publishing a batch): it returns ErrLeaseLost once the run is
// known lost, and checks the store first when the last heartbeat is older
// than ttl/2, so a process resumed after a pause (SIGSTOP, a stalled VM)
// past its lease publishes nothing more. A fresher heartbeat needs no
// check: no other replica can have judged the lease lapsed.
func (l *Lease) Fence(ctx context.Context) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	lost, age := l.lost, l.clock.Since(l.verified)
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

// Check returns ErrLeaseLost, and stops the run, if another replica has
// taken the run over: a newer generation of the lease, a run record
// written by a newer generation (what counts once the adopter deleted its
// leases), or, for a data project lease, the loss of its run. The run's
// record writes call it first, so an owner that stalled past the lease
// writes nothing after a takeover.
func (l *Lease) Check(ctx context.Context) error {
	if l == nil {
		return nil
	}
	if l.Lost() {
		return ErrLeaseLost
	}
	l.mu.Lock()
	parent := l.parent
	l.mu.Unlock()
	if parent != nil && errors.Is(parent.Check(ctx), ErrLeaseLost) {
		// The run's own lease said so ("lease lost"); this hold ends with it.
		l.mu.Lock()
		l.lost = true
		l.mu.Unlock()
		return ErrLeaseLost
	}
	gen, _, err := newestLease(ctx, l.st, l.folder)
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
	l.Lose()
	return ErrLeaseLost
}

// Lose marks the run lost and stops it (once).
func (l *Lease) Lose() {
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

// Bind ties a data project lease to the run lease it serves: the hold is
// lost with the run, so a process paused past the lease never refreshes a
// data project lease an adopter has since released.
func (l *Lease) Bind(run *Lease) {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.parent = run
	l.mu.Unlock()
}

// Lost reports whether the run was taken over.
func (l *Lease) Lost() bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// Release stops refreshing and deletes every lease generation, so another
// replica may take the run up at once (a run stopped unfinished) or no
// lease is left behind (a finished run); a lease lost meanwhile (checked
// once more here) deletes nothing.
func (l *Lease) Release(ctx context.Context) {
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
	if errors.Is(l.Check(ctx), ErrLeaseLost) {
		return // the new owner's leases are not ours to delete
	}
	objs, err := l.st.List(ctx, l.folder+"/")
	if err != nil {
		return
	}
	for _, o := range objs {
		_ = l.st.Delete(ctx, o.Key)
	}
}
