// Package runs keeps what the store holds about export runs: their records
// and states, the markers of unfinished runs, the leases that say which
// replica owns a run or holds a data project, the claims of schedule slots,
// retention, and the IDs runs and executions are known by. One Ledger,
// bound to a store and an export, reads and writes all of it, on an
// injected clock.
//
// It knows nothing of F&O, packages or brokers: the jobs package drives
// runs and tells the ledger what happened.
package runs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/dmfexport/dmfexport/store"
)

// The store's layout (docs/store-layout.md). Every key the ledger
// writes or reads is built here, under the store's prefix; export names
// and run IDs are escaped to one path segment (store.EscapeName):
//
//	<prefix>/<export>/<run id>/run.json                  the run record
//	<prefix>/<export>/<run id>/run.json.damaged-<time>   a damaged record, quarantined
//	<prefix>/<export>/<run id>/package.zip               the package as downloaded
//	<prefix>/<export>/<run id>/entities/<entity>.<ext>   one object per entity (see unpack)
//	<prefix>/_active/<export>/<run id>                   marks a run unfinished
//	<prefix>/_leases/<export>/<run id>/<generation>      the owning replica's heartbeat
//	<prefix>/_claims/<export>/<slot time>                which replica ran a schedule slot
//	<prefix>/_groups/<data project>-<hash>/<generation>  the run exporting a data project
//	<prefix>/_clock                                      tells the store's clock (see Ledger.storeNow)
const (
	recordName       = "run.json"
	quarantinePrefix = "run.json.damaged-"
	packageName      = "package.zip"
	entitiesFolder   = "entities"
	activeFolder     = "_active"
	leasesFolder     = "_leases"
	claimsFolder     = "_claims"
	groupsFolder     = "_groups"
	clockName        = "_clock"

	// slotLayout names a claimed schedule slot (UTC).
	slotLayout = "20060102T150405Z"
	// quarantineLayout dates a quarantined record (UTC, milliseconds).
	quarantineLayout = "20060102T150405.000Z"
)

// Layout names the keys of one export's runs in a store.
type Layout struct {
	Prefix string // the store's key prefix (store.prefix), "" for none
	Export string // the export's name, as configured
}

// Run is the folder of one run: "<prefix>/<export>/<run id>".
func (l Layout) Run(runID string) string {
	return path.Join(l.Prefix, store.EscapeName(l.Export), store.EscapeName(runID))
}

// Record is where a run's record lives.
func (l Layout) Record(runID string) string { return path.Join(l.Run(runID), recordName) }

// Package is where a run keeps the package it downloaded.
func (l Layout) Package(runID string) string { return path.Join(l.Run(runID), packageName) }

// Entities is the folder of a run's entity objects.
func (l Layout) Entities(runID string) string { return path.Join(l.Run(runID), entitiesFolder) }

// quarantined is where the damaged record of a run is moved to at t.
func (l Layout) quarantined(runID string, t time.Time) string {
	return path.Join(l.Run(runID), quarantinePrefix+t.UTC().Format(quarantineLayout))
}

// runs is the prefix every run of the export is listed under.
func (l Layout) runs() string { return path.Join(l.Prefix, store.EscapeName(l.Export)) + "/" }

// Active marks a run unfinished: written before its first record, deleted
// once its record is final.
func (l Layout) Active(runID string) string {
	return path.Join(l.Prefix, activeFolder, store.EscapeName(l.Export), store.EscapeName(runID))
}

// actives is the prefix the export's active markers are listed under.
func (l Layout) actives() string {
	return path.Join(l.Prefix, activeFolder, store.EscapeName(l.Export)) + "/"
}

// Leases is the folder of a run's lease generations.
func (l Layout) Leases(runID string) string {
	return path.Join(l.Prefix, leasesFolder, store.EscapeName(l.Export), store.EscapeName(runID))
}

// generation is the key of one lease generation in the folder leases.
func generation(leases string, gen int) string { return fmt.Sprintf("%s/%08d", leases, gen) }

// Claim is the key whose creation claims one schedule slot of the export.
func (l Layout) Claim(slot time.Time) string {
	return path.Join(l.Prefix, claimsFolder, store.EscapeName(l.Export), slot.UTC().Format(slotLayout))
}

// claims is the prefix the export's claims are listed under.
func (l Layout) claims() string {
	return path.Join(l.Prefix, claimsFolder, store.EscapeName(l.Export)) + "/"
}

// ProjectLeases is the folder of the lease generations of a data project,
// shared by every export of it: its definition group, lower case, and a
// hash of the environment and group.
func (l Layout) ProjectLeases(p DataProject) string {
	sum := sha256.Sum256([]byte(p.Key()))
	return path.Join(l.Prefix, groupsFolder, store.EscapeName(strings.ToLower(p.Group))+"-"+hex.EncodeToString(sum[:6]))
}

// Clock is the object whose modification time tells the store's clock.
func (l Layout) Clock() string { return path.Join(l.Prefix, clockName) }

// runKey splits a key listed under the export's runs into its run ID and
// its name in the run's folder; ok is false for a key deeper than that (an
// entity object named run.json is not a record).
func (l Layout) runKey(key string) (runID, name string, ok bool) {
	rest, found := strings.CutPrefix(key, l.runs())
	parts := strings.Split(rest, "/")
	if !found || len(parts) != 2 {
		return "", "", false
	}
	id, _ := store.UnescapeName(parts[0])
	return id, parts[1], true
}

// recordOwner reads the export and run ID a record key names.
func recordOwner(key string) (export, runID string) {
	runID, _ = store.UnescapeName(path.Base(path.Dir(key)))
	export, _ = store.UnescapeName(path.Base(path.Dir(path.Dir(key))))
	return export, runID
}
