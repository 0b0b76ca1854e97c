package dmftest

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dmfexport/dmfexport/internal/ctxio"
)

// Faults make a Simulator misbehave the way the real service and its blob
// storage can; the zero value injects nothing. Tests set them per case;
// cmd/dmfsim sets them from flags.
type Faults struct {
	// API lists failure rules for API calls and package downloads. For each
	// request the first rule whose Action matches and whose call count
	// selects it applies; the others do not count the request.
	API []APIFault

	// StuckExecution keeps every execution Executing forever once its
	// NotRun phase is over, as a hung batch job does.
	StuckExecution bool

	// ExpiredURLs makes the first N package URLs handed out by
	// GetExportedPackageUrl already expired (se one minute in the past), so
	// a download with them gets 403 AuthenticationFailed; later asks get
	// valid URLs.
	ExpiredURLs int

	// DownloadFaultsFirst limits the download faults below to the first N
	// package downloads (GET requests with a valid signature); 0 applies
	// them to every download.
	DownloadFaultsFirst int
	// CorruptZip inverts 8 bytes in the middle of the package, keeping its
	// length, so the zip's entity data or directory is damaged.
	CorruptZip bool
	// TruncateAfter, when above zero, sends only this many bytes of the
	// package and then closes the connection, while Content-Length
	// announces the whole package.
	TruncateAfter int64
	// ContentLengthDelta is added to the announced Content-Length. Below
	// zero the body is silently cut at the announced length (the download
	// looks complete but the zip is short); above zero the whole package is
	// sent and the connection closed, short of what was announced.
	ContentLengthDelta int64
	// DownloadRate, when above zero, throttles package bodies to this many
	// bytes per second.
	DownloadRate int
	// StallAfter, when above zero, sends this many bytes of the package and
	// then nothing more, keeping the connection open until the client gives
	// up, as a stalled storage connection does.
	StallAfter int64
	// EndlessBody answers without a Content-Length and sends the package
	// followed by zero bytes that never end (ignoring any Range), as a
	// broken proxy can: a client must bound what it writes.
	EndlessBody bool
	// Faulty downloads honour a Range of the form "bytes=N-" (as resuming
	// clients send, with If-Match), answering 206 for the rest of the
	// package with the faults above applied to that rest, and 416 for any
	// other range.
}

// APIFault is one failure rule. A request matches it when Action matches;
// the rule counts the requests it matches (1, 2, ...) and applies to those
// selected by First and Every: the first First of them, every Every-th of
// them, or all of them when both are zero.
type APIFault struct {
	// Action is the OData action name (e.g. "ExportToPackage"), "download"
	// for package URL requests, or "" for every API action (not downloads).
	Action string
	First  int
	Every  int

	// Delay holds the answer back this long (a slow response); the request
	// is then answered as the other fields say, or normally.
	Delay time.Duration
	// Status, when not zero, is the HTTP status answered instead of the
	// normal answer, with an OData error body (Azure Storage XML for
	// downloads): 429 TooManyRequests, 500 InternalServerError, 502, 503
	// ServiceUnavailable, 504 GatewayTimeout or any other.
	Status int
	// RetryAfter, when above zero, is sent as Retry-After with Status: in
	// whole seconds (rounded up), or as an HTTP date with RetryAfterDate.
	RetryAfter     time.Duration
	RetryAfterDate bool
	// Reset closes the connection without any answer, as a dropped
	// connection or a load balancer reset does.
	Reset bool
	// Answer, when not "", replaces the normal answer of an API action
	// (not of a download) with a 200 that a client cannot use: one of the
	// AnswerOversize, AnswerGzipBomb, AnswerHTML or AnswerGarbage.
	Answer string
	// Apply lets the action take effect before Status, Reset or Answer is
	// answered: the answer is lost, but e.g. ExportToPackage has started
	// the export. Without it the failed request changes nothing.
	Apply bool
}

// The bad 200 answers of APIFault.Answer.
const (
	// AnswerOversize is a JSON answer of OversizeAnswerBytes, a value
	// string padded far beyond any real answer.
	AnswerOversize = "oversize"
	// AnswerGzipBomb is a gzip-encoded answer (Content-Encoding: gzip)
	// of about 64 KiB that decodes to GzipBombBytes of blanks.
	AnswerGzipBomb = "gzip-bomb"
	// AnswerHTML is an HTML page with status 200 (text/html), as a proxy's
	// sign-in or maintenance page comes.
	AnswerHTML = "html"
	// AnswerGarbage is a short body of bytes that are not JSON, announced
	// as application/json.
	AnswerGarbage = "garbage"
)

// AnswerFaults lists the values APIFault.Answer takes.
var AnswerFaults = []string{AnswerOversize, AnswerGzipBomb, AnswerHTML, AnswerGarbage}

// Sizes of the oversize answers: beyond the 8 MiB a client keeps of an answer.
const (
	OversizeAnswerBytes = 9 << 20
	GzipBombBytes       = 64 << 20
)

// faultOf counts req against the rules and returns the one that applies, or nil.
func (s *Simulator) faultOf(action string) *APIFault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.opts.Faults.API {
		f := &s.opts.Faults.API[i]
		switch {
		case f.Action == action:
		case f.Action == "" && action != actionDownload:
		default:
			continue
		}
		s.faultCounts[i]++
		n := s.faultCounts[i]
		if (f.First == 0 && f.Every == 0) || (f.First > 0 && n <= f.First) || (f.Every > 0 && n%f.Every == 0) {
			return f
		}
	}
	return nil
}

// delay waits d or until the client gives up; it reports whether to go on.
func delay(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	return ctxio.Sleep(ctx, d) == nil
}

// failsAnswer reports whether f replaces the normal answer of an API
// action (download: of a package download, which Answer does not touch).
func (f *APIFault) failsAnswer(download bool) bool {
	return f.Status != 0 || f.Reset || (f.Answer != "" && !download)
}

// writeFault answers f for an API action or a download.
func (s *Simulator) writeFault(w http.ResponseWriter, r *http.Request, f *APIFault, download bool) {
	if f.Reset {
		resetConn(w)
		return
	}
	if f.Answer != "" && f.Status == 0 && !download {
		writeBadAnswer(w, f.Answer)
		return
	}
	if f.RetryAfter > 0 {
		if f.RetryAfterDate {
			w.Header().Set("Retry-After", s.now().Add(f.RetryAfter).UTC().Format(http.TimeFormat))
		} else {
			secs := int64((f.RetryAfter + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		}
	}
	code, msg := faultText(f.Status)
	if download {
		blobError(w, f.Status, code, msg)
		return
	}
	s.odataError(w, f.Status, msg) // F&O's OData errors carry no code

}

// faultText returns the error code (for Azure Storage errors) and message
// the simulator answers with an injected status.
func faultText(status int) (code, msg string) {
	switch status {
	case http.StatusTooManyRequests:
		return "TooManyRequests", "Number of requests exceeded the limit of the service protection API; retry after the number of seconds in Retry-After."
	case http.StatusInternalServerError:
		return "InternalServerError", "An error has occurred (simulated)."
	case http.StatusBadGateway:
		return "BadGateway", "The gateway received an invalid response from the upstream server (simulated)."
	case http.StatusServiceUnavailable:
		return "ServiceUnavailable", "The service is temporarily unavailable; retry later (simulated)."
	case http.StatusGatewayTimeout:
		return "GatewayTimeout", "The gateway did not receive a timely response from the upstream server (simulated)."
	}
	return "SimulatedFault", fmt.Sprintf("Simulated HTTP %d.", status)
}

// gzipBomb is the body of AnswerGzipBomb, built once: one gzip member of
// a MiB of blanks, repeated (RFC 1952 lets a gzip stream hold several
// members, and decoders read them as one body). Compressing one MiB
// instead of 64 keeps the first bad answer quick even under -race.
var gzipBomb = sync.OnceValue(func() []byte {
	var member bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	const chunk = 1 << 20
	_, _ = zw.Write(bytes.Repeat([]byte(" "), chunk))
	_ = zw.Close()
	return bytes.Repeat(member.Bytes(), GzipBombBytes/chunk)
})

// writeBadAnswer answers 200 with the bad answer named kind (AnswerFaults).
func writeBadAnswer(w http.ResponseWriter, kind string) {
	h := w.Header()
	switch kind {
	case AnswerOversize:
		h.Set("Content-Type", "application/json; odata.metadata=minimal")
		h.Set("Content-Length", strconv.Itoa(OversizeAnswerBytes))
		w.WriteHeader(http.StatusOK)
		head := []byte(`{"@odata.context":"simulated oversize answer","value":"`)
		_, _ = w.Write(head)
		pad := bytes.Repeat([]byte("x"), 64<<10)
		for left := OversizeAnswerBytes - len(head) - 2; left > 0; left -= len(pad) {
			if _, err := w.Write(pad[:min(left, len(pad))]); err != nil {
				return
			}
		}
		_, _ = w.Write([]byte(`"}`))
	case AnswerGzipBomb:
		body := gzipBomb()
		h.Set("Content-Type", "application/json; odata.metadata=minimal")
		h.Set("Content-Encoding", "gzip")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	case AnswerHTML:
		h.Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "<!DOCTYPE html><html><head><title>Sign in</title></head><body>"+
			"<p>The service is under maintenance (simulated proxy page).</p></body></html>")
	default: // AnswerGarbage
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("\x00\x1f\x8b garbled \xff\xfe answer \x00"))
	}
}

// resetConn closes the request's connection without an answer.
func resetConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable (HTTP/2): abort the stream instead.
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// discardWriter is a ResponseWriter whose answer goes nowhere, for actions
// applied before their answer is lost.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header {
	if d.h == nil {
		d.h = http.Header{}
	}
	return d.h
}
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

// downloadFaulty reports whether a package download gets the download
// faults, counting it.
func (s *Simulator) downloadFaulty() bool {
	f := s.opts.Faults
	if !f.CorruptZip && f.TruncateAfter <= 0 && f.ContentLengthDelta == 0 && f.DownloadRate <= 0 && f.StallAfter <= 0 && !f.EndlessBody {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultyDownloads++
	return f.DownloadFaultsFirst <= 0 || s.faultyDownloads <= f.DownloadFaultsFirst
}

// serveFaultyPackage writes body with the download faults applied.
func (s *Simulator) serveFaultyPackage(w http.ResponseWriter, r *http.Request, body []byte) {
	f := s.opts.Faults
	if f.CorruptZip && len(body) > 0 {
		body = bytes.Clone(body)
		mid := len(body) / 2
		for i := mid; i < min(mid+8, len(body)); i++ {
			body[i] ^= 0xFF
		}
	}
	if f.EndlessBody {
		serveEndless(w, r, body)
		return
	}
	status := http.StatusOK
	if first, ok := openRange(r.Header.Get("Range"), len(body)); ok {
		if im := r.Header.Get("If-Match"); im != "" && im != "*" && im != w.Header().Get("ETag") {
			blobError(w, http.StatusPreconditionFailed, "ConditionNotMet", "The condition specified using HTTP conditional header(s) is not met.")
			return
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, len(body)-1, len(body)))
		body, status = body[first:], http.StatusPartialContent
	} else if r.Header.Get("Range") != "" {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(body)))
		blobError(w, http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "The range specified is invalid for the current size of the resource.")
		return
	}
	announced := max(int64(len(body))+f.ContentLengthDelta, 0)
	send := int64(len(body))
	if f.TruncateAfter > 0 {
		send = min(send, f.TruncateAfter)
	}
	send = min(send, announced)
	stall := f.StallAfter > 0 && f.StallAfter < send
	if stall {
		send = f.StallAfter
	}
	w.Header().Set("Content-Length", strconv.FormatInt(announced, 10))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	chunk := int64(32 << 10)
	tick := time.Duration(0)
	if f.DownloadRate > 0 {
		chunk = max(int64(f.DownloadRate)/10, 1)
		tick = 100 * time.Millisecond
	}
	for off := int64(0); off < send; off += chunk {
		end := min(off+chunk, send)
		if _, err := w.Write(body[off:end]); err != nil {
			return
		}
		if tick > 0 {
			_ = rc.Flush()
			if end < send && !delay(r.Context(), tick) {
				return
			}
		}
	}
	if stall {
		_ = rc.Flush()
		<-r.Context().Done() // stalled: nothing more until the client gives up
		return
	}
	if send < announced {
		_ = rc.Flush()
		resetConn(w)
	}
}

// serveEndless sends body without a Content-Length, then zero bytes until
// the client hangs up.
func serveEndless(w http.ResponseWriter, r *http.Request, body []byte) {
	w.Header().Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := w.Write(body); err != nil {
		return
	}
	zeros := make([]byte, 64<<10)
	for r.Context().Err() == nil {
		if _, err := w.Write(zeros); err != nil {
			return
		}
	}
}

// openRange reads a Range header of the form "bytes=N-" (what resuming
// clients send) and reports N when it lies inside a body of size n.
func openRange(h string, n int) (int, bool) {
	v, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !ok {
		return 0, false
	}
	v, ok = strings.CutSuffix(v, "-")
	if !ok {
		return 0, false
	}
	first, err := strconv.Atoi(v)
	if err != nil || first < 0 || first >= n {
		return 0, false
	}
	return first, true
}
