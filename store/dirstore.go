package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dmfexport/dmfexport/internal/ctxio"
)

const (
	// metaSuffix names the sidecar file holding an object's metadata.
	metaSuffix = ".meta.json"
	// tmpPrefix starts the names of files being written; List and Stat never
	// show them, so an interrupted Put leaves no visible object.
	tmpPrefix = ".dmfstore-tmp-"
)

// DirStore is a Store in a local directory: key "a/b/c" is the file
// <root>/a/b/c and its metadata is the sidecar <root>/a/b/c.meta.json.
//
// Put writes a temporary file in the object's directory, syncs it, writes the
// sidecar (itself atomically), then renames the data file into place, so a
// reader sees the previous object or the new one, never a partial one. Keys
// with a segment ending in ".meta.json" or starting with ".dmfstore-tmp-"
// are rejected because they would collide with those internal files.
// DirStore is safe for concurrent use; concurrent Puts of one key end with one
// of them whole (its metadata may come from the other).
//
// A write that finds the store's directory gone (deleted under a running
// process) creates it again, warns that every object stored before is gone
// and counts it (Recreations).
type DirStore struct {
	// Logger gets the warning that the directory was gone under a write
	// and is created again; nil means slog.Default(). Set it before use.
	Logger *slog.Logger

	root string
	// recreateMu makes one of several writes that find the directory gone
	// warn; recreations counts the times it was created again.
	recreateMu  sync.Mutex
	recreations atomic.Int64
}

var (
	_ Store = (*DirStore)(nil)
)

// NewDirStore returns a store rooted at root, creating the directory if needed.
func NewDirStore(root string) (*DirStore, error) {
	if root == "" {
		return nil, errors.New("open directory store: empty path")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fault(fmt.Errorf("open directory store %s: %w", root, err))
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fault(fmt.Errorf("open directory store %s: %w", root, err))
	}
	return &DirStore{root: abs}, nil
}

// Root returns the absolute directory the store keeps its objects in.
func (s *DirStore) Root() string { return s.root }

// Recreations reports how many times a write found the store's directory
// gone and created it again (see store.Recreations).
func (s *DirStore) Recreations() int64 { return s.recreations.Load() }

// recreate creates the store's directory again if it is gone. An error
// wraps ErrStoreLost.
func (s *DirStore) recreate() error {
	s.recreateMu.Lock()
	defer s.recreateMu.Unlock()
	if fi, err := os.Stat(s.root); err == nil && fi.IsDir() {
		return nil
	}
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		return fmt.Errorf("%w: directory %s was deleted, and creating it again failed: %w", ErrStoreLost, s.root, err)
	}
	s.recreations.Add(1)
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	log.Warn("store directory was gone and is created again: every object stored in it before is gone "+
		"(run records, packages, entity files, leases); runs in progress write theirs again", "directory", s.root)
	return nil
}

func (s *DirStore) checkKey(key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	for _, seg := range strings.Split(key, "/") {
		if strings.HasSuffix(seg, metaSuffix) || strings.HasPrefix(seg, tmpPrefix) {
			return fmt.Errorf("invalid store key %q: segment %q is reserved by the directory store", key, seg)
		}
	}
	return nil
}

func (s *DirStore) file(key string) string {
	return filepath.Join(s.root, filepath.FromSlash(key))
}

// Put implements Store.
func (s *DirStore) Put(ctx context.Context, key string, r io.Reader, meta map[string]string) (Object, error) {
	o, err := s.write(ctx, key, r, meta, nil, false, nil)
	if err != nil {
		return Object{}, fault(fmt.Errorf("put %s: %w", key, err))
	}
	return o, nil
}

// Create implements Store.Create. The data file is hard-linked into place, which
// fails if the name exists, so Creates race safely across processes sharing
// the directory; the metadata sidecar is renamed into place just after, so a
// Stat in that instant may see the new object with empty metadata.
func (s *DirStore) Create(ctx context.Context, key string, r io.Reader, meta map[string]string) (Object, error) {
	o, err := s.write(ctx, key, r, meta, nil, true, nil)
	if err != nil {
		return Object{}, fault(fmt.Errorf("create %s: %w", key, err))
	}
	return o, nil
}

// PutSealed implements Store.PutSealed: seal is called after the bytes are in
// the temporary file, before the object and its metadata are moved into place.
func (s *DirStore) PutSealed(ctx context.Context, key string, r io.Reader, meta map[string]string, seal func() (map[string]string, error)) (Object, error) {
	o, err := s.write(ctx, key, r, meta, seal, false, nil)
	if err != nil {
		return Object{}, fault(fmt.Errorf("put %s: %w", key, err))
	}
	return o, nil
}

// PutGuarded implements GuardedPutter. The object and its metadata are
// written and synced first; then, holding an exclusive flock on the
// object's folder (other processes of this host included), the current
// metadata is read, guard decides, and both are renamed in place.
func (s *DirStore) PutGuarded(ctx context.Context, key string, b []byte, meta map[string]string, guard func(current map[string]string) error) (Object, error) {
	o, err := s.write(ctx, key, bytes.NewReader(b), meta, nil, false, guard)
	if err != nil {
		return Object{}, fault(fmt.Errorf("put %s: %w", key, err))
	}
	return o, nil
}

// swapGuarded renames the written object tmp and its metadata mtmp over
// key under the folder's lock, if guard accepts the current metadata.
func (s *DirStore) swapGuarded(ctx context.Context, key, tmp, mtmp string, guard func(map[string]string) error) error {
	name := s.file(key)
	unlock, err := lockDir(ctx, filepath.Dir(name))
	if err != nil {
		return err
	}
	defer unlock()
	var current map[string]string
	if o, err := s.stat(key); err == nil {
		current = o.Meta
	} else if !errors.Is(err, ErrNotExist) {
		return err
	}
	if err := guard(current); err != nil {
		return err
	}
	if err := os.Rename(mtmp, name+metaSuffix); err != nil {
		return fmt.Errorf("write metadata: %w", err)
	}
	return os.Rename(tmp, name)
}

// lockWait bounds lockDir's wait. The lock is held for microseconds; a
// process stopped while holding it (SIGSTOP, a debugger) holds it until
// it goes on or ends, and the writes waiting on it fail after lockWait,
// saying so, rather than hang without a word.
var lockWait = time.Minute

// lockDir takes an exclusive flock on dir, trying until ctx ends or for
// lockWait, and returns its release.
func lockDir(ctx context.Context, dir string) (func(), error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	giveUp := time.Now().Add(lockWait)
	for {
		err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(d.Fd()), syscall.LOCK_UN)
				_ = d.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = d.Close()
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		if time.Now().After(giveUp) {
			_ = d.Close()
			return nil, fmt.Errorf("lock %s: another process has held its lock for over %s: one stopped in the middle of a run record's write (SIGSTOP, a debugger) holds it until it goes on or ends", dir, lockWait)
		}
		select {
		case <-ctx.Done():
			_ = d.Close()
			return nil, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (s *DirStore) write(ctx context.Context, key string, r io.Reader, meta map[string]string, seal func() (map[string]string, error), once bool, guard func(map[string]string) error) (Object, error) {
	if err := s.checkKey(key); err != nil {
		return Object{}, err
	}
	m, err := checkMeta(meta)
	if err != nil {
		return Object{}, err
	}
	if err := ctx.Err(); err != nil {
		return Object{}, err
	}
	name := s.file(key)
	dir := filepath.Dir(name)
	if once {
		if _, err := os.Lstat(name); err == nil {
			return Object{}, ErrExist // cheap early answer; the link below decides
		}
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
		if err := s.recreate(); err != nil {
			return Object{}, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Object{}, err
	}
	tmp, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return Object{}, err
	}
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name()) // no-op after a rename; drops the extra link after Create
	}()
	n, err := copyInto(ctx, tmp, r)
	if err != nil {
		return Object{}, fmt.Errorf("write: %w", err)
	}
	if err := sealMeta(m, seal); err != nil {
		return Object{}, err
	}
	if err := tmp.Sync(); err != nil {
		return Object{}, fmt.Errorf("sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Object{}, fmt.Errorf("close: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Object{}, err
	}
	if once {
		mtmp, err := writeTemp(dir, m)
		if err != nil {
			return Object{}, fmt.Errorf("write metadata: %w", err)
		}
		defer func() { _ = os.Remove(mtmp) }()
		if err := os.Link(tmp.Name(), name); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return Object{}, ErrExist
			}
			return Object{}, err
		}
		if err := os.Rename(mtmp, name+metaSuffix); err != nil {
			return Object{}, fmt.Errorf("write metadata: %w", err)
		}
	} else if guard != nil {
		mtmp, err := writeTemp(dir, m)
		if err != nil {
			return Object{}, fmt.Errorf("write metadata: %w", err)
		}
		defer func() { _ = os.Remove(mtmp) }()
		// Only the read, the guard and the renames hold the lock (tens of
		// microseconds): a writer stopped while holding it stops the
		// other guarded writers of the folder too.
		if err := s.swapGuarded(ctx, key, tmp.Name(), mtmp, guard); err != nil {
			return Object{}, err
		}
	} else {
		if err := writeFileAtomic(dir, name+metaSuffix, m); err != nil {
			return Object{}, fmt.Errorf("write metadata: %w", err)
		}
		if err := os.Rename(tmp.Name(), name); err != nil {
			return Object{}, err
		}
	}
	syncDir(dir)
	fi, err := os.Stat(name)
	if err != nil {
		return Object{}, err
	}
	return Object{Key: key, Size: n, ModTime: fi.ModTime(), Meta: m}, nil
}

// writeFileAtomic writes meta as JSON to name through a synced temporary file.
func writeFileAtomic(dir, name string, meta map[string]string) error {
	tmp, err := writeTemp(dir, meta)
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp) }() // no-op after a successful rename
	return os.Rename(tmp, name)
}

// writeTemp writes meta as JSON to a synced temporary file in dir and
// returns its name.
func writeTemp(dir string, meta map[string]string) (string, error) {
	b, err := json.Marshal(meta)
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return "", err
	}
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return "", err
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmp.Name())
		return "", err
	}
	return tmp.Name(), nil
}

// syncDir makes renames in dir durable; failure is ignored because some
// platforms and file systems cannot sync directories.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// Open implements Store.
func (s *DirStore) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := s.checkKey(key); err != nil {
		return nil, fault(fmt.Errorf("open %s: %w", key, err))
	}
	if err := ctx.Err(); err != nil {
		return nil, fault(fmt.Errorf("open %s: %w", key, err))
	}
	f, err := os.Open(s.file(key))
	if err != nil {
		return nil, fault(fmt.Errorf("open %s: %w", key, notExist(err)))
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, fault(fmt.Errorf("open %s: %w", key, ErrNotExist))
	}
	return f, nil
}

// copyInto copies r to f. A file (the downloaded package) is copied by the
// kernel (copy_file_range where the file systems allow it) in chunks, with
// ctx checked between them, instead of through a buffer.
func copyInto(ctx context.Context, f *os.File, r io.Reader) (int64, error) {
	src, ok := r.(*os.File)
	if !ok {
		buf := make([]byte, 1<<20)
		return io.CopyBuffer(struct{ io.Writer }{f}, ctxio.Reader(ctx, r), buf)
	}
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		k, err := f.ReadFrom(io.LimitReader(src, 64<<20))
		n += k
		if err != nil || k == 0 {
			return n, err
		}
	}
}

// notExist maps the file system's "not found" errors to ErrNotExist.
func notExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
		return fmt.Errorf("%w: %w", ErrNotExist, err)
	}
	return err
}

// isNotDir reports the error of looking up "a/b" when "a" is a file.
func isNotDir(err error) bool {
	return errors.Is(err, syscall.ENOTDIR)
}

// Stat implements Store.
func (s *DirStore) Stat(ctx context.Context, key string) (Object, error) {
	if err := s.checkKey(key); err != nil {
		return Object{}, fault(fmt.Errorf("stat %s: %w", key, err))
	}
	if err := ctx.Err(); err != nil {
		return Object{}, fault(fmt.Errorf("stat %s: %w", key, err))
	}
	o, err := s.stat(key)
	if err != nil {
		return Object{}, fault(fmt.Errorf("stat %s: %w", key, err))
	}
	return o, nil
}

func (s *DirStore) stat(key string) (Object, error) {
	name := s.file(key)
	fi, err := os.Stat(name)
	if err != nil {
		return Object{}, notExist(err)
	}
	if !fi.Mode().IsRegular() {
		return Object{}, ErrNotExist
	}
	meta := map[string]string{}
	b, err := os.ReadFile(name + metaSuffix)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &meta); err != nil {
			return Object{}, fmt.Errorf("read metadata %s: %w", name+metaSuffix, err)
		}
		if meta == nil {
			meta = map[string]string{}
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return Object{}, fmt.Errorf("read metadata: %w", err)
	}
	return Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime(), Meta: meta}, nil
}

// List implements Store. It walks only the directory the prefix's folder part
// names, so listing one run does not read the whole store.
func (s *DirStore) List(ctx context.Context, prefix string) ([]Object, error) {
	start := s.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dir := prefix[:i]
		if ValidKey(dir) != nil {
			// No valid key lives under a malformed folder.
			return []Object{}, nil
		}
		start = s.file(dir)
	}
	var out []Object
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
				if p == start {
					return filepath.SkipAll
				}
				return nil // removed while walking
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !d.Type().IsRegular() {
			return nil
		}
		base := d.Name()
		if strings.HasSuffix(base, metaSuffix) || strings.HasPrefix(base, tmpPrefix) {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) || s.checkKey(key) != nil {
			return nil
		}
		o, err := s.stat(key)
		if errors.Is(err, ErrNotExist) {
			return nil // deleted while listing
		}
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		out = append(out, o)
		return nil
	})
	if err != nil {
		return nil, fault(fmt.Errorf("list %q: %w", prefix, err))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	if out == nil {
		out = []Object{}
	}
	return out, nil
}

// Delete implements Store. It removes the data file first so the object
// disappears at once, then its metadata.
func (s *DirStore) Delete(ctx context.Context, key string) error {
	if err := s.checkKey(key); err != nil {
		return fault(fmt.Errorf("delete %s: %w", key, err))
	}
	if err := ctx.Err(); err != nil {
		return fault(fmt.Errorf("delete %s: %w", key, err))
	}
	name := s.file(key)
	if fi, err := os.Lstat(name); err == nil && fi.IsDir() {
		return nil // a folder of other objects, not an object
	}
	for _, n := range []string{name, name + metaSuffix} {
		if err := os.Remove(n); err != nil && !errors.Is(err, fs.ErrNotExist) && !isNotDir(err) {
			return fault(fmt.Errorf("delete %s: %w", key, err))
		}
	}
	syncDir(filepath.Dir(name))
	return nil
}

// RemoveStaleTemp deletes the temporary files that writes cut off by a
// crash left in the store (".dmfstore-tmp-*"), those last modified more
// than olderThan ago: a write in progress keeps its file fresh, and other
// processes sharing the directory may be writing. It returns how many it
// removed.
func (s *DirStore) RemoveStaleTemp(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	removed := 0
	err := filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !strings.HasPrefix(d.Name(), tmpPrefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil || fi.ModTime().After(cutoff) {
			return nil
		}
		if err := os.Remove(p); err == nil {
			removed++
		}
		return nil
	})
	if err != nil {
		return removed, fmt.Errorf("remove stale temporary files in %s: %w", s.root, err)
	}
	return removed, nil
}

// RemoveEmptyFolders removes the empty folders at and under prefix,
// deepest first, once their objects are deleted: a directory keeps its
// folders otherwise. A folder that still holds a file is kept.
func (s *DirStore) RemoveEmptyFolders(prefix string) {
	var dirs []string
	_ = filepath.WalkDir(filepath.Join(s.root, filepath.FromSlash(prefix)), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- { // children come after their parent
		_ = os.Remove(dirs[i]) // fails, as wanted, on a folder that is not empty
	}
}

// RemoveEmptyFolders removes, in a directory store, the empty folders at
// and under prefix (see DirStore.RemoveEmptyFolders). Other stores have no
// folders to remove.
func RemoveEmptyFolders(st Store, prefix string) {
	if ds, ok := st.(*DirStore); ok {
		ds.RemoveEmptyFolders(prefix)
	}
}
