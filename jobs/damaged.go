package jobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/dmfexport/dmfexport/store"
)

// A run record damaged outside dmfexport (truncated, emptied, overwritten
// by hand: dmfexport's own writes are atomic) must not block its export:
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

// quarantineSuffix starts the last segment of a quarantined record's key.
const quarantineSuffix = "run.json.damaged-"

// quarantineKey is where the damaged record at key is moved to.
func quarantineKey(key string, now time.Time) string {
	return path.Join(path.Dir(key), quarantineSuffix+now.UTC().Format("20060102T150405.000Z"))
}

// unfinished returns the unfinished runs of exp, oldest first, after
// quarantining the damaged records among them; a rebuilt run is among
// those returned.
func (r *Runner) unfinished(ctx context.Context, st store.Store, exp *Export) ([]*RunRecord, error) {
	recs, damaged, err := unfinishedRecords(ctx, st, exp.Store.Prefix, exp.Name)
	if err != nil {
		return nil, err
	}
	for _, d := range damaged {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if rec := r.salvage(ctx, exp, st, d); rec != nil {
			recs = append(recs, rec)
		}
	}
	slices.SortStableFunc(recs, func(a, b *RunRecord) int { return strings.Compare(a.RunID, b.RunID) })
	return recs, nil
}

// salvage quarantines the damaged record of run d and returns the record
// rebuilt in its place, or nil when the run is given up, left to a live
// owner, or the store refused. It never fails: what it could not do is
// logged and tried again at the next scan.
func (r *Runner) salvage(ctx context.Context, exp *Export, st store.Store, d damagedRun) *RunRecord {
	log := r.logger().With("export", exp.Name, "run", d.runID)
	if o, err := st.Stat(ctx, d.key); err == nil && State(o.Meta["state"]).Final() {
		// Its last write was final: the marker outlived it.
		_ = st.Delete(ctx, d.marker.Key)
		log.Warn("run record damaged; the run had finished, so nothing is resumed; dmfexport status names the record",
			"key", d.key, "cause", d.cause, "state", o.Meta["state"])
		return nil
	}
	// Of several replicas scanning, the one that takes the next lease
	// generation quarantines; a live owner keeps its run.
	prefix := leasePrefix(exp.Store.Prefix, exp.Name, d.runID)
	gen, obj, err := newestLease(ctx, st, prefix)
	if err != nil {
		log.Warn("run record damaged; not quarantined now (leases unreadable), retried at the next scan", "key", d.key, "cause", d.cause, "err", err)
		return nil
	}
	if gen > 0 {
		if alive, owner := leaseAlive(ctx, st, obj, r.leaseTTL(), storeNow(ctx, st, exp.Store.Prefix)); alive {
			log.Warn("run record damaged, but a live process owns the run; left to it", "key", d.key, "cause", d.cause, "owner", owner)
			return nil
		}
	}
	lease, err := acquireLease(ctx, st, prefix, gen+1, r.leaseTTL())
	if err != nil {
		log.Debug("damaged run record taken care of by another process", "key", d.key, "err", err)
		return nil
	}
	defer lease.release(context.WithoutCancel(ctx))
	var de *damagedError
	switch rec, err := readRecord(ctx, st, d.key); {
	case err == nil && !rec.State.Final():
		return rec // rewritten meanwhile
	case !errors.As(err, &de):
		return nil // gone, final, or unreadable store: the next scan sees
	}
	pkg, pkgErr := storedPackage(ctx, st, exp, d.runID)
	lost := "the count of confirmed batches: rebuilt from the stored package, the run publishes every entity again from its first batch, under the same message IDs"
	if pkgErr != nil {
		// No package: the record's own metadata may still name the
		// execution (or show the run never reached F&O).
		if o, err := st.Stat(ctx, d.key); err == nil {
			switch id, state := o.Meta["executionid"], State(o.Meta["state"]); {
			case id != "" && checkExecutionID(id) == nil && state.known():
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
			"its stored objects stay under " + runPrefix(exp.Store.Prefix, exp.Name, d.runID)
	}
	qkey, err := quarantine(ctx, st, d.key, map[string]string{"export": exp.Name, "run": d.runID, "cause": de.cause, "lost": lost})
	if err != nil {
		log.Warn("run record damaged; it could not be quarantined, so its run is skipped until it can", "key", d.key, "cause", de.cause, "err", err)
		return nil
	}
	if pkgErr != nil {
		if err := st.Delete(ctx, d.marker.Key); err != nil {
			log.Warn("could not clear the active marker of a run given up; cleared at the next scan", "err", err)
		}
		log.Warn("run record damaged: quarantined; its run is lost and never resumed", "key", d.key, "quarantined_as", qkey, "cause", de.cause, "lost", lost)
		return nil
	}
	rec := rebuiltRecord(exp, d, pkg, qkey, de.cause)
	if err := saveRecord(ctx, st, exp.Store.Prefix, rec); err != nil {
		log.Warn("run record damaged: quarantined, but the rebuilt record could not be written; retried at the next scan",
			"key", d.key, "quarantined_as", qkey, "err", err)
		// Put the damaged bytes back, so the next scan finds the run.
		restoreQuarantined(ctx, st, qkey, d.key, log)
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
func storedPackage(ctx context.Context, st store.Store, exp *Export, runID string) (packageRef, error) {
	key := path.Join(runPrefix(exp.Store.Prefix, exp.Name, runID), "package.zip")
	o, err := st.Stat(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotExist):
		return packageRef{}, errors.New("it stored no package, and nothing else names its F&O execution")
	case err != nil:
		return packageRef{}, fmt.Errorf("its stored package %s is unreadable (%v)", key, err)
	}
	ref := packageRef{key: key, executionID: o.Meta["executionid"], sha256: o.Meta["sha256"], size: o.Size, modTime: o.ModTime}
	if checkExecutionID(ref.executionID) != nil || len(ref.sha256) != 64 {
		return packageRef{}, fmt.Errorf("its stored package %s does not name its execution and checksum", key)
	}
	return ref, nil
}

// rebuiltRecord is the record of run d written from its stored package: a
// run whose package is downloaded, not yet unpacked. The batch settings
// are the export's current ones (the record that held the first ones is
// gone).
func rebuiltRecord(exp *Export, d damagedRun, pkg packageRef, qkey, cause string) *RunRecord {
	started := runStart(d.runID)
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
	return &RunRecord{
		Job: exp.Name, RunID: d.runID, Trigger: "rebuilt", StartedAt: started, State: state,
		DefinitionGroup: exp.DefinitionGroup, LegalEntity: exp.LegalEntity,
		ExecutionID: pkg.executionID, PackageKey: pkg.key, PackageBytes: pkg.size, PackageSHA256: pkg.sha256,
		Batching: batchSettingsOf(exp),
		Warnings: []string{fmt.Sprintf("the run record was damaged (%s) and quarantined as %s; rebuilt from %s, "+
			"so every entity was published again from its first batch under the same message IDs, with the export's batch settings of the rebuild", cause, qkey, from)},
	}
}

// quarantine moves the object at key aside, with meta, and returns where.
func quarantine(ctx context.Context, st store.Store, key string, meta map[string]string) (string, error) {
	rc, err := st.Open(ctx, key)
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	rc.Close()
	if err != nil {
		return "", err
	}
	qkey := quarantineKey(key, time.Now())
	if _, err := st.Put(ctx, qkey, bytes.NewReader(b), meta); err != nil {
		return "", err
	}
	if err := st.Delete(ctx, key); err != nil {
		_ = st.Delete(ctx, qkey)
		return "", err
	}
	return qkey, nil
}

// restoreQuarantined moves a quarantined record back to key.
func restoreQuarantined(ctx context.Context, st store.Store, qkey, key string, log *slog.Logger) {
	rc, err := st.Open(ctx, qkey)
	if err == nil {
		_, err = st.Put(ctx, key, rc, nil)
		rc.Close()
	}
	if err == nil {
		err = st.Delete(ctx, qkey)
	}
	if err != nil {
		log.Warn("could not move the damaged record back; its run is skipped until an operator looks", "quarantined_as", qkey, "err", err)
	}
}
