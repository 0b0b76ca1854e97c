package jobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"

	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
)

// A store can lose what it holds under a running run: an Azure container
// deleted, an Azurite restarted empty, a store directory removed. The store
// creates itself again at the next write (store.Recreations counts it);
// the run then writes its record, active marker and leases again from
// memory, so it stays visible to status and resumable, and a run whose
// stored package or entity files are gone fetches the package of the same
// execution again instead of exporting again.

// errStoredEntitiesGone is returned by publishAll when stored entity files
// the record names are gone from the store: the run fetches the package of
// its execution again.
var errStoredEntitiesGone = errors.New("stored entity files are gone from the store")

// maxRefetches bounds how often one run fetches its package again after
// the store lost its entity files.
const maxRefetches = 3

// restoreAfterLoss writes the run's last record, active marker and leases
// again when the store was created anew since the run last looked (or,
// with force, in any case), so status shows the run and another start can
// resume it. The caller holds u.saveMu; withRecord says whether the record
// must be written too (save has just written it). On an error it tries
// again at the next call.
func (u *run) restoreAfterLoss(ctx context.Context, withRecord, force bool) error {
	n := store.Recreations(u.st)
	if n == u.losses && !force {
		return nil
	}
	u.losses = n
	u.base.Warn("the store lost its objects under the run; writing the run's record, active marker and lease again from memory",
		"execution", u.lastExecution, "state", u.lastState)
	var errs []error
	if withRecord && u.lastRecord != nil {
		// The metadata of the record last written, its owner generation
		// included: the write is fenced as every record write is.
		r := &runs.Record{Job: u.exp.Name, RunID: u.rec.RunID, State: u.lastState, ExecutionID: u.lastExecution, OwnerGen: u.rec.OwnerGen}
		errs = append(errs, u.ledger.SaveOwned(ctx, r, u.lastRecord))
	}
	errs = append(errs, u.ledger.MarkActive(ctx, u.rec.RunID))
	errs = append(errs, u.lease.Rewrite(ctx))
	if u.hold != nil {
		errs = append(errs, u.hold.lease.Rewrite(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		u.losses = -1 // try again at the next record write or heartbeat
		return err
	}
	return nil
}

// heartbeat runs after each refresh of the run's lease: if the store lost
// its objects since (it was created again, or the run's record and marker
// are both gone), it writes them again, so a run busy downloading or
// publishing does not stay invisible until its next record write.
func (u *run) heartbeat(ctx context.Context) {
	if u.ended.Load() {
		return
	}
	u.saveMu.Lock()
	defer u.saveMu.Unlock()
	if u.ended.Load() || u.lastRecord == nil {
		return
	}
	force := false
	if store.Recreations(u.st) == u.losses {
		_, rerr := u.st.Stat(ctx, u.ledger.Record(u.rec.RunID))
		_, merr := u.st.Stat(ctx, u.ledger.Active(u.rec.RunID))
		if !errors.Is(rerr, store.ErrNotExist) || !errors.Is(merr, store.ErrNotExist) {
			return
		}
		force = true // emptied, not created again
	}
	if err := u.restoreAfterLoss(ctx, true, force); err != nil {
		u.base.Warn("the run's record, marker or lease could not be written again after the store lost them; trying again at the next heartbeat", "err", err)
	}
}

// lostRunError says plainly that a run cannot be kept because its store
// is gone for good, and where the operator finds its package.
func (u *run) lostRunError(err error) error {
	return fmt.Errorf("%w: run lost: no record of it can be kept, so it will not resume; "+
		"its package is execution %s in F&O (Data management, job history), kept there for about 7 days; "+
		"fix the store (it must exist, or its credential be allowed to create it); a new run exports again, "+
		"so for IncrementalPush entities the changes in that package reach no one unless it is published by hand",
		err, cmp.Or(u.rec.ExecutionID, "(none: nothing was exported)"))
}
