package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/dmfexport/dmfexport/internal/ctxio"
	"github.com/dmfexport/dmfexport/internal/redact"
)

// Defaults of BlobOptions.
const (
	DefaultBlobBlockSize   = 8 << 20
	DefaultBlobConcurrency = 4
	// minBlobBlockSize is the smallest block azblob uploads.
	minBlobBlockSize = 1 << 20
	// maxBlobKeyBytes is Azure's limit on blob names.
	maxBlobKeyBytes = 1024
)

// BlobOptions says which Azure Blob Storage container a BlobStore keeps its
// objects in and how it authenticates. Set exactly one of: AccountURL with
// Credential, ConnectionString, or SASURL.
type BlobOptions struct {
	// AccountURL is the blob service endpoint, e.g.
	// https://myaccount.blob.core.windows.net/, used with Credential.
	AccountURL string
	// Container is the container name. It may be omitted when SASURL is a
	// container URL, which names it.
	Container string
	// ConnectionString is a storage account connection string (shared key
	// or SAS). It is a secret and never appears in an error.
	ConnectionString string
	// SASURL is a service or container URL with a SAS token. Its query is
	// a secret and never appears in an error.
	SASURL string
	// Credential is an Entra ID credential (azidentity), used with AccountURL.
	Credential azcore.TokenCredential
	// BlockSize is the size of each uploaded block; 0 means 8 MiB, the
	// minimum is 1 MiB. An object can have at most 50,000 blocks, so 8 MiB
	// blocks allow objects up to about 390 GiB.
	BlockSize int64
	// Concurrency is the number of blocks uploaded at once per Put; 0 means 4.
	// A Put holds up to BlockSize × Concurrency bytes of buffers.
	Concurrency int
	// HTTPClient, when set, sends every request (proxies, custom TLS).
	HTTPClient *http.Client
	// ReadOnly opens the store for reading only (dmfexport status): the
	// container is not created when missing, and a missing container
	// lists as empty.
	ReadOnly bool
	// Logger gets the warning that the container was gone under a write
	// and is created again; nil means slog.Default().
	Logger *slog.Logger
}

// BlobStore is a Store in one Azure Blob Storage container: key "a/b/c" is
// the block blob "a/b/c".
//
// Put streams through UploadStream, which stages blocks and commits the
// block list at the end: the blob becomes visible only at that commit, so a
// reader sees the previous object or the new one, never a partial one, and a
// failed or cancelled Put leaves the previous object (or nothing). Metadata
// values are percent-encoded where Azure cannot carry them (non-ASCII,
// control characters, '%', leading or trailing spaces) and decoded on read,
// so they round-trip exactly as in DirStore. BlobStore is safe for
// concurrent use.
//
// A write that finds the container gone (deleted, or an emulator restarted
// empty) creates it again, warns that every object stored before is gone,
// counts it (Recreations) and writes once more; see upload.
type BlobStore struct {
	cc          *container.Client
	name        string // the container
	where       string // "container %q in account %s", for errors
	blockSize   int64
	concurrency int
	log         *slog.Logger

	// recreateMu makes one of several writes that find the container gone
	// create it; recreations counts the times it was created again.
	recreateMu  sync.Mutex
	recreations atomic.Int64
}

var (
	_ Store = (*BlobStore)(nil)
)

// NewBlobStore connects to the container opts names and creates it if it is
// missing. Errors name the account and container, never the key or SAS
// signature.
func NewBlobStore(ctx context.Context, opts BlobOptions) (*BlobStore, error) {
	secrets := []string{opts.ConnectionString, connStringValue(opts.ConnectionString, "AccountKey"),
		connStringValue(opts.ConnectionString, "SharedAccessSignature")}
	if u, err := url.Parse(opts.SASURL); err == nil && u.RawQuery != "" {
		secrets = append(secrets, u.RawQuery, u.Query().Get("sig"), url.QueryEscape(u.Query().Get("sig")))
	}
	s, err := newBlobStore(ctx, opts)
	if err != nil {
		return nil, redact.Error(err, secrets)
	}
	return s, nil
}

func newBlobStore(ctx context.Context, opts BlobOptions) (*BlobStore, error) {
	modes := 0
	if opts.AccountURL != "" || opts.Credential != nil {
		modes++
	}
	if opts.ConnectionString != "" {
		modes++
	}
	if opts.SASURL != "" {
		modes++
	}
	if modes != 1 {
		return nil, errors.New("open blob store: set exactly one of account URL with credential, connection string, or SAS URL")
	}
	s := &BlobStore{blockSize: opts.BlockSize, concurrency: opts.Concurrency, log: opts.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	switch {
	case s.blockSize == 0:
		s.blockSize = DefaultBlobBlockSize
	case s.blockSize < minBlobBlockSize || s.blockSize > blockblob.MaxStageBlockBytes:
		return nil, fmt.Errorf("open blob store: block size %d is out of range (1 MiB to 4000 MiB)", opts.BlockSize)
	}
	switch {
	case s.concurrency == 0:
		s.concurrency = DefaultBlobConcurrency
	case s.concurrency < 0 || s.concurrency > 256:
		return nil, fmt.Errorf("open blob store: concurrency %d is out of range (1 to 256)", opts.Concurrency)
	}
	co := &container.ClientOptions{}
	if opts.HTTPClient != nil {
		co.Transport = opts.HTTPClient
	}
	name := opts.Container
	var err error
	switch {
	case opts.ConnectionString != "":
		if err := validContainer(name); err != nil {
			return nil, err
		}
		s.cc, err = container.NewClientFromConnectionString(opts.ConnectionString, name, co)
		if err != nil {
			return nil, fmt.Errorf("open blob store: connection string: %w", err)
		}
	case opts.SASURL != "":
		parts, err := blob.ParseURL(opts.SASURL)
		if err != nil || (parts.Scheme != "https" && parts.Scheme != "http") || parts.Host == "" {
			return nil, errors.New("open blob store: SAS URL is not an http(s) URL")
		}
		if parts.BlobName != "" {
			return nil, errors.New("open blob store: SAS URL names a blob; give a service or container URL")
		}
		switch {
		case parts.ContainerName == "":
		case name == "":
			name = parts.ContainerName
		case name != parts.ContainerName:
			return nil, fmt.Errorf("open blob store: container %q differs from %q in the SAS URL", name, parts.ContainerName)
		}
		if err := validContainer(name); err != nil {
			return nil, err
		}
		parts.ContainerName = name
		s.cc, err = container.NewClientWithNoCredential(parts.String(), co)
		if err != nil {
			return nil, fmt.Errorf("open blob store: SAS URL: %w", err)
		}
	default:
		if opts.Credential == nil {
			return nil, errors.New("open blob store: account URL given without a credential")
		}
		u, perr := url.Parse(opts.AccountURL)
		if perr != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, errors.New("open blob store: account URL is not an http(s) URL, want https://<account>.blob.core.windows.net/")
		}
		if u.RawQuery != "" {
			return nil, errors.New("open blob store: account URL has a query; give a SAS URL as sas_url instead")
		}
		if err := validContainer(name); err != nil {
			return nil, err
		}
		cu := strings.TrimRight((&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String(), "/") + "/" + name
		s.cc, err = container.NewClient(cu, opts.Credential, co)
		if err != nil {
			return nil, fmt.Errorf("open blob store: %w", err)
		}
	}
	s.name = name
	s.where = fmt.Sprintf("container %q in account %s", name, accountOf(s.cc.URL()))
	if opts.ReadOnly {
		return s, nil
	}
	if err := s.ensureContainer(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// ensureContainer creates the container unless it exists. A credential
// that may not create containers (a container SAS, a data-only role) is
// fine when the container already exists.
func (s *BlobStore) ensureContainer(ctx context.Context) error {
	_, err := s.cc.Create(ctx, nil)
	if err == nil || bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return nil
	}
	if statusOf(err) == http.StatusForbidden {
		pager := s.cc.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{MaxResults: ptr(int32(1))})
		if _, lerr := pager.NextPage(ctx); lerr == nil {
			return nil
		}
	}
	hint := "check the credential's permissions or create the container"
	if statusOf(err) == 0 { // no answer: the endpoint, not the permissions
		hint = "check the store's endpoint (account_url, connection_string or sas_url) and that the storage service is reachable"
	}
	return fault(fmt.Errorf("open blob store %s: create container: %w: %s", s.where, azError(err), hint))
}

// Where names the store's account and container, for logs.
func (s *BlobStore) Where() string { return s.where }

// Recreations reports how many times a write found the container gone and
// created it again (see store.Recreations).
func (s *BlobStore) Recreations() int64 { return s.recreations.Load() }

// containerBeingDeletedWait bounds how long recreate waits for Azure to
// finish deleting a container before it may be created again (it takes
// about 30 seconds).
const containerBeingDeletedWait = 2 * time.Minute

// recreate creates the container again after a write found it gone, unless
// another write of this store did since seen (the count of recreations
// when that write began). An error wraps ErrStoreLost.
func (s *BlobStore) recreate(ctx context.Context, seen int64) error {
	s.recreateMu.Lock()
	defer s.recreateMu.Unlock()
	if s.recreations.Load() != seen {
		return nil
	}
	deadline := time.Now().Add(containerBeingDeletedWait)
	for {
		_, err := s.cc.Create(ctx, nil)
		switch {
		case err == nil || bloberror.HasCode(err, bloberror.ContainerAlreadyExists):
			// Already there: another process created it again first; what
			// was stored before is gone all the same.
			s.recreations.Add(1)
			s.log.Warn("store container was gone and is created again: every object stored in it before is gone "+
				"(run records, packages, entity files, leases); runs in progress write theirs again",
				"container", s.name, "store", s.where)
			return nil
		case bloberror.HasCode(err, bloberror.ContainerBeingDeleted) && time.Now().Before(deadline):
			if serr := ctxio.Sleep(ctx, 2*time.Second); serr != nil {
				return fmt.Errorf("%w: %s was deleted; creating it again: %w", ErrStoreLost, s.where, serr)
			}
		default:
			return fmt.Errorf("%w: %s was deleted, and creating it again failed: %w; check the credential's permissions or create the container",
				ErrStoreLost, s.where, azError(err))
		}
	}
}

// accountOf returns the account name a container URL points at.
func accountOf(raw string) string {
	p, err := blob.ParseURL(raw)
	if err != nil {
		return "?"
	}
	if p.IPEndpointStyleInfo.AccountName != "" {
		return p.IPEndpointStyleInfo.AccountName
	}
	host, _, _ := strings.Cut(p.Host, ".")
	return host
}

// validContainer checks Azure's container naming rules so a typo is
// reported up front rather than as an HTTP 400.
func validContainer(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("open blob store: container name %q: %s (3-63 lower-case letters, digits and single hyphens)", name, why)
	}
	if name == "" {
		return errors.New("open blob store: no container name")
	}
	if len(name) < 3 || len(name) > 63 {
		return bad("wrong length")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '-' && i > 0 && i < len(name)-1 && name[i-1] != '-':
		default:
			return bad(fmt.Sprintf("byte %q at %d not allowed", c, i))
		}
	}
	return nil
}

func (s *BlobStore) checkKey(key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if len(key) > maxBlobKeyBytes {
		return fmt.Errorf("invalid store key %q: longer than %d bytes", key, maxBlobKeyBytes)
	}
	return nil
}

// Put implements Store.
func (s *BlobStore) Put(ctx context.Context, key string, r io.Reader, meta map[string]string) (Object, error) {
	o, err := s.upload(ctx, key, r, meta, nil, nil)
	if err != nil {
		return Object{}, fault(fmt.Errorf("put %s: %w", key, err))
	}
	return o, nil
}

// PutGuarded implements GuardedPutter: the metadata guard judges is read
// with the blob's ETag, and the upload commits only if the blob still has
// that ETag (If-Match; If-None-Match: * when there was none). A blob
// changed in between is read and judged again, a few times.
func (s *BlobStore) PutGuarded(ctx context.Context, key string, b []byte, meta map[string]string, guard func(current map[string]string) error) (Object, error) {
	if err := s.checkKey(key); err != nil {
		return Object{}, fault(fmt.Errorf("put %s: %w", key, err))
	}
	for attempt := 1; ; attempt++ {
		var current map[string]string
		cond := &blob.ModifiedAccessConditions{}
		p, err := s.cc.NewBlobClient(key).GetProperties(ctx, nil)
		switch {
		case err == nil:
			current, cond.IfMatch = decodeMeta(p.Metadata), p.ETag
		case bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) || statusOf(err) == http.StatusNotFound:
			// No blob (in a container that may be gone too: upload
			// creates a lost container again).
			cond.IfNoneMatch = ptr(azcore.ETagAny)
		default:
			return Object{}, fault(fmt.Errorf("put %s: %w", key, s.mapErr(err)))
		}
		if err := guard(current); err != nil {
			return Object{}, fault(fmt.Errorf("put %s: %w", key, err))
		}
		o, err := s.upload(ctx, key, bytes.NewReader(b), meta, nil, cond)
		if err == nil {
			return o, nil
		}
		if attempt == 5 || !errors.Is(err, ErrExist) && !bloberror.HasCode(err, bloberror.ConditionNotMet) {
			return Object{}, fault(fmt.Errorf("put %s: %w", key, err))
		}
	}
}

// Create implements Store.Create with an If-None-Match: * condition on the block
// list commit: of several concurrent Creates of one key exactly one
// succeeds, and the others get an error wrapping ErrExist.
func (s *BlobStore) Create(ctx context.Context, key string, r io.Reader, meta map[string]string) (Object, error) {
	o, err := s.upload(ctx, key, r, meta, nil, &blob.ModifiedAccessConditions{IfNoneMatch: ptr(azcore.ETagAny)})
	if err != nil {
		return Object{}, fault(fmt.Errorf("create %s: %w", key, err))
	}
	return o, nil
}

// PutSealed implements Store.PutSealed. The upload reads r to its end before it
// commits the block list (or sends the single Put Blob of a small object),
// and the metadata goes with that commit: seal runs when r reports EOF and
// its metadata joins the commit's.
func (s *BlobStore) PutSealed(ctx context.Context, key string, r io.Reader, meta map[string]string, seal func() (map[string]string, error)) (Object, error) {
	o, err := s.upload(ctx, key, r, meta, seal, nil)
	if err != nil {
		return Object{}, fault(fmt.Errorf("put %s: %w", key, err))
	}
	return o, nil
}

// upload writes r under key; cond, when set, applies to the commit, and a
// create-once condition (If-None-Match: * alone) that fails is ErrExist.
// When the container is gone it creates it again (see recreate) and writes
// once more, from where r started if r is an io.Seeker; a reader that
// cannot rewind gets an error wrapping ErrRecreated instead, and the
// caller writes again.
func (s *BlobStore) upload(ctx context.Context, key string, r io.Reader, meta map[string]string, seal func() (map[string]string, error), cond *blob.ModifiedAccessConditions) (Object, error) {
	if err := s.checkKey(key); err != nil {
		return Object{}, err
	}
	m, err := checkMeta(meta)
	if err != nil {
		return Object{}, err
	}
	start := int64(-1)
	seeker, _ := r.(io.Seeker)
	if seeker != nil {
		if off, err := seeker.Seek(0, io.SeekCurrent); err == nil {
			start = off
		}
	}
	seen := s.recreations.Load()
	o, err := s.uploadOnce(ctx, key, r, m, seal, cond)
	if err == nil || !bloberror.HasCode(err, bloberror.ContainerNotFound) {
		return o, err
	}
	if err := s.recreate(ctx, seen); err != nil {
		return Object{}, err
	}
	if start < 0 {
		return Object{}, fmt.Errorf("%w (%s)", ErrRecreated, s.where)
	}
	if _, err := seeker.Seek(start, io.SeekStart); err != nil {
		return Object{}, fmt.Errorf("%w (%s): rewind: %w", ErrRecreated, s.where, err)
	}
	return s.uploadOnce(ctx, key, r, m, seal, cond)
}

func (s *BlobStore) uploadOnce(ctx context.Context, key string, r io.Reader, m map[string]string, seal func() (map[string]string, error), cond *blob.ModifiedAccessConditions) (Object, error) {
	once := cond != nil && cond.IfNoneMatch != nil && cond.IfMatch == nil
	if err := ctx.Err(); err != nil {
		return Object{}, err
	}
	if f, size := wholeFile(r); f != nil && seal == nil && cond == nil {
		return s.uploadFile(ctx, key, f, size, m)
	}
	cr := &countReader{r: ctxio.Reader(ctx, r)}
	uo := &blockblob.UploadStreamOptions{BlockSize: s.blockSize, Concurrency: s.concurrency, Metadata: encodeMeta(m)}
	if seal != nil {
		cr.atEOF = func() error {
			if err := sealMeta(m, seal); err != nil {
				return err
			}
			for k, v := range encodeMeta(m) {
				uo.Metadata[k] = v // read by the commit, after the last Read
			}
			return nil
		}
	}
	if ct := contentType(key); ct != "" {
		uo.HTTPHeaders = &blob.HTTPHeaders{BlobContentType: &ct}
	}
	if cond != nil {
		uo.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: cond}
	}
	resp, err := s.cc.NewBlockBlobClient(key).UploadStream(ctx, cr, uo)
	if err != nil {
		if once && bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
			return Object{}, ErrExist
		}
		if cr.err != nil {
			return Object{}, fmt.Errorf("read: %w", cr.err)
		}
		if ctx.Err() != nil {
			return Object{}, ctx.Err()
		}
		return Object{}, fmt.Errorf("upload to %s: %w", s.where, azError(err))
	}
	o := Object{Key: key, Size: cr.n, Meta: m}
	if resp.LastModified != nil {
		o.ModTime = *resp.LastModified
	}
	return o, nil
}

// wholeFile returns the file a section reader covers from its start to
// its end, not yet read, and its size; or nil.
func wholeFile(r io.Reader) (*os.File, int64) {
	sr, ok := r.(*io.SectionReader)
	if !ok {
		return nil, 0
	}
	ra, off, n := sr.Outer()
	f, ok := ra.(*os.File)
	if !ok || off != 0 {
		return nil, 0
	}
	if pos, err := sr.Seek(0, io.SeekCurrent); err != nil || pos != 0 {
		return nil, 0
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != n {
		return nil, 0
	}
	return f, n
}

// uploadFile writes a file (the package) from its ranges, each read as it
// is sent: unlike UploadStream, which fills block_size × concurrency bytes
// of buffers from a plain reader, it holds no block in memory.
func (s *BlobStore) uploadFile(ctx context.Context, key string, f *os.File, size int64, m map[string]string) (Object, error) {
	opts := &blockblob.UploadFileOptions{BlockSize: s.blockSize, Concurrency: uint16(s.concurrency), Metadata: encodeMeta(m)}
	if ct := contentType(key); ct != "" {
		opts.HTTPHeaders = &blob.HTTPHeaders{BlobContentType: &ct}
	}
	resp, err := s.cc.NewBlockBlobClient(key).UploadFile(ctx, f, opts)
	if err != nil {
		if ctx.Err() != nil {
			return Object{}, ctx.Err()
		}
		return Object{}, fmt.Errorf("upload to %s: %w", s.where, azError(err))
	}
	o := Object{Key: key, Size: size, Meta: m}
	if resp.LastModified != nil {
		o.ModTime = *resp.LastModified
	}
	return o, nil
}

// countReader counts bytes and remembers the source's own error, so Put can
// report it rather than the upload's wrapping of it.
type countReader struct {
	r   io.Reader
	n   int64
	err error
	// atEOF, if set, runs once when r reports io.EOF; its error replaces
	// the EOF, so the upload fails before it commits.
	atEOF func() error
}

func (c *countReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += int64(k)
	if errors.Is(err, io.EOF) && c.atEOF != nil {
		f := c.atEOF
		c.atEOF = nil
		if serr := f(); serr != nil {
			err = serr
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		c.err = err
	}
	return k, err
}

// contentType labels the blob for people who download it from the portal.
func contentType(key string) string {
	switch strings.ToLower(path.Ext(key)) {
	case ".csv":
		return "text/csv"
	case ".xlsx":
		return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
	case ".xml":
		return "application/xml"
	case ".json":
		return "application/json"
	case ".zip":
		return "application/zip"
	case ".gz":
		// Not Content-Encoding: gzip, which would make HTTP clients
		// decompress an object whose name says it is compressed.
		return "application/gzip"
	}
	return ""
}

// Open implements Store. The reader resumes from where it broke off (with
// the blob's ETag pinned) if the connection drops, up to 5 times, and stops
// when ctx is done.
func (s *BlobStore) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := s.checkKey(key); err != nil {
		return nil, fault(fmt.Errorf("open %s: %w", key, err))
	}
	resp, err := s.cc.NewBlobClient(key).DownloadStream(ctx, nil)
	if err != nil {
		return nil, fault(fmt.Errorf("open %s: %w", key, s.mapErr(err)))
	}
	return resp.NewRetryReader(ctx, &blob.RetryReaderOptions{MaxRetries: 5}), nil
}

// Stat implements Store.
func (s *BlobStore) Stat(ctx context.Context, key string) (Object, error) {
	if err := s.checkKey(key); err != nil {
		return Object{}, fault(fmt.Errorf("stat %s: %w", key, err))
	}
	p, err := s.cc.NewBlobClient(key).GetProperties(ctx, nil)
	if err != nil {
		return Object{}, fault(fmt.Errorf("stat %s: %w", key, s.mapErr(err)))
	}
	o := Object{Key: key, Meta: decodeMeta(p.Metadata)}
	if p.ContentLength != nil {
		o.Size = *p.ContentLength
	}
	if p.LastModified != nil {
		o.ModTime = *p.LastModified
	}
	return o, nil
}

// List implements Store. Blobs whose names are not valid keys (written by
// something else) are left out.
func (s *BlobStore) List(ctx context.Context, prefix string) ([]Object, error) {
	lo := &container.ListBlobsFlatOptions{Include: container.ListBlobsInclude{Metadata: true}}
	if prefix != "" {
		lo.Prefix = &prefix
	}
	pager := s.cc.NewListBlobsFlatPager(lo)
	out := []Object{}
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if bloberror.HasCode(err, bloberror.ContainerNotFound) {
			return out, nil // nothing was ever stored (a read-only open)
		}
		if err != nil {
			return nil, fault(fmt.Errorf("list %q in %s: %w", prefix, s.where, azError(err)))
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name == nil || s.checkKey(*it.Name) != nil {
				continue
			}
			o := Object{Key: *it.Name, Meta: decodeMeta(it.Metadata)}
			if p := it.Properties; p != nil {
				if p.ContentLength != nil {
					o.Size = *p.ContentLength
				}
				if p.LastModified != nil {
					o.ModTime = *p.LastModified
				}
			}
			out = append(out, o)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete implements Store. It deletes the blob's snapshots with it.
func (s *BlobStore) Delete(ctx context.Context, key string) error {
	if err := s.checkKey(key); err != nil {
		return fault(fmt.Errorf("delete %s: %w", key, err))
	}
	_, err := s.cc.NewBlobClient(key).Delete(ctx, &blob.DeleteOptions{DeleteSnapshots: ptr(blob.DeleteSnapshotsOptionTypeInclude)})
	if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
		return fault(fmt.Errorf("delete %s: %w", key, s.mapErr(err)))
	}
	return nil
}

// mapErr turns "not found" into ErrNotExist and shortens service errors.
func (s *BlobStore) mapErr(err error) error {
	if bloberror.HasCode(err, bloberror.BlobNotFound) {
		return fmt.Errorf("%w in %s", ErrNotExist, s.where)
	}
	if bloberror.HasCode(err, bloberror.ContainerNotFound) {
		return fmt.Errorf("%w: %s does not exist", ErrNotExist, s.where)
	}
	if statusOf(err) == http.StatusNotFound { // HEAD responses carry no body
		return fmt.Errorf("%w in %s", ErrNotExist, s.where)
	}
	return fmt.Errorf("%s: %w", s.where, azError(err))
}

// serviceError is a storage service refusal in one line ("HTTP 403
// AuthorizationFailure") instead of azcore's multi-line dump; it still
// unwraps to the *azcore.ResponseError for bloberror.HasCode.
type serviceError struct {
	status int
	code   string
	err    error
}

func (e *serviceError) Error() string {
	if e.code == "" {
		return fmt.Sprintf("HTTP %d %s", e.status, http.StatusText(e.status))
	}
	return fmt.Sprintf("HTTP %d %s", e.status, e.code)
}

func (e *serviceError) Unwrap() error { return e.err }

func azError(err error) error {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return &serviceError{status: re.StatusCode, code: re.ErrorCode, err: err}
	}
	return err
}

func statusOf(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

func ptr[T any](v T) *T { return &v }

// connStringValue returns the value of key in a connection string.
func connStringValue(cs, key string) string {
	for _, part := range strings.Split(cs, ";") {
		k, v, ok := strings.Cut(part, "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), key) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// encodeMeta prepares metadata values for Azure, which sends them as HTTP
// headers: ASCII only, no control characters, no surrounding spaces.
func encodeMeta(m map[string]string) map[string]*string {
	out := make(map[string]*string, len(m))
	for k, v := range m {
		out[k] = ptr(encodeMetaValue(v))
	}
	return out
}

// encodeMetaValue percent-encodes (upper-case %XX) '%', control characters,
// non-ASCII bytes and leading or trailing spaces, and writes "" as "%" (a
// lone '%' that no other value encodes to), since the service may drop
// empty values. decodeMetaValue reverses it.
func encodeMetaValue(v string) string {
	if v == "" {
		return "%"
	}
	lead := len(v) - len(strings.TrimLeft(v, " "))
	trail := len(strings.TrimRight(v, " "))
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c >= 0x7f || c == '%' || (c == ' ' && (i < lead || i >= trail)) {
			b.WriteByte('%')
			b.WriteByte(upperHex[c>>4])
			b.WriteByte(upperHex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// decodeMetaValue reverses encodeMetaValue. A value with a malformed %XX
// sequence was not written by a BlobStore and is returned unchanged.
func decodeMetaValue(v string) string {
	if v == "%" {
		return ""
	}
	if !strings.Contains(v, "%") {
		return v
	}
	b := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b = append(b, v[i])
			continue
		}
		if i+2 >= len(v) {
			return v
		}
		hi, ok1 := unhex(v[i+1])
		lo, ok2 := unhex(v[i+2])
		if !ok1 || !ok2 {
			return v
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b)
}

// decodeMeta lower-cases the keys (the service and SDK re-case them) and
// decodes the values; it never returns nil.
func decodeMeta(m map[string]*string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if v != nil {
			out[strings.ToLower(k)] = decodeMetaValue(*v)
		}
	}
	return out
}
