package runs

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/store/storetest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// TestClaimSlotOnce races many claimers of one slot: exactly one wins.
func TestClaimSlotOnce(t *testing.T) {
	l, _, _ := testLedger(t, t0, 0)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			ok, err := l.ClaimSlot(context.Background(), t0)
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("%d claimers won slot %s, want exactly 1", wins.Load(), t0)
	}
	if ok, _ := l.ClaimSlot(context.Background(), t0.Add(time.Minute)); !ok {
		t.Error("the next slot could not be claimed")
	}
}

// leaseAt reads the time a lease object's body was written at.
func leaseAt(t *testing.T, l *Ledger, key string) time.Time {
	t.Helper()
	var b leaseBody
	if err := json.Unmarshal([]byte(storetest.ReadAll(t, l.st, key)), &b); err != nil {
		t.Fatal(err)
	}
	return b.At
}

// TestLeaseTakeover checks who may take over an unfinished run: nobody while
// its owner's lease is fresh; one replica once it lapsed; and the old owner
// then stops writing the record. The heartbeats run on a fake clock.
func TestLeaseTakeover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const ttl = 30 * time.Second
	l, _, clock := testLedger(t, t0, ttl)
	owner, err := l.TakeLease(ctx, "run1", 1)
	if err != nil || owner == nil {
		t.Fatalf("first lease: %v", err)
	}
	lost := make(chan struct{})
	beats := make(chan struct{}, 1)
	owner.Keep(KeepOptions{Lost: func() { close(lost) }, Beat: func(context.Context) { beats <- struct{}{} }})

	if _, err := l.TakeLease(ctx, "run1", 1); !errors.Is(err, ErrLeaseHeld) {
		t.Errorf("second lease of generation 1: %v, want ErrLeaseHeld", err)
	}
	h, err := l.RunHolder(ctx, "run1")
	if err != nil || h.Gen != 1 || !h.Alive || h.Owner != replicaID {
		t.Fatalf("holder of a fresh lease: %+v, %v; want generation 1, alive, owned by %s", h, err, replicaID)
	}
	// The owner keeps refreshing: a third of the TTL on, its lease is
	// written again.
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(ttl / 3)
	select {
	case <-beats:
	case <-ctx.Done():
		t.Fatal("no heartbeat a third of the TTL on")
	}
	if at := leaseAt(t, l, generation(l.Leases("run1"), 1)); !at.Equal(t0.Add(ttl / 3)) {
		t.Errorf("lease written at %s after the heartbeat, want %s", at, t0.Add(ttl/3))
	}
	_, obj, err := newestLease(ctx, l.st, l.Leases("run1"))
	if err != nil {
		t.Fatal(err)
	}
	if alive, who := l.leaseAlive(ctx, obj, obj.ModTime.Add(ttl)); !alive || who != replicaID {
		t.Errorf("refreshed lease alive=%v owner %q, want alive and %q", alive, who, replicaID)
	}
	if alive, _ := l.leaseAlive(ctx, obj, obj.ModTime.Add(ttl+time.Millisecond)); alive {
		t.Errorf("lease alive %s after its last refresh, want lapsed", ttl+time.Millisecond)
	}
	// Another replica takes generation 2 (as if the first had lapsed).
	taker, err := l.TakeLease(ctx, "run1", 2)
	if err != nil {
		t.Fatal(err)
	}
	// A record write checks first: refused at once, before any heartbeat.
	if err := owner.Check(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("old owner's check after the takeover: %v, want ErrLeaseLost", err)
	}
	select {
	case <-lost:
	default:
		t.Fatal("the old owner's run was not stopped at the takeover")
	}
	if err := taker.Check(ctx); err != nil {
		t.Errorf("new owner's check: %v", err)
	}
	if !owner.Lost() || taker.Lost() {
		t.Errorf("Lost: old owner %v, new owner %v; want true, false", owner.Lost(), taker.Lost())
	}
	owner.Release(ctx) // must not delete the new owner's lease
	if h, _ := l.RunHolder(ctx, "run1"); h.Gen != 2 {
		t.Errorf("after the old owner released, newest generation %d, want 2", h.Gen)
	}
	taker.Keep(KeepOptions{})
	taker.Release(ctx)
	if h, _ := l.RunHolder(ctx, "run1"); h.Gen != 0 {
		t.Errorf("after release generation %d left, want none", h.Gen)
	}
}

// TestFenceAfterPause stands for an owner paused past its lease (no
// heartbeat): within half the TTL of its last heartbeat it publishes
// without asking the store; past that it asks, and finds the run taken
// over.
func TestFenceAfterPause(t *testing.T) {
	ctx := context.Background()
	const ttl = 30 * time.Second
	l, _, clock := testLedger(t, t0, ttl)
	owner, err := l.TakeLease(ctx, "run1", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.TakeLease(ctx, "run1", 2); err != nil {
		t.Fatal(err)
	}
	clock.Advance(ttl/2 - time.Millisecond)
	if err := owner.Fence(ctx); err != nil {
		t.Errorf("fence within half the TTL of the last heartbeat: %v, want none (no store check)", err)
	}
	clock.Advance(time.Millisecond)
	if err := owner.Fence(ctx); !errors.Is(err, ErrLeaseLost) || !owner.Lost() {
		t.Errorf("fence half the TTL after the last heartbeat, the run taken over: %v (lost %v), want ErrLeaseLost", err, owner.Lost())
	}
}

// TestLeaseReleaseWithoutKeep releases a lease never kept (a run that ended
// before it started working): it must return and delete the lease.
func TestLeaseReleaseWithoutKeep(t *testing.T) {
	ctx := context.Background()
	l, _, _ := testLedger(t, t0, 0)
	lease, err := l.TakeLease(ctx, "run1", 1)
	if err != nil {
		t.Fatal(err)
	}
	lease.Release(ctx) // returns: nothing to wait for
	if h, _ := l.RunHolder(ctx, "run1"); h.Gen != 0 {
		t.Errorf("lease generation %d left", h.Gen)
	}
}

// TestOwnedRecordWriteGuarded writes a run record as owners of several
// lease generations would, in turn: a write by a generation older than
// the stored record's is refused with ErrLeaseLost and leaves the record
// as it was, whatever the writer checked before (the guard judges at the
// moment of the write).
func TestOwnedRecordWriteGuarded(t *testing.T) {
	ctx := context.Background()
	l, st, _ := testLedger(t, t0, 0)
	steps := []struct {
		gen     int
		state   State
		wantErr bool
	}{
		{1, StatePublishing, false},
		{2, StatePublishing, false}, // an adopter
		{2, StateSucceeded, false},
		{1, StatePublishing, true}, // the paused owner, going on
		{3, StatePublishing, false},
	}
	want := ""
	for i, s := range steps {
		rec := &Record{Job: "job", RunID: "run1", State: s.state, OwnerGen: s.gen}
		b, err := Encode(rec)
		if err != nil {
			t.Fatal(err)
		}
		err = l.SaveOwned(ctx, rec, b)
		if s.wantErr != errors.Is(err, ErrLeaseLost) || !s.wantErr && err != nil {
			t.Errorf("step %d: write by generation %d: %v, want ErrLeaseLost %v", i, s.gen, err, s.wantErr)
		}
		if err == nil {
			want = string(b)
		}
		if got := storetest.ReadAll(t, st, l.Record("run1")); got != want {
			t.Errorf("step %d: record after a write by generation %d:\n%s\nwant:\n%s", i, s.gen, got, want)
		}
	}
}

// TestTakeOver takes up runs cut off in turn: one whose owner's lease is
// fresh is refused, naming the owner; one whose lease lapsed on the
// store's clock is taken with the generation after both the lease's and
// the record's; one that ended meanwhile comes back without a lease.
func TestTakeOver(t *testing.T) {
	ctx := context.Background()
	const ttl = 30 * time.Second
	l, st, _ := testLedger(t, t0, ttl)
	rec := &Record{Job: "job", RunID: "run1", State: StatePublishing, StartedAt: t0, ExecutionID: "G-1", OwnerGen: 4}
	if err := l.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	other := generation(l.Leases("run1"), 2)
	if _, err := st.Create(ctx, other, strings.NewReader(`{"replica":"elsewhere/1/ffffffff"}`), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.TakeOver(ctx, rec); !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), "elsewhere/1/ffffffff") {
		t.Errorf("take over of a run with a fresh lease: %v, want ErrLeaseHeld naming the owner", err)
	}
	ageObject(t, st, other, ttl+time.Second) // its owner died
	lease, got, err := l.TakeOver(ctx, rec)
	if err != nil || lease.Gen() != 5 || got.RunID != "run1" {
		t.Fatalf("take over of a run whose lease lapsed: %v, generation %d; want generation 5 (after the record's 4)", err, lease.Gen())
	}
	lease.Release(ctx)
	rec.State = StateSucceeded
	if err := l.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if lease, got, err := l.TakeOver(ctx, &Record{Job: "job", RunID: "run1", State: StatePublishing, OwnerGen: 4}); err != nil || lease != nil || got.State != StateSucceeded {
		t.Errorf("take over of a run that ended meanwhile: lease %v, %+v, %v; want no lease and the final record", lease, got, err)
	}
	if h, _ := l.RunHolder(ctx, "run1"); h.Gen != 0 {
		t.Errorf("lease generation %d left by the take overs", h.Gen)
	}
}
