package jobs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
)

func mustDirStore(t *testing.T, dir string) store.Store {
	t.Helper()
	s, err := store.NewDirStore(dir)
	if err != nil {
		t.Fatalf("NewDirStore(%s): %v", dir, err)
	}
	return s
}

// ledgerOf is the ledger of exp's runs in st, as a Runner without
// settings has it.
func ledgerOf(st store.Store, exp *Export) *runs.Ledger { return (&Runner{}).ledger(st, exp) }

// leaseKey is the key of generation gen in a folder of lease generations
// (runs.Layout.Leases, runs.Layout.ProjectLeases).
func leaseKey(folder string, gen int) string { return fmt.Sprintf("%s/%08d", folder, gen) }

// ageObject dates the object at key of the directory store at root back
// by age on the store's clock, the file system's, as if its writer had
// stopped refreshing it then.
func ageObject(t *testing.T, root, key string, age time.Duration) {
	t.Helper()
	name := filepath.Join(root, filepath.FromSlash(key))
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(name, fi.ModTime().Add(-age), fi.ModTime().Add(-age)); err != nil {
		t.Fatal(err)
	}
}

// saveRecord writes rec into st under the key prefix, as the ledger of
// its export does.
func saveRecord(ctx context.Context, st store.Store, prefix string, rec *runs.Record) error {
	return runs.NewLedger(st, prefix, rec.Job, runs.Options{}).Save(ctx, rec)
}
