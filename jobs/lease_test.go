package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

func TestSlotOf(t *testing.T) {
	at := func(h, m, s, ms int) time.Time { return time.Date(2026, 11, 25, h, m, s, ms*1e6, time.UTC) }
	tests := []struct {
		name, schedule string
		now, want      time.Time
	}{
		{"fired on time", "*/15 * * * *", at(10, 15, 0, 3), at(10, 15, 0, 0)},
		{"fired late", "*/15 * * * *", at(10, 15, 2, 0), at(10, 15, 0, 0)},
		{"fired a little early", "*/15 * * * *", at(10, 14, 59, 800), at(10, 15, 0, 0)},
		{"every 3 seconds", "*/3 * * * * *", at(10, 0, 3, 40), at(10, 0, 3, 0)},
		{"daily", "@daily", at(0, 0, 1, 0), at(0, 0, 0, 0)},
		{"every 10s aligned", "@every 10s", at(10, 0, 19, 700), at(10, 0, 20, 0)},
		{"time zone", "CRON_TZ=Asia/Tokyo 0 9 * * *", at(0, 0, 0, 50), at(0, 0, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := slotOf(tt.schedule, tt.now); !got.Equal(tt.want) {
				t.Errorf("slotOf(%q, %s) = %s, want %s", tt.schedule, tt.now.Format(time.StampMilli), got.UTC().Format(time.StampMilli), tt.want.Format(time.StampMilli))
			}
		})
	}
}

// TestClaimSlotOnce races many claimers of one slot: exactly one wins.
func TestClaimSlotOnce(t *testing.T) {
	st := mustDirStore(t, t.TempDir())
	exp := &Export{Name: "job"}
	slot := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			ok, err := claimSlot(context.Background(), st, exp, slot)
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
		t.Errorf("%d claimers won slot %s, want exactly 1", wins.Load(), slot)
	}
	if ok, _ := claimSlot(context.Background(), st, exp, slot.Add(time.Minute)); !ok {
		t.Error("the next slot could not be claimed")
	}
}

// TestLeaseTakeover checks who may take over an unfinished run: nobody while
// its owner's lease is fresh; one replica once it lapsed; and the old owner
// then stops writing the record.
func TestLeaseTakeover(t *testing.T) {
	ctx := context.Background()
	st := mustDirStore(t, t.TempDir())
	prefix := leasePrefix("", "job", "run1")
	ttl := 600 * time.Millisecond
	owner, err := acquireLease(ctx, st, prefix, 1, ttl)
	if err != nil || owner == nil {
		t.Fatalf("first lease: %v", err)
	}
	lost := make(chan struct{})
	owner.keep(func() { close(lost) })

	if _, err := acquireLease(ctx, st, prefix, 1, ttl); !errors.Is(err, ErrLeaseHeld) {
		t.Errorf("second lease of generation 1: %v, want ErrLeaseHeld", err)
	}
	gen, obj, err := newestLease(ctx, st, prefix)
	if err != nil || gen != 1 {
		t.Fatalf("newestLease = %d, %v", gen, err)
	}
	// The owner keeps refreshing: its lease object is rewritten within a
	// third of the TTL.
	first := obj.ModTime
	deadline := time.Now().Add(5 * ttl)
	for obj.ModTime.Equal(first) && time.Now().Before(deadline) {
		time.Sleep(ttl / 20)
		_, obj, _ = newestLease(ctx, st, prefix)
	}
	if obj.ModTime.Equal(first) {
		t.Fatalf("lease not refreshed within %s", 5*ttl)
	}
	if alive, who := leaseAlive(ctx, st, obj, ttl, obj.ModTime.Add(ttl)); !alive || who != replicaID {
		t.Errorf("refreshed lease alive=%v owner %q, want alive and %q", alive, who, replicaID)
	}
	if alive, _ := leaseAlive(ctx, st, obj, ttl, obj.ModTime.Add(ttl+time.Millisecond)); alive {
		t.Errorf("lease alive %s after its last refresh, want lapsed", ttl+time.Millisecond)
	}
	// Another replica takes generation 2 (as if the first had lapsed).
	taker, err := acquireLease(ctx, st, prefix, 2, ttl)
	if err != nil {
		t.Fatal(err)
	}
	// A record write checks first: refused at once, before any heartbeat.
	if err := owner.check(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("old owner's check after the takeover: %v, want ErrLeaseLost", err)
	}
	select {
	case <-lost:
	case <-time.After(100 * time.Millisecond):
		t.Fatal("the old owner's run was not stopped at the takeover")
	}
	if err := taker.check(ctx); err != nil {
		t.Errorf("new owner's check: %v", err)
	}
	if !owner.Lost() || taker.Lost() {
		t.Errorf("Lost: old owner %v, new owner %v; want true, false", owner.Lost(), taker.Lost())
	}
	owner.release(ctx) // must not delete the new owner's lease
	if gen, _, _ := newestLease(ctx, st, prefix); gen != 2 {
		t.Errorf("after the old owner released, newest generation %d, want 2", gen)
	}
	taker.keep(func() {})
	taker.release(ctx)
	if gen, _, _ := newestLease(ctx, st, prefix); gen != 0 {
		t.Errorf("after release %d generations left, want none", gen)
	}
}

// TestRunRefusedWhileOwnedElsewhere: a run of a job whose unfinished run
// holds a fresh lease of another process is refused; once the lease lapsed,
// Resume adopts and finishes that run.
func TestRunRefusedWhileOwnedElsewhere(t *testing.T) {
	sim := dmftest.NewServer(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("A", 10)}}, ExecutionTime: 20 * time.Millisecond})
	defer sim.Close()
	exp := fileExport(sim, t.TempDir())
	ctx := context.Background()
	st, err := openStore(context.Background(), exp.Store, nil)
	if err != nil {
		t.Fatal(err)
	}
	// An unfinished run owned by another (live-looking) replica.
	rec := &RunRecord{Job: exp.Name, RunID: "20261125T100000Z-aaaaaaaa", State: StatePending, StartedAt: time.Now().UTC(),
		DefinitionGroup: "G", LegalEntity: "USMF", Durations: map[string]string{}}
	if err := saveRecord(ctx, st, "", rec); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, activeKey("", exp.Name, rec.RunID), strings.NewReader(rec.RunID), nil); err != nil {
		t.Fatal(err)
	}
	other := `{"replica":"elsewhere/1/ffffffff","at":"2026-11-25T10:00:00Z"}`
	if _, err := st.Create(ctx, genKey(leasePrefix("", exp.Name, rec.RunID), 1), strings.NewReader(other), nil); err != nil {
		t.Fatal(err)
	}
	r := &Runner{LeaseTTL: 500 * time.Millisecond}
	if _, err := r.Run(ctx, exp, RunOptions{}); !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), "elsewhere/1") {
		t.Errorf("Run while another replica owns a run: %v, want ErrAlreadyRunning naming the owner", err)
	}
	if _, err := r.Resume(ctx, exp, rec); !errors.Is(err, ErrLeaseHeld) {
		t.Errorf("Resume of a run with a fresh lease: %v, want ErrLeaseHeld", err)
	}
	time.Sleep(600 * time.Millisecond) // the other replica's lease lapses on the store's clock
	got, err := r.Resume(ctx, exp, rec)
	if err != nil || got.State != StateSucceeded || got.Resumes != 1 {
		t.Fatalf("Resume after the lease lapsed: %v, state %v", err, got)
	}
	if n := sim.Exports(); n != 1 {
		t.Errorf("%d exports, want 1", n)
	}
	if gen, _, _ := newestLease(ctx, st, leasePrefix("", exp.Name, rec.RunID)); gen != 0 {
		t.Errorf("leases left after the run finished: generation %d", gen)
	}
	if left, _ := st.List(ctx, "_active/"); len(left) != 0 {
		t.Errorf("active markers left after every run finished: %v", left)
	}
}

// TestLeaseReleaseWithoutKeep releases a lease never kept (a run that ended
// before it started working): it must return and delete the lease.
func TestLeaseReleaseWithoutKeep(t *testing.T) {
	ctx := context.Background()
	st := mustDirStore(t, t.TempDir())
	prefix := leasePrefix("", "job", "run1")
	l, err := acquireLease(ctx, st, prefix, 1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { l.release(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("release of a lease never kept hangs")
	}
	if gen, _, _ := newestLease(ctx, st, prefix); gen != 0 {
		t.Errorf("lease generation %d left", gen)
	}
}

// TestLeaseAgeOnStoreClock runs the replica judging a lease with its own
// clock two minutes ahead of, or behind, the store's: ahead, it must not
// take over a live run (its lease looks two minutes old on that clock);
// behind, it must take over a dead run once the lease lapsed on the
// store's clock, not two minutes later.
func TestLeaseAgeOnStoreClock(t *testing.T) {
	for _, skew := range []time.Duration{2 * time.Minute, -2 * time.Minute} {
		t.Run(fmt.Sprintf("clock %+v", skew), func(t *testing.T) {
			localNow = func() time.Time { return time.Now().Add(skew) }
			defer func() { localNow = time.Now }()
			sim := dmftest.NewServer(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("A", 10)}}, ExecutionTime: 20 * time.Millisecond})
			defer sim.Close()
			exp := fileExport(sim, t.TempDir())
			ctx := context.Background()
			st, err := openStore(context.Background(), exp.Store, nil)
			if err != nil {
				t.Fatal(err)
			}
			rec := &RunRecord{Job: exp.Name, RunID: "20261125T100000Z-bbbbbbbb", State: StatePending, StartedAt: time.Now().UTC(),
				DefinitionGroup: "G", LegalEntity: "USMF", Durations: map[string]string{}}
			if err := saveRecord(ctx, st, "", rec); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Put(ctx, activeKey("", exp.Name, rec.RunID), strings.NewReader(rec.RunID), nil); err != nil {
				t.Fatal(err)
			}
			// The owner on another host heartbeats on the store's clock.
			other := `{"replica":"elsewhere/1/ffffffff","at":"2026-11-25T10:00:00Z"}`
			lease := genKey(leasePrefix("", exp.Name, rec.RunID), 1)
			if _, err := st.Create(ctx, lease, strings.NewReader(other), nil); err != nil {
				t.Fatal(err)
			}
			const ttl = 800 * time.Millisecond
			r := &Runner{LeaseTTL: ttl}
			if _, err := r.Run(ctx, exp, RunOptions{}); !errors.Is(err, ErrAlreadyRunning) {
				t.Errorf("Run while a live replica owns a run: %v, want ErrAlreadyRunning", err)
			}
			if _, err := r.Resume(ctx, exp, rec); !errors.Is(err, ErrLeaseHeld) {
				t.Errorf("Resume of a live replica's run: %v, want ErrLeaseHeld", err)
			}
			time.Sleep(ttl + 200*time.Millisecond) // the owner died: its lease lapses
			got, err := r.Resume(ctx, exp, rec)
			if err != nil || got.State != StateSucceeded {
				t.Fatalf("Resume after the lease lapsed on the store's clock: %v (%+v)", err, got)
			}
			if n := sim.Exports(); n != 1 {
				t.Errorf("%d exports, want 1", n)
			}
		})
	}
}
