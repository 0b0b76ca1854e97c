package unpack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// flakyServer serves a package and misbehaves as configured: it drops the
// connection part-way through the first responses, may ignore Range, may
// swap the package (new ETag) after the first drop, or may answer 503.
type flakyServer struct {
	mu          sync.Mutex
	body        []byte
	etag        string
	drops       int    // responses still to cut short
	dropAfter   int    // bytes sent before a cut
	ignoreRange bool   // answer every request with the whole package
	swapTo      []byte // after the first drop, serve this package under a new ETag
	busy        int    // 503 answers still to give
	badRange    bool   // answer a Range request with the wrong start
	chunked     bool   // send full responses without Content-Length
	requests    []string
}

func (s *flakyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Header.Get("Range")+"|"+r.Header.Get("If-Match"))
	if s.busy > 0 {
		s.busy--
		s.mu.Unlock()
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	body, etag := s.body, s.etag
	drop := s.drops > 0
	if drop {
		s.drops--
	}
	s.mu.Unlock()

	if im := r.Header.Get("If-Match"); im != "" && im != etag {
		w.WriteHeader(http.StatusPreconditionFailed)
		return
	}
	status, first := http.StatusOK, 0
	if rg := r.Header.Get("Range"); rg != "" && !s.ignoreRange {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		if err != nil || n >= len(body) {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		status, first = http.StatusPartialContent, n
	}
	part := body[first:]
	hj := w.(http.Hijacker)
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer func() { _ = conn.Close() }()
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nETag: %s\r\n", status, http.StatusText(status), etag)
	if s.chunked && status == http.StatusOK {
		buf.WriteString("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
		n := len(part)
		if drop {
			n = min(s.dropAfter, n)
		}
		fmt.Fprintf(buf, "%x\r\n", len(part)) // promise the whole rest in one chunk
		buf.Write(part[:n])
		if !drop {
			buf.WriteString("\r\n0\r\n\r\n")
		}
		_ = buf.Flush()
		return
	}
	fmt.Fprintf(buf, "Content-Length: %d\r\n", len(part))
	if status == http.StatusPartialContent {
		start := first
		if s.badRange {
			start++
		}
		fmt.Fprintf(buf, "Content-Range: bytes %d-%d/%d\r\n", start, len(body)-1, len(body))
	}
	buf.WriteString("Connection: close\r\n\r\n")
	if drop {
		buf.Write(part[:min(s.dropAfter, len(part))])
		_ = buf.Flush()
		s.mu.Lock()
		if s.swapTo != nil {
			s.body, s.etag, s.swapTo = s.swapTo, `"v2"`, nil
		}
		s.mu.Unlock()
		return
	}
	buf.Write(part)
	_ = buf.Flush()
}

func TestDownloadResume(t *testing.T) {
	fastRetries(t)
	body := bytes.Repeat([]byte("0123456789abcdef"), 300_000) // 4.8 MB
	other := bytes.Repeat([]byte("fedcba9876543210"), 200_000)
	tests := []struct {
		name     string
		srv      flakyServer
		prefill  string // bytes already in dst before its offset
		want     []byte
		wantReqs []string // Range|If-Match of each request
		wantErr  string
	}{
		{"resumes with Range and If-Match", flakyServer{drops: 2, dropAfter: 1 << 20}, "", body,
			[]string{"|", "bytes=1048576-|\"v1\"", "bytes=2097152-|\"v1\""}, ""},
		{"server ignores Range: restart from the start offset", flakyServer{drops: 1, dropAfter: 1 << 20, ignoreRange: true}, "HEADER", body,
			[]string{"|", "bytes=1048576-|\"v1\""}, ""},
		{"package changed: start over", flakyServer{drops: 1, dropAfter: 1 << 20, swapTo: other}, "", other,
			[]string{"|", "bytes=1048576-|\"v1\"", "|"}, ""},
		{"wrong Content-Range: start over", flakyServer{drops: 1, dropAfter: 1000, badRange: true}, "", body,
			[]string{"|", "bytes=1000-|\"v1\"", "|"}, ""},
		{"no Content-Length: resume learns the size from Content-Range", flakyServer{drops: 1, dropAfter: 1 << 20, chunked: true}, "", body,
			[]string{"|", "bytes=1048576-|\"v1\""}, ""},
		{"503 then whole", flakyServer{busy: 2}, "", body, []string{"|", "|", "|"}, ""},
		{"always 503", flakyServer{busy: 100}, "", nil, []string{"|", "|", "|", "|", "|"}, "gave up after 5 attempts: HTTP status 503"},
		{"drops without progress", flakyServer{drops: 100, dropAfter: 0}, "", nil, []string{"|", "|", "|", "|", "|"}, "gave up after 5 attempts: truncated download: got 0 of"},
		{"progress keeps it going", flakyServer{drops: 8, dropAfter: 500_000}, "", body, nil, ""},
	}
	for i := range tests {
		tt := &tests[i]
		t.Run(tt.name, func(t *testing.T) {
			fs := &tt.srv
			fs.body, fs.etag = body, `"v1"`
			srv := httptest.NewServer(fs)
			defer srv.Close()
			dst := tempFile(t)
			if _, err := dst.WriteString(tt.prefill); err != nil {
				t.Fatal(err)
			}
			n, sum, err := Download(context.Background(), srv.Client(), srv.URL+"/p.zip?sig=SECRET", dst)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "SECRET") {
					t.Fatalf("Download error = %v, want one containing %q without the query", err, tt.wantErr)
				}
			} else {
				if err != nil {
					t.Fatalf("Download: %v", err)
				}
				want := sha256.Sum256(tt.want)
				if n != int64(len(tt.want)) || sum != hex.EncodeToString(want[:]) {
					t.Errorf("Download = %d bytes, sha %s; want %d, %x", n, sum, len(tt.want), want)
				}
				if got := fileBytes(t, dst); !bytes.Equal(got, append([]byte(tt.prefill), tt.want...)) {
					t.Errorf("file holds %d bytes, want prefix %q and the %d package bytes", len(got), tt.prefill, len(tt.want))
				}
			}
			if tt.wantReqs != nil && strings.Join(fs.requests, " ") != strings.Join(tt.wantReqs, " ") {
				t.Errorf("requests = %q, want %q", fs.requests, tt.wantReqs)
			}
		})
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in           string
		first, total int64
		ok           bool
	}{
		{"bytes 0-9/10", 0, 10, true},
		{"bytes 5-9/*", 5, -1, true},
		{"bytes 5-9/9", 0, 0, false},
		{"bytes 9-5/10", 0, 0, false},
		{"bytes -1-5/10", 0, 0, false},
		{"items 0-9/10", 0, 0, false},
		{"bytes 0-9", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			first, total, ok := parseContentRange(tt.in)
			if ok != tt.ok || (ok && (first != tt.first || total != tt.total)) {
				t.Errorf("parseContentRange(%q) = %d, %d, %v; want %d, %d, %v", tt.in, first, total, ok, tt.first, tt.total, tt.ok)
			}
		})
	}
}

// TestDownloadResumesStalledConnection: a server that stops sending in the
// middle of the body, without closing, is dropped after the stall timeout
// and the rest is fetched with a range request.
func TestDownloadResumesStalledConnection(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 100_000)
	release := make(chan struct{})
	defer close(release)
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := requests.Add(1)
		w.Header().Set("ETag", `"v1"`)
		if n == 1 {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			select { // stall without closing
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		http.ServeContent(w, r, "p.zip", time.Time{}, bytes.NewReader(body))
	}))
	defer srv.Close()
	f, err := os.CreateTemp(t.TempDir(), "pkg")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	n, sum, err := DownloadWith(context.Background(), srv.URL+"/p.zip?sig=SECRET", f, DownloadOptions{HTTPClient: srv.Client(), StallTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("Download: %v", err)
	}
	want := sha256.Sum256(body)
	if n != int64(len(body)) || sum != hex.EncodeToString(want[:]) {
		t.Errorf("got %d bytes sha %s, want %d bytes sha %x", n, sum, len(body), want)
	}
	if requests.Load() != 2 {
		t.Errorf("%d requests, want 2 (the stalled one and the resume)", requests.Load())
	}
}
