package testenv

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestAwait(t *testing.T) {
	tests := []struct {
		name      string
		trueAfter int // asks before cond holds; -1: never
		timeout   time.Duration
		want      bool
		wantTook  time.Duration
	}{
		{"holds at once", 0, time.Second, true, 0},
		{"holds on the third tick", 3, time.Second, true, 3 * AwaitTick},
		{"never holds", -1, 100 * time.Millisecond, false, 100 * time.Millisecond},
		{"holds only after the timeout", 50, 100 * time.Millisecond, false, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var asks atomic.Int64
				start := time.Now()
				got := Await(tt.timeout, func() bool {
					n := asks.Add(1) - 1
					return tt.trueAfter >= 0 && n >= int64(tt.trueAfter)
				})
				if got != tt.want || time.Since(start) != tt.wantTook {
					t.Errorf("want %v after %s, got %v after %s (%d asks)", tt.want, tt.wantTook, got, time.Since(start), asks.Load())
				}
			})
		})
	}
}
