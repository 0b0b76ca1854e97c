package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/clock"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
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

// ownedElsewhere stores an unfinished run runID of exp owned by another,
// live-looking replica: its record, its active marker and a fresh lease
// of generation 1 naming replica elsewhere/1. It returns the store, the
// export's ledger, the record and the lease's key.
func ownedElsewhere(t *testing.T, exp *Export, runID string) (store.Store, *runs.Ledger, *runs.Record, string) {
	t.Helper()
	ctx := context.Background()
	st, err := openStore(ctx, exp.Store, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := ledgerOf(st, exp)
	rec := &runs.Record{Job: exp.Name, RunID: runID, State: runs.StatePending, StartedAt: time.Now().UTC(),
		DefinitionGroup: "G", LegalEntity: "USMF", Durations: map[string]string{}}
	if err := l.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := l.MarkActive(ctx, rec.RunID); err != nil {
		t.Fatal(err)
	}
	other := `{"replica":"elsewhere/1/ffffffff","at":"2026-11-25T10:00:00Z"}`
	lease := leaseKey(l.Leases(rec.RunID), 1)
	if _, err := st.Create(ctx, lease, strings.NewReader(other), nil); err != nil {
		t.Fatal(err)
	}
	return st, l, rec, lease
}

// TestRunRefusedWhileOwnedElsewhere: a run of a job whose unfinished run
// holds a fresh lease of another process is refused; once the lease lapsed,
// Resume adopts and finishes that run.
func TestRunRefusedWhileOwnedElsewhere(t *testing.T) {
	bubble(t, func(t *testing.T) {
		sim, exp := csvExport(t, 10)
		ctx := context.Background()
		st, l, rec, lease := ownedElsewhere(t, exp, "20261125T100000Z-aaaaaaaa")
		r := &Runner{LeaseTTL: 500 * time.Millisecond}
		if _, err := r.Run(ctx, exp, RunOptions{}); !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), "elsewhere/1") {
			t.Errorf("Run while another replica owns a run: %v, want ErrAlreadyRunning naming the owner", err)
		}
		if _, err := r.Resume(ctx, exp, rec); !errors.Is(err, runs.ErrLeaseHeld) {
			t.Errorf("Resume of a run with a fresh lease: %v, want ErrLeaseHeld", err)
		}
		ageObject(t, exp.Store.Path, lease, time.Second) // the other replica's lease lapses on the store's clock
		got, err := r.Resume(ctx, exp, rec)
		if err != nil || got.State != runs.StateSucceeded || got.Resumes != 1 {
			t.Fatalf("Resume after the lease lapsed: %v, state %v", err, got)
		}
		if n := sim.Exports(); n != 1 {
			t.Errorf("%d exports, want 1", n)
		}
		if h, _ := l.RunHolder(ctx, rec.RunID); h.Gen != 0 {
			t.Errorf("leases left after the run finished: generation %d", h.Gen)
		}
		if left, _ := st.List(ctx, "_active/"); len(left) != 0 {
			t.Errorf("active markers left after every run finished: %v", left)
		}
	})
}

// TestLeaseAgeOnStoreClock runs the replica judging a lease with its own
// clock two minutes ahead of, or behind, the store's: ahead, it must not
// take over a live run (its lease looks two minutes old on that clock);
// behind, it must take over a dead run once the lease lapsed on the
// store's clock, not two minutes later.
func TestLeaseAgeOnStoreClock(t *testing.T) {
	for _, skew := range []time.Duration{2 * time.Minute, -2 * time.Minute} {
		t.Run(fmt.Sprintf("clock %+v", skew), func(t *testing.T) {
			sim := newSim(quick(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("A", 10)}}, ExecutionTime: 20 * time.Millisecond}))
			defer sim.Close()
			exp := fileExport(sim, t.TempDir())
			ctx := context.Background()
			// The owner on another host heartbeats on the store's clock.
			_, _, rec, lease := ownedElsewhere(t, exp, "20261125T100000Z-bbbbbbbb")
			const ttl = 800 * time.Millisecond
			r := &Runner{LeaseTTL: ttl, Clock: clock.Skewed(clockwork.NewRealClock(), skew)}
			if _, err := r.Run(ctx, exp, RunOptions{}); !errors.Is(err, ErrAlreadyRunning) {
				t.Errorf("Run while a live replica owns a run: %v, want ErrAlreadyRunning", err)
			}
			if _, err := r.Resume(ctx, exp, rec); !errors.Is(err, runs.ErrLeaseHeld) {
				t.Errorf("Resume of a live replica's run: %v, want ErrLeaseHeld", err)
			}
			ageObject(t, exp.Store.Path, lease, ttl+200*time.Millisecond) // the owner died: its lease lapses
			got, err := r.Resume(ctx, exp, rec)
			if err != nil || got.State != runs.StateSucceeded {
				t.Fatalf("Resume after the lease lapsed on the store's clock: %v (%+v)", err, got)
			}
			if n := sim.Exports(); n != 1 {
				t.Errorf("%d exports, want 1", n)
			}
		})
	}
}
