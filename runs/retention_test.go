package runs

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPrune(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	type run struct {
		id    string
		age   time.Duration
		state State
	}
	all := []run{
		{"r1", 1 * time.Hour, StateSucceeded},
		{"r2", 2 * time.Hour, StateFailed},
		{"r3", 3 * time.Hour, StatePublishing}, // unfinished: never deleted
		{"r4", 50 * time.Hour, StateSucceeded},
		{"r5", 100 * time.Hour, StatePartiallySucceeded},
	}
	// Real run IDs start with their start time, which Prune reads from the
	// listing; r3 keeps a bare ID, so Prune must read its record instead.
	ids := map[string]string{}
	for i := range all {
		id := all[i].id
		if id != "r3" {
			id = now.Add(-all[i].age).Format(runIDTime) + "-" + id
		}
		ids[all[i].id], all[i].id = id, id
	}
	tests := []struct {
		name string
		r    Retention
		want []string // deleted
	}{
		{"keep everything", Retention{}, nil},
		{"keep two", Retention{KeepRuns: 2}, []string{"r4", "r5"}},
		{"max age", Retention{MaxAge: 48 * time.Hour}, []string{"r4", "r5"}},
		{"both", Retention{KeepRuns: 1, MaxAge: 72 * time.Hour}, []string{"r2", "r4", "r5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			l, st, _ := testLedger(t, now, 0)
			for _, r := range all {
				rec := &Record{Job: "job", RunID: r.id, State: r.state, StartedAt: now.Add(-r.age)}
				if err := l.Save(ctx, rec); err != nil {
					t.Fatal(err)
				}
				if _, err := st.Put(ctx, l.Entities(r.id)+"/E.csv", strings.NewReader("x"), nil); err != nil {
					t.Fatal(err)
				}
				// A released lease leaves its folder behind; r4's release
				// failed and left the lease itself.
				lease := generation(l.Leases(r.id), 1)
				if _, err := st.Put(ctx, lease, strings.NewReader("{}"), nil); err != nil {
					t.Fatal(err)
				}
				if r.state.Final() && r.id != ids["r4"] {
					if err := st.Delete(ctx, lease); err != nil {
						t.Fatal(err)
					}
				}
			}
			deleted, err := l.Prune(ctx, tt.r)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, label := range tt.want {
				want = append(want, ids[label])
			}
			slices.Sort(deleted)
			slices.Sort(want)
			if !slices.Equal(deleted, want) {
				t.Fatalf("deleted %v, want %v", deleted, want)
			}
			for _, r := range all {
				objs, err := st.List(ctx, l.Run(r.id)+"/")
				if err != nil {
					t.Fatal(err)
				}
				gone := slices.Contains(want, r.id)
				if gone && len(objs) != 0 || !gone && len(objs) != 2 {
					t.Errorf("run %s: %d objects left, want %d", r.id, len(objs), map[bool]int{true: 0, false: 2}[gone])
				}
				// A deleted run leaves no folder behind: neither its own
				// (nor its empty entities folder) nor its lease's.
				for _, dir := range []string{l.Run(r.id), l.Leases(r.id)} {
					_, err := os.Stat(filepath.Join(st.Root(), filepath.FromSlash(dir)))
					if exists := err == nil; gone && exists || !gone && !exists {
						t.Errorf("run %s: folder %s exists = %v, want %v", r.id, dir, exists, !gone)
					}
				}
			}
		})
	}
}

func TestPruneClaims(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	l, st, _ := testLedger(t, now, 0)
	for _, age := range []time.Duration{time.Minute, 59 * time.Minute, 61 * time.Minute, 48 * time.Hour} {
		if ok, err := l.ClaimSlot(ctx, now.Add(-age)); !ok || err != nil {
			t.Fatalf("claim: %v %v", ok, err)
		}
	}
	if err := l.PruneClaims(ctx); err != nil {
		t.Fatal(err)
	}
	left, _ := st.List(ctx, "_claims/")
	if len(left) != 2 {
		t.Errorf("%d claims left, want the 2 younger than an hour: %v", len(left), left)
	}
}
