// Package ctxio makes waiting and reading stop when a context is done, so
// cancellation reaches a long copy or a retry pause at its next step.
package ctxio

import (
	"context"
	"io"
	"time"

	"github.com/jonboulle/clockwork"
)

// Sleep waits d or until ctx is done, whichever comes first, and returns
// ctx's error in the second case. A d of zero or less only checks ctx.
func Sleep(ctx context.Context, d time.Duration) error {
	return SleepOn(ctx, realClock, d)
}

// realClock is the machine's clock, for Sleep.
var realClock = clockwork.NewRealClock()

// SleepOn is Sleep with d measured on c, so a test's fake clock (or a
// skewed one) decides when the wait ends.
func SleepOn(ctx context.Context, c clockwork.Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := c.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.Chan():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Reader returns r whose Read fails with ctx's error once ctx is done, so a
// copy from it stops at the next Read.
func Reader(ctx context.Context, r io.Reader) io.Reader { return reader{ctx, r} }

type reader struct {
	ctx context.Context
	r   io.Reader
}

func (c reader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
