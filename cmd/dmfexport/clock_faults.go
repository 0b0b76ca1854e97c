//go:build faults

package main

import (
	"os"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dmfexport/dmfexport/internal/clock"
)

// newClock is the clock a command's runs read every time from (see
// jobs.Runner.Clock). The fault suite's builds (-tags faults) run a replica
// with its clock skewed by DMFEXPORT_FAULTS_CLOCK_SKEW ("+2m", "-2m"):
// libfaketime cannot skew a Go binary, whose time.Now reads the vDSO, not
// libc. Release builds hold no such hook (clock.go).
func newClock() clockwork.Clock {
	c := clockwork.NewRealClock()
	if s := os.Getenv("DMFEXPORT_FAULTS_CLOCK_SKEW"); s != "" {
		if d, err := time.ParseDuration(s); err == nil {
			return clock.Skewed(c, d)
		}
	}
	return c
}
