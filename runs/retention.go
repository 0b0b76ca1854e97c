package runs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dmfexport/dmfexport/store"
)

// Retention says which finished runs Prune deletes: those beyond the newest
// KeepRuns, and those older than MaxAge. Zero disables either rule.
type Retention struct {
	KeepRuns int
	MaxAge   time.Duration
}

// Prune deletes the export's finished runs that r lets go, oldest first,
// and returns their run IDs. A run's objects are deleted before its
// record, so an interrupted prune leaves a record that the next prune
// finishes, never objects nobody knows of. Unfinished runs are kept.
func (l *Ledger) Prune(ctx context.Context, r Retention) ([]string, error) {
	if r.KeepRuns == 0 && r.MaxAge == 0 {
		return nil, nil
	}
	// Decide from the listing alone: the state is in each record's
	// metadata and the start time in its run ID, so a prune after every run
	// reads no record unless the store lost that metadata.
	refs, quarantined, err := l.listRuns(ctx)
	if err != nil {
		return nil, err
	}
	now := l.clock.Now()
	var deleted []string
	var errs []error
	finished := 0
	hasRecord := map[string]bool{}
	for _, ref := range refs { // newest first
		hasRecord[ref.runID] = true
		state, started := ref.state, RunStart(ref.runID)
		if state == "" || started.IsZero() {
			rec, err := l.read(ctx, ref.key)
			if errors.Is(err, ErrDamagedRecord) {
				continue // status names it; an operator decides
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			state, started = rec.State, rec.StartedAt
		}
		if !state.Final() {
			continue
		}
		finished++
		tooMany := r.KeepRuns > 0 && finished > r.KeepRuns
		tooOld := r.MaxAge > 0 && now.Sub(started) > r.MaxAge
		if !tooMany && !tooOld {
			continue
		}
		if err := l.deleteRun(ctx, ref.runID); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, ref.runID)
	}
	// A run given up for a damaged record keeps its quarantined record and
	// objects for the operator, until max_age.
	for _, q := range quarantined {
		started := RunStart(q.runID)
		if hasRecord[q.runID] || r.MaxAge == 0 || started.IsZero() || now.Sub(started) <= r.MaxAge || slices.Contains(deleted, q.runID) {
			continue
		}
		if err := l.deleteRun(ctx, q.runID); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, q.runID)
	}
	return deleted, errors.Join(errs...)
}

// deleteRun removes every object of one run, its record last, then any
// lease it left and, in a directory store, the folders that held them.
func (l *Ledger) deleteRun(ctx context.Context, runID string) error {
	folder := l.Run(runID)
	objs, err := l.st.List(ctx, folder+"/")
	if err != nil {
		return fmt.Errorf("retention: list run %s: %w", runID, err)
	}
	recKey := l.Record(runID)
	for _, o := range objs {
		if o.Key == recKey {
			continue
		}
		if err := l.st.Delete(ctx, o.Key); err != nil {
			return fmt.Errorf("retention: delete %s: %w", o.Key, err)
		}
	}
	if err := l.st.Delete(ctx, recKey); err != nil {
		return fmt.Errorf("retention: delete %s: %w", recKey, err)
	}
	store.RemoveEmptyFolders(l.st, folder)
	// A finished run's leases were released; one left by a failed release
	// is stale, and its empty folder is left in any case.
	leases := l.Leases(runID)
	if objs, err := l.st.List(ctx, leases+"/"); err == nil {
		for _, o := range objs {
			_ = l.st.Delete(ctx, o.Key)
		}
	}
	store.RemoveEmptyFolders(l.st, leases)
	return nil
}
