package runs

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// F&O does not support two exports of one data project at once, whatever
// export definition starts them. So a run holds its data project while it
// runs; across replicas sharing the store, through a lease
// "_groups/<group>-<hash>/<generation>" with the same create-once and
// heartbeat rules as run leases (lease.go). A run that finds its data
// project held does not start.

// DataProject identifies what F&O exports one at a time: a definition
// group of an environment.
type DataProject struct {
	Environment string // the F&O environment's URL
	Group       string // the definition group
}

// Key is the data project's identity: the environment and the definition
// group, compared case-insensitively as F&O does.
func (p DataProject) Key() string {
	return strings.ToLower(strings.TrimRight(p.Environment, "/")) + "\n" + strings.ToLower(p.Group)
}

// HoldProject takes data project p for holder ("export X run Y") in the
// store, unless a live replica holds it: it then returns a nil lease and
// a description of that holder.
func (l *Ledger) HoldProject(ctx context.Context, p DataProject, holder string) (*Lease, string, error) {
	folder := l.ProjectLeases(p)
	h, err := l.holder(ctx, folder, l.storeClock(ctx))
	if err != nil {
		return nil, "", fmt.Errorf("data project lease: %w", err)
	}
	if h.Alive {
		return nil, h.Owner, nil
	}
	lease, err := l.takeLease(ctx, folder, h.Gen+1, holder)
	if errors.Is(err, ErrLeaseHeld) {
		return nil, "a run in another replica", nil
	} else if err != nil {
		return nil, "", fmt.Errorf("data project lease: %w", err)
	}
	return lease, "", nil
}
