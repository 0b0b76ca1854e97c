package unpack

import (
	"archive/zip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/dmfexport/dmfexport/internal/ctxio"
	"github.com/dmfexport/dmfexport/store"
	"github.com/klauspost/compress/flate"
)

// Default limits of ExplodeOptions.
const (
	DefaultMaxEntryBytes = 64 << 30
	DefaultMaxTotalBytes = 256 << 30
	DefaultMaxRatio      = 1000
	// ratioExemptBytes: entries smaller than this are not ratio-checked;
	// header-only CSV files compress extremely well and are harmless.
	ratioExemptBytes = 1 << 20
)

// ExplodeOptions says where Explode stores entity objects and which limits
// protect it from hostile packages.
type ExplodeOptions struct {
	Prefix        string            // key prefix for entity objects, e.g. "jobs/x/run/entities"; "" stores at the top
	Meta          map[string]string // metadata added to every object (job, run, executionid)
	MaxEntryBytes int64             // per-entry uncompressed limit; 0 → 64 GiB
	MaxTotalBytes int64             // whole package uncompressed; 0 → 256 GiB
	MaxRatio      int64             // uncompressed/compressed per entry; 0 → 1000 (entries < 1 MiB exempt)
	// Compress is how entity objects are stored: CompressGzip stores each
	// entity file not compressed already (see Compressible) gzip-compressed,
	// under its key with ".gz" appended; "" or CompressNone as it is.
	Compress string
}

// EntityObject is one manifest entity and what became of it.
type EntityObject struct {
	Entity string // EntityName from the manifest
	// File is the zip entry holding the entity; for an Absent entity, the
	// manifest's InputFilePath ("" if it had none).
	File         string
	SourceFormat string // SourceFormat from the manifest
	Sheet        string // ExcelSheetName from the manifest
	RefreshType  string // DefaultRefreshType from the manifest: FullPush, IncrementalPush or ""
	// Format is "csv", "xlsx", "xml", "fixed-width" or "unknown": taken
	// from SourceFormat, else from the file extension (csv, txt, tsv →
	// "csv"; a file without extension counts as csv, F&O's default, as in
	// Key).
	Format string
	// Fields are the field names of the manifest's field map (see
	// ManifestEntity.Fields).
	Fields []string
	// Key is the store key: Prefix + "/" + store.EntityKeyName(Entity, the
	// lower-case extension of File, "csv" if none). "" when Err is set or
	// the entity is Absent.
	Key    string
	Size   int64  // bytes of the entity file
	SHA256 string // hex SHA-256 of the entity file bytes
	// Compression is CompressGzip when the object holds the entity file
	// gzip-compressed, "" when it holds it as it is; StoredSize is then
	// the compressed object's size (0 when not compressed).
	Compression string
	StoredSize  int64
	// Absent marks an entity the manifest lists (and does not disable)
	// whose file is not in the package. F&O leaves out the files of
	// entities that exported no rows, so this is an empty entity, not an
	// error; nothing is stored for it and the caller decides.
	Absent bool
	// Err is a problem with this entity alone: its file name ambiguous in
	// the package, over a limit, or sharing its key with an earlier
	// entity. Nothing is stored for it.
	Err error
}

// Result describes an exploded package.
type Result struct {
	Manifest *Manifest
	Header   *PackageHeader // nil if PackageHeader.xml is absent (allowed)
	Entities []EntityObject // manifest order; disabled entities with no file are skipped
	Unlisted []string       // zip entries (zip order) that are neither the XML files nor listed entity files
}

// Explode stores each entity file of the data package at zipPath as one
// object in st and reports what it stored.
//
// Before writing anything it rejects, with an error naming the entry, a file
// that is not a zip, a package without Manifest.xml, unsafe entry names
// (absolute, drive letter, ".." segment, NUL), names that differ only in case,
// encrypted entries, compression other than Store/Deflate, and declared sizes
// or compression ratios over the limits. It then streams each entity into
// the store with store.Store.PutSealed, decompressing each entry once: the
// bytes are hashed, checked against the limits on the bytes really read,
// zip checksum verified and stored in the same read, and the hash is sealed
// into the object's metadata at the end. An entity whose bytes pass a limit
// is an entity error with nothing stored for it; a corrupt entry fails the
// package and the objects already stored are removed.
//
// An entity whose file the manifest lists but the package lacks is
// reported Absent (F&O leaves out files of entities without rows), not as
// an error.
//
// Each object's metadata is opts.Meta plus "entity", "file", "sourceformat",
// "format", "sha256" (of the entity file, compressed or not) and, when
// set, "sheet", "refreshtype" and "compression". Objects are whole or absent
// (Put is atomic), and exploding the same package again stores the same
// objects under the same keys. If storing fails part-way, or ctx is
// cancelled, Explode deletes (best effort, even after cancellation) the
// objects this call stored and says in the error whether that worked, so a
// failed run never leaves a subset of entities that looks complete.
func Explode(ctx context.Context, zipPath string, st store.Store, opts ExplodeOptions) (*Result, error) {
	pkg, err := Open(zipPath, opts)
	if err != nil {
		return nil, err
	}
	defer func() { _ = pkg.Close() }()
	if err := pkg.Store(ctx, st, nil, nil); err != nil {
		return nil, err
	}
	return pkg.Result(), nil
}

// Package is a data package opened from a local file: checked, its
// manifest read and each entity matched to its zip entry, nothing stored
// yet. Store writes the entity objects; OpenEntity reads an entity's bytes
// from the package itself, so a caller can read an entity while (or
// instead of) reading it back from a store across a network.
type Package struct {
	zr    *zip.ReadCloser
	opts  ExplodeOptions
	res   *Result
	plans []plan
}

// Open checks the package at zipPath as Explode does before storing
// anything, and plans its entities; the caller closes it.
func Open(zipPath string, opts ExplodeOptions) (*Package, error) {
	if opts.MaxEntryBytes <= 0 {
		opts.MaxEntryBytes = DefaultMaxEntryBytes
	}
	if opts.MaxTotalBytes <= 0 {
		opts.MaxTotalBytes = DefaultMaxTotalBytes
	}
	if opts.MaxRatio <= 0 {
		opts.MaxRatio = DefaultMaxRatio
	}
	prefix := strings.Trim(opts.Prefix, "/")
	if prefix != "" {
		if err := store.ValidKey(prefix); err != nil {
			return nil, fmt.Errorf("explode package: key prefix: %w", err)
		}
	}

	zr, err := zip.OpenReader(zipPath)
	if err != nil && !(errors.Is(err, zip.ErrInsecurePath) && zr != nil) {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("open package: %w", err)
		}
		return nil, notZip(err)
	}
	// klauspost's inflater takes about a quarter less CPU than the standard
	// library's for the same bytes; archive/zip still checks each entry's
	// CRC-32 and size.
	zr.RegisterDecompressor(zip.Deflate, func(r io.Reader) io.ReadCloser { return flate.NewReader(r) })

	entries, err := checkEntries(zr.File, opts)
	if err == nil {
		var px *packageXML
		if px, err = readPackageXML(entries); err == nil {
			p := &Package{zr: zr, opts: opts, res: &Result{Manifest: px.manifest, Header: px.header, Entities: []EntityObject{}}}
			var used map[*zip.File]bool
			p.plans, used = planEntities(entries, px, prefix, opts.Compress)
			for _, e := range entries {
				if !e.dir && !used[e.f] {
					p.res.Unlisted = append(p.res.Unlisted, e.f.Name)
				}
			}
			return p, nil
		}
	}
	_ = zr.Close()
	return nil, err
}

// Close releases the package file.
func (p *Package) Close() error { return p.zr.Close() }

// Entities are the package's entities in manifest order, as planned: Key
// set, Size and SHA256 not yet known, Err for problems found without
// reading an entity's bytes. After Store they are as stored.
func (p *Package) Entities() []EntityObject {
	out := make([]EntityObject, len(p.plans))
	for i := range p.plans {
		out[i] = p.plans[i].obj
	}
	return out
}

// Result describes the package: after Store, as Explode returns it.
func (p *Package) Result() *Result {
	r := *p.res
	r.Entities = p.Entities()
	return &r
}

// Store writes each entity object to st as Explode does, in order (indexes
// into Entities; nil: manifest order, and entities left out of order are
// stored after it), calling stored (when not nil) with each entity as it
// is done: stored, or given an Err of its own, or Absent. On an error
// that fails the package the objects this call stored are removed, as
// Explode does. It may be called again (into a store created anew, say):
// it stores the same objects under the same keys.
func (p *Package) Store(ctx context.Context, st store.Store, order []int, stored func(i int, obj EntityObject)) error {
	seen := make([]bool, len(p.plans))
	var all []int
	for _, i := range order {
		if i >= 0 && i < len(p.plans) && !seen[i] {
			seen[i] = true
			all = append(all, i)
		}
	}
	for i := range p.plans {
		if !seen[i] {
			all = append(all, i)
		}
	}
	return storeEntities(ctx, st, p.plans, all, p.opts, stored)
}

// DeclaredSize is the size the package declares for the file of the entity
// at index i of Entities (0 when it has none): known before Store reads it.
func (p *Package) DeclaredSize(i int) int64 {
	if f := p.plans[i].f; f != nil {
		return int64(min(f.UncompressedSize64, 1<<62))
	}
	return 0
}

// OpenEntity returns the bytes of the entity at index i of Entities, read
// from the package file: the same bytes Store writes (archive/zip checks
// the entry's CRC-32 at its end). It is an error for an entity that is
// Absent or has an Err.
func (p *Package) OpenEntity(i int) (io.ReadCloser, error) {
	if i < 0 || i >= len(p.plans) {
		return nil, fmt.Errorf("package entity %d: no such entity", i)
	}
	pl := &p.plans[i]
	if pl.f == nil || pl.obj.Absent {
		return nil, fmt.Errorf("entity %q: no file in the package", pl.obj.Entity)
	}
	rc, err := pl.f.Open()
	if err != nil {
		return nil, fmt.Errorf("corrupt package: entry %q: %w", pl.f.Name, err)
	}
	return rc, nil
}

// ErrNotZip is wrapped by the error for a package file that is not a
// readable zip archive: most often a download cut short.
var ErrNotZip = errors.New("not a valid zip package")

func notZip(err error) error {
	return fmt.Errorf("%w (truncated download or not a package?): %w", ErrNotZip, err)
}

// CheckPackage reports whether the size bytes of r are a readable zip
// archive — its end record and central directory whole — without reading
// any entry: what a download cut short fails.
func CheckPackage(r io.ReaderAt, size int64) error {
	if _, err := zip.NewReader(r, size); err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return notZip(err)
	}
	return nil
}

// storeEntities reads each entity's zip entry once: the bytes are hashed,
// counted against the limits and stored in the same read, and the hash is
// sealed into the object's metadata at the end. An entity over a limit is
// an entity error with nothing stored; a corrupt entry or a failed Put
// fails the package and removes what this call stored.
func storeEntities(ctx context.Context, st store.Store, plans []plan, order []int, opts ExplodeOptions, stored func(int, EntityObject)) error {
	var written []string
	var total int64
	done := func(i int) {
		if stored != nil {
			stored(i, plans[i].obj)
		}
	}
	for _, i := range order {
		p := &plans[i]
		if p.obj.Err != nil || p.obj.Absent {
			done(i)
			continue
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("explode package: %w%s", err, removeWritten(ctx, st, written))
		}
		rc, err := p.f.Open()
		if err != nil {
			return fmt.Errorf("corrupt package: entry %q: %w%s", p.f.Name, err, removeWritten(ctx, st, written))
		}
		h := sha256.New()
		lr := &limitReader{r: ctxio.Reader(ctx, rc), f: p.f, opts: opts, total: total, h: h}
		src := &sourceReader{r: lr}
		var body io.Reader = src
		if p.obj.Compression == CompressGzip {
			body = newGzipReader(src)
		}
		var sum string
		o, err := st.PutSealed(ctx, p.obj.Key, body, entityMeta(p, opts.Meta), func() (map[string]string, error) {
			sum = hex.EncodeToString(h.Sum(nil))
			return map[string]string{"sha256": sum}, nil
		})
		_ = rc.Close()
		switch {
		case err == nil:
			p.obj.Size, p.obj.SHA256 = lr.n, sum
			if p.obj.Compression != "" {
				p.obj.StoredSize = o.Size
			}
			total += lr.n
			written = append(written, p.obj.Key)
			done(i)
		case errors.Is(src.err, errOverLimit):
			p.obj.Err = fmt.Errorf("entity %q: %w", p.obj.Entity, src.err)
			p.obj.Key, p.obj.Compression = "", ""
			done(i)
		case ctx.Err() != nil:
			return fmt.Errorf("explode package: %w%s", ctx.Err(), removeWritten(ctx, st, written))
		case src.err != nil:
			return fmt.Errorf("corrupt package: entry %q: %w%s", p.f.Name, src.err, removeWritten(ctx, st, written))
		default:
			return fmt.Errorf("store entity %q: %w%s", p.obj.Entity, err, removeWritten(ctx, st, written))
		}
	}
	return nil
}

// sourceReader remembers the error its source returned (other than EOF), so
// a failed Put can be told apart: the package's fault or the store's.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	k, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return k, err
}

// cleanupTimeout bounds the removal of a failed Explode's objects.
const cleanupTimeout = time.Minute

// removeWritten deletes the objects a failed Explode stored, so no partial
// set of entities is left looking like a complete one, and says how that
// went as a suffix for the error. It runs even when ctx was cancelled.
func removeWritten(ctx context.Context, st store.Store, keys []string) string {
	if len(keys) == 0 {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var left []string
	var firstErr error
	for _, k := range keys {
		if err := st.Delete(ctx, k); err != nil {
			left = append(left, k)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if len(left) == 0 {
		return fmt.Sprintf(" (removed the %d entity objects this attempt had stored)", len(keys))
	}
	return fmt.Sprintf(" (could not remove %d of the %d entity objects this attempt stored, %q: %v; unpack the run again or delete them)",
		len(left), len(keys), left, firstErr)
}

// entry is a zip entry with its name normalised for matching: '\' turned
// into '/', "." and empty segments removed.
type entry struct {
	f     *zip.File
	clean string // normalised name
	lower string // strings.ToLower(clean)
	dir   bool
}

// checkEntries rejects hostile or unsupported entries and returns the
// entries in zip order.
func checkEntries(files []*zip.File, opts ExplodeOptions) ([]entry, error) {
	out := make([]entry, 0, len(files))
	seen := map[string]string{}
	var total uint64
	for _, f := range files {
		name := f.Name
		bad := func(format string, args ...any) error {
			return fmt.Errorf("unsafe package: entry %q: %s", name, fmt.Sprintf(format, args...))
		}
		n := strings.ReplaceAll(name, `\`, "/")
		switch {
		case name == "":
			return nil, bad("empty name")
		case strings.IndexByte(n, 0) >= 0:
			return nil, bad("NUL byte in name")
		case strings.HasPrefix(n, "/"):
			return nil, bad("absolute path")
		case len(n) >= 2 && n[1] == ':' && isASCIILetter(n[0]):
			return nil, bad("drive letter")
		}
		for _, seg := range strings.Split(n, "/") {
			if seg == ".." {
				return nil, bad(`".." segment`)
			}
		}
		if f.Flags&1 != 0 {
			return nil, bad("encrypted entry (flag bit 0): F&O packages are never encrypted")
		}
		if f.Method != zip.Store && f.Method != zip.Deflate {
			return nil, bad("unsupported compression method %d (want Store or Deflate)", f.Method)
		}
		size := f.UncompressedSize64
		if size > uint64(opts.MaxEntryBytes) {
			return nil, bad("declared size %d bytes is over the per-entry limit of %d", size, opts.MaxEntryBytes)
		}
		total += size
		if total > uint64(opts.MaxTotalBytes) {
			return nil, bad("declared sizes add up to %d bytes, over the package limit of %d", total, opts.MaxTotalBytes)
		}
		if size >= ratioExemptBytes {
			c := f.CompressedSize64
			if c == 0 || size/c > uint64(opts.MaxRatio) {
				return nil, bad("compression ratio of %d bytes from %d is over the limit of %d:1", size, c, opts.MaxRatio)
			}
		}
		dir := strings.HasSuffix(n, "/")
		clean := path.Clean(n)
		if clean == "." {
			clean = ""
		}
		e := entry{f: f, clean: clean, lower: strings.ToLower(clean), dir: dir}
		if !dir {
			if prev, dup := seen[e.lower]; dup {
				return nil, bad("duplicate of entry %q (names equal ignoring case)", prev)
			}
			seen[e.lower] = name
		}
		out = append(out, e)
	}
	return out, nil
}

func isASCIILetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// packageXML holds the package's own XML files.
type packageXML struct {
	base     string // "" or "Folder/" (as in the zip) when the package was re-zipped in a folder
	manifest *Manifest
	header   *PackageHeader
	mf, hf   *zip.File
}

// readPackageXML finds and parses Manifest.xml and PackageHeader.xml, at the
// zip root or in a single top-level folder, matching names ignoring case.
func readPackageXML(entries []entry) (*packageXML, error) {
	var root *entry
	var nested []*entry
	for i := range entries {
		e := &entries[i]
		if e.dir {
			continue
		}
		if e.lower == "manifest.xml" {
			root = e
		} else if strings.Count(e.lower, "/") == 1 && path.Base(e.lower) == "manifest.xml" {
			nested = append(nested, e)
		}
	}
	m := root
	if m == nil {
		switch len(nested) {
		case 0:
			return nil, errors.New("not an F&O data package: no Manifest.xml in the zip (export the data project as a package)")
		case 1:
			m = nested[0]
		default:
			return nil, fmt.Errorf("ambiguous package: Manifest.xml in several folders (%q and %q)", nested[0].f.Name, nested[1].f.Name)
		}
	}
	pkg := &packageXML{mf: m.f}
	if i := strings.LastIndexByte(m.clean, '/'); i >= 0 {
		pkg.base = m.clean[:i+1]
	}
	rc, err := m.f.Open()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", m.f.Name, err)
	}
	pkg.manifest, err = ParseManifest(rc)
	_ = rc.Close()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", m.f.Name, err)
	}
	for i := range entries {
		e := &entries[i]
		if !e.dir && strings.EqualFold(e.clean, pkg.base+"PackageHeader.xml") {
			pkg.hf = e.f
			rc, err := e.f.Open()
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", e.f.Name, err)
			}
			pkg.header, err = ParsePackageHeader(rc)
			_ = rc.Close()
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", e.f.Name, err)
			}
		}
	}
	return pkg, nil
}

// plan is an entity with the zip entry it will be stored from.
type plan struct {
	obj EntityObject
	f   *zip.File
}

// planEntities matches manifest entities to zip entries and chooses keys.
// It returns the plans in manifest order and the set of entries used.
func planEntities(entries []entry, pkg *packageXML, prefix, compress string) ([]plan, map[*zip.File]bool) {
	used := map[*zip.File]bool{pkg.mf: true}
	if pkg.hf != nil {
		used[pkg.hf] = true
	}
	// Candidate files, relative to the package folder.
	type cand struct {
		e   *entry
		rel string
	}
	var cands []cand
	for i := range entries {
		e := &entries[i]
		if e.dir || used[e.f] || len(e.clean) < len(pkg.base) || !strings.EqualFold(e.clean[:len(pkg.base)], pkg.base) {
			continue
		}
		cands = append(cands, cand{e, e.clean[len(pkg.base):]})
	}
	find := func(me ManifestEntity) (*entry, error) {
		var hits []*entry
		if me.File == "" {
			for _, c := range cands {
				b := path.Base(c.rel)
				if strings.EqualFold(strings.TrimSuffix(b, path.Ext(b)), me.Name) {
					hits = append(hits, c.e)
				}
			}
		} else {
			want := path.Clean(strings.ReplaceAll(me.File, `\`, "/"))
			for _, match := range []func(rel string) bool{
				func(rel string) bool { return rel == want },
				func(rel string) bool { return strings.EqualFold(rel, want) },
				func(rel string) bool { return strings.EqualFold(path.Base(rel), path.Base(want)) },
			} {
				for _, c := range cands {
					if match(c.rel) {
						hits = append(hits, c.e)
					}
				}
				if len(hits) > 0 {
					break
				}
			}
		}
		switch len(hits) {
		case 0:
			return nil, errAbsent
		case 1:
			return hits[0], nil
		default:
			return nil, fmt.Errorf("file %q matches several entries (%q and %q)", me.File, hits[0].f.Name, hits[1].f.Name)
		}
	}

	var plans []plan
	keys := map[string]string{}
	for _, me := range pkg.manifest.Entities {
		obj := EntityObject{Entity: me.Name, SourceFormat: me.SourceFormat, Sheet: me.Sheet, RefreshType: me.RefreshType, Fields: me.Fields}
		e, err := find(me)
		if err != nil && me.Disabled {
			continue // F&O lists disabled entities without exporting them
		}
		switch {
		case err == nil:
			used[e.f] = true
			obj.File = e.f.Name
		case errors.Is(err, errAbsent):
			obj.File, obj.Absent, err = me.File, true, nil
		}
		ext := strings.TrimPrefix(strings.ToLower(path.Ext(path.Base(strings.ReplaceAll(obj.File, `\`, "/")))), ".")
		if ext == "" {
			ext = "csv"
		}
		obj.Format = entityFormat(me.SourceFormat, ext)
		key := store.EntityKeyName(me.Name, ext)
		gz := compress == CompressGzip && Compressible(obj.Format, ext)
		if gz {
			key += ".gz"
		}
		if prefix != "" {
			key = prefix + "/" + key
		}
		switch {
		case err != nil:
			obj.Err = fmt.Errorf("entity %q: %w", me.Name, err)
		case me.Name == "":
			obj.Err = fmt.Errorf("entity in file %q: no EntityName in Manifest.xml", obj.File)
		case obj.Absent:
			// Nothing is stored, so no key is taken.
		case keys[strings.ToLower(key)] != "":
			obj.Err = fmt.Errorf("entity %q: same store key as entity %q (names equal ignoring case)", me.Name, keys[strings.ToLower(key)])
		default:
			keys[strings.ToLower(key)] = me.Name
			obj.Key = key
			if gz {
				obj.Compression = CompressGzip
			}
		}
		p := plan{obj: obj}
		if obj.Err == nil && !obj.Absent {
			p.f = e.f
		}
		plans = append(plans, p)
	}
	return plans, used
}

// errAbsent: the manifest lists a file the package does not hold.
var errAbsent = errors.New("listed in Manifest.xml, not in the package")

// entityFormat decides how an entity file is read: from the manifest's
// SourceFormat when it names a known kind, else from the file extension.
// SourceFormat names are chosen by the F&O administrator, so any case and
// any decoration ("CSV-Unicode", "EXCEL", "xml-attribute") is accepted.
func entityFormat(sourceFormat, ext string) string {
	sf := strings.ToLower(sourceFormat)
	switch {
	case strings.Contains(sf, "fixed"):
		return "fixed-width"
	case strings.Contains(sf, "csv"):
		return "csv"
	case strings.Contains(sf, "excel"), strings.Contains(sf, "xlsx"):
		return "xlsx"
	case strings.Contains(sf, "xml"):
		return "xml"
	}
	switch ext {
	case "csv", "txt", "tsv":
		return "csv"
	case "xlsx":
		return "xlsx"
	case "xml":
		return "xml"
	}
	return "unknown"
}

// errOverLimit marks limits enforced on the real bytes read.
var errOverLimit = errors.New("over a size limit")

// limitReader hashes and counts what it reads and fails with errOverLimit
// once the entry passes a limit.
type limitReader struct {
	r     io.Reader
	f     *zip.File
	opts  ExplodeOptions
	total int64
	h     hash.Hash
	n     int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	k, err := l.r.Read(p)
	l.n += int64(k)
	l.h.Write(p[:k])
	switch {
	case l.n > l.opts.MaxEntryBytes:
		return k, fmt.Errorf("%w: entry %q holds more than %d bytes", errOverLimit, l.f.Name, l.opts.MaxEntryBytes)
	case l.total+l.n > l.opts.MaxTotalBytes:
		return k, fmt.Errorf("%w: entry %q brings the package over %d bytes", errOverLimit, l.f.Name, l.opts.MaxTotalBytes)
	case l.n >= ratioExemptBytes && (l.f.CompressedSize64 == 0 || uint64(l.n)/l.f.CompressedSize64 > uint64(l.opts.MaxRatio)):
		return k, fmt.Errorf("%w: entry %q expands more than %d:1", errOverLimit, l.f.Name, l.opts.MaxRatio)
	}
	return k, err
}

// entityMeta is the metadata of p's object but its "sha256".
func entityMeta(p *plan, base map[string]string) map[string]string {
	meta := make(map[string]string, len(base)+8)
	for k, v := range base {
		meta[strings.ToLower(k)] = v
	}
	meta["entity"] = p.obj.Entity
	meta["file"] = p.obj.File
	meta["sourceformat"] = p.obj.SourceFormat
	meta["format"] = p.obj.Format
	if p.obj.Sheet != "" {
		meta["sheet"] = p.obj.Sheet
	}
	if p.obj.RefreshType != "" {
		meta["refreshtype"] = p.obj.RefreshType
	}
	if p.obj.Compression != "" {
		meta["compression"] = p.obj.Compression
	}
	return meta
}
