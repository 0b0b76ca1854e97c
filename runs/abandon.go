package runs

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

// Abandon ends the unfinished run runID on purpose: its record is written
// in state abandoned with who, when and why, its active marker is cleared,
// and it is never resumed. Its stored objects stay (retention deletes them
// with the run). It refuses a run that has ended already (ErrRunFinal) and
// one a live process owns (ErrLeaseHeld): the owner would go on. A damaged
// record is quarantined and an abandoned record written in its place,
// with base's definition group and legal entity.
func (l *Ledger) Abandon(ctx context.Context, runID, by, reason string, base *Record) (*Record, error) {
	if _, err := l.abandonable(ctx, runID); err != nil {
		return nil, err
	}
	// Taking the next lease generation keeps out a replica resuming the
	// run meanwhile, and stops one that took it up since (it sees a newer
	// generation before its next record write).
	h, err := l.RunHolder(ctx, runID)
	if err != nil {
		return nil, fmt.Errorf("export %s run %s: %w", l.Export, runID, err)
	}
	if h.Alive {
		return nil, fmt.Errorf("export %s run %s: %w (%s): stop that process, or let it end the run, before abandoning it", l.Export, runID, ErrLeaseHeld, h.Owner)
	}
	lease, err := l.TakeLease(ctx, runID, h.Gen+1)
	if err != nil {
		return nil, fmt.Errorf("export %s run %s: %w: another process took the run up just now; try again once it stops", l.Export, runID, err)
	}
	defer lease.Release(context.WithoutCancel(ctx))
	rec, err := l.abandonable(ctx, runID)
	if err != nil {
		return nil, err
	}
	now := l.clock.Now().UTC()
	note := &Abandonment{By: by, At: now, Reason: reason}
	text := fmt.Sprintf("abandoned by %s at %s", by, now.Format(time.RFC3339))
	if reason != "" {
		text += ": " + reason
	}
	if rec == nil {
		// Damaged: keep its bytes aside, and say so in the new record.
		qkey, err := l.quarantine(ctx, runID, map[string]string{"export": l.Export, "run": runID, "cause": "abandoned with a damaged record", "lost": text})
		if err != nil {
			return nil, fmt.Errorf("export %s run %s: quarantine its damaged record: %w", l.Export, runID, err)
		}
		started := RunStart(runID)
		if started.IsZero() {
			started = now
		}
		rec = &Record{Job: l.Export, RunID: runID, Trigger: "rebuilt", StartedAt: started,
			DefinitionGroup: base.DefinitionGroup, LegalEntity: base.LegalEntity,
			Warnings: []string{"the run record was damaged; quarantined as " + qkey}}
	}
	if rec.Error != "" {
		text += " (it was: " + rec.Error + ")"
	}
	// The abandonment is the run's end now, and its text says it all.
	rec.State, rec.FinishedAt, rec.Error, rec.Cause, rec.Waiting, rec.Abandoned = StateAbandoned, now, text, "", "", note
	if err := l.Save(ctx, rec); err != nil {
		return nil, fmt.Errorf("export %s run %s: %w; the run is not abandoned", l.Export, runID, err)
	}
	if err := l.Finish(ctx, runID); err != nil {
		l.log.Warn("could not clear the abandoned run's active marker; it is cleared at the next scan", "export", l.Export, "run", runID, "err", err)
	}
	return rec, nil
}

// abandonable reads the record of a run to abandon: nil for a damaged one,
// an error for a missing or final one.
func (l *Ledger) abandonable(ctx context.Context, runID string) (*Record, error) {
	rec, err := l.Find(ctx, runID)
	switch {
	case errors.Is(err, ErrDamagedRecord):
		return nil, nil
	case errors.Is(err, store.ErrNotExist):
		return nil, fmt.Errorf("export %s has no run %q (see dmfexport status %s for run IDs)", l.Export, runID, l.Export)
	case err != nil:
		return nil, fmt.Errorf("export %s run %s: %w", l.Export, runID, err)
	case rec.State.Final():
		return nil, fmt.Errorf("export %s run %s: %w (%s): nothing to abandon", l.Export, runID, ErrRunFinal, rec.State)
	}
	return rec, nil
}
