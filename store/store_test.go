package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/dmfexport/dmfexport/internal/cause"
	"github.com/dmfexport/dmfexport/store"
	"github.com/dmfexport/dmfexport/store/storetest"
)

func TestDirStorePutOpenStat(t *testing.T) {
	ctx := context.Background()
	s := storetest.Dir(t)
	o, err := s.Put(ctx, "jobs/a b/run 1/x.csv", strings.NewReader("hello"), map[string]string{"Job": "a b", "SHA256": "x"})
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if o.Key != "jobs/a b/run 1/x.csv" || o.Size != 5 || o.ModTime.IsZero() {
		t.Errorf("Put returned %+v, want key jobs/a b/run 1/x.csv, size 5, a mod time", o)
	}
	if got := storetest.ReadAll(t, s, o.Key); got != "hello" {
		t.Errorf("Open content = %q, want %q", got, "hello")
	}
	st, err := s.Stat(ctx, o.Key)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	wantMeta := map[string]string{"job": "a b", "sha256": "x"}
	if st.Size != 5 || !equalMaps(st.Meta, wantMeta) {
		t.Errorf("Stat = %+v, want size 5 and meta %v", st, wantMeta)
	}

	// Replace: new content and new metadata.
	if _, err := s.Put(ctx, o.Key, strings.NewReader("bye"), nil); err != nil {
		t.Fatalf("second Put: %v", err)
	}
	if got := storetest.ReadAll(t, s, o.Key); got != "bye" {
		t.Errorf("after replace content = %q, want %q", got, "bye")
	}
	st, _ = s.Stat(ctx, o.Key)
	if st.Size != 3 || st.Meta == nil || len(st.Meta) != 0 {
		t.Errorf("after replace Stat = %+v, want size 3 and empty non-nil meta", st)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestDirStoreNotExist(t *testing.T) {
	ctx := context.Background()
	s := storetest.Dir(t)
	if _, err := s.Put(ctx, "a/file", strings.NewReader("x"), nil); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"missing", "a/missing", "a/file/below", "a"} {
		t.Run(key, func(t *testing.T) {
			if _, err := s.Open(ctx, key); !errors.Is(err, store.ErrNotExist) {
				t.Errorf("Open(%q) error = %v, want store.ErrNotExist", key, err)
			}
			if _, err := s.Stat(ctx, key); !errors.Is(err, store.ErrNotExist) {
				t.Errorf("Stat(%q) error = %v, want store.ErrNotExist", key, err)
			}
			if err := s.Delete(ctx, key); err != nil {
				t.Errorf("Delete(%q) of absent object = %v, want nil", key, err)
			}
		})
	}
}

func TestDirStoreList(t *testing.T) {
	ctx := context.Background()
	s := storetest.Dir(t)
	keys := []string{"r/b", "r/a/2", "r/a/1", "r/ab", "r/a b", "other/x", "top"}
	for _, k := range keys {
		if _, err := s.Put(ctx, k, strings.NewReader(k), map[string]string{"k": k}); err != nil {
			t.Fatalf("Put(%q): %v", k, err)
		}
	}
	// A leftover temporary file from an interrupted Put stays hidden.
	if err := os.WriteFile(filepath.Join(s.Root(), "r", store.TmpPrefix+"123"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, prefix string
		want         []string
	}{
		{"everything", "", []string{"other/x", "r/a b", "r/a/1", "r/a/2", "r/ab", "r/b", "top"}},
		{"folder", "r/a/", []string{"r/a/1", "r/a/2"}},
		{"string prefix", "r/a", []string{"r/a b", "r/a/1", "r/a/2", "r/ab"}},
		{"exact key", "top", []string{"top"}},
		{"missing folder", "nope/", []string{}},
		{"prefix through a file", "top/x", []string{}},
		{"malformed folder", "../", []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := s.List(ctx, tt.prefix)
			if err != nil {
				t.Fatalf("List(%q): %v", tt.prefix, err)
			}
			got := []string{}
			for _, o := range objs {
				got = append(got, o.Key)
				if o.Meta["k"] != o.Key || o.Size != int64(len(o.Key)) {
					t.Errorf("List(%q) object %+v: want meta k=%q and size %d", tt.prefix, o, o.Key, len(o.Key))
				}
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("List(%q) = %q, want %q", tt.prefix, got, tt.want)
			}
		})
	}
}

func TestDirStoreDelete(t *testing.T) {
	ctx := context.Background()
	s := storetest.Dir(t)
	if _, err := s.Put(ctx, "d/x", strings.NewReader("x"), map[string]string{"a": "b"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "d/x"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Stat(ctx, "d/x"); !errors.Is(err, store.ErrNotExist) {
		t.Errorf("Stat after Delete = %v, want store.ErrNotExist", err)
	}
	if files := storetest.FilesUnder(t, s.Root()); len(files) != 0 {
		t.Errorf("files left after Delete: %q, want none (sidecar too)", files)
	}
}

func TestDirStorePutAtomic(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("boom")
	tests := []struct {
		name     string
		previous string // "" for no earlier object
		r        func() io.Reader
		ctx      func() context.Context
		wantErr  error
	}{
		{"reader fails, new key", "", func() io.Reader {
			return io.MultiReader(strings.NewReader(strings.Repeat("x", 3<<20)), iotest.ErrReader(boom))
		}, nil, boom},
		{"reader fails, replacing", "old", func() io.Reader {
			return io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(boom))
		}, nil, boom},
		{"context cancelled", "old", func() io.Reader { return strings.NewReader("new") }, func() context.Context {
			c, cancel := context.WithCancel(ctx)
			cancel()
			return c
		}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := storetest.Dir(t)
			if tt.previous != "" {
				if _, err := s.Put(ctx, "k/obj", strings.NewReader(tt.previous), map[string]string{"v": "old"}); err != nil {
					t.Fatal(err)
				}
			}
			c := ctx
			if tt.ctx != nil {
				c = tt.ctx()
			}
			_, err := s.Put(c, "k/obj", tt.r(), map[string]string{"v": "new"})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Put error = %v, want %v", err, tt.wantErr)
			}
			for _, f := range storetest.FilesUnder(t, s.Root()) {
				if strings.Contains(f, store.TmpPrefix) {
					t.Errorf("temporary file %q left behind", f)
				}
			}
			st, err := s.Stat(ctx, "k/obj")
			if tt.previous == "" {
				if !errors.Is(err, store.ErrNotExist) {
					t.Errorf("Stat after failed Put = %+v, %v; want store.ErrNotExist", st, err)
				}
				return
			}
			if err != nil || st.Meta["v"] != "old" {
				t.Errorf("Stat after failed Put = %+v, %v; want the old object", st, err)
			}
			if got := storetest.ReadAll(t, s, "k/obj"); got != tt.previous {
				t.Errorf("content after failed Put = %q, want %q", got, tt.previous)
			}
		})
	}
}

func TestDirStoreBadKeys(t *testing.T) {
	ctx := context.Background()
	s := storetest.Dir(t)
	for _, key := range []string{"", "/abs", "a//b", "a/", "./a", "a/../b", "..", "a\\b", "nul\x00", "x.meta.json", "d.meta.json/x", store.TmpPrefix + "x"} {
		t.Run(key, func(t *testing.T) {
			if _, err := s.Put(ctx, key, strings.NewReader("x"), nil); err == nil {
				t.Errorf("Put(%q) succeeded, want an error", key)
			}
			if _, err := s.Open(ctx, key); err == nil || errors.Is(err, store.ErrNotExist) {
				t.Errorf("Open(%q) error = %v, want an invalid-key error", key, err)
			}
			if err := s.Delete(ctx, key); err == nil {
				t.Errorf("Delete(%q) succeeded, want an error", key)
			}
		})
	}
	if files := storetest.FilesUnder(t, filepath.Dir(s.Root())); len(files) != 0 {
		t.Errorf("files written for bad keys: %q", files)
	}
}

func TestDirStoreLargeObject(t *testing.T) {
	s := storetest.Dir(t)
	data := bytes.Repeat([]byte("0123456789"), 500_000)
	o, err := s.Put(context.Background(), "big", bytes.NewReader(data), nil)
	if err != nil || o.Size != int64(len(data)) {
		t.Fatalf("Put = %+v, %v; want size %d", o, err, len(data))
	}
	if got := storetest.ReadAll(t, s, "big"); got != string(data) {
		t.Errorf("content differs after round trip (len %d, want %d)", len(got), len(data))
	}
}

func TestDirStoreReadersSeeWholeObjects(t *testing.T) {
	ctx := context.Background()
	s := storetest.Dir(t)
	const size = 256 << 10
	if _, err := s.Put(ctx, "obj", bytes.NewReader(bytes.Repeat([]byte{'a'}, size)), nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 30 {
			c := byte('a' + i%2)
			if _, err := s.Put(ctx, "obj", bytes.NewReader(bytes.Repeat([]byte{c}, size)), map[string]string{"c": string(c)}); err != nil {
				t.Errorf("Put #%d: %v", i, err)
				return
			}
		}
	}()
	for reads := 0; ; reads++ {
		select {
		case <-done:
			return
		default:
		}
		got := storetest.ReadAll(t, s, "obj")
		if len(got) != size || strings.Count(got, got[:1]) != size {
			t.Fatalf("read #%d saw a partial or mixed object: %d bytes", reads, len(got))
		}
	}
}

// A file is copied by the kernel from its current offset to its end, like
// any reader; a cancelled ctx stores nothing.
func TestDirStorePutFromFile(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef"), 300000) // 4.8 MB
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		offset  int64
		want    []byte
		wantErr error
	}{
		{"whole file", context.Background(), 0, content, nil},
		{"from its offset", context.Background(), 1000, content[1000:], nil},
		{"at its end", context.Background(), int64(len(content)), nil, nil},
		{"cancelled", cancelled, 0, nil, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := storetest.Dir(t)
			f, err := os.CreateTemp(t.TempDir(), "pkg-*")
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = f.Close() }()
			if _, err := f.Write(content); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Seek(tc.offset, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			o, err := s.Put(tc.ctx, "p/package.zip", f, nil)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Put error = %v, want %v", err, tc.wantErr)
				}
				if got := storetest.FilesUnder(t, s.Root()); len(got) != 0 {
					t.Errorf("files left after a cancelled Put: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if got := storetest.ReadAll(t, s, "p/package.zip"); o.Size != int64(len(tc.want)) || got != string(tc.want) {
				t.Errorf("stored %d bytes (size %d), want %d bytes from offset %d", len(got), o.Size, len(tc.want), tc.offset)
			}
		})
	}
}

// TestDirStoreFailureIsCause: what the disk refused is the cause of the
// errors that wrap it, named by the operation and its key; a missing or
// existing object, a reader's error and a stop are not the store's failure.
func TestDirStoreFailureIsCause(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, openErr := store.NewDirStore(filepath.Join(file, "store"))
	s := storetest.Dir(t)
	if _, err := s.Put(ctx, "a", strings.NewReader("x"), nil); err != nil {
		t.Fatal(err)
	}
	_, putErr := s.Put(ctx, "a/b", strings.NewReader("x"), nil)
	_, missingErr := s.Open(ctx, "missing")
	_, existErr := s.Create(ctx, "a", strings.NewReader("x"), nil)
	_, readerErr := s.Put(ctx, "c", iotest.ErrReader(errors.New("source broke")), nil)
	stopped, cancel := context.WithCancel(ctx)
	cancel()
	_, stopErr := s.Put(stopped, "d", strings.NewReader("x"), nil)
	tests := []struct {
		name      string
		err       error
		wantCause string // the cause starts so; "" for none
	}{
		{"store directory under a file", openErr, "open directory store " + filepath.Join(file, "store") + ": "},
		{"object under an object", putErr, "put a/b: "},
		{"missing object", missingErr, ""},
		{"existing object", existErr, ""},
		{"the reader's error", readerErr, ""},
		{"stopped", stopErr, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatal("no error")
			}
			got := cause.Of(fmt.Errorf("export x: %w", tt.err))
			if tt.wantCause == "" && got != "" || !strings.HasPrefix(got, tt.wantCause) || tt.wantCause != "" && got != tt.err.Error() {
				t.Errorf("cause %q of %v, want the whole error when it starts with %q", got, tt.err, tt.wantCause)
			}
		})
	}
}
