package unpack

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/internal/testenv"
)

// bodyTransport answers every request with a 200 declaring contentLength
// and sending body, whatever the declaration says: what net/http's own
// transport never passes on, but a broken proxy or transport could.
type bodyTransport struct {
	contentLength int64
	body          []byte
}

func (b bodyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Status: "200 OK", ContentLength: b.contentLength, Header: http.Header{},
		Body: io.NopCloser(bytes.NewReader(b.body)), Request: req}, nil
}

// TestDownloadIsBounded: a body never writes more than its bound to disk:
// an endless body without Content-Length stops at MaxBytes, a body longer
// than its Content-Length stops there; both are ErrPackageTooLarge, say
// which bound, and never name the SAS query.
func TestDownloadIsBounded(t *testing.T) {
	fastRetries(t)
	endless := func(w http.ResponseWriter, r *http.Request) {
		zeros := make([]byte, 32<<10)
		for r.Context().Err() == nil {
			if _, err := w.Write(zeros); err != nil {
				return
			}
		}
	}
	tests := []struct {
		name     string
		handler  http.HandlerFunc // served over a real connection
		client   *http.Client     // or this client
		maxBytes int64
		wantMax  int64 // bytes on disk at most
		want     string
	}{
		{name: "endless body without Content-Length", handler: endless, maxBytes: 3 << 20, wantMax: 3 << 20,
			want: "more than 3145728 bytes without a Content-Length (poll.max_package_bytes)"},
		{name: "endless body, small setting", handler: endless, maxBytes: 100_000, wantMax: 100_000,
			want: "more than 100000 bytes"},
		{name: "body longer than its Content-Length", client: &http.Client{Transport: bodyTransport{contentLength: 1000, body: make([]byte, 5000)}},
			maxBytes: 1 << 20, wantMax: 1000, want: "sent more than the 1000 bytes it declared"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, hc := "https://acct.blob.core.windows.net/dmf/p.zip?sig=SECRET", tt.client
			var requests atomic.Int32
			if tt.handler != nil {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					requests.Add(1)
					tt.handler(w, r)
				}))
				defer srv.Close()
				url, hc = srv.URL+"/p.zip?sig=SECRET", srv.Client()
			}
			f := tempFile(t)
			n, _, err := DownloadWith(context.Background(), url, f, DownloadOptions{HTTPClient: hc, MaxBytes: tt.maxBytes, Timeout: 20 * time.Second})
			if !errors.Is(err, ErrPackageTooLarge) || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "SECRET") {
				t.Fatalf("want ErrPackageTooLarge saying %q (no query), got %v", tt.want, err)
			}
			fi, serr := f.Stat()
			if serr != nil {
				t.Fatal(serr)
			}
			if fi.Size() > tt.wantMax || n > tt.wantMax {
				t.Errorf("%d bytes on disk (%d reported), want at most %d", fi.Size(), n, tt.wantMax)
			}
			if got := requests.Load(); tt.handler != nil && got != 1 {
				t.Errorf("%d requests, want 1: a body past its bound is not downloaded again here", got)
			}
		})
	}
}

// TestDownloadTricklesThenStalls: a response that trickles, then sends
// nothing while keeping the connection open, is dropped after
// StallTimeout and resumed from where it stopped; the reconnect is logged
// with its cause, and the slow download logs its progress (bytes, rate)
// on its own schedule, never with the SAS query.
func TestDownloadTricklesThenStalls(t *testing.T) {
	fastRetries(t)
	old := progressLogEvery
	progressLogEvery = 50 * time.Millisecond
	t.Cleanup(func() { progressLogEvery = old })
	body := bytes.Repeat([]byte("0123456789"), 20_000)
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := requests.Add(1)
		w.Header().Set("ETag", `"v1"`)
		if n > 1 {
			http.ServeContent(w, r, "p.zip", time.Time{}, bytes.NewReader(body))
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		for i := 0; i < 30; i++ { // trickle 1 KB every 10 ms for 300 ms
			_, _ = w.Write(body[i*1000 : (i+1)*1000])
			w.(http.Flusher).Flush()
			time.Sleep(10 * time.Millisecond) // a real server sending slowly over a real connection
		}
		<-r.Context().Done() // then stall without closing
	}))
	defer srv.Close()
	logs := &testenv.SyncBuffer{}
	start := time.Now()
	n, _, err := DownloadWith(context.Background(), srv.URL+"/p.zip?sig=SECRET", tempFile(t), DownloadOptions{
		HTTPClient: srv.Client(), StallTimeout: 250 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil || n != int64(len(body)) {
		t.Fatalf("DownloadWith = %d bytes, %v; want %d bytes", n, err, len(body))
	}
	if got := requests.Load(); got != 2 {
		t.Errorf("%d requests, want 2 (the stalled one and the resume)", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s, want the stall cut after 250ms", d)
	}
	log := logs.String()
	for _, want := range []string{"package download interrupted, resuming", "poll.download_stall_timeout",
		"package download in progress", "rate_bytes_per_second=", "package download brings no data"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "SECRET") {
		t.Errorf("log holds the SAS query:\n%s", log)
	}
}
