package unpack

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/dmfexport/dmfexport/internal/redact"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
)

// ErrURLExpired is wrapped by Download when the storage service refuses the
// package URL (HTTP 403), which is what an expired SAS token looks like: ask
// F&O for a fresh package URL.
var ErrURLExpired = errors.New("package URL expired or refused")

// ErrPackageNotFound is wrapped by Download when the storage service answers
// 404 for the package: right after an execution succeeds F&O can hand out a
// URL whose package is not downloadable yet, and after about 7 days F&O
// deletes packages. Callers wait and ask again for a while, then give up.
var ErrPackageNotFound = errors.New("package blob not found")

// ErrPackageTooLarge is wrapped by Download when the body runs past its
// bound: the Content-Length the response declared, or, without one,
// DownloadOptions.MaxBytes. The bytes beyond it are never written, so an
// endless body cannot fill the disk. Callers may download once more.
var ErrPackageTooLarge = errors.New("package body larger than its bound")

// DefaultMaxPackageBytes bounds a package body sent without a
// Content-Length when DownloadOptions.MaxBytes is 0.
const DefaultMaxPackageBytes int64 = 8 << 30

// DefaultStallTimeout is how long a response may send nothing (no headers,
// no body bytes) before Download drops the connection and resumes, when
// DownloadOptions.StallTimeout is 0: a stalled connection would otherwise
// hold the run until its total timeout.
const DefaultStallTimeout = time.Minute

// progressLogEvery is the time between two log lines of a download in
// progress: under a minute, so an operator never watches a silent process.
var progressLogEvery = 50 * time.Second

// downloadAttempts bounds how often Download reconnects in a row without
// progressUnit of new data (a dropped connection, HTTP 5xx).
const downloadAttempts = 5

// progressUnit is the new data an attempt must bring to renew the reconnect
// budget (an eighth of the package when that is less): a server that sends
// a byte per connection must not keep a run reconnecting forever.
const progressUnit = 1 << 20

// DefaultDownloadTimeout bounds a whole download, reconnects included, when
// DownloadOptions.Timeout is 0.
const DefaultDownloadTimeout = time.Hour

// errDownloadTimeout is the cause of a download cut off by its total time.
var errDownloadTimeout = errors.New("download timeout")

// retryDelay is the wait before the first reconnect; it doubles each time.
var retryDelay = 250 * time.Millisecond

// errStalled is the cause of a request dropped for sending nothing.
var errStalled = errors.New("connection stalled")

// Download streams the package at rawURL into dst, starting at dst's current
// offset, and returns the number of bytes written and their SHA-256 in hex.
// Memory use is one 1 MiB buffer whatever the package size.
//
// It requires status 200 and, when the response declares a Content-Length,
// exactly that many bytes. When the connection breaks (or the service
// answers 5xx, 408 or 429) it reconnects after a doubling delay, giving up
// after 5 attempts in a row that add less than 1 MiB, and asks only for the
// missing bytes (Range) with If-Match pinned to the ETag of the first
// response; if the server ignores the range, or the package changed, it
// truncates dst back to where it started and downloads again from the
// beginning. On error dst may hold a partial package. Errors name the URL as scheme://host/path only: the query, which
// holds the SAS signature, never appears in an error.
func Download(ctx context.Context, hc *http.Client, rawURL string, dst *os.File) (n int64, sha256hex string, err error) {
	return DownloadWith(ctx, rawURL, dst, DownloadOptions{HTTPClient: hc})
}

// DownloadOptions bound a download; zero values take the defaults.
type DownloadOptions struct {
	// HTTPClient makes the requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Timeout bounds the whole download, every reconnect included; 0 means
	// DefaultDownloadTimeout.
	Timeout time.Duration
	// Progress, when set, is called after each chunk written with the bytes
	// held so far and the package size from Content-Length (-1 while
	// unknown). A reconnect that starts over reports fewer bytes than before.
	// It runs on the caller's goroutine.
	Progress func(done, total int64)
	// MaxBytes bounds a body sent without a Content-Length (with one, the
	// Content-Length is the bound); 0 means DefaultMaxPackageBytes.
	MaxBytes int64
	// StallTimeout is how long a response may send nothing before the
	// connection is dropped and the download resumed (a reconnect counted
	// like a broken connection); 0 means DefaultStallTimeout.
	StallTimeout time.Duration
	// Logger receives a line every 50 s while the download lasts (bytes so
	// far, size, rate, requests) and one per reconnect; nil means
	// slog.Default(). Lines name the URL without its query.
	Logger *slog.Logger
	// Clock times the waits between attempts, the stall timeout and the
	// progress log; nil means the real clock. Timeout bounds the download
	// on the wall clock, like the connections it bounds.
	Clock clockwork.Clock
}

// DownloadWith is Download with options. Whatever the server does, it ends:
// within o.Timeout, and after downloadAttempts reconnects in a row that
// brought less than 1 MiB (an eighth of a smaller package) of new data;
// a connection silent for o.StallTimeout is dropped and resumed; and it
// never writes more than the declared Content-Length, or o.MaxBytes
// without one (ErrPackageTooLarge).
func DownloadWith(ctx context.Context, rawURL string, dst *os.File, o DownloadOptions) (n int64, sha256hex string, err error) {
	hc := o.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultDownloadTimeout
	}
	parent := ctx
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errDownloadTimeout)
	defer cancel()
	u, perr := url.Parse(rawURL)
	if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return 0, "", errors.New("download package: invalid package URL (want an http or https URL)")
	}
	// Errors name the package by scheme, host and path: its query is the
	// SAS token, whose expiry an error states in words.
	where := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String()
	secrets := []string{u.RawQuery, u.Query().Encode(), u.User.String()}
	fail := func(format string, args ...any) error {
		err := fmt.Errorf("download package %s: "+format, append([]any{where}, args...)...)
		return redact.Error(err, secrets, ErrURLExpired, ErrPackageNotFound, ErrPackageTooLarge, io.ErrUnexpectedEOF)
	}
	start, err := dst.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, "", fail("%w", err)
	}
	d := &download{ctx: ctx, hc: hc, u: u, dst: dst, start: start, h: sha256.New(), total: -1, buf: make([]byte, 1<<20), progress: o.Progress,
		max: cmp.Or(max(o.MaxBytes, 0), DefaultMaxPackageBytes), stallTimeout: cmp.Or(max(o.StallTimeout, 0), DefaultStallTimeout), clock: o.Clock}
	if d.clock == nil {
		d.clock = clockwork.NewRealClock()
	}
	d.totalSeen.Store(-1)
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	stopLog := d.logProgress(log, where)
	defer stopLog()
	failures, requests := 0, 0
	var mark int64 // bytes held when the reconnect budget was last renewed
	ctxErr := func() error {
		if parent.Err() == nil && errors.Is(context.Cause(ctx), errDownloadTimeout) {
			return fail("did not finish within %s (%d of %s bytes after %d requests): %w: raise poll.download_timeout, or check the network to the storage account",
				timeout, d.n, d.size(), requests, context.DeadlineExceeded)
		}
		return fail("%w", ctx.Err())
	}
	for {
		requests++
		err := d.attempt()
		if err == nil {
			return d.n, hex.EncodeToString(d.h.Sum(nil)), nil
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			return d.n, "", fail("%w", fatal.err)
		}
		if ctx.Err() != nil {
			return d.n, "", ctxErr()
		}
		if d.n >= mark+d.progressUnit() {
			mark, failures = d.n, 0
		}
		failures++
		if failures >= downloadAttempts {
			return d.n, "", fail("gave up after %d attempts: %w (%d of %s bytes after %d requests; the attempts in a row brought less than %d bytes)",
				failures, err, d.n, d.size(), requests, d.progressUnit())
		}
		wait := retryDelay << min(failures-1, 4)
		log.Warn("package download interrupted, resuming", "url", where, "err", redact.Error(err, secrets).Error(),
			"bytes", d.n, "size", d.size(), "attempt", failures+1, "max_attempts", downloadAttempts, "delay", wait)
		t := d.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return d.n, "", ctxErr()
		case <-t.Chan():
		}
	}
}

// progressUnit is the new data an attempt must bring to renew the
// reconnect budget: progressUnit, or an eighth of a smaller package, so a
// small package cut short on every connection still completes.
func (d *download) progressUnit() int64 {
	if d.total > 0 && d.total/8 < progressUnit {
		return max(d.total/8, 1)
	}
	return progressUnit
}

// size renders the package size for messages: "unknown" until it is known.
func (d *download) size() string {
	if d.total < 0 {
		return "unknown"
	}
	return strconv.FormatInt(d.total, 10)
}

// sizeOf is size for the progress log's goroutine.
func (d *download) sizeOf() string {
	if t := d.totalSeen.Load(); t >= 0 {
		return strconv.FormatInt(t, 10)
	}
	return "unknown"
}

// fatalError is a Download failure that retrying cannot fix.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

// download is the state of one Download across reconnects.
type download struct {
	ctx   context.Context
	hc    *http.Client
	u     *url.URL
	dst   *os.File
	start int64     // dst offset of the package's first byte
	h     hash.Hash // over dst[start : start+n]
	n     int64     // bytes written and hashed
	total int64     // package size, -1 until known
	etag  string    // of the first full response, "" if none
	buf   []byte
	// progress is DownloadOptions.Progress.
	progress func(done, total int64)

	max          int64         // bound of a body without Content-Length
	stallTimeout time.Duration // see DownloadOptions.StallTimeout
	clock        clockwork.Clock

	// held and requests mirror n and the request count for the progress
	// log, which reads them from its own goroutine.
	held, requests, totalSeen atomic.Int64
}

// logProgress logs the download's progress every progressLogEvery until
// the returned stop is called: bytes so far, size, the rate since the last
// line and the requests made.
func (d *download) logProgress(log *slog.Logger, where string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := d.clock.NewTicker(progressLogEvery)
		defer t.Stop()
		began, last, lastAt := d.clock.Now(), int64(0), d.clock.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.Chan():
				held := d.held.Load()
				rate := float64(held-last) / now.Sub(lastAt).Seconds()
				args := []any{"url", where, "bytes", held, "size", d.sizeOf(), "elapsed", now.Sub(began).Round(time.Second),
					"rate_bytes_per_second", int64(max(rate, 0)), "requests", d.requests.Load()}
				if held == last {
					log.Warn("package download brings no data", args...)
				} else {
					log.Info("package download in progress", args...)
				}
				last, lastAt = held, now
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// restart forgets every byte written so far.
func (d *download) restart() error {
	if err := d.dst.Truncate(d.start); err != nil {
		return &fatalError{fmt.Errorf("restart: %w", err)}
	}
	if _, err := d.dst.Seek(d.start, io.SeekStart); err != nil {
		return &fatalError{fmt.Errorf("restart: %w", err)}
	}
	d.h.Reset()
	d.n, d.total, d.etag = 0, -1, ""
	d.held.Store(0)
	d.totalSeen.Store(-1)
	return nil
}

// attempt makes one request and copies its body; a nil error means the
// whole package is in dst.
func (d *download) attempt() error {
	d.requests.Add(1)
	ctx, cancel := context.WithCancelCause(d.ctx)
	defer cancel(nil)
	stall := d.clock.AfterFunc(d.stallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	stalled := func(err error) error {
		if errors.Is(context.Cause(ctx), errStalled) {
			return fmt.Errorf("no data for %s after %d bytes (poll.download_stall_timeout): %w", d.stallTimeout, d.n, errStalled)
		}
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.u.String(), nil)
	if err != nil {
		return &fatalError{unwrapURLError(err)}
	}
	resuming := d.n > 0
	if resuming {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", d.n))
		if d.etag != "" {
			req.Header.Set("If-Match", d.etag)
		}
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return stalled(unwrapURLError(err))
	}
	defer func() { _ = resp.Body.Close() }()
	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		if resuming { // the server ignored Range: take this response from the start
			if err := d.restart(); err != nil {
				return err
			}
		}
		d.total = resp.ContentLength
		d.totalSeen.Store(d.total)
		d.etag = resp.Header.Get("ETag")
	case code == http.StatusPartialContent && resuming:
		first, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || first != d.n || (d.total >= 0 && total != d.total) {
			err := fmt.Errorf("resume answered with range %q, want bytes from %d", resp.Header.Get("Content-Range"), d.n)
			if rerr := d.restart(); rerr != nil {
				return rerr
			}
			return err
		}
		if d.total < 0 {
			d.total = total
			d.totalSeen.Store(total)
		}
	case code == http.StatusPreconditionFailed || code == http.StatusRequestedRangeNotSatisfiable:
		// The package changed since the first response: start over.
		if err := d.restart(); err != nil {
			return err
		}
		return fmt.Errorf("package changed while downloading (HTTP %d)", code)
	case code == http.StatusForbidden:
		return &fatalError{fmt.Errorf("HTTP 403%s: %w: ask F&O for a fresh package URL", azureCode(resp), ErrURLExpired)}
	case code == http.StatusNotFound:
		return &fatalError{fmt.Errorf("HTTP 404%s: %w", azureCode(resp), ErrPackageNotFound)}
	case code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout:
		return fmt.Errorf("HTTP status %s%s", resp.Status, azureCode(resp))
	default:
		return &fatalError{fmt.Errorf("unexpected HTTP status %s%s", resp.Status, azureCode(resp))}
	}

	for {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		k, rerr := resp.Body.Read(d.buf)
		if k > 0 {
			stall.Reset(d.stallTimeout)
			if d.total >= 0 && d.n+int64(k) > d.total {
				return &fatalError{fmt.Errorf("%w: the server sent more than the %d bytes it declared", ErrPackageTooLarge, d.total)}
			}
			if d.total < 0 && d.n+int64(k) > d.max {
				return &fatalError{fmt.Errorf("%w: more than %d bytes without a Content-Length (poll.max_package_bytes); nothing beyond was written",
					ErrPackageTooLarge, d.max)}
			}
			if _, werr := d.dst.Write(d.buf[:k]); werr != nil {
				return &fatalError{fmt.Errorf("write: %w", werr)}
			}
			d.h.Write(d.buf[:k])
			d.n += int64(k)
			d.held.Store(d.n)
			if d.progress != nil {
				d.progress(d.n, d.total)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			rerr = stalled(rerr)
			if d.total >= 0 && d.n < d.total {
				return fmt.Errorf("truncated download: got %d of %d bytes: %w", d.n, d.total, unwrapURLError(rerr))
			}
			return fmt.Errorf("read body after %d bytes: %w", d.n, unwrapURLError(rerr))
		}
	}
	if d.total >= 0 && d.n != d.total {
		return fmt.Errorf("truncated download: got %d of %d bytes", d.n, d.total)
	}
	return nil
}

// parseContentRange reads "bytes FIRST-LAST/TOTAL"; TOTAL may be "*" (-1).
func parseContentRange(v string) (first, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	span, size, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(span, "-")
	if !found {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first {
		return 0, 0, false
	}
	total = -1
	if size != "*" {
		t, err := strconv.ParseInt(size, 10, 64)
		if err != nil || t <= last {
			return 0, 0, false
		}
		total = t
	}
	return first, total, true
}

// azureCode renders the storage service's error code header, which explains
// a refusal (e.g. AuthenticationFailed) without revealing the signature.
func azureCode(resp *http.Response) string {
	if c := resp.Header.Get("x-ms-error-code"); c != "" && len(c) < 100 {
		return " (" + strings.Map(func(r rune) rune {
			if r < ' ' || r > '~' {
				return '?'
			}
			return r
		}, c) + ")"
	}
	return ""
}

// unwrapURLError drops *url.Error's copy of the full URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
