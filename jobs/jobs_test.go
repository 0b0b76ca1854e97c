package jobs

import (
	"testing"

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
