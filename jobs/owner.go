package jobs

import (
	"context"
	"fmt"
	"time"
)

// RunOwned reports whether a live process is working on the unfinished run
// runID of exp: its newest lease was refreshed within ttl by a process that
// still exists. false means the run was cut off (a stop, a crash, kill -9)
// and waits for the next start to resume it. For a store that keeps no
// leases it reports true: nothing shows the run is not going.
func RunOwned(ctx context.Context, exp *Export, runID string, ttl time.Duration) (bool, error) {
	st, err := openStoreReading(ctx, exp.Store)
	if err != nil {
		return false, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	gen, obj, err := newestLease(ctx, st, leasePrefix(exp.Store.Prefix, exp.Name, runID))
	if err != nil {
		return false, fmt.Errorf("export %s run %s: %w", exp.Name, runID, err)
	}
	if gen == 0 {
		return false, nil
	}
	// status only reads, so it cannot learn the store's clock: it judges
	// the lease on this machine's clock, an estimate for display only.
	alive, _ := leaseAlive(ctx, st, obj, ttl, localNow())
	return alive, nil
}
