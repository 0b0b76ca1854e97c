// Package store keeps dmfexport's objects: packages, entity files, run
// records, leases and schedule claims.
//
// It owns the Store interface, the small set of operations the steps and
// the job runner need from a place that keeps objects, the key escaping
// every caller shares, and the create-once primitive several replicas
// coordinate through. DirStore keeps objects in a local directory and
// BlobStore in an Azure Blob Storage container; both pass the same
// conformance tests.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/dmfexport/dmfexport/internal/cause"
)

// Store is where packages and entity files are kept.
//
// Keys are '/'-separated and relative, with no "." or ".." segments and no
// empty segments. Put is atomic: the object is whole or absent (readers never
// see a partial object), and it replaces an existing one. If r returns an
// error, nothing is left behind. Metadata keys are stored lower-cased and
// must be a letter or '_' followed by letters, digits or '_' (what every
// backend can carry); values are any string and round-trip exactly.
type Store interface {
	// Put stores everything r yields under key with meta and returns the
	// stored object's description.
	Put(ctx context.Context, key string, r io.Reader, meta map[string]string) (Object, error)
	// Open returns the object's bytes; the error wraps ErrNotExist when the
	// object is absent.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat describes the object; the error wraps ErrNotExist when absent.
	Stat(ctx context.Context, key string) (Object, error)
	// List returns every object whose key starts with prefix, sorted by key.
	// The prefix is a plain string prefix, not a folder: "a/b" matches
	// "a/b/c" and "a/bc".
	List(ctx context.Context, prefix string) ([]Object, error)
	// Delete removes the object; an absent object is not an error.
	Delete(ctx context.Context, key string) error
	// Create stores r under key like Put, but only if no object has that
	// key: of several concurrent Creates of one key exactly one succeeds and
	// the others return an error wrapping ErrExist. It is the primitive for
	// claims and leases that several processes race for.
	Create(ctx context.Context, key string, r io.Reader, meta map[string]string) (Object, error)
	// PutSealed stores r under key like Put, for a writer that learns part
	// of the metadata only by reading the bytes (Explode hashes each zip
	// entry as it stores it), so it reads its source once. When r has
	// returned io.EOF, and before the object becomes visible, it calls
	// seal: the metadata seal returns is added to meta (same rules as
	// Put's), and an error from seal fails the Put with nothing stored.
	PutSealed(ctx context.Context, key string, r io.Reader, meta map[string]string, seal func() (map[string]string, error)) (Object, error)
}

// GuardedPutter is implemented by stores that can make a Put conditional
// on the object it replaces, atomically (DirStore and BlobStore do). It
// fences a writer that lost its claim while it stalled: a check before a
// plain Put can be overtaken by another writer between the two.
type GuardedPutter interface {
	// PutGuarded stores b under key like Put, provided guard accepts the
	// metadata of the object it replaces (nil when there is none) as it
	// is at the moment of the replacement; otherwise nothing is stored and
	// the error wraps guard's. A writer using plain Put on the same key is
	// not held back.
	PutGuarded(ctx context.Context, key string, b []byte, meta map[string]string, guard func(current map[string]string) error) (Object, error)
}

// Object describes one stored object.
type Object struct {
	Key     string
	Size    int64
	ModTime time.Time
	// Meta holds the metadata given to Put, keys lower-cased. It is never nil
	// for objects returned by DirStore or BlobStore.
	Meta map[string]string
}

// ErrNotExist is wrapped by Store errors about an absent object.
var ErrNotExist = errors.New("object does not exist")

// ErrExist is wrapped by Create errors when the object already exists.
var ErrExist = errors.New("object already exists")

// ErrStoreLost is wrapped by write errors when the store's container (or
// directory) is gone and cannot be created again: nothing can be kept in
// it until someone fixes it.
var ErrStoreLost = errors.New("the store is gone and cannot be created again")

// ErrRecreated is wrapped by a write that found the store's container (or
// directory) gone and created it again, but could not send its bytes again
// because its reader cannot rewind: the caller may repeat the write at once.
var ErrRecreated = errors.New("the store was gone and is created again; write again")

// Recreations reports how many times st found its container (or directory)
// gone under a write and created it anew, each time losing every object it
// held before. A caller that keeps objects in st compares two readings to
// learn that it must write them again. It is 0 for a store that cannot
// tell.
func Recreations(st Store) int64 {
	if r, ok := st.(interface{ Recreations() int64 }); ok {
		return r.Recreations()
	}
	return 0
}

// sealMeta adds what seal returns to m, already checked by checkMeta.
func sealMeta(m map[string]string, seal func() (map[string]string, error)) error {
	if seal == nil {
		return nil
	}
	extra, err := seal()
	if err != nil {
		return err
	}
	checked, err := checkMeta(extra)
	if err != nil {
		return err
	}
	for k, v := range checked {
		m[k] = v
	}
	return nil
}

// ValidKey reports why key is not a valid store key, or nil if it is.
// A valid key is non-empty, '/'-separated, relative, has no empty, "." or
// ".." segments, no segment ending in '.' (Azure Blob Storage and Windows
// drop trailing dots), and contains no NUL or backslash (which some backends
// treat as a separator).
func ValidKey(key string) error {
	if key == "" {
		return fmt.Errorf("invalid store key %q: empty", key)
	}
	if strings.ContainsAny(key, "\x00\\") {
		return fmt.Errorf("invalid store key %q: contains NUL or backslash", key)
	}
	for _, seg := range strings.Split(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("invalid store key %q: empty segment (leading, trailing or double '/')", key)
		case ".", "..":
			return fmt.Errorf("invalid store key %q: %q segment", key, seg)
		}
		if strings.HasSuffix(seg, ".") {
			return fmt.Errorf("invalid store key %q: segment %q ends in '.'", key, seg)
		}
	}
	return nil
}

// checkMeta copies meta with lower-cased keys (never nil) and rejects keys
// every backend cannot store: a key must be an ASCII letter or '_' followed
// by letters, digits or '_' (Azure metadata names are C# identifiers), and
// two keys must not differ only in case. Values may be any string.
func checkMeta(meta map[string]string) (map[string]string, error) {
	m := make(map[string]string, len(meta))
	for k, v := range meta {
		lk := strings.ToLower(k)
		if !validMetaKey(lk) {
			return nil, fmt.Errorf("invalid metadata key %q: want a letter or '_' followed by letters, digits or '_'", k)
		}
		if _, dup := m[lk]; dup {
			return nil, fmt.Errorf("invalid metadata key %q: given twice (keys are case-insensitive)", k)
		}
		m[lk] = v
	}
	return m, nil
}

func validMetaKey(k string) bool {
	if k == "" || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case 'a' <= c && c <= 'z', c == '_':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// fault marks err, the error of a store operation, as the cause of the
// errors that wrap it when the disk, the storage service or the network
// gave it: that failure, named by the operation and its key, is what an
// operator fixes. A stop, a missing or existing object and a guard's
// refusal are no failure of the store and stay unmarked.
func fault(err error) error {
	var (
		pathErr *fs.PathError
		linkErr *os.LinkError
		sysErr  *os.SyscallError
		respErr *azcore.ResponseError
		netErr  net.Error
	)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrNotExist), errors.Is(err, ErrExist):
		return err
	case errors.As(err, &pathErr), errors.As(err, &linkErr), errors.As(err, &sysErr),
		errors.As(err, &respErr), errors.As(err, &netErr):
		return cause.Mark(err)
	}
	return err
}
