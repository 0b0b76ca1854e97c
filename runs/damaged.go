package runs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/dmfexport/dmfexport/store"
)

// A run record damaged outside dmfexport (truncated, emptied, overwritten
// by hand: the ledger's own writes are atomic) must not block its export:
// the scan for unfinished runs quarantines it — its bytes are moved aside
// to "<export>/<run>/run.json.damaged-<time>", with the cause and what
// became of the run in the copy's metadata — and the run is then rebuilt,
// from the first of these that says enough, or given up:
//
//   - The run's stored package ("<run>/package.zip", whose metadata names
//     the execution and the package's SHA-256): a new record in state
//     downloading; the resume unpacks the stored package again.
//   - The record's own metadata, where it outlives the bytes (a directory
//     store's sidecar): the execution ID (state exporting: the resume asks
//     F&O for that execution and downloads its package again), or state
//     pending without one (the run had not asked F&O yet: it now does).
//
// Either way every entity is published from its first batch: batches the
// broker confirmed before go again under the same message IDs (the record
// that counted them is gone), and there is no second export. When nothing
// names the run's F&O execution, the run's active marker is cleared, so it
// is never resumed, and the next run exports again. Its stored objects
// stay where they are.
//
// A damaged record of a finished run is left in place: status names it,
// and retention deletes it with its run.

// ErrDamagedRecord is wrapped by the error of reading a run record that
// is not one: truncated, empty, not JSON, JSON of another shape, or
// missing what a run needs (its run ID, its export, a known state, its
// start, the execution ID of a run past pending).
var ErrDamagedRecord = errors.New("run record is damaged")

// damagedError is a damaged record: where it is and what is wrong.
type damagedError struct {
	key, cause string
}

func (e *damagedError) Error() string {
	return fmt.Sprintf("read run record %s: damaged: %s", e.key, e.cause)
}

func (e *damagedError) Unwrap() error { return ErrDamagedRecord }

// DamagedRecord is a run record that cannot be read as one, as status
// shows it.
type DamagedRecord struct {
	Job   string // the export, from the record's key
	RunID string // from the record's key
	// Key is where the damaged bytes are: the run's run.json, or, once
	// quarantined, the copy beside it (Quarantined).
	Key         string
	Quarantined bool
	State       State     // the state the store's metadata of run.json gives; "" when unknown
	StartedAt   time.Time // from the run ID; zero when it does not start with a time
	Cause       string    // why it cannot be read
	Lost        string    // of a quarantined record: what became of its run
}

// read reads the record at key.
func (l *Ledger) read(ctx context.Context, key string) (*Record, error) {
	rc, err := l.st.Open(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read run record %s: %w", key, err)
	}
	defer func() { _ = rc.Close() }()
	// Only the bytes can be damaged: a read the store cut short is its
	// error, and reading again may succeed.
	src := &readErr{r: rc}
	var rec Record
	if err := json.NewDecoder(src).Decode(&rec); err != nil {
		switch {
		case src.err != nil:
			return nil, fmt.Errorf("read run record %s: %w", key, src.err)
		case errors.Is(err, io.EOF):
			return nil, &damagedError{key: key, cause: "empty"}
		default:
			return nil, &damagedError{key: key, cause: "not a JSON run record: " + err.Error()}
		}
	}
	if cause := checkRecord(&rec, key); cause != "" {
		return nil, &damagedError{key: key, cause: cause}
	}
	return &rec, nil
}

// readErr keeps the first error of r other than io.EOF.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// checkRecord says what a decoded record lacks to be the record of the run
// stored at key, or "". A record a run could not be resumed from safely
// (no run ID: its objects and messages would be written under another;
// no execution ID past pending: a second export) is damaged.
func checkRecord(rec *Record, key string) string {
	job, runID := recordOwner(key)
	switch {
	case rec.RunID == "":
		return "no run ID"
	case rec.RunID != runID:
		return fmt.Sprintf("it names run %q but is stored as run %q", rec.RunID, runID)
	case rec.Job == "":
		return "no export name"
	case rec.Job != job:
		return fmt.Sprintf("it names export %q but is stored under export %q", rec.Job, job)
	case !rec.State.known():
		return fmt.Sprintf("unknown state %q", rec.State)
	case rec.StartedAt.IsZero():
		return "no start time"
	case rec.ExecutionID == "" && !rec.State.Final() && rec.State != StatePending:
		return fmt.Sprintf("state %s without an execution ID", rec.State)
	case rec.ExecutionID != "" && CheckExecutionID(rec.ExecutionID) != nil:
		return fmt.Sprintf("unusable execution ID %q", rec.ExecutionID)
	}
	return ""
}

// salvage quarantines the damaged record of run d and returns the record
// rebuilt in its place, or nil when the run is given up, left to a live
// owner, or the store refused. It never fails: what it could not do is
// logged and tried again at the next scan.
func (l *Ledger) salvage(ctx context.Context, d damagedRun, base *Record) *Record {
	log := l.log.With("export", l.Export, "run", d.runID)
	if o, err := l.st.Stat(ctx, d.key); err == nil && State(o.Meta["state"]).Final() {
		// Its last write was final: the marker outlived it.
		_ = l.st.Delete(ctx, d.marker.Key)
		log.Warn("run record damaged; the run had finished, so nothing is resumed; dmfexport status names the record",
			"key", d.key, "cause", d.cause, "state", o.Meta["state"])
		return nil
	}
	// Of several replicas scanning, the one that takes the next lease
	// generation quarantines; a live owner keeps its run.
	h, err := l.RunHolder(ctx, d.runID)
	if err != nil {
		log.Warn("run record damaged; not quarantined now (leases unreadable), retried at the next scan", "key", d.key, "cause", d.cause, "err", err)
		return nil
	}
	if h.Alive {
		log.Warn("run record damaged, but a live process owns the run; left to it", "key", d.key, "cause", d.cause, "owner", h.Owner)
		return nil
	}
	lease, err := l.TakeLease(ctx, d.runID, h.Gen+1)
	if err != nil {
		log.Debug("damaged run record taken care of by another process", "key", d.key, "err", err)
		return nil
	}
	defer lease.Release(context.WithoutCancel(ctx))
	var de *damagedError
	switch rec, err := l.read(ctx, d.key); {
	case err == nil && !rec.State.Final():
		return rec // rewritten meanwhile
	case !errors.As(err, &de):
		return nil // gone, final, or unreadable store: the next scan sees
	}
	pkg, pkgErr := l.storedPackage(ctx, d.runID)
	lost := "the count of confirmed batches: rebuilt from the stored package, the run publishes every entity again from its first batch, under the same message IDs"
	if pkgErr != nil {
		// No package: the record's own metadata may still name the
		// execution (or show the run never reached F&O).
		if o, err := l.st.Stat(ctx, d.key); err == nil {
			switch id, state := o.Meta["executionid"], State(o.Meta["state"]); {
			case id != "" && CheckExecutionID(id) == nil && state.known():
				pkg, pkgErr = packageRef{executionID: id}, nil
				lost = "the record's progress: rebuilt from its metadata, the run asks F&O for execution " + id + " again, downloads its package and publishes every entity from its first batch"
			case id == "" && state == StatePending:
				pkg, pkgErr = packageRef{}, nil
				lost = "the record's details: rebuilt from its metadata, the run had not asked F&O to export yet, and now does"
			}
		}
	}
	if pkgErr != nil {
		lost = "run given up: " + pkgErr.Error() + ", so the rest of its rows cannot be delivered from this run; the next run exports again " +
			"(if its export had started in F&O, the rows of IncrementalPush entities in it are lost: export them with a full push); " +
			"its stored objects stay under " + l.Run(d.runID)
	}
	qkey, err := l.quarantine(ctx, d.runID, map[string]string{"export": l.Export, "run": d.runID, "cause": de.cause, "lost": lost})
	if err != nil {
		log.Warn("run record damaged; it could not be quarantined, so its run is skipped until it can", "key", d.key, "cause", de.cause, "err", err)
		return nil
	}
	if pkgErr != nil {
		if err := l.st.Delete(ctx, d.marker.Key); err != nil {
			log.Warn("could not clear the active marker of a run given up; cleared at the next scan", "err", err)
		}
		log.Warn("run record damaged: quarantined; its run is lost and never resumed", "key", d.key, "quarantined_as", qkey, "cause", de.cause, "lost", lost)
		return nil
	}
	rec := rebuiltRecord(l.Export, base, d, pkg, qkey, de.cause)
	if err := l.Save(ctx, rec); err != nil {
		log.Warn("run record damaged: quarantined, but the rebuilt record could not be written; retried at the next scan",
			"key", d.key, "quarantined_as", qkey, "err", err)
		// Put the damaged bytes back, so the next scan finds the run.
		l.restoreQuarantined(ctx, qkey, d.key, log)
		return nil
	}
	log.Warn("run record damaged: quarantined and rebuilt; the run resumes from it",
		"key", d.key, "quarantined_as", qkey, "cause", de.cause, "execution", rec.ExecutionID, "lost", lost)
	return rec
}

// packageRef is a run's stored package, as its metadata describes it.
type packageRef struct {
	key, executionID, sha256 string
	size                     int64
	modTime                  time.Time
}

// storedPackage finds the package a run stored, or says why there is none
// to rebuild its record from.
func (l *Ledger) storedPackage(ctx context.Context, runID string) (packageRef, error) {
	key := l.Package(runID)
	o, err := l.st.Stat(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotExist):
		return packageRef{}, errors.New("it stored no package, and nothing else names its F&O execution")
	case err != nil:
		return packageRef{}, fmt.Errorf("its stored package %s is unreadable (%w)", key, err)
	}
	ref := packageRef{key: key, executionID: o.Meta["executionid"], sha256: o.Meta["sha256"], size: o.Size, modTime: o.ModTime}
	if CheckExecutionID(ref.executionID) != nil || len(ref.sha256) != 64 {
		return packageRef{}, fmt.Errorf("its stored package %s does not name its execution and checksum", key)
	}
	return ref, nil
}

// rebuiltRecord is the record of run d written from its stored package: a
// run whose package is downloaded, not yet unpacked. The definition
// group, legal entity and batch settings are base's, the export's current
// ones (the record that held the first ones is gone).
func rebuiltRecord(export string, base *Record, d damagedRun, pkg packageRef, qkey, cause string) *Record {
	started := RunStart(d.runID)
	if started.IsZero() {
		started = d.marker.ModTime.UTC()
	}
	state, from := StateDownloading, "the stored package"
	switch {
	case pkg.executionID == "":
		state, from = StatePending, "its metadata (it had not exported yet)"
	case pkg.key == "":
		state, from = StateExporting, "its metadata (execution "+pkg.executionID+")"
	}
	return &Record{
		Job: export, RunID: d.runID, Trigger: "rebuilt", StartedAt: started, State: state,
		DefinitionGroup: base.DefinitionGroup, LegalEntity: base.LegalEntity,
		ExecutionID: pkg.executionID, PackageKey: pkg.key, PackageBytes: pkg.size, PackageSHA256: pkg.sha256,
		Batching: base.Batching,
		Warnings: []string{fmt.Sprintf("the run record was damaged (%s) and quarantined as %s; rebuilt from %s, "+
			"so every entity was published again from its first batch under the same message IDs, with the export's batch settings of the rebuild", cause, qkey, from)},
	}
}

// quarantine moves run runID's record aside, with meta, and returns where.
func (l *Ledger) quarantine(ctx context.Context, runID string, meta map[string]string) (string, error) {
	key := l.Record(runID)
	rc, err := l.st.Open(ctx, key)
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	_ = rc.Close()
	if err != nil {
		return "", err
	}
	qkey := l.quarantined(runID, l.clock.Now())
	if _, err := l.st.Put(ctx, qkey, bytes.NewReader(b), meta); err != nil {
		return "", err
	}
	if err := l.st.Delete(ctx, key); err != nil {
		_ = l.st.Delete(ctx, qkey)
		return "", err
	}
	return qkey, nil
}

// restoreQuarantined moves a quarantined record back to key.
func (l *Ledger) restoreQuarantined(ctx context.Context, qkey, key string, log *slog.Logger) {
	rc, err := l.st.Open(ctx, qkey)
	if err == nil {
		_, err = l.st.Put(ctx, key, rc, nil)
		_ = rc.Close()
	}
	if err == nil {
		err = l.st.Delete(ctx, qkey)
	}
	if err != nil {
		log.Warn("could not move the damaged record back; its run is skipped until an operator looks", "quarantined_as", qkey, "err", err)
	}
}
