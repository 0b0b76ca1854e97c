package jobs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dmfexport/dmfexport/internal/process"
	"github.com/dmfexport/dmfexport/store"
)

// packageTempPrefix starts the name of the temporary file a run downloads
// its package into: "dmfexport-package-<pid>-<random>.zip", so a later
// start can tell the files of processes that are gone from those in use.
const packageTempPrefix = "dmfexport-package-"

// LeftoverAge is how old a leftover file must be before CleanLeftovers
// removes it when nothing else shows it is abandoned.
const LeftoverAge = time.Hour

// createPackageTemp creates the temporary package file of a run.
func createPackageTemp() (*os.File, error) {
	return os.CreateTemp("", fmt.Sprintf("%s%d-*.zip", packageTempPrefix, os.Getpid()))
}

// CleanLeftovers removes what runs cut off by a crash (kill -9, power loss)
// left behind, as dmfexport starts: package files in the temporary
// directory whose process is gone (or, named by an earlier version without
// a process ID, older than LeftoverAge), and directory stores' temporary
// files older than LeftoverAge. It never stops a start: problems are
// logged.
func (r *Runner) CleanLeftovers(ctx context.Context, cfg *Config) {
	log := r.logger()
	if n := removePackageTemps(os.TempDir(), r.clock().Now()); n > 0 {
		log.Info("removed package files left by crashed runs", "dir", os.TempDir(), "files", n)
	}
	seen := map[string]bool{}
	for i := range cfg.Exports {
		c := cfg.Exports[i].Store
		if c.Type != "dir" || seen[c.Path] {
			continue
		}
		seen[c.Path] = true
		st, err := openStore(ctx, c, nil)
		if err != nil {
			continue // the run that needs it says why
		}
		ds, ok := st.(*store.DirStore)
		if !ok {
			continue
		}
		n, err := ds.RemoveStaleTemp(ctx, LeftoverAge)
		if err != nil {
			log.Warn("could not remove all temporary files left in the store", "store", c.Path, "err", err)
		}
		if n > 0 {
			log.Info("removed temporary files left in the store by crashed writes", "store", c.Path, "files", n)
		}
	}
}

// removePackageTemps removes the abandoned package files in dir and
// returns how many: those of a process that no longer exists, and those
// without a process ID in their name last modified before now-LeftoverAge.
func removePackageTemps(dir string, now time.Time) int {
	matches, _ := filepath.Glob(filepath.Join(dir, packageTempPrefix+"*.zip"))
	removed := 0
	for _, m := range matches {
		rest := strings.TrimPrefix(filepath.Base(m), packageTempPrefix)
		pidPart, _, withPID := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidPart)
		var stale bool
		if withPID && err == nil && pid > 0 {
			stale = !process.Alive(pid)
		} else if fi, err := os.Stat(m); err == nil {
			stale = now.Sub(fi.ModTime()) > LeftoverAge
		}
		if stale && os.Remove(m) == nil {
			removed++
		}
	}
	return removed
}
