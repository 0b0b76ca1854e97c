package dmf

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// acquireAt acquires n turns one after another and returns the time since
// start at which each came.
func acquireAt(t *testing.T, p *Pacer, start time.Time, n int) []time.Duration {
	t.Helper()
	var at []time.Duration
	for range n {
		release, err := p.acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		at = append(at, time.Since(start))
		release()
	}
	return at
}

func TestPacerPace(t *testing.T) {
	tests := []struct {
		name  string
		opts  PacerOptions
		calls int
		want  string
	}{
		{"spaced to the rate", PacerOptions{RequestsPerMinute: 600, Burst: 1}, 4, "[0s 100ms 200ms 300ms]"},
		{"burst after idle, then the rate", PacerOptions{RequestsPerMinute: 60, Burst: 3}, 5, "[0s 0s 0s 1s 2s]"},
		{"default burst is a minute's worth", PacerOptions{RequestsPerMinute: 2}, 3, "[0s 0s 30s]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := NewPacer(tt.opts)
				if got := fmt.Sprint(acquireAt(t, p, time.Now(), tt.calls)); got != tt.want {
					t.Errorf("want turns at %s, got %s", tt.want, got)
				}
			})
		})
	}
}

// TestPacerThrottled checks that a 429 holds back every caller for its
// Retry-After, halves the pace once per episode and that the pace recovers
// by a tenth every 10 s without a 429.
func TestPacerThrottled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rates []float64
		throttles := 0
		p := NewPacer(PacerOptions{RequestsPerMinute: 600, Burst: 1,
			OnRate: func(r float64) { rates = append(rates, r) }, OnThrottled: func() { throttles++ }})
		start := time.Now()
		p.throttled(3 * time.Second)
		p.throttled(2 * time.Second) // a call under way when the first came: same episode
		if got := p.RequestsPerMinute(); got != 300 {
			t.Errorf("want the pace halved once to 300/min, got %v", got)
		}
		// Another caller, not the one that got the 429, waits it out too,
		// then calls go one at a time at the halved pace.
		var at []time.Duration
		var wg sync.WaitGroup
		wg.Go(func() { at = acquireAt(t, p, start, 3) })
		wg.Wait()
		if want := "[3s 3.2s 3.4s]"; fmt.Sprint(at) != want {
			t.Errorf("want turns at %s, got %v", want, at)
		}
		// Recovery: a tenth of the configured pace per 10 s without a 429.
		var got []float64
		for range 6 {
			time.Sleep(5 * time.Second) // the bubble's clock: no real wait
			p.succeeded()
			got = append(got, p.RequestsPerMinute())
		}
		if want := "[300 360 360 420 420 480]"; fmt.Sprint(got) != want {
			t.Errorf("want the pace every 5 s to be %s, got %v", want, got)
		}
		if throttles != 2 || p.Throttles() != 2 {
			t.Errorf("want 2 throttles counted, got %d (callback) and %d", throttles, p.Throttles())
		}
		if want := "[300 360 420 480]"; fmt.Sprint(rates) != want {
			t.Errorf("want pace changes %s reported, got %v", want, rates)
		}
		// A later episode halves again, never below a sixteenth.
		for range 10 {
			time.Sleep(time.Minute) // the bubble's clock: no real wait
			p.throttled(time.Second)
		}
		if got := p.RequestsPerMinute(); got != 600.0/16 {
			t.Errorf("want the pace to stop at a sixteenth (37.5/min), got %v", got)
		}
	})
}

func TestPacerInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := NewPacer(PacerOptions{RequestsPerMinute: 6000, MaxInFlight: 2})
		ctx := context.Background()
		r1, _ := p.acquire(ctx)
		r2, _ := p.acquire(ctx)
		got := make(chan time.Duration)
		start := time.Now()
		go func() {
			r3, err := p.acquire(ctx)
			if err != nil {
				t.Error(err)
			}
			got <- time.Since(start)
			r3()
		}()
		time.Sleep(5 * time.Second) // the bubble's clock: no real wait
		synctest.Wait()
		r1()
		if d := <-got; d != 5*time.Second {
			t.Errorf("want the third call to go once one of two in progress ended (5s), got %s", d)
		}
		r2()
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := p.acquire(cctx); err == nil {
			t.Error("want an error from a cancelled wait")
		}
	})
}

// TestPacerPollTicks checks that poll waits end on the shared ticker: all
// at the first tick at or after their own wait, none before.
func TestPacerPollTicks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := NewPacer(PacerOptions{PollTick: time.Second})
		start := time.Now()
		waits := []time.Duration{300 * time.Millisecond, 700 * time.Millisecond, time.Second, 1200 * time.Millisecond, 0}
		ended := make([]time.Duration, len(waits))
		var wg sync.WaitGroup
		for i, d := range waits {
			wg.Go(func() {
				if err := p.pollWait(context.Background(), d); err != nil {
					t.Error(err)
				}
				ended[i] = time.Since(start)
			})
		}
		wg.Wait()
		if want := "[1s 1s 1s 2s 0s]"; fmt.Sprint(ended) != want {
			t.Errorf("want waits to end at %s, got %v", want, ended)
		}
		// The ticker stops at its first tick with no one waiting
		// (synctest.Test fails on a goroutine left behind).
		time.Sleep(time.Second) // the bubble's clock: no real wait
	})
}
