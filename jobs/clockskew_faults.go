//go:build faults

package jobs

import (
	"os"
	"time"
)

// The fault suite's builds (-tags faults) run a replica with its own clock
// skewed by DMFEXPORT_FAULTS_CLOCK_SKEW ("+2m", "-2m"): libfaketime cannot
// skew a Go binary, whose time.Now reads the vDSO, not libc. Every clock
// read that replicas compare (schedule slots, claims, leases, run IDs)
// goes through localNow. Release builds hold no such hook.
func init() {
	if s := os.Getenv("DMFEXPORT_FAULTS_CLOCK_SKEW"); s != "" {
		if d, err := time.ParseDuration(s); err == nil {
			localNow = func() time.Time { return time.Now().Add(d) }
		}
	}
}
