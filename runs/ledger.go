package runs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dmfexport/dmfexport/store"
)

// Ledger reads and writes what a store keeps about the runs of one export:
// their records, the markers of unfinished runs, leases, schedule claims
// and data project holds. Every time it reads or writes comes from its
// clock. It is safe for concurrent use; it keeps nothing but its settings.
type Ledger struct {
	Layout
	st       store.Store
	clock    clockwork.Clock
	leaseTTL time.Duration
	replica  string
	readOnly bool
	log      *slog.Logger
}

// Options set up a Ledger.
type Options struct {
	// Clock is where every time the ledger reads comes from (record and
	// lease times, run IDs, ages, heartbeats); nil means the real clock.
	Clock clockwork.Clock
	// LeaseTTL is how long a lease lives without a heartbeat before another
	// replica may take over what it holds; 0 means DefaultLeaseTTL.
	LeaseTTL time.Duration
	// ReadOnly makes a ledger that never writes (status): lease ages are
	// judged on Clock, not on the store's clock.
	ReadOnly bool
	// Logger gets what the ledger does on its own (a damaged record
	// quarantined, a marker it could not clear); nil means slog.Default().
	Logger *slog.Logger
}

// NewLedger returns the ledger of export's runs in st, under the store's
// key prefix.
func NewLedger(st store.Store, prefix, export string, o Options) *Ledger {
	l := &Ledger{Layout: Layout{Prefix: prefix, Export: export}, st: st, clock: o.Clock, leaseTTL: o.LeaseTTL,
		replica: replicaID, readOnly: o.ReadOnly, log: o.Logger}
	if l.clock == nil {
		l.clock = clockwork.NewRealClock()
	}
	if l.leaseTTL <= 0 {
		l.leaseTTL = DefaultLeaseTTL
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	return l
}

// Begin starts the run rec in the store: it takes the run's lease, of
// generation rec.OwnerGen, and marks the run active, so scans for runs to
// resume read a few markers, not every record ever kept. The record itself
// is written by the caller's first Save.
func (l *Ledger) Begin(ctx context.Context, rec *Record) (*Lease, error) {
	lease, err := l.TakeLease(ctx, rec.RunID, rec.OwnerGen)
	if err != nil {
		return nil, err
	}
	if err := l.MarkActive(ctx, rec.RunID); err != nil {
		lease.Release(context.WithoutCancel(ctx))
		return nil, err
	}
	return lease, nil
}

// MarkActive marks run runID unfinished (again, for a store that lost the
// marker).
func (l *Ledger) MarkActive(ctx context.Context, runID string) error {
	if _, err := l.st.Put(ctx, l.Active(runID), strings.NewReader(runID), nil); err != nil {
		return fmt.Errorf("mark run active: %w", err)
	}
	return nil
}

// Finish clears the active marker of a run whose final record is written.
func (l *Ledger) Finish(ctx context.Context, runID string) error {
	return l.st.Delete(ctx, l.Active(runID))
}

// Drop removes the record and the active marker of a run that never
// started (stopped while queued): nothing of it is left to resume.
func (l *Ledger) Drop(ctx context.Context, runID string) error {
	var errs []error
	for _, key := range []string{l.Record(runID), l.Active(runID)} {
		if err := l.st.Delete(ctx, key); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", key, err))
		}
	}
	return errors.Join(errs...)
}

// Save writes rec; the store makes the write atomic, so a reader sees the
// previous or the new record, never a torn one.
func (l *Ledger) Save(ctx context.Context, rec *Record) error {
	b, err := Encode(rec)
	if err != nil {
		return err
	}
	return l.put(ctx, rec, b)
}

// put writes b, rec encoded.
func (l *Ledger) put(ctx context.Context, rec *Record, b []byte) error {
	if _, err := l.st.Put(ctx, l.Record(rec.RunID), bytes.NewReader(b), rec.meta()); err != nil {
		return fmt.Errorf("write run record %s/%s: %w", rec.Job, rec.RunID, err)
	}
	return nil
}

// SaveOwned writes b, rec encoded (Encode), for the run's owner, lease
// generation rec.OwnerGen: where the store can (store.GuardedPutter),
// only if the stored record was not written by a newer generation at the
// moment of the write, so an owner paused between its check and its
// write still cannot overwrite an adopter's record; the error then wraps
// ErrLeaseLost.
func (l *Ledger) SaveOwned(ctx context.Context, rec *Record, b []byte) error {
	gp, ok := l.st.(store.GuardedPutter)
	if !ok || rec.OwnerGen == 0 {
		return l.put(ctx, rec, b)
	}
	mine := rec.OwnerGen
	guard := func(current map[string]string) error {
		if g, err := strconv.Atoi(current[ownerGenMeta]); err == nil && g > mine {
			return fmt.Errorf("%w: the record was written by lease generation %d, this process holds %d", ErrLeaseLost, g, mine)
		}
		return nil
	}
	if _, err := gp.PutGuarded(ctx, l.Record(rec.RunID), b, rec.meta(), guard); err != nil {
		return fmt.Errorf("write run record %s/%s: %w", rec.Job, rec.RunID, err)
	}
	return nil
}

// Find reads the record of run runID. The error wraps store.ErrNotExist
// when there is none, ErrDamagedRecord when it cannot be read as one.
func (l *Ledger) Find(ctx context.Context, runID string) (*Record, error) {
	return l.read(ctx, l.Record(runID))
}

// Listed is a run as the store's listing shows it, without reading its
// record.
type Listed struct {
	RunID string
	State State // from the record's metadata; "" when the store lost it
}

// List lists the export's runs that have a record, newest first (run IDs
// start with their UTC start time).
func (l *Ledger) List(ctx context.Context) ([]Listed, error) {
	refs, _, err := l.listRuns(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Listed, len(refs))
	for i, r := range refs {
		out[i] = Listed{RunID: r.runID, State: r.state}
	}
	return out, nil
}

// History is what the store holds of an export's runs: the records that
// read as records, and those that do not.
type History struct {
	Records []*Record // newest first
	// Damaged are the records among the newest limit that cannot be read,
	// and the quarantined records of runs left without one, newest first.
	Damaged []DamagedRecord
}

// History reads the newest limit run records (all when limit <= 0). A
// damaged record never fails it: it is listed in Damaged, so one
// unreadable record does not hide the others. It only reads.
func (l *Ledger) History(ctx context.Context, limit int) (*History, error) {
	return l.HistoryKeeping(ctx, limit, nil)
}

// HistoryKeeping reads as History does, but takes the finished records
// kept holds from it instead of the store, and keeps there those it reads
// (nil: keeps none). The records it returns may be kept's: callers must
// not change them.
func (l *Ledger) HistoryKeeping(ctx context.Context, limit int, kept *FinishedRecords) (*History, error) {
	refs, quarantined, err := l.listRuns(ctx)
	if err != nil {
		return nil, err
	}
	hasRecord := map[string]bool{}
	for _, ref := range refs {
		hasRecord[ref.runID] = true
	}
	if limit > 0 && len(refs) > limit {
		refs = refs[:limit]
	}
	recs, damaged, err := l.readRecords(ctx, refs, kept)
	if err != nil {
		return nil, err
	}
	for _, q := range quarantined {
		// A rebuilt record says in its warnings that it replaced one.
		if !hasRecord[q.runID] {
			damaged = append(damaged, DamagedRecord{Job: l.Export, RunID: q.runID, Key: q.key, Quarantined: true,
				StartedAt: RunStart(q.runID), Cause: q.meta["cause"], Lost: q.meta["lost"]})
		}
	}
	slices.SortStableFunc(damaged, func(a, b DamagedRecord) int { return strings.Compare(b.RunID, a.RunID) })
	return &History{Records: recs, Damaged: damaged}, nil
}

// recordRef is where a run record is and the state its metadata shows
// ("" when the store lost it), so callers read only the records they need.
type recordRef struct {
	key   string
	runID string
	state State
	meta  map[string]string
}

// listRuns lists the export's run records, and the quarantined copies of
// damaged ones (see Layout.quarantined), each newest first.
func (l *Ledger) listRuns(ctx context.Context) (records, quarantined []recordRef, err error) {
	objs, err := l.st.List(ctx, l.runs())
	if err != nil {
		return nil, nil, fmt.Errorf("list run records: %w", err)
	}
	for _, o := range objs {
		id, name, ok := l.runKey(o.Key)
		if !ok {
			continue
		}
		ref := recordRef{key: o.Key, runID: id, state: State(o.Meta["state"]), meta: o.Meta}
		switch {
		case name == recordName:
			records = append(records, ref)
		case strings.HasPrefix(name, quarantinePrefix):
			ref.state = ""
			quarantined = append(quarantined, ref)
		}
	}
	newest := func(a, b recordRef) int { return strings.Compare(b.runID, a.runID) }
	slices.SortStableFunc(records, newest)
	slices.SortStableFunc(quarantined, newest)
	return records, quarantined, nil
}

// FinishedRecords keeps the finished run records of one export that
// Ledger.HistoryKeeping read, so that reading the history again reads from
// the store only the records that can still change: a finished record is
// never written again (retention deletes it, whole). It keeps only the
// records among the last read, so it never grows beyond them. The zero
// value is ready; it is safe for concurrent use.
type FinishedRecords struct {
	mu   sync.Mutex
	recs map[string]*Record // by key
}

// get returns the record kept of key, or nil.
func (f *FinishedRecords) get(key string) *Record {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.recs[key]
}

// keep replaces what f holds by the finished records among recs.
func (f *FinishedRecords) keep(recs map[string]*Record) {
	if f == nil {
		return
	}
	maps.DeleteFunc(recs, func(_ string, r *Record) bool { return !r.State.Final() })
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs = recs
}

// readRecords reads the records refs point to, in the same order, and
// describes those that are damaged; a finished record kept holds is taken
// from it, and the finished records read are kept there (kept may be
// nil). Only a store that cannot be read fails it.
func (l *Ledger) readRecords(ctx context.Context, refs []recordRef, kept *FinishedRecords) ([]*Record, []DamagedRecord, error) {
	recs := make([]*Record, 0, len(refs))
	var damaged []DamagedRecord
	read := make(map[string]*Record, len(refs))
	for _, ref := range refs {
		if rec := kept.get(ref.key); rec != nil {
			recs = append(recs, rec)
			read[ref.key] = rec
			continue
		}
		rec, err := l.read(ctx, ref.key)
		var de *damagedError
		switch {
		case errors.As(err, &de):
			job, _ := recordOwner(ref.key)
			damaged = append(damaged, DamagedRecord{Job: job, RunID: ref.runID, Key: ref.key, State: ref.state,
				StartedAt: RunStart(ref.runID), Cause: de.cause})
		case errors.Is(err, store.ErrNotExist):
			// Deleted since the listing (retention, a quarantine).
		case err != nil:
			return nil, nil, err
		default:
			recs = append(recs, rec)
			read[ref.key] = rec
		}
	}
	kept.keep(read)
	return recs, damaged, nil
}

// damagedRun is a run marked active whose record is damaged.
type damagedRun struct {
	runID  string
	key    string       // its record
	marker store.Object // its active marker
	cause  string
}

// staleMarker is how long a marker may stand without its run's record
// before it is removed: a run being started writes its marker just before
// its first record.
const staleMarker = 10 * time.Minute

// unfinished reads the records of the export's runs that are not in a
// final state, oldest first, and lists those marked active whose record is
// damaged apart, for the caller to quarantine. It reads only the runs
// marked active; a marker whose record is final (its deletion failed) or
// missing is removed.
func (l *Ledger) unfinished(ctx context.Context) ([]*Record, []damagedRun, error) {
	objs, err := l.st.List(ctx, l.actives())
	if err != nil {
		return nil, nil, fmt.Errorf("list active runs: %w", err)
	}
	var out []*Record
	var damaged []damagedRun
	for _, o := range objs { // keys sort by run ID: oldest first
		id, err := store.UnescapeName(path.Base(o.Key))
		if err != nil {
			continue
		}
		key := l.Record(id)
		rec, err := l.read(ctx, key)
		var de *damagedError
		switch {
		case errors.Is(err, store.ErrNotExist):
			if l.clock.Since(o.ModTime) > staleMarker {
				_ = l.st.Delete(ctx, o.Key)
			}
		case errors.As(err, &de):
			damaged = append(damaged, damagedRun{runID: id, key: key, marker: o, cause: de.cause})
		case err == nil && rec.State.Final():
			_ = l.st.Delete(ctx, o.Key)
		case err != nil:
			return nil, nil, err
		default:
			out = append(out, rec)
		}
	}
	return out, damaged, nil
}

// Unfinished returns the export's runs whose records are not in a final
// state, oldest first: runs cut off by a stop or a crash, to resume. A
// damaged record among them is quarantined on the way, and the run
// rebuilt from what still names its F&O execution, base giving what the
// export's configuration says (see Salvage), or given up.
func (l *Ledger) Unfinished(ctx context.Context, base *Record) ([]*Record, error) {
	recs, damaged, err := l.unfinished(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range damaged {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if rec := l.salvage(ctx, d, base); rec != nil {
			recs = append(recs, rec)
		}
	}
	slices.SortStableFunc(recs, func(a, b *Record) int { return strings.Compare(a.RunID, b.RunID) })
	return recs, nil
}

// Running names an unfinished run of the export that a live process owns,
// or returns "". A damaged record never keeps a run out: it is
// quarantined by the scan for runs to resume (Unfinished).
func (l *Ledger) Running(ctx context.Context) (string, error) {
	recs, _, err := l.unfinished(ctx)
	if err != nil {
		return "", err
	}
	var now time.Time
	for _, rec := range recs {
		h, err := l.holder(ctx, l.Leases(rec.RunID), func() time.Time {
			if now.IsZero() {
				now = l.storeNow(ctx)
			}
			return now
		})
		if err != nil || !h.Alive {
			continue
		}
		return fmt.Sprintf("run %s in state %s, owned by %s", rec.RunID, rec.State, h.Owner), nil
	}
	return "", nil
}
