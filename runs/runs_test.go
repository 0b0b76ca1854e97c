package runs

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dmfexport/dmfexport/store"
)

// testLedger is the ledger of export "job" in a new directory store, on a
// fake clock at now, with leases of ttl.
func testLedger(t *testing.T, now time.Time, ttl time.Duration) (*Ledger, *store.DirStore, *clockwork.FakeClock) {
	t.Helper()
	st, err := store.NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	clock := clockwork.NewFakeClockAt(now)
	return NewLedger(st, "", "job", Options{Clock: clock, LeaseTTL: ttl}), st, clock
}

// ageObject dates the object at key of a directory store back by age on
// the store's clock, the file system's, as if its writer had stopped
// refreshing it then.
func ageObject(t *testing.T, st *store.DirStore, key string, age time.Duration) {
	t.Helper()
	name := filepath.Join(st.Root(), filepath.FromSlash(key))
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(name, fi.ModTime().Add(-age), fi.ModTime().Add(-age)); err != nil {
		t.Fatal(err)
	}
}
