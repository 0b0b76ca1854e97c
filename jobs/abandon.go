package jobs

import (
	"context"

	"github.com/dmfexport/dmfexport/runs"
)

// Abandon ends the unfinished run runID of exp on purpose (see
// runs.Ledger.Abandon): it is never resumed. by and reason are recorded
// with the time.
func (r *Runner) Abandon(ctx context.Context, exp *Export, runID, by, reason string) (*runs.Record, error) {
	l, _, err := r.openLedger(ctx, exp)
	if err != nil {
		return nil, err
	}
	rec, err := l.Abandon(ctx, runID, by, reason, newRecord(exp))
	if err != nil {
		return nil, err
	}
	r.logger().Warn("run abandoned: it is never resumed", "export", exp.Name, "run", runID, "by", by, "reason", reason, "execution", rec.ExecutionID)
	return rec, nil
}
