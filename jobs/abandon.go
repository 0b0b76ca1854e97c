package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dmfexport/dmfexport/store"
)

// ErrRunFinal is returned when a run asked to be abandoned has ended
// already.
var ErrRunFinal = errors.New("run has ended already")

// Abandonment says who ended an unfinished run on purpose, when and why.
type Abandonment struct {
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}

// Abandon ends the unfinished run runID of exp on purpose: its record is
// written in state abandoned with who, when and why, its active marker is
// cleared, and it is never resumed. Its stored objects stay (retention
// deletes them with the run). It refuses a run that has ended already
// (ErrRunFinal) and one a live process owns (ErrLeaseHeld): the owner
// would go on. A damaged record is quarantined (see damaged.go) and an
// abandoned record written in its place.
func (r *Runner) Abandon(ctx context.Context, exp *Export, runID, by, reason string) (*RunRecord, error) {
	st, err := r.store(ctx, exp)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	key := recordKey(exp.Store.Prefix, exp.Name, runID)
	if _, err := r.abandonable(ctx, st, exp, runID, key); err != nil {
		return nil, err
	}
	// Taking the next lease generation keeps out a replica resuming the
	// run meanwhile, and stops one that took it up since (it sees a newer
	// generation before its next record write).
	prefix := leasePrefix(exp.Store.Prefix, exp.Name, runID)
	gen, obj, err := newestLease(ctx, st, prefix)
	if err != nil {
		return nil, fmt.Errorf("export %s run %s: %w", exp.Name, runID, err)
	}
	if gen > 0 {
		if alive, owner := leaseAlive(ctx, st, obj, r.leaseTTL(), storeNow(ctx, st, exp.Store.Prefix)); alive {
			return nil, fmt.Errorf("export %s run %s: %w (%s): stop that process, or let it end the run, before abandoning it", exp.Name, runID, ErrLeaseHeld, owner)
		}
	}
	lease, err := acquireLease(ctx, st, prefix, gen+1, r.leaseTTL())
	if err != nil {
		return nil, fmt.Errorf("export %s run %s: %w: another process took the run up just now; try again once it stops", exp.Name, runID, err)
	}
	defer lease.release(context.WithoutCancel(ctx))
	rec, err := r.abandonable(ctx, st, exp, runID, key)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	note := &Abandonment{By: by, At: now, Reason: reason}
	text := fmt.Sprintf("abandoned by %s at %s", by, now.Format(time.RFC3339))
	if reason != "" {
		text += ": " + reason
	}
	if rec == nil {
		// Damaged: keep its bytes aside, and say so in the new record.
		qkey, err := quarantine(ctx, st, key, map[string]string{"export": exp.Name, "run": runID, "cause": "abandoned with a damaged record", "lost": text})
		if err != nil {
			return nil, fmt.Errorf("export %s run %s: quarantine its damaged record: %w", exp.Name, runID, err)
		}
		started := runStart(runID)
		if started.IsZero() {
			started = now
		}
		rec = &RunRecord{Job: exp.Name, RunID: runID, Trigger: "rebuilt", StartedAt: started,
			DefinitionGroup: exp.DefinitionGroup, LegalEntity: exp.LegalEntity,
			Warnings: []string{"the run record was damaged; quarantined as " + qkey}}
	}
	if rec.Error != "" {
		text += " (it was: " + rec.Error + ")"
	}
	rec.State, rec.FinishedAt, rec.Error, rec.Waiting, rec.Abandoned = StateAbandoned, now, text, "", note
	if err := saveRecord(ctx, st, exp.Store.Prefix, rec); err != nil {
		return nil, fmt.Errorf("export %s run %s: %w; the run is not abandoned", exp.Name, runID, err)
	}
	if err := st.Delete(ctx, activeKey(exp.Store.Prefix, exp.Name, runID)); err != nil {
		r.logger().Warn("could not clear the abandoned run's active marker; it is cleared at the next scan", "export", exp.Name, "run", runID, "err", err)
	}
	r.logger().Warn("run abandoned: it is never resumed", "export", exp.Name, "run", runID, "by", by, "reason", reason, "execution", rec.ExecutionID)
	return rec, nil
}

// abandonable reads the record of a run to abandon: nil for a damaged one,
// an error for a missing or final one.
func (r *Runner) abandonable(ctx context.Context, st store.Store, exp *Export, runID, key string) (*RunRecord, error) {
	rec, err := readRecord(ctx, st, key)
	switch {
	case errors.Is(err, ErrDamagedRecord):
		return nil, nil
	case errors.Is(err, store.ErrNotExist):
		return nil, fmt.Errorf("export %s has no run %q (see dmfexport status %s for run IDs)", exp.Name, runID, exp.Name)
	case err != nil:
		return nil, fmt.Errorf("export %s run %s: %w", exp.Name, runID, err)
	case rec.State.Final():
		return nil, fmt.Errorf("export %s run %s: %w (%s): nothing to abandon", exp.Name, runID, ErrRunFinal, rec.State)
	}
	return rec, nil
}
