package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
)

// ReplayOptions narrow and redirect a replay.
type ReplayOptions struct {
	Entities   []string // only these entities; empty means every entity of the run
	RoutingKey string   // "" keeps the export's routing key
}

// FindRun returns the export of cfg whose store holds the record of runID,
// and that record. runID may be given as "EXPORT/RUN". When that record is
// damaged, the error wraps ErrDamagedRecord and the export is returned.
func FindRun(ctx context.Context, cfg *Config, runID string) (*Export, *runs.Record, error) {
	job, id, qualified := strings.Cut(runID, "/")
	if !qualified {
		job, id = "", runID
	}
	for i := range cfg.Exports {
		exp := &cfg.Exports[i]
		if job != "" && exp.Name != job {
			continue
		}
		st, err := openStore(ctx, exp.Store, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("export %s: %w", exp.Name, err)
		}
		rec, err := runs.NewLedger(st, exp.Store.Prefix, exp.Name, runs.Options{}).Find(ctx, id)
		if errors.Is(err, store.ErrNotExist) {
			continue
		}
		if errors.Is(err, runs.ErrDamagedRecord) {
			// The export is returned with it: dmfexport abandon ends such a run.
			return exp, nil, fmt.Errorf("export %s run %s: %w", exp.Name, id, err)
		}
		if err != nil {
			return nil, nil, err
		}
		return exp, rec, nil
	}
	if _, known := cfg.Export(job); job != "" && !known {
		return nil, nil, fmt.Errorf("no export named %q in %s (see dmfexport exports)", job, cfg.Path)
	}
	if job != "" {
		return nil, nil, fmt.Errorf("no run %q in the store of export %s (see dmfexport status %s for run IDs)", id, job, job)
	}
	return nil, nil, fmt.Errorf("no run %q in the store of any export (see dmfexport status for run IDs)", runID)
}

// Replay publishes the stored entity files of a finished run again, for a
// downstream system that lost data. Messages carry the same IDs as the
// first time (<execution id>/<entity>/<batch>), so a consumer that still
// holds a batch can drop it, and the same correlation ID (the run ID). It
// returns what it published per entity.
func (r *Runner) Replay(ctx context.Context, exp *Export, rec *runs.Record, o ReplayOptions) ([]runs.EntityRecord, error) {
	if !rec.Unpacked {
		return nil, fmt.Errorf("run %s of export %s never finished unpacking (state %s): nothing stored to replay", rec.RunID, exp.Name, rec.State)
	}
	for _, name := range o.Entities {
		if !slices.ContainsFunc(rec.Entities, func(e runs.EntityRecord) bool { return e.Entity == name }) {
			return nil, fmt.Errorf("run %s has no entity %q (it has: %s)", rec.RunID, name, entityNames(rec))
		}
	}
	l, st, err := r.openLedger(ctx, exp)
	if err != nil {
		return nil, err
	}
	target := *exp
	if o.RoutingKey != "" {
		target.RoutingKey = o.RoutingKey
	}
	u := &run{r: r, exp: &target, st: st, ledger: l, rec: rec, steps: map[string]time.Duration{},
		log: r.logger().With("export", exp.Name, "run", rec.RunID, "execution", rec.ExecutionID, "replay", true)}
	sink, err := u.newSink(ctx)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	defer func() { _ = sink.Close() }()
	var out []runs.EntityRecord
	var errs []error
	for _, e := range rec.Entities {
		if len(o.Entities) > 0 && !slices.Contains(o.Entities, e.Entity) {
			continue
		}
		// An absent file published as an empty entity is replayed as one.
		if e.Key == "" && !(e.Absent && e.State == runs.StateSucceeded) {
			errs = append(errs, fmt.Errorf("entity %s was never stored: %s", e.Entity, e.Error))
			continue
		}
		e.Rows, e.Batches, e.Error = 0, 0, ""
		if err := u.publishEntity(ctx, sink, &e, nil); err != nil {
			e.State, e.Error = runs.StateFailed, err.Error()
			errs = append(errs, err)
		} else {
			e.State = runs.StateSucceeded
		}
		out = append(out, e)
	}
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("replay of run %s: %w", rec.RunID, err)
	}
	return out, nil
}

func entityNames(rec *runs.Record) string {
	names := make([]string, len(rec.Entities))
	for i, e := range rec.Entities {
		names[i] = e.Entity
	}
	return strings.Join(names, ", ")
}
