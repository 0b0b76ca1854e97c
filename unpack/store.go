// Package unpack turns a downloaded F&O data package into one stored object
// per entity.
//
// It owns the Store interface, the small set of operations the rest of
// dmfexport needs from a place that keeps packages, entity files and run
// records. DirStore keeps them in a local directory; other backends (Azure
// Blob) implement the same interface.
package unpack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Store is where packages and entity files are kept.
//
// Keys are '/'-separated and relative, with no "." or ".." segments and no
// empty segments. Put is atomic: the object is whole or absent (readers never
// see a partial object), and it replaces an existing one. If r returns an
// error, nothing is left behind. Metadata keys are stored lower-cased.
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
}

// Object describes one stored object.
type Object struct {
	Key     string
	Size    int64
	ModTime time.Time
	// Meta holds the metadata given to Put, keys lower-cased. It is never nil
	// for objects returned by DirStore.
	Meta map[string]string
}

// ErrNotExist is wrapped by Store errors about an absent object.
var ErrNotExist = errors.New("object does not exist")

// ValidKey reports why key is not a valid store key, or nil if it is.
// A valid key is non-empty, '/'-separated, relative, has no empty, "." or
// ".." segments, and contains no NUL or backslash (which some backends treat
// as a separator).
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
	}
	return nil
}

// lowerMeta copies meta with lower-cased keys; it never returns nil.
func lowerMeta(meta map[string]string) map[string]string {
	m := make(map[string]string, len(meta))
	for k, v := range meta {
		m[strings.ToLower(k)] = v
	}
	return m
}

// ctxReader stops a copy at the next Read once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
