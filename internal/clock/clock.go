// Package clock holds what dmfexport does with clocks beyond clockwork's.
package clock

import (
	"time"

	"github.com/jonboulle/clockwork"
)

// Skewed returns c with its readings moved by d: Now, Since and Until read
// as on a clock d ahead of c (behind, for a negative d), while waits last
// as long as on c. The fault suite's builds run replicas on such clocks
// (libfaketime cannot skew a Go binary, whose clock reads bypass libc),
// and tests use it for a replica whose clock is off.
func Skewed(c clockwork.Clock, d time.Duration) clockwork.Clock { return skewed{c, d} }

type skewed struct {
	clockwork.Clock
	d time.Duration
}

func (s skewed) Now() time.Time                  { return s.Clock.Now().Add(s.d) }
func (s skewed) Since(t time.Time) time.Duration { return s.Now().Sub(t) }
func (s skewed) Until(t time.Time) time.Duration { return t.Sub(s.Now()) }
