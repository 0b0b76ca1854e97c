package dmftest

import (
	"bytes"
	"compress/gzip"
	"io"
	"testing"
)

// TestGzipBomb: the AnswerGzipBomb body is small on the wire and decodes,
// as one gzip stream, to GzipBombBytes of blanks.
func TestGzipBomb(t *testing.T) {
	body := gzipBomb()
	if len(body) > 128<<10 {
		t.Errorf("want about 64 KiB on the wire, got %d bytes", len(body))
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	n, blanks := 0, true
	buf := make([]byte, 1<<16)
	for {
		k, err := zr.Read(buf)
		n += k
		blanks = blanks && bytes.Count(buf[:k], []byte(" ")) == k
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("decode after %d bytes: %v", n, err)
		}
	}
	if n != GzipBombBytes || !blanks {
		t.Errorf("want %d blanks once decoded, got %d bytes (all blanks: %v)", GzipBombBytes, n, blanks)
	}
}
