package jobs

import (
	"testing"

	"github.com/dmfexport/dmfexport/unpack"
)

func mustDirStore(t *testing.T, dir string) unpack.Store {
	t.Helper()
	s, err := unpack.NewDirStore(dir)
	if err != nil {
		t.Fatalf("NewDirStore(%s): %v", dir, err)
	}
	return s
}
