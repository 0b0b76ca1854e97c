package ctxio

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jonboulle/clockwork"
)

func TestSleep(t *testing.T) {
	tests := []struct {
		name   string
		d      time.Duration
		cancel time.Duration // cancel after this long; 0 never
		want   error
		took   time.Duration
	}{
		{name: "full wait", d: time.Minute, want: nil, took: time.Minute},
		{name: "cancelled", d: time.Hour, cancel: time.Second, want: context.Canceled, took: time.Second},
		{name: "zero only checks", d: 0, want: nil, took: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				if tt.cancel > 0 {
					time.AfterFunc(tt.cancel, cancel)
				}
				start := time.Now()
				if err := Sleep(ctx, tt.d); !errors.Is(err, tt.want) {
					t.Errorf("Sleep = %v, want %v", err, tt.want)
				}
				if took := time.Since(start); took != tt.took {
					t.Errorf("Sleep took %s, want %s", took, tt.took)
				}
			})
		})
	}
}

// TestSleepOnWaitsOnTheClock: SleepOn ends when the given clock has moved
// d on, however little real time passed.
func TestSleepOnWaitsOnTheClock(t *testing.T) {
	fake := clockwork.NewFakeClock()
	ctx := context.Background()
	done := make(chan error, 1)
	go func() { done <- SleepOn(ctx, fake, time.Hour) }()
	if err := fake.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	fake.Advance(time.Hour - time.Second)
	select {
	case err := <-done:
		t.Fatalf("SleepOn returned %v a second before its hour on the clock", err)
	default:
	}
	fake.Advance(time.Second)
	if err := <-done; err != nil {
		t.Errorf("SleepOn after the clock moved an hour = %v, want nil", err)
	}
}

func TestReaderStopsWhenDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := Reader(ctx, strings.NewReader("abcdef"))
	p := make([]byte, 3)
	if n, err := r.Read(p); n != 3 || err != nil {
		t.Fatalf("Read before cancel = %d, %v; want 3, nil", n, err)
	}
	cancel()
	if n, err := r.Read(p); n != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Read after cancel = %d, %v; want 0, context.Canceled", n, err)
	}
	if _, err := io.ReadAll(r); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadAll after cancel: %v, want context.Canceled", err)
	}
}
