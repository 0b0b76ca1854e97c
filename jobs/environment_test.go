package jobs

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/runs"
)

// TestSlotQueue checks the queue's promises: slots in fire order, a
// cancelled wait leaves the queue (or returns a slot granted meanwhile),
// a raised limit grants at once.
func TestSlotQueue(t *testing.T) {
	q := newSlotQueue(1)
	if tk, _ := q.join(); tk != nil {
		t.Fatal("want the first slot at once")
	}
	var tickets []*slotTicket
	for i := range 3 {
		tk, ahead := q.join()
		if tk == nil || ahead != i {
			t.Fatalf("join %d: want a place with %d ahead, got %v with %d", i+2, i, tk, ahead)
		}
		tickets = append(tickets, tk)
	}
	// The second in line gives up; the others keep their order.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.await(ctx, tickets[1]); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: want context.Canceled, got %v", err)
	}
	if q.length() != 2 {
		t.Errorf("want 2 waiting after one left, got %d", q.length())
	}
	q.release()
	if err := q.await(context.Background(), tickets[0]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tickets[2].ready:
		t.Fatal("the third in line got a slot before the one ahead released it")
	default:
	}
	q.setLimit(2)
	if err := q.await(context.Background(), tickets[2]); err != nil {
		t.Fatal(err)
	}
	// A slot granted to a wait that is cancelled at the same time goes back.
	tk, _ := q.join()
	q.release()
	if err := q.await(ctx, tk); !errors.Is(err, context.Canceled) || q.inUse != 1 {
		t.Errorf("want the slot granted to a cancelled wait given back (1 in use) and context.Canceled, got %d and %v", q.inUse, err)
	}
	if q.setLimit(0); q.limit != DefaultMaxConcurrentExports {
		t.Errorf("want limit 0 to mean the default %d, got %d", DefaultMaxConcurrentExports, q.limit)
	}
}

// manyExports returns n exports of the simulator's environment, each with
// its own data project G0..Gn-1, sharing one store.
func manyExports(sim *simServer, dir string, n, slots int) []*Export {
	var exps []*Export
	for i := range n {
		e := fileExport(sim, dir)
		e.Name = fmt.Sprintf("e%d", i)
		e.DefinitionGroup = fmt.Sprintf("G%d", i)
		e.FO.MaxConcurrentExports = slots
		exps = append(exps, e)
	}
	return exps
}

func manyProjects(n int) map[string][]dmftest.Entity {
	p := map[string][]dmftest.Entity{}
	for i := range n {
		p[fmt.Sprintf("G%d", i)] = []dmftest.Entity{csvEntity("A", 10)}
	}
	return p
}

// TestExportsQueuePerEnvironment fires six exports of one environment at
// once with two execution slots: F&O never has more than two executions
// running, the four others wait in the queue (their records say since
// when), and all succeed; the metrics show the queue and the pace.
func TestExportsQueuePerEnvironment(t *testing.T) {
	bubble(t, func(t *testing.T) {
		sim := newSim(dmftest.Options{Projects: manyProjects(6), ExecutionTime: 100 * time.Millisecond, RegisterDelay: 100 * time.Millisecond})
		defer sim.Close()
		exps := manyExports(sim, t.TempDir(), 6, 2)
		r := &Runner{Metrics: NewMetrics()}
		var wg sync.WaitGroup
		recs := make([]*runs.Record, len(exps))
		for i, e := range exps {
			wg.Go(func() {
				var err error
				if recs[i], err = r.Run(context.Background(), e, RunOptions{Trigger: "schedule"}); err != nil {
					t.Errorf("run %s: %v", e.Name, err)
				}
			})
		}
		wg.Wait()
		queued := 0
		for _, rec := range recs {
			if rec == nil || rec.State != runs.StateSucceeded {
				t.Fatalf("want every run succeeded, got %+v", rec)
			}
			if !rec.QueuedAt.IsZero() {
				queued++
				if rec.Durations["queue"] == "" {
					t.Errorf("run %s queued but its record has no queue duration", rec.Job)
				}
			}
		}
		if queued != 4 {
			t.Errorf("want 4 of 6 runs queued behind 2 slots, got %d", queued)
		}
		if n := sim.PeakExecutions(); n != 2 {
			t.Errorf("want at most (and, here, exactly) 2 executions running at once in F&O, got %d", n)
		}
		rr := httptest.NewRecorder()
		r.Metrics.Handler().ServeHTTP(rr, httptest.NewRequestWithContext(context.Background(), "GET", "/metrics", nil))
		body := rr.Body.Bytes()
		env := environmentKey(exps[0].FO.URL)
		for _, want := range []string{
			`dmfexport_fo_queue_length{environment="` + env + `"} 0`,
			`dmfexport_fo_queue_wait_seconds_count{environment="` + env + `"} 4`,
			`dmfexport_fo_exports_in_flight{environment="` + env + `"} 0`,
			`dmfexport_fo_requests_per_minute{environment="` + env + `"} 600`,
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("metrics lack %q", want)
			}
		}
	})
}

// TestStopWhileQueued stops the process while a run waits for a slot: the
// run returns ErrNotStarted and leaves no record (nothing to resume, no
// "interrupted" line in status); the run that had the slot stays
// resumable as before.
func TestStopWhileQueued(t *testing.T) {
	bubble(t, func(t *testing.T) {
		sim := newSim(dmftest.Options{Projects: manyProjects(2), ExecutionTime: time.Hour})
		defer sim.Close()
		exps := manyExports(sim, t.TempDir(), 2, 1)
		queued, exporting := make(chan struct{}), make(chan struct{})
		var once sync.Once
		r := &Runner{Metrics: NewMetrics(), OnEvent: func(e Event) {
			switch {
			case strings.HasPrefix(e.Detail, "queued"):
				close(queued)
			case strings.HasPrefix(e.Detail, "F&O status"): // it polls the export it started
				once.Do(func() { close(exporting) })
			}
		}}
		ctx, cancel := context.WithCancel(context.Background())
		first := make(chan error, 1)
		go func() {
			_, err := r.Run(ctx, exps[0], RunOptions{Trigger: "schedule"})
			first <- err
		}()
		<-exporting
		second := make(chan error, 1)
		go func() {
			rec, err := r.Run(ctx, exps[1], RunOptions{Trigger: "schedule"})
			if rec != nil {
				err = fmt.Errorf("want no record, got %+v: %w", rec, err)
			}
			second <- err
		}()
		<-queued
		recs, err := Records(context.Background(), exps[1], 0)
		if err != nil || len(recs) != 1 || recs[0].QueuedAt.IsZero() || recs[0].State != runs.StatePending {
			t.Fatalf("while queued: want one pending record with queued_at, got %+v (%v)", recs, err)
		}
		cancel()
		if err := <-second; !errors.Is(err, ErrNotStarted) {
			t.Errorf("queued run at stop: want ErrNotStarted, got %v", err)
		}
		if err := <-first; err == nil || !strings.Contains(err.Error(), "interrupted") {
			t.Errorf("running run at stop: want interrupted, got %v", err)
		}
		if recs, err := Records(context.Background(), exps[1], 0); err != nil || len(recs) != 0 {
			t.Errorf("after the stop: want no record of the queued run, got %+v (%v)", recs, err)
		}
		if recs, err := r.Unfinished(context.Background(), exps[1]); err != nil || len(recs) != 0 {
			t.Errorf("after the stop: want nothing to resume of the queued run, got %+v (%v)", recs, err)
		}
		if recs, err := r.Unfinished(context.Background(), exps[0]); err != nil || len(recs) != 1 {
			t.Errorf("after the stop: want the running run resumable, got %+v (%v)", recs, err)
		}
		if n := sim.Exports(); n != 1 {
			t.Errorf("want 1 export started in F&O, got %d", n)
		}
	})
}

// TestExcelExportsOneAtATime: F&O runs one Excel import or export at a time
// per environment (DMF2039). Exports whose data projects held an Excel
// entity last time start one after the other, each once the other's
// execution ended; F&O never sees two at once.
func TestExcelExportsOneAtATime(t *testing.T) {
	bubble(t, func(t *testing.T) {
		book := dmftest.Entity{Name: "Products", SourceFormat: "EXCEL", Sheet: "Products",
			Data: dmftest.FOWorkbook("Products", [][]string{{"ITEM", "NAME"}, {"A1", "Chair"}})}
		sim := newSim(dmftest.Options{
			Projects:      map[string][]dmftest.Entity{"G1": {book, csvEntity("A", 3)}, "G2": {book, csvEntity("B", 3)}},
			ExecutionTime: 300 * time.Millisecond,
		})
		defer sim.Close()
		dir := t.TempDir()
		var exps []*Export
		for _, g := range []string{"G1", "G2"} {
			exp := fileExport(sim, dir)
			exp.Name, exp.DefinitionGroup, exp.PackageName = "x"+g, g, g
			exps = append(exps, exp)
		}
		r := &Runner{}
		// First runs, one at a time: the records learn that both hold Excel.
		for _, exp := range exps {
			if rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"}); err != nil || rec.State != runs.StateSucceeded {
				t.Fatalf("first run of %s = %v, %v", exp.Name, rec, err)
			}
		}
		var wg sync.WaitGroup
		for _, exp := range exps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"}); err != nil || rec.State != runs.StateSucceeded {
					t.Errorf("run of %s = %v, %v", exp.Name, rec, err)
				}
			}()
		}
		wg.Wait()
		if n := sim.PeakExecutions(); n != 1 {
			t.Errorf("F&O had %d executions at once, want 1: the second Excel export must start after the first ended", n)
		}
		if n := sim.Exports(); n != 4 {
			t.Errorf("F&O saw %d exports, want 4", n)
		}
	})
}
