package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/dmfexport/dmfexport/internal/cause"
	"github.com/dmfexport/dmfexport/runs"
)

// F&O does not support two exports of one data project at once, whatever
// export definition starts them. So a run holds its data project (the
// environment URL and definition group, in any case) while it runs: in
// this process through Runner.groups, and across replicas sharing the
// store through a lease (runs.Ledger.HoldProject). A run that finds its
// data project held is skipped, with a record in state skipped that names
// the holder; it runs at its next trigger.

// ErrGroupBusy is returned when the data project of an export is being
// exported by another run (of this or another export, here or in another
// replica): the run is skipped.
var ErrGroupBusy = errors.New("its data project is being exported by another run")

// dataProject is the data project exp exports.
func dataProject(exp *Export) runs.DataProject {
	p := runs.DataProject{Group: exp.DefinitionGroup}
	if exp.FO.URL != nil {
		p.Environment = exp.FO.URL.String()
	}
	return p
}

// groupHold is one run's hold on its data project.
type groupHold struct {
	r     *Runner
	key   string
	lease *runs.Lease // nil until the store lease is taken
}

// holdGroup takes exp's data project for run runID. When another run holds
// it, it returns a nil hold and a description of the holder.
func (r *Runner) holdGroup(ctx context.Context, exp *Export, l *runs.Ledger, runID string, log *slog.Logger) (*groupHold, string, error) {
	p := dataProject(exp)
	key := p.Key()
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
	lease, other, err := l.HoldProject(ctx, p, holder)
	if err != nil || lease == nil {
		h.release(ctx)
		return nil, other, err
	}
	h.lease = lease
	lease.Keep(runs.KeepOptions{Gate: r.heartbeatGate, Lost: func() {
		log.Warn("data project lease taken over by another replica (this process stalled past replicas.lease_ttl); two exports of it may overlap",
			"definition_group", exp.DefinitionGroup)
	}})
	return h, "", nil
}

// release gives the data project up.
func (h *groupHold) release(ctx context.Context) {
	if h == nil {
		return
	}
	h.lease.Release(ctx)
	h.r.mu.Lock()
	delete(h.r.groups, h.key)
	h.r.mu.Unlock()
}

// skipped records a run that did not start because holder exports its data
// project, and returns it with an error wrapping ErrGroupBusy.
func (r *Runner) skipped(ctx context.Context, exp *Export, l *runs.Ledger, rec *runs.Record, holder string) (*runs.Record, error) {
	rec.State = runs.StateSkipped
	rec.FinishedAt = r.clock().Now().UTC()
	rec.Error = fmt.Sprintf("skipped: data project %q is being exported by %s, and F&O does not support two exports of one data project at once; "+
		"this export runs at its next trigger", exp.DefinitionGroup, holder)
	r.logger().Warn("run skipped: its data project is being exported by another run",
		"export", exp.Name, "run", rec.RunID, "definition_group", exp.DefinitionGroup, "holder", holder)
	r.Metrics.runSkipped(exp.Name)
	if err := l.Save(ctx, rec); err != nil {
		return rec, fmt.Errorf("export %s: %w (data project %q is being exported by %s); %w", exp.Name, ErrGroupBusy, exp.DefinitionGroup, holder, err)
	}
	return rec, fmt.Errorf("export %s: %w", exp.Name, cause.Mark(fmt.Errorf("run skipped: %w (data project %q, held by %s)", ErrGroupBusy, exp.DefinitionGroup, holder)))
}

// bindRun ties the hold to the run it serves (see runs.Lease.Bind).
func (h *groupHold) bindRun(run *runs.Lease) {
	if h != nil {
		h.lease.Bind(run)
	}
}
