package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/dmfexport/dmfexport/store"
	"github.com/dmfexport/dmfexport/store/storetest"
)

func TestStoreConformance(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("boom")
	behaviours := []struct {
		name string
		fn   func(t *testing.T, st store.Store)
	}{
		{"put open stat round trip", func(t *testing.T, st store.Store) {
			meta := map[string]string{"Job": "a b", "SHA256": "x", "entity": "Café/Ünïcode: 100%", "spaces": "  pad  ",
				"empty": "", "lines": "a\r\nb\tc", "pct": "%41", "lone": "%"}
			before := time.Now().Add(-time.Minute)
			o, err := st.Put(ctx, "jobs/a b/run 1/x.csv", strings.NewReader("hello"), meta)
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			wantMeta := map[string]string{"job": "a b", "sha256": "x", "entity": "Café/Ünïcode: 100%", "spaces": "  pad  ",
				"empty": "", "lines": "a\r\nb\tc", "pct": "%41", "lone": "%"}
			if o.Key != "jobs/a b/run 1/x.csv" || o.Size != 5 || o.ModTime.Before(before) || !equalMaps(o.Meta, wantMeta) {
				t.Errorf("Put = %+v, want key, size 5, a recent mod time and meta %v", o, wantMeta)
			}
			if got := storetest.ReadAll(t, st, o.Key); got != "hello" {
				t.Errorf("Open content = %q, want %q", got, "hello")
			}
			s, err := st.Stat(ctx, o.Key)
			if err != nil {
				t.Fatalf("Stat: %v", err)
			}
			if s.Key != o.Key || s.Size != 5 || s.ModTime.Before(before) || !equalMaps(s.Meta, wantMeta) {
				t.Errorf("Stat = %+v, want size 5, a recent mod time and meta %v", s, wantMeta)
			}
			l, err := st.List(ctx, "jobs/")
			if err != nil || len(l) != 1 || !equalMaps(l[0].Meta, wantMeta) || l[0].Size != 5 {
				t.Errorf("List = %+v, %v; want the object with meta %v", l, err, wantMeta)
			}
		}},
		{"put replaces content and metadata", func(t *testing.T, st store.Store) {
			if _, err := st.Put(ctx, "k", strings.NewReader("first"), map[string]string{"a": "1"}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Put(ctx, "k", strings.NewReader("2"), nil); err != nil {
				t.Fatalf("second Put: %v", err)
			}
			s, err := st.Stat(ctx, "k")
			if err != nil || s.Size != 1 || s.Meta == nil || len(s.Meta) != 0 {
				t.Errorf("Stat after replace = %+v, %v; want size 1 and empty non-nil meta", s, err)
			}
			if got := storetest.ReadAll(t, st, "k"); got != "2" {
				t.Errorf("content after replace = %q, want %q", got, "2")
			}
		}},
		{"absent objects", func(t *testing.T, st store.Store) {
			if _, err := st.Put(ctx, "a/file", strings.NewReader("x"), nil); err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{"missing", "a/missing", "a/file/below", "a"} {
				if _, err := st.Open(ctx, key); !errors.Is(err, store.ErrNotExist) {
					t.Errorf("Open(%q) = %v, want store.ErrNotExist", key, err)
				}
				if _, err := st.Stat(ctx, key); !errors.Is(err, store.ErrNotExist) {
					t.Errorf("Stat(%q) = %v, want store.ErrNotExist", key, err)
				}
				if err := st.Delete(ctx, key); err != nil {
					t.Errorf("Delete(%q) of an absent object = %v, want nil", key, err)
				}
			}
		}},
		{"list by string prefix, sorted", func(t *testing.T, st store.Store) {
			for _, k := range []string{"r/b", "r/a/2", "r/a/1", "r/ab", "r/a b", "other/x", "top", "r/Café"} {
				if _, err := st.Put(ctx, k, strings.NewReader(k), map[string]string{"k": k}); err != nil {
					t.Fatalf("Put(%q): %v", k, err)
				}
			}
			tests := []struct{ prefix, want string }{
				{"", "other/x r/Café r/a b r/a/1 r/a/2 r/ab r/b top"},
				{"r/a/", "r/a/1 r/a/2"},
				{"r/a", "r/a b r/a/1 r/a/2 r/ab"},
				{"top", "top"},
				{"nope/", ""},
				{"top/x", ""},
			}
			for _, tt := range tests {
				objs, err := st.List(ctx, tt.prefix)
				if err != nil {
					t.Fatalf("List(%q): %v", tt.prefix, err)
				}
				var got []string
				for _, o := range objs {
					got = append(got, o.Key)
					if o.Meta["k"] != o.Key || o.Size != int64(len(o.Key)) {
						t.Errorf("List(%q) object %+v: want meta k=%q and size %d", tt.prefix, o, o.Key, len(o.Key))
					}
				}
				if objs == nil {
					t.Errorf("List(%q) = nil, want an empty list", tt.prefix)
				}
				if strings.Join(got, " ") != tt.want {
					t.Errorf("List(%q) = %q, want %q", tt.prefix, strings.Join(got, " "), tt.want)
				}
			}
		}},
		{"delete", func(t *testing.T, st store.Store) {
			if _, err := st.Put(ctx, "d/x", strings.NewReader("x"), map[string]string{"a": "b"}); err != nil {
				t.Fatal(err)
			}
			if err := st.Delete(ctx, "d/x"); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if _, err := st.Stat(ctx, "d/x"); !errors.Is(err, store.ErrNotExist) {
				t.Errorf("Stat after Delete = %v, want store.ErrNotExist", err)
			}
			if l, _ := st.List(ctx, ""); len(l) != 0 {
				t.Errorf("List after Delete = %+v, want none", l)
			}
		}},
		{"failed put leaves nothing", func(t *testing.T, st store.Store) {
			r := io.MultiReader(bytes.NewReader(bytes.Repeat([]byte("x"), 3<<20)), iotest.ErrReader(boom))
			if _, err := st.Put(ctx, "new", r, nil); !errors.Is(err, boom) {
				t.Errorf("Put with a failing reader = %v, want it to wrap the reader's error", err)
			}
			if _, err := st.Stat(ctx, "new"); !errors.Is(err, store.ErrNotExist) {
				t.Errorf("Stat after failed Put = %v, want store.ErrNotExist", err)
			}
		}},
		{"failed put keeps the previous object", func(t *testing.T, st store.Store) {
			if _, err := st.Put(ctx, "k", strings.NewReader("old"), map[string]string{"v": "old"}); err != nil {
				t.Fatal(err)
			}
			r := io.MultiReader(bytes.NewReader(bytes.Repeat([]byte("y"), 3<<20)), iotest.ErrReader(boom))
			if _, err := st.Put(ctx, "k", r, map[string]string{"v": "new"}); !errors.Is(err, boom) {
				t.Errorf("Put with a failing reader = %v, want it to wrap the reader's error", err)
			}
			if got := storetest.ReadAll(t, st, "k"); got != "old" {
				t.Errorf("content after failed Put = %q, want %q", got, "old")
			}
			if s, err := st.Stat(ctx, "k"); err != nil || s.Meta["v"] != "old" {
				t.Errorf("Stat after failed Put = %+v, %v; want the old metadata", s, err)
			}
		}},
		{"cancelled put stores nothing", func(t *testing.T, st store.Store) {
			c, cancel := context.WithCancel(ctx)
			cancel()
			if _, err := st.Put(c, "k", strings.NewReader("x"), nil); !errors.Is(err, context.Canceled) {
				t.Errorf("Put with a cancelled context = %v, want context.Canceled", err)
			}
			if _, err := st.Stat(ctx, "k"); !errors.Is(err, store.ErrNotExist) {
				t.Errorf("Stat after cancelled Put = %v, want store.ErrNotExist", err)
			}
		}},
		{"invalid keys rejected", func(t *testing.T, st store.Store) {
			for _, key := range []string{"", "/abs", "a//b", "a/", "./a", "a/../b", "..", `a\b`, "nul\x00", "a./b", "end."} {
				if _, err := st.Put(ctx, key, strings.NewReader("x"), nil); err == nil {
					t.Errorf("Put(%q) succeeded, want an invalid-key error", key)
				}
				if _, err := st.Open(ctx, key); err == nil || errors.Is(err, store.ErrNotExist) {
					t.Errorf("Open(%q) = %v, want an invalid-key error", key, err)
				}
				if _, err := st.Stat(ctx, key); err == nil || errors.Is(err, store.ErrNotExist) {
					t.Errorf("Stat(%q) = %v, want an invalid-key error", key, err)
				}
				if err := st.Delete(ctx, key); err == nil {
					t.Errorf("Delete(%q) succeeded, want an invalid-key error", key)
				}
			}
			if l, _ := st.List(ctx, ""); len(l) != 0 {
				t.Errorf("objects stored for invalid keys: %+v", l)
			}
		}},
		{"invalid metadata keys rejected", func(t *testing.T, st store.Store) {
			for _, meta := range []map[string]string{{"run-id": "x"}, {"1a": "x"}, {"é": "x"}, {"": "x"}, {"A": "1", "a": "2"}, {"a b": "x"}} {
				if _, err := st.Put(ctx, "k", strings.NewReader("x"), meta); err == nil || !strings.Contains(err.Error(), "metadata key") {
					t.Errorf("Put with meta %v = %v, want a metadata key error", meta, err)
				}
			}
			if _, err := st.Stat(ctx, "k"); !errors.Is(err, store.ErrNotExist) {
				t.Errorf("Stat = %v, want store.ErrNotExist after rejected Puts", err)
			}
		}},
		{"escaped and unusual names", func(t *testing.T, st store.Store) {
			keys := []string{"jobs/" + store.EscapeName("Odd/Name: x") + ".csv", "jobs/" + store.EscapeName("Inc.") + "/r", "jobs/100% (a)+b=c;d,e'f#g?h&i", "jobs/Café ünï.csv"}
			for _, k := range keys {
				if _, err := st.Put(ctx, k, strings.NewReader(k), nil); err != nil {
					t.Fatalf("Put(%q): %v", k, err)
				}
				if got := storetest.ReadAll(t, st, k); got != k {
					t.Errorf("Open(%q) = %q, want the key as content", k, got)
				}
			}
			l, err := st.List(ctx, "jobs/")
			if err != nil || len(l) != len(keys) {
				t.Errorf("List = %+v, %v; want %d objects", l, err, len(keys))
			}
		}},
		{"large object in several blocks", func(t *testing.T, st store.Store) {
			data := make([]byte, 3<<20+12345)
			rand.Read(data)
			o, err := st.Put(ctx, "big.zip", bytes.NewReader(data), nil)
			if err != nil || o.Size != int64(len(data)) {
				t.Fatalf("Put = %+v, %v; want size %d", o, err, len(data))
			}
			if got := storetest.ReadAll(t, st, "big.zip"); got != string(data) {
				t.Errorf("round trip differs (got %d bytes, want %d)", len(got), len(data))
			}
		}},
		{"create once", func(t *testing.T, st store.Store) {
			cr := st
			o, err := cr.Create(ctx, "claims/j/slot", strings.NewReader("me"), map[string]string{"Owner": "me"})
			if err != nil || o.Size != 2 || o.Meta["owner"] != "me" {
				t.Fatalf("first Create = %+v, %v; want size 2 and owner meta", o, err)
			}
			if _, err := cr.Create(ctx, "claims/j/slot", strings.NewReader("you"), nil); !errors.Is(err, store.ErrExist) {
				t.Errorf("second Create = %v, want store.ErrExist", err)
			}
			s, err := st.Stat(ctx, "claims/j/slot")
			if err != nil || s.Meta["owner"] != "me" || storetest.ReadAll(t, st, "claims/j/slot") != "me" {
				t.Errorf("after second Create: Stat = %+v, %v; want the first object", s, err)
			}
			if _, err := cr.Create(ctx, "bad//key", strings.NewReader("x"), nil); err == nil || errors.Is(err, store.ErrExist) {
				t.Errorf("Create(bad//key) = %v, want an invalid-key error", err)
			}
		}},
		{"concurrent creates: exactly one wins", func(t *testing.T, st store.Store) {
			cr := st
			const n = 6
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = cr.Create(ctx, "claims/race", strings.NewReader(strings.Repeat("x", i+1)), nil)
				}()
			}
			wg.Wait()
			wins := 0
			for i, err := range errs {
				switch {
				case err == nil:
					wins++
				case !errors.Is(err, store.ErrExist):
					t.Errorf("Create #%d = %v, want nil or store.ErrExist", i, err)
				}
			}
			if wins != 1 {
				t.Errorf("%d Creates succeeded, want exactly 1 (errors %v)", wins, errs)
			}
			if l, _ := st.List(ctx, ""); len(l) != 1 {
				t.Errorf("List after racing Creates = %+v, want one object", l)
			}
		}},
	}
	for _, bh := range behaviours {
		t.Run(bh.name, func(t *testing.T) { storetest.ForEach(t, bh.fn) })
	}
}

func TestDirStoreCreateLeavesNoTemporaryFiles(t *testing.T) {
	ctx := context.Background()
	s := storetest.Dir(t)
	for range 2 {
		_, _ = s.Create(ctx, "c/x", strings.NewReader("x"), map[string]string{"a": "b"})
	}
	var got []string
	for _, f := range storetest.FilesUnder(t, s.Root()) {
		got = append(got, filepath.Base(f))
	}
	if strings.Join(got, " ") != "x x.meta.json" {
		t.Errorf("files after two Creates = %q, want [x x.meta.json]", got)
	}
}

// TestPutSealed: the sealed metadata is stored with the object, seal runs
// only once the reader is drained, and a seal error stores nothing.
func TestPutSealed(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("seal refused")
	tests := []struct {
		name     string
		body     string
		sealErr  error
		wantMeta map[string]string
	}{
		{"small object", "hello", nil, map[string]string{"job": "j", "sha256": "5"}},
		{"multi-block object", strings.Repeat("x", 2<<20+17), nil, map[string]string{"job": "j", "sha256": "2097169"}},
		{"seal error stores nothing", "hello", boom, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			storetest.ForEach(t, func(t *testing.T, st store.Store) {
				r := &countingReader{r: strings.NewReader(tt.body)}
				_, err := st.PutSealed(ctx, "k/x.csv", r, map[string]string{"Job": "j"}, func() (map[string]string, error) {
					if r.n != int64(len(tt.body)) {
						t.Errorf("seal ran after %d of %d bytes", r.n, len(tt.body))
					}
					return map[string]string{"SHA256": fmt.Sprint(r.n)}, tt.sealErr
				})
				if tt.sealErr != nil {
					if !errors.Is(err, tt.sealErr) {
						t.Errorf("PutSealed = %v, want %v", err, tt.sealErr)
					}
					if _, err := st.Stat(ctx, "k/x.csv"); !errors.Is(err, store.ErrNotExist) {
						t.Errorf("Stat after a refused seal = %v, want store.ErrNotExist", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("PutSealed: %v", err)
				}
				o, err := st.Stat(ctx, "k/x.csv")
				if err != nil || !equalMaps(o.Meta, tt.wantMeta) || o.Size != int64(len(tt.body)) {
					t.Errorf("Stat = %+v, %v; want meta %v, size %d", o, err, tt.wantMeta, len(tt.body))
				}
			})
		})
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += int64(k)
	return k, err
}

// TestPutGuarded: the guard sees the metadata of the object being
// replaced (none at first), a refusal stores nothing, and, in Azure, a
// write landing between the guard's read and the commit is judged again.
func TestPutGuarded(t *testing.T) {
	ctx := context.Background()
	lost := errors.New("written by a newer generation")
	newerThan := func(mine string, seen *[]map[string]string) func(map[string]string) error {
		return func(cur map[string]string) error {
			*seen = append(*seen, cur)
			if cur != nil && cur["gen"] > mine {
				return lost
			}
			return nil
		}
	}
	storetest.ForEach(t, func(t *testing.T, st store.Store) {
		gp, ok := st.(store.GuardedPutter)
		if !ok {
			t.Fatalf("%T does not implement store.GuardedPutter", st)
		}
		var seen []map[string]string
		if _, err := gp.PutGuarded(ctx, "r/run.json", []byte("one"), map[string]string{"gen": "1"}, newerThan("1", &seen)); err != nil || len(seen) != 1 || seen[0] != nil {
			t.Fatalf("first PutGuarded: %v, guard saw %v; want stored, guard shown no object", err, seen)
		}
		seen = nil
		if _, err := gp.PutGuarded(ctx, "r/run.json", []byte("two"), map[string]string{"gen": "2"}, newerThan("2", &seen)); err != nil || len(seen) != 1 || seen[0]["gen"] != "1" {
			t.Fatalf("PutGuarded by generation 2: %v, guard saw %v; want stored, guard shown gen 1", err, seen)
		}
		seen = nil
		if _, err := gp.PutGuarded(ctx, "r/run.json", []byte("stale"), map[string]string{"gen": "1"}, newerThan("1", &seen)); !errors.Is(err, lost) {
			t.Errorf("PutGuarded by generation 1 over generation 2: %v, want the guard's refusal", err)
		}
		if got := storetest.ReadAll(t, st, "r/run.json"); got != "two" {
			t.Errorf("object after a refused PutGuarded = %q, want %q", got, "two")
		}
		if _, ok := st.(*store.BlobStore); !ok {
			return
		}
		// Generation 3 lands after generation 2's guard read the object,
		// before its commit: the commit is refused, the guard judges again.
		seen = nil
		guard := newerThan("2", &seen)
		_, err := gp.PutGuarded(ctx, "r/run.json", []byte("late"), map[string]string{"gen": "2"}, func(cur map[string]string) error {
			if len(seen) == 0 {
				if _, err := st.Put(ctx, "r/run.json", strings.NewReader("three"), map[string]string{"gen": "3"}); err != nil {
					t.Fatal(err)
				}
			}
			return guard(cur)
		})
		if !errors.Is(err, lost) || len(seen) != 2 {
			t.Errorf("PutGuarded overtaken by a newer write: %v after %d guard calls, want the refusal on the second", err, len(seen))
		}
		if got := storetest.ReadAll(t, st, "r/run.json"); got != "three" {
			t.Errorf("object after an overtaken PutGuarded = %q, want %q", got, "three")
		}
	})
}

// TestPutGuardedLockHeld: a directory store's guarded write waiting on its
// folder's lock, held by another process stopped mid-write, fails after a
// bound with an error that says so, and succeeds once the lock is let go.
func TestPutGuardedLockHeld(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.NewDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutGuarded(ctx, "r/run.json", []byte("one"), nil, func(map[string]string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	// Another open file description of the folder: its flock is another
	// holder's, as another process's would be.
	f, err := os.Open(filepath.Join(dir, "r"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	store.SetLockWait(t, 50*time.Millisecond)
	_, err = st.PutGuarded(ctx, "r/run.json", []byte("two"), nil, func(map[string]string) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "held its lock for over 50ms") {
		t.Fatalf("PutGuarded while another holds the folder's lock: %v, want the error naming the wait", err)
	}
	if got := storetest.ReadAll(t, st, "r/run.json"); got != "one" {
		t.Errorf("object after the failed write = %q, want %q", got, "one")
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutGuarded(ctx, "r/run.json", []byte("two"), nil, func(map[string]string) error { return nil }); err != nil {
		t.Fatalf("PutGuarded once the lock is let go: %v", err)
	}
}
