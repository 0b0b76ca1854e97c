package dmftest

import (
	"bytes"
	"compress/gzip"
	"io"
	"testing"
)

// blankCounter counts the bytes written to it and whether all were blanks.
type blankCounter struct {
	n      int
	others bool
}

func (c *blankCounter) Write(p []byte) (int, error) {
	c.n += len(p)
	c.others = c.others || bytes.Count(p, []byte(" ")) != len(p)
	return len(p), nil
}

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
	var c blankCounter
	if _, err := io.Copy(&c, zr); err != nil {
		t.Fatalf("decode after %d bytes: %v", c.n, err)
	}
	if c.n != GzipBombBytes || c.others {
		t.Errorf("want %d blanks once decoded, got %d bytes (other bytes among them: %v)", GzipBombBytes, c.n, c.others)
	}
}
