package jobs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dmfexport/dmfexport/store"
)

// prune deletes the finished runs of exp that its retention rules let go,
// oldest first, and returns their run IDs. A run's objects are deleted
// before its record, so an interrupted prune leaves a record that the next
// prune finishes, never objects nobody knows of. Unfinished runs are kept.
func prune(ctx context.Context, st store.Store, exp *Export, now time.Time) ([]string, error) {
	r := exp.Retention
	if r.KeepRuns == 0 && r.MaxAge == 0 {
		return nil, nil
	}
	// Decide from the listing alone: the state is in each record's
	// metadata and the start time in its run ID, so a prune after every run
	// reads no record unless the store lost that metadata.
	refs, quarantined, err := listRuns(ctx, st, exp.Store.Prefix, exp.Name)
	if err != nil {
		return nil, err
	}
	var deleted []string
	var errs []error
	finished := 0
	hasRecord := map[string]bool{}
	for _, ref := range refs { // newest first
		hasRecord[ref.runID] = true
		state, started := ref.state, runStart(ref.runID)
		if state == "" || started.IsZero() {
			rec, err := readRecord(ctx, st, ref.key)
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
		if err := deleteRun(ctx, st, exp.Store.Prefix, exp.Name, ref.runID); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, ref.runID)
	}
	// A run given up for a damaged record keeps its quarantined record and
	// objects for the operator, until max_age.
	for _, q := range quarantined {
		started := runStart(q.runID)
		if hasRecord[q.runID] || r.MaxAge == 0 || started.IsZero() || now.Sub(started) <= r.MaxAge || slices.Contains(deleted, q.runID) {
			continue
		}
		if err := deleteRun(ctx, st, exp.Store.Prefix, exp.Name, q.runID); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, q.runID)
	}
	return deleted, errors.Join(errs...)
}

// runStart reads the start time a run ID begins with (see newRunID); zero
// when it does not.
func runStart(runID string) time.Time {
	stamp, _, _ := strings.Cut(runID, "-")
	t, err := time.Parse(runIDTime, stamp)
	if err != nil {
		return time.Time{}
	}
	return t
}

// deleteRun removes every object of one run, its record last, then any
// lease it left and, in a directory store, the folders that held them.
func deleteRun(ctx context.Context, st store.Store, storePrefix, job, runID string) error {
	prefix := runPrefix(storePrefix, job, runID) + "/"
	objs, err := st.List(ctx, prefix)
	if err != nil {
		return fmt.Errorf("retention: list run %s: %w", runID, err)
	}
	recKey := recordKey(storePrefix, job, runID)
	for _, o := range objs {
		if o.Key == recKey {
			continue
		}
		if err := st.Delete(ctx, o.Key); err != nil {
			return fmt.Errorf("retention: delete %s: %w", o.Key, err)
		}
	}
	if err := st.Delete(ctx, recKey); err != nil {
		return fmt.Errorf("retention: delete %s: %w", recKey, err)
	}
	removeEmptyFolders(st, runPrefix(storePrefix, job, runID))
	// A finished run's leases were released; one left by a failed release
	// is stale, and its empty folder is left in any case.
	leases := leasePrefix(storePrefix, job, runID)
	if objs, err := st.List(ctx, leases+"/"); err == nil {
		for _, o := range objs {
			_ = st.Delete(ctx, o.Key)
		}
	}
	removeEmptyFolders(st, leases)
	return nil
}

// removeEmptyFolders removes, in a directory store, the empty folders at
// and under prefix, deepest first. A folder that still holds a file is
// kept. Other stores have no folders to remove.
func removeEmptyFolders(st store.Store, prefix string) {
	ds, ok := st.(*store.DirStore)
	if !ok {
		return
	}
	var dirs []string
	_ = filepath.WalkDir(filepath.Join(ds.Root(), filepath.FromSlash(prefix)), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- { // children come after their parent
		_ = os.Remove(dirs[i]) // fails, as wanted, on a folder that is not empty
	}
}

// claimTTL is how long a schedule slot's claim is kept: long enough that no
// replica still fires that slot, short enough that the claims stay few.
const claimTTL = time.Hour

// pruneClaims deletes the schedule slot claims of exp older than claimTTL.
func pruneClaims(ctx context.Context, st store.Store, exp *Export, now time.Time) error {
	objs, err := st.List(ctx, path.Join(exp.Store.Prefix, "_claims", store.EscapeName(exp.Name))+"/")
	if err != nil {
		return fmt.Errorf("retention: list claims: %w", err)
	}
	var errs []error
	for _, o := range objs {
		slot, err := time.Parse("20060102T150405Z", path.Base(o.Key))
		if err != nil || now.Sub(slot) < claimTTL {
			continue
		}
		if err := st.Delete(ctx, o.Key); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
