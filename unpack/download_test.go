package unpack

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// fastRetries makes Download's reconnect delay negligible for one test.
func fastRetries(t *testing.T) {
	old := retryDelay
	retryDelay = time.Millisecond
	t.Cleanup(func() { retryDelay = old })
}

func tempFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "pkg-*.zip")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func fileBytes(t *testing.T, f *os.File) []byte {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDownload(t *testing.T) {
	fastRetries(t)
	body := bytes.Repeat([]byte("package bytes "), 200_000) // ~2.8 MB, several buffers
	sum := sha256.Sum256(body)
	mux := http.NewServeMux()
	mux.HandleFunc("/dmf/ok.zip", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body) })
	mux.HandleFunc("/dmf/expired.zip", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-ms-error-code", "AuthenticationFailed")
		http.Error(w, "Signature not valid in the specified time frame: sig=SECRET", http.StatusForbidden)
	})
	mux.HandleFunc("/dmf/gone.zip", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-ms-error-code", "BlobNotFound")
		http.Error(w, "The specified blob does not exist.", http.StatusNotFound)
	})
	mux.HandleFunc("/dmf/busy.zip", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/dmf/short.zip", func(w http.ResponseWriter, r *http.Request) {
		// Promise more than is sent, then drop the connection.
		hj, _ := w.(http.Hijacker)
		conn, buf, err := hj.Hijack()
		if err != nil {
			return
		}
		defer func() { _ = conn.Close() }()
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n%s", strings.Repeat("z", 400))
		_ = buf.Flush()
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	const sas = "?sv=2024-01-01&se=2030-01-01&sp=r&sig=SECRET%2Bsig"

	tests := []struct {
		name      string
		path      string
		wantErr   string // "" for success
		wantIs    error
		wantBytes int
	}{
		{"ok", "/dmf/ok.zip", "", nil, len(body)},
		{"403 means expired", "/dmf/expired.zip", "ask F&O for a fresh package URL", ErrURLExpired, 0},
		{"404", "/dmf/gone.zip", "HTTP 404", ErrPackageNotFound, 0},
		{"503", "/dmf/busy.zip", "503", nil, 0},
		{"short body every time", "/dmf/short.zip", "gave up after 5 attempts: truncated download: got 400 of 1000 bytes", nil, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := tempFile(t)
			n, got, err := Download(context.Background(), srv.Client(), srv.URL+tt.path+sas, dst)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Download: %v", err)
				}
				if n != int64(len(body)) || got != hex.EncodeToString(sum[:]) || !bytes.Equal(fileBytes(t, dst), body) {
					t.Errorf("Download = %d bytes, sha %s; want %d bytes, sha %x", n, got, len(body), sum)
				}
				return
			}
			if err == nil {
				t.Fatalf("Download succeeded, want error containing %q", tt.wantErr)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.wantErr) {
				t.Errorf("error = %q, want it to contain %q", msg, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error = %q, want errors.Is %v", msg, tt.wantIs)
			}
			if strings.Contains(msg, "sig=") || strings.Contains(msg, "SECRET") || strings.Contains(msg, "?") {
				t.Errorf("error = %q leaks the URL query", msg)
			}
			if !strings.Contains(msg, srv.URL+tt.path) {
				t.Errorf("error = %q, want it to name %s", msg, srv.URL+tt.path)
			}
			if int(n) != tt.wantBytes {
				t.Errorf("n = %d, want %d", n, tt.wantBytes)
			}
		})
	}
}

func TestDownloadConnectionErrorHidesQuery(t *testing.T) {
	l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	go func() { // answer garbage so the client fails after connecting, every time
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = bufio.NewReader(c).ReadString('\n')
			_, _ = c.Write([]byte("garbage\r\n\r\n"))
			_ = c.Close()
		}
	}()
	defer func() { _ = l.Close() }()
	fastRetries(t)
	_, _, err = Download(context.Background(), nil, "http://"+addr+"/dmf/p.zip?sig=SECRET", tempFile(t))
	if err == nil || strings.Contains(err.Error(), "SECRET") || !strings.Contains(err.Error(), "/dmf/p.zip") {
		t.Errorf("error = %v, want a failure naming /dmf/p.zip without the query", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err = Download(ctx, nil, "http://"+addr+"/dmf/p.zip?sig=SECRET", tempFile(t))
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("cancelled: error = %v, want context.Canceled without the query", err)
	}
	for _, bad := range []string{"", "ftp://x/y?sig=SECRET", "::not a url?sig=SECRET"} {
		_, _, err = Download(context.Background(), nil, bad, tempFile(t))
		if err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("Download(%q) error = %v, want an invalid-URL error without the query", bad, err)
		}
	}
}
