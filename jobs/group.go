package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"time"

	"github.com/dmfexport/dmfexport/store"
)

// F&O does not support two exports of one data project at once, whatever
// export definition starts them. So a run holds its data project (the
// environment URL and definition group, in any case) while it runs: in
// this process through Runner.groups, and across replicas sharing the
// store through a lease "_groups/<group>-<hash>/<generation>" with the
// same create-once and heartbeat rules as run leases (see lease.go). A run
// that finds its data project held is skipped, with a record in state
// skipped that names the holder; it runs at its next trigger.

// ErrGroupBusy is returned when the data project of an export is being
// exported by another run (of this or another export, here or in another
// replica): the run is skipped.
var ErrGroupBusy = errors.New("its data project is being exported by another run")

// groupKey identifies a data project: the environment and the definition
// group, compared case-insensitively as F&O does.
func groupKey(exp *Export) string {
	env := ""
	if exp.FO.URL != nil {
		env = strings.ToLower(strings.TrimRight(exp.FO.URL.String(), "/"))
	}
	return env + "\n" + strings.ToLower(exp.DefinitionGroup)
}

// groupLeasePrefix is where the leases of exp's data project live.
func groupLeasePrefix(storePrefix string, exp *Export) string {
	sum := sha256.Sum256([]byte(groupKey(exp)))
	return path.Join(storePrefix, "_groups", store.EscapeName(strings.ToLower(exp.DefinitionGroup))+"-"+hex.EncodeToString(sum[:6]))
}

// groupHold is one run's hold on its data project.
type groupHold struct {
	r     *Runner
	key   string
	lease *runLease // nil until the store lease is taken
}

// holdGroup takes exp's data project for run runID. When another run holds
// it, it returns a nil hold and a description of the holder.
func (r *Runner) holdGroup(ctx context.Context, exp *Export, st store.Store, runID string, log *slog.Logger) (*groupHold, string, error) {
	key := groupKey(exp)
	holder := fmt.Sprintf("export %s run %s", exp.Name, runID)
	r.mu.Lock()
	if r.groups == nil {
		r.groups = map[string]string{}
	}
	if other, busy := r.groups[key]; busy {
		r.mu.Unlock()
		return nil, other + " in this process", nil
	}
	r.groups[key] = holder
	r.mu.Unlock()
	h := &groupHold{r: r, key: key}
	prefix := groupLeasePrefix(exp.Store.Prefix, exp)
	gen, obj, err := newestLease(ctx, st, prefix)
	if err != nil {
		h.release(ctx)
		return nil, "", fmt.Errorf("data project lease: %w", err)
	}
	if gen > 0 {
		if alive, owner := leaseAlive(ctx, st, obj, r.leaseTTL(), storeNow(ctx, st, exp.Store.Prefix)); alive {
			h.release(ctx)
			return nil, owner, nil
		}
	}
	lease, err := acquireHeldLease(ctx, st, prefix, gen+1, r.leaseTTL(), holder)
	if errors.Is(err, ErrLeaseHeld) {
		h.release(ctx)
		return nil, "a run in another replica", nil
	} else if err != nil {
		h.release(ctx)
		return nil, "", fmt.Errorf("data project lease: %w", err)
	}
	h.lease = lease
	lease.gate = r.heartbeatGate
	lease.keep(func() {
		log.Warn("data project lease taken over by another replica (this process stalled past replicas.lease_ttl); two exports of it may overlap",
			"definition_group", exp.DefinitionGroup)
	})
	return h, "", nil
}

// release gives the data project up.
func (h *groupHold) release(ctx context.Context) {
	if h == nil {
		return
	}
	if h.lease != nil {
		h.lease.release(ctx)
	}
	h.r.mu.Lock()
	delete(h.r.groups, h.key)
	h.r.mu.Unlock()
}

// skipped records a run that did not start because holder exports its data
// project, and returns it with an error wrapping ErrGroupBusy.
func (r *Runner) skipped(ctx context.Context, exp *Export, st store.Store, rec *RunRecord, holder string) (*RunRecord, error) {
	rec.State = StateSkipped
	rec.FinishedAt = time.Now().UTC()
	rec.Error = fmt.Sprintf("skipped: data project %q is being exported by %s, and F&O does not support two exports of one data project at once; "+
		"this export runs at its next trigger", exp.DefinitionGroup, holder)
	r.logger().Warn("run skipped: its data project is being exported by another run",
		"export", exp.Name, "run", rec.RunID, "definition_group", exp.DefinitionGroup, "holder", holder)
	r.Metrics.runSkipped(exp.Name)
	if err := saveRecord(ctx, st, exp.Store.Prefix, rec); err != nil {
		return rec, fmt.Errorf("export %s: %w (data project %q is being exported by %s); %w", exp.Name, ErrGroupBusy, exp.DefinitionGroup, holder, err)
	}
	return rec, fmt.Errorf("export %s: run skipped: %w (data project %q, held by %s)", exp.Name, ErrGroupBusy, exp.DefinitionGroup, holder)
}

// bindRun ties the hold to the run it serves (see runLease.bind).
func (h *groupHold) bindRun(run *runLease) {
	if h != nil {
		h.lease.bind(run)
	}
}
