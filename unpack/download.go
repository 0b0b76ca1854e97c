package unpack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// ErrURLExpired is wrapped by Download when the storage service refuses the
// package URL (HTTP 403), which is what an expired SAS token looks like: ask
// F&O for a fresh package URL.
var ErrURLExpired = errors.New("package URL expired or refused")

// Download streams the package at rawURL into dst with one GET (no retries)
// and returns the number of bytes written and their SHA-256 in hex.
//
// It requires status 200 and, when the response declares a Content-Length,
// exactly that many bytes. Errors name the URL as scheme://host/path only:
// the query, which holds the SAS signature, never appears in an error.
func Download(ctx context.Context, hc *http.Client, rawURL string, dst io.Writer) (n int64, sha256hex string, err error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	u, perr := url.Parse(rawURL)
	if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return 0, "", errors.New("download package: invalid package URL (want an http or https URL)")
	}
	where := RedactURL(u)
	fail := func(format string, args ...any) error {
		return scrub(fmt.Errorf("download package %s: "+format, append([]any{where}, args...)...), u)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, "", fail("%w", unwrapURLError(err))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", fail("%w", unwrapURLError(err))
	}
	defer resp.Body.Close()
	switch code := resp.StatusCode; {
	case code == http.StatusOK:
	case code == http.StatusForbidden:
		return 0, "", fail("HTTP 403%s: %w: ask F&O for a fresh package URL", azureCode(resp), ErrURLExpired)
	case code == http.StatusNotFound:
		return 0, "", fail("HTTP 404%s: package blob not found (F&O deletes packages after 7 days): export again", azureCode(resp))
	default:
		return 0, "", fail("unexpected HTTP status %s%s", resp.Status, azureCode(resp))
	}

	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return n, "", fail("%w", err)
		}
		k, rerr := resp.Body.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return n, "", fail("write: %w", werr)
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if resp.ContentLength >= 0 && n < resp.ContentLength && errors.Is(rerr, io.ErrUnexpectedEOF) {
				return n, "", fail("truncated download: got %d of %d bytes: %w", n, resp.ContentLength, rerr)
			}
			return n, "", fail("read body after %d bytes: %w", n, unwrapURLError(rerr))
		}
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, "", fail("truncated download: got %d of %d bytes", n, resp.ContentLength)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// RedactURL returns u as scheme://host/path, without user info, query or
// fragment, so it can be logged or shown without leaking a SAS token.
func RedactURL(u *url.URL) string {
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return r.String()
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

// scrubbedError replaces a message that held a secret; it unwraps only to
// the sentinels callers branch on, so the original text cannot leak through
// errors.Unwrap.
type scrubbedError struct {
	msg  string
	errs []error
}

func (e *scrubbedError) Error() string   { return e.msg }
func (e *scrubbedError) Unwrap() []error { return e.errs }

// scrub removes the URL's query and user info from err's text, whatever
// layer put it there.
func scrub(err error, u *url.URL) error {
	msg := err.Error()
	changed := false
	for _, secret := range []string{u.RawQuery, u.Query().Encode(), u.User.String()} {
		if len(secret) > 0 && strings.Contains(msg, secret) {
			msg = strings.ReplaceAll(msg, secret, "REDACTED")
			changed = true
		}
	}
	if !changed {
		return err
	}
	var keep []error
	for _, s := range []error{ErrURLExpired, context.Canceled, context.DeadlineExceeded, io.ErrUnexpectedEOF} {
		if errors.Is(err, s) {
			keep = append(keep, s)
		}
	}
	return &scrubbedError{msg: msg, errs: keep}
}
