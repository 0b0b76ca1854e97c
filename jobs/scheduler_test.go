package jobs

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

func TestCronSpec(t *testing.T) {
	tests := []struct {
		name, in, wantExpr string
		wantSeconds        bool
	}{
		{"five fields", "0 2 * * *", "0 2 * * *", false},
		{"six fields", "30 0 2 * * *", "30 0 2 * * *", true},
		{"descriptor", "@daily", "@daily", false},
		{"every", "@every 15m", "@every 15m", false},
		{"zone five", "CRON_TZ=Europe/Paris 0 2 * * *", "CRON_TZ=Europe/Paris 0 2 * * *", false},
		{"zone six", "CRON_TZ=Europe/Paris 0 0 2 * * *", "CRON_TZ=Europe/Paris 0 0 2 * * *", true},
		{"spaces", "  0 2 * * *  ", "0 2 * * *", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expr, sec := CronSpec(tt.in)
			if expr != tt.wantExpr || sec != tt.wantSeconds {
				t.Errorf("CronSpec(%q) = %q, %v; want %q, %v", tt.in, expr, sec, tt.wantExpr, tt.wantSeconds)
			}
		})
	}
}

func TestNextRun(t *testing.T) {
	base := time.Date(2026, 11, 24, 10, 7, 30, 0, time.UTC)
	tests := []struct {
		name, schedule string
		want           time.Time
		zone           string // of the returned time; "" not checked
	}{
		{"every quarter hour", "*/15 * * * *", time.Date(2026, 11, 24, 10, 15, 0, 0, time.UTC), "UTC"},
		{"seconds", "*/10 * * * * *", time.Date(2026, 11, 24, 10, 7, 40, 0, time.UTC), ""},
		{"daily", "@daily", time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), ""},
		{"zone", "CRON_TZ=Asia/Tokyo 0 0 * * *", time.Date(2026, 11, 24, 15, 0, 0, 0, time.UTC), "JST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NextRun(tt.schedule, base)
			if err != nil {
				t.Fatalf("NextRun(%q): %v", tt.schedule, err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("NextRun(%q) = %s, want %s", tt.schedule, got.UTC(), tt.want)
			}
			if zone, _ := got.Zone(); tt.zone != "" && zone != tt.zone {
				t.Errorf("NextRun(%q) is in zone %s, want the schedule's %s", tt.schedule, zone, tt.zone)
			}
		})
	}
	if _, err := NextRun("61 * * * *", base); err == nil {
		t.Error("NextRun accepted minute 61")
	}
	if got, err := NextRun("0 0 30 2 *", base); err == nil {
		t.Errorf("NextRun of February 30th = %s, want an error: it never fires", got)
	}
}

// TestRunnerNeverOverlapsOneJob checks that a second run of a job that is
// still running is refused with ErrAlreadyRunning, while another job may run.
func TestRunnerNeverOverlapsOneJob(t *testing.T) {
	r := &Runner{}
	if !r.claim("a") {
		t.Fatal("first claim of job a refused")
	}
	if _, err := r.Run(t.Context(), &Export{Name: "a"}, RunOptions{}); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second run of job a: err %v, want ErrAlreadyRunning", err)
	}
	if !r.claim("b") {
		t.Fatal("claim of job b refused while only a runs")
	}
	r.release("a")
	if !r.claim("a") {
		t.Fatal("job a could not run again after its run ended")
	}
}

func TestSchedulerApply(t *testing.T) {
	exp := func(name, schedule string, enabled bool) Export {
		return Export{Name: name, Schedule: schedule, Enabled: enabled, BatchSize: 10}
	}
	s, err := NewScheduler(&Config{Exports: []Export{exp("a", "@daily", true), exp("b", "@hourly", true), exp("off", "@daily", false)}},
		&Runner{}, slog.New(slog.DiscardHandler), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Stop() }()
	s.Start()
	if got := slices.Sorted(maps.Keys(s.NextRuns())); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("scheduled %v, want [a b] (disabled export left out)", got)
	}
	tests := []struct {
		name    string
		exports []Export
		want    Changes
		wantErr bool
	}{
		{"add change remove", []Export{exp("a", "*/5 * * * *", true), exp("c", "@weekly", true)},
			Changes{Added: []string{"c"}, Removed: []string{"b"}, Changed: []string{"a"}}, false},
		{"no change", []Export{exp("a", "*/5 * * * *", true), exp("c", "@weekly", true)},
			Changes{Unchanged: []string{"a", "c"}}, false},
		{"disable", []Export{exp("a", "*/5 * * * *", false), exp("c", "@weekly", true)},
			Changes{Removed: []string{"a"}, Unchanged: []string{"c"}}, false},
		{"bad schedule keeps the old one", []Export{exp("c", "not cron", true)}, Changes{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Apply(&Config{Exports: tt.exports})
			if (err != nil) != tt.wantErr {
				t.Fatalf("Apply error %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Apply = %+v, want %+v", got, tt.want)
			}
		})
	}
	if got := slices.Sorted(maps.Keys(s.NextRuns())); !slices.Equal(got, []string{"c"}) {
		t.Errorf("after the reloads scheduled %v, want [c]", got)
	}
}

// TestSchedulerSkipsOverlappingFire runs a job every second whose export
// takes longer than that: fires during a run are skipped and reported, and
// F&O never sees two exports at once. The schedule runs on a fake clock,
// so the test waits for events, not for seconds to pass.
func TestSchedulerSkipsOverlappingFire(t *testing.T) {
	sim := newSim(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"G": {csvEntity("E", 3)}},
		ExecutionTime: time.Minute, // still running in F&O when the next fire comes
	})
	defer sim.Close()
	u, _ := url.Parse(sim.URL)
	dir := t.TempDir()
	e := Export{
		Name: "slow", Schedule: "* * * * * *", Enabled: true, DefinitionGroup: "G", PackageName: "G", LegalEntity: "USMF",
		RoutingKey: "fo.slow", BatchSize: 10,
		FO:     FOConfig{URL: u, Auth: AuthConfig{Options: azauth.Options{Method: "token", Token: Secret(dmftest.DefaultToken)}}},
		Store:  StoreConfig{Type: "dir", Path: dir + "/store"},
		Broker: BrokerConfig{Type: "file", Path: dir + "/batches"},
		Poll:   PollConfig{Interval: 50 * time.Millisecond, MaxInterval: 100 * time.Millisecond, Deadline: 2 * time.Minute, PackageURLTimeout: 10 * time.Second, RegisterTimeout: 10 * time.Second},
	}
	clock := clockwork.NewFakeClockAt(time.Date(2026, 11, 25, 10, 0, 0, 500e6, time.UTC))
	// A run started in F&O reports the status it polls; a fire skipped is
	// reported too.
	started, skipped := make(chan string, 10), make(chan struct{}, 10)
	var mu sync.Mutex
	polled := map[string]bool{}
	r := &Runner{Logger: slog.New(slog.DiscardHandler), Clock: clock, OnEvent: func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		if strings.HasPrefix(e.Detail, "F&O status") && !polled[e.RunID] {
			polled[e.RunID] = true
			started <- e.RunID
		}
	}}
	s, err := NewScheduler(&Config{Exports: []Export{e}}, r, slog.New(slog.DiscardHandler), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s.OnSkip = func(job string) { skipped <- struct{}{} }
	s.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// What waits on the clock: the schedule's next fire, and, while a run
	// goes, its lease's and its data project hold's heartbeats.
	const heartbeats = 2
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("the first fire was never scheduled: %v", err)
	}
	clock.Advance(time.Second) // first fire: the export starts in F&O
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the first fire started no export")
	}
	if err := clock.BlockUntilContext(ctx, 1+heartbeats); err != nil {
		t.Fatalf("the next fire was never scheduled: %v", err)
	}
	clock.Advance(time.Second) // a fire while the run is going
	select {
	case <-skipped:
	case id := <-started:
		t.Fatalf("a fire while the run was going started run %s in F&O", id)
	case <-ctx.Done():
		t.Fatal("a fire while the run was going was neither skipped nor run")
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if n := sim.Exports(); n != 1 {
		t.Errorf("simulator saw %d exports while one run was going, want 1 (never overlapping)", n)
	}
}

// TestFireCountsOutcome checks that each scheduled fire is counted by what
// came of it, a failed run as failed (gocron alone counts every fire that
// returned as a success).
func TestFireCountsOutcome(t *testing.T) {
	sim := newSim(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("E", 3)}}})
	defer sim.Close()
	dir := t.TempDir()
	ok := fileExport(sim, dir)
	ok.Schedule = "@hourly" // its slot's claim outlives the run's retention (an hour)
	broken := fileExport(sim, dir)
	broken.Name, broken.DefinitionGroup, broken.PackageName = "broken", "NoSuchGroup", "NoSuchGroup"
	r := &Runner{Logger: slog.New(slog.DiscardHandler), Metrics: NewMetrics()}
	s, err := NewScheduler(&Config{Exports: []Export{*ok, *broken}}, r, slog.New(slog.DiscardHandler), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = s.Stop()
		}
	}()
	fires := func(export, status string) float64 {
		return testutil.ToFloat64(r.Metrics.fires.WithLabelValues(export, status))
	}
	for _, status := range fireStatuses {
		if n := fires("files", status); n != 0 {
			t.Fatalf("before any fire: %s fires of files = %v, want 0", status, n)
		}
	}
	// claimElsewhere claims the slot of a fire of exp now, as another
	// replica would.
	claimElsewhere := func(t *testing.T, exp *Export) {
		other := &Runner{}
		st, err := other.store(t.Context(), exp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.ledger(st, exp).ClaimSlot(t.Context(), slotOf(exp.Schedule, time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		exp    *Export
		claim  bool
		stop   bool
		status string
	}{
		{"run succeeds", ok, false, false, "succeeded"},
		{"run fails", broken, false, false, "failed"},
		{"slot claimed by another replica", ok, true, false, fireSlotTaken},
		{"process stopping", broken, false, true, fireStopped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.claim {
				claimElsewhere(t, tt.exp)
			}
			if tt.stop && !stopped {
				if err := s.Stop(); err != nil {
					t.Fatal(err)
				}
				stopped = true
			}
			before := fires(tt.exp.Name, tt.status)
			s.fire(tt.exp)
			if got := fires(tt.exp.Name, tt.status) - before; got != 1 {
				t.Errorf("fire of %s: %v more fires with status %s, want 1", tt.exp.Name, got, tt.status)
			}
		})
	}
	if n := fires("broken", "succeeded"); n != 0 {
		t.Errorf("the failed export counts %v succeeded fires, want 0", n)
	}
}
