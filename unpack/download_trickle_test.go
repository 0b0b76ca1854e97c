package unpack

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestDownloadTrickleIsBounded serves a package that only ever trickles:
// the download must end, within a bounded number of requests or within
// its total time, with an error that says why, instead of reconnecting
// forever because each connection brought a byte or two.
func TestDownloadTrickleIsBounded(t *testing.T) {
	fastRetries(t)
	body := bytes.Repeat([]byte("z"), 5000)
	tests := []struct {
		name        string
		perRequest  int           // bytes sent before the connection drops; 0 sends slowly and never drops
		timeout     time.Duration // DownloadOptions.Timeout
		maxRequests int64
		want        string
		maxDuration time.Duration
	}{
		{name: "one byte per connection", perRequest: 1, timeout: time.Minute, maxRequests: 2 * downloadAttempts, want: "gave up after", maxDuration: 10 * time.Second},
		{name: "slow single connection", perRequest: 0, timeout: 300 * time.Millisecond, maxRequests: 1, want: "download_timeout", maxDuration: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var requests atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				from := 0
				if rg := r.Header.Get("Range"); rg != "" {
					_, _ = fmt.Sscanf(rg, "bytes=%d-", &from)
					w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, len(body)-1, len(body)))
					w.Header().Set("Content-Length", fmt.Sprint(len(body)-from))
					w.WriteHeader(http.StatusPartialContent)
				} else {
					w.Header().Set("Content-Length", fmt.Sprint(len(body)))
				}
				for i := from; i < len(body); i++ {
					if tt.perRequest > 0 && i-from == tt.perRequest {
						panic(http.ErrAbortHandler) // drop the connection
					}
					if _, err := w.Write(body[i : i+1]); err != nil {
						return
					}
					w.(http.Flusher).Flush()
					if tt.perRequest == 0 {
						select {
						case <-r.Context().Done():
							return
						case <-time.After(20 * time.Millisecond):
						}
					}
				}
			}))
			defer srv.Close()
			start := time.Now()
			_, _, err := DownloadWith(context.Background(), srv.URL+"/p.zip?sig=SECRET", tempFile(t), DownloadOptions{HTTPClient: srv.Client(), Timeout: tt.timeout})
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "SECRET") {
				t.Errorf("trickling download: want an error containing %q (no query), got %v", tt.want, err)
			}
			if n := requests.Load(); n > tt.maxRequests {
				t.Errorf("trickling download made %d requests, want at most %d", n, tt.maxRequests)
			}
			if d := time.Since(start); d > tt.maxDuration {
				t.Errorf("trickling download took %s, want at most %s", d, tt.maxDuration)
			}
		})
	}
}
