// Package storetest gives other packages' tests the stores that dmfexport
// runs on: a DirStore in a temporary directory and, where Azurite runs, a
// BlobStore in a fresh container, so a step can be tested against every
// backend without knowing how each one is set up.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/store"
)

// Dir returns a DirStore in a fresh temporary directory removed when the
// test ends.
func Dir(t testing.TB) *store.DirStore {
	t.Helper()
	s, err := store.NewDirStore(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatalf("NewDirStore: %v", err)
	}
	return s
}

// Blob returns a BlobStore on a fresh Azurite container deleted when the
// test ends, or skips the test without Azurite. Zero BlockSize and
// Concurrency in opts mean 1 MiB and 2, so multi-block uploads are cheap to
// test; without a connection string, SAS URL or account URL it uses
// Azurite's shared key.
func Blob(t testing.TB, opts store.BlobOptions) *store.BlobStore {
	t.Helper()
	testenv.AzuriteEndpoint(t) // skips without Azurite
	if opts.ConnectionString == "" && opts.SASURL == "" && opts.AccountURL == "" {
		opts.ConnectionString = testenv.AzuriteConnString(t)
	}
	if opts.Container == "" && opts.SASURL == "" {
		opts.Container = RandomContainer()
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = 1 << 20
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 2
	}
	s, err := store.NewBlobStore(context.Background(), opts)
	if err != nil {
		t.Fatalf("NewBlobStore: %v", err)
	}
	if opts.ConnectionString != "" {
		name := opts.Container
		cs := opts.ConnectionString
		t.Cleanup(func() {
			if cc, err := container.NewClientFromConnectionString(cs, name, nil); err == nil {
				_, _ = cc.Delete(context.Background(), nil)
			}
		})
	}
	return s
}

// RandomContainer names a fresh container so tests never see each other's
// blobs.
func RandomContainer() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "t-" + hex.EncodeToString(b)
}

// Backend is one Store implementation under test.
type Backend struct {
	Name string
	Open func(t *testing.T) store.Store
}

// Backends lists every Store implementation: "dir" and "azblob" (which
// skips without Azurite).
func Backends() []Backend {
	return []Backend{
		{"dir", func(t *testing.T) store.Store { return Dir(t) }},
		{"azblob", func(t *testing.T) store.Store { return Blob(t, store.BlobOptions{}) }},
	}
}

// ForEach runs fn as a subtest against every backend, so the backends
// cannot drift apart.
func ForEach(t *testing.T, fn func(t *testing.T, st store.Store)) {
	for _, b := range Backends() {
		t.Run(b.Name, func(t *testing.T) { fn(t, b.Open(t)) })
	}
}

// ReadAll returns the object's bytes or fails the test.
func ReadAll(t testing.TB, st store.Store, key string) string {
	t.Helper()
	rc, err := st.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return string(b)
}

// FilesUnder lists every file below dir, relative and '/'-separated.
func FilesUnder(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatalf("walk %s: %v", p, err)
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return out
}
