package unpack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/dmfexport/dmfexport/internal/redact"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
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

// stallTimeout is how long a response may send nothing (no headers, no
// body bytes) before Download drops the connection and resumes: a stalled
// connection would otherwise hold the run forever.
var stallTimeout = 2 * time.Minute

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
}

// DownloadWith is Download with options. Whatever the server does, it ends:
// within o.Timeout, and after downloadAttempts reconnects in a row that
// brought less than 1 MiB (an eighth of a smaller package) of new data.
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
		return redact.Error(err, secrets, ErrURLExpired, ErrPackageNotFound, io.ErrUnexpectedEOF)
	}
	start, err := dst.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, "", fail("%w", err)
	}
	d := &download{ctx: ctx, hc: hc, u: u, dst: dst, start: start, h: sha256.New(), total: -1, buf: make([]byte, 1<<20), progress: o.Progress}
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
		t := time.NewTimer(retryDelay << min(failures-1, 4))
		select {
		case <-ctx.Done():
			t.Stop()
			return d.n, "", ctxErr()
		case <-t.C:
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
	return nil
}

// attempt makes one request and copies its body; a nil error means the
// whole package is in dst.
func (d *download) attempt() error {
	ctx, cancel := context.WithCancelCause(d.ctx)
	defer cancel(nil)
	stall := time.AfterFunc(stallTimeout, func() { cancel(errStalled) })
	defer stall.Stop()
	stalled := func(err error) error {
		if errors.Is(context.Cause(ctx), errStalled) {
			return fmt.Errorf("no data for %s after %d bytes: %w", stallTimeout, d.n, errStalled)
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
	defer resp.Body.Close()
	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		if resuming { // the server ignored Range: take this response from the start
			if err := d.restart(); err != nil {
				return err
			}
		}
		d.total = resp.ContentLength
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
			stall.Reset(stallTimeout)
			if d.total >= 0 && d.n+int64(k) > d.total {
				return &fatalError{fmt.Errorf("server sent more than the %d bytes it declared", d.total)}
			}
			if _, werr := d.dst.Write(d.buf[:k]); werr != nil {
				return &fatalError{fmt.Errorf("write: %w", werr)}
			}
			d.h.Write(d.buf[:k])
			d.n += int64(k)
			if d.progress != nil {
				d.progress(d.n, d.total)
			}
		}
		if rerr == io.EOF {
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
