package jobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
)

// The store keeps what happened to every run (package runs): a Runner
// reads and writes it through the ledger of each export it runs.

// clock is where every time the Runner reads comes from.
func (r *Runner) clock() clockwork.Clock {
	if r.Clock != nil {
		return r.Clock
	}
	return clockwork.NewRealClock()
}

// ledger returns the ledger of exp's runs in st.
func (r *Runner) ledger(st store.Store, exp *Export) *runs.Ledger {
	return runs.NewLedger(st, exp.Store.Prefix, exp.Name, runs.Options{Clock: r.clock(), LeaseTTL: r.LeaseTTL, Logger: r.logger()})
}

// openLedger opens exp's store (kept by the Runner) and returns it with
// the ledger of exp's runs in it.
func (r *Runner) openLedger(ctx context.Context, exp *Export) (*runs.Ledger, store.Store, error) {
	st, err := r.store(ctx, exp)
	if err != nil {
		return nil, nil, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	return r.ledger(st, exp), st, nil
}

// readLedger opens exp's store for reading only and returns the ledger of
// exp's runs in it, which never writes (o.ReadOnly): for status, and what
// else only reads without a Runner.
func readLedger(ctx context.Context, exp *Export, o runs.Options) (*runs.Ledger, error) {
	st, err := openStoreReading(ctx, exp.Store)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	o.ReadOnly = true
	return runs.NewLedger(st, exp.Store.Prefix, exp.Name, o), nil
}

// newRecord is the record of a run of exp that has not started: what the
// export's configuration says of it.
func newRecord(exp *Export) *runs.Record {
	return &runs.Record{Job: exp.Name, DefinitionGroup: exp.DefinitionGroup, LegalEntity: exp.LegalEntity, Batching: batchSettingsOf(exp)}
}

// batchSettingsOf returns the batch settings of exp's configuration.
func batchSettingsOf(exp *Export) *runs.BatchSettings {
	b := &runs.BatchSettings{BatchSize: cmp.Or(exp.BatchSize, publish.DefaultBatchSize), Compression: exp.Compression,
		MaxBatchBytes: cmp.Or(exp.MaxBatchBytes, publish.DefaultMaxBatchBytes)}
	b.Delimiter = exp.Read.Delimiter
	return b
}

// Records returns the newest limit run records of one export (all when
// limit <= 0), newest first. Damaged records among them are left out: see
// RunHistory.
func Records(ctx context.Context, exp *Export, limit int) ([]*runs.Record, error) {
	h, err := RunHistory(ctx, exp, limit)
	if err != nil {
		return nil, err
	}
	return h.Records, nil
}

// RunHistory reads the newest limit run records of one export (all when
// limit <= 0). A damaged record never fails it: it is listed in Damaged,
// so one unreadable record does not hide the others. It only reads.
func RunHistory(ctx context.Context, exp *Export, limit int) (*runs.History, error) {
	return RunHistoryKeeping(ctx, exp, limit, nil)
}

// RunHistoryKeeping reads as RunHistory does, but takes the finished
// records kept holds from it instead of the store, and keeps there those
// it reads (see runs.FinishedRecords): for a page that reads the same
// history every few seconds. The records it returns may be kept's:
// callers must not change them.
func RunHistoryKeeping(ctx context.Context, exp *Export, limit int, kept *runs.FinishedRecords) (*runs.History, error) {
	l, err := readLedger(ctx, exp, runs.Options{})
	if err != nil {
		return nil, err
	}
	h, err := l.HistoryKeeping(ctx, limit, kept)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", exp.Name, err)
	}
	return h, nil
}

// StoreMissing reports whether exp's store is a directory that does not
// exist: nothing was ever run, and opening the store would create it.
func StoreMissing(exp *Export) bool {
	if exp.Store.Type != "dir" {
		return false
	}
	_, err := os.Stat(exp.Store.Path)
	return errors.Is(err, fs.ErrNotExist)
}

// RunOwned reports whether a live process is working on the unfinished run
// runID of exp (see runs.Ledger.Owned), judging its lease's age with ttl
// (0: runs.DefaultLeaseTTL) on clock (nil: the real clock): status only
// reads, so it cannot learn the store's clock, and its answer is an
// estimate for display only.
func RunOwned(ctx context.Context, exp *Export, runID string, ttl time.Duration, clock clockwork.Clock) (bool, error) {
	l, err := readLedger(ctx, exp, runs.Options{Clock: clock, LeaseTTL: ttl})
	if err != nil {
		return false, err
	}
	return l.Owned(ctx, runID)
}
