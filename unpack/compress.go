package unpack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/dmfexport/dmfexport/store"
	"github.com/klauspost/compress/gzip"
)

// How entity objects are stored (ExplodeOptions.Compress): as the entity
// file is, or gzip-compressed.
const (
	CompressNone = "none"
	CompressGzip = "gzip"
)

// Compressible reports whether an entity file of this format and file
// extension (lower case, without the dot) is worth compressing: an Excel
// workbook is a zip already, as are files that are compressed archives
// themselves.
func Compressible(format, ext string) bool {
	if format == "xlsx" {
		return false
	}
	switch ext {
	case "xlsx", "xlsm", "zip", "gz", "zst", "7z":
		return false
	}
	return true
}

// OpenStored returns the bytes of the entity file stored under key in st,
// decompressed when compression (EntityObject.Compression, kept in the
// run record) says the object holds them compressed: the bytes Store read
// from the package. Every reader of a stored entity opens it here.
func OpenStored(ctx context.Context, st store.Store, key, compression string) (io.ReadCloser, error) {
	if compression != "" && compression != CompressNone && compression != CompressGzip {
		return nil, fmt.Errorf("open %s: unknown compression %q (written by a later version of dmfexport?)", key, compression)
	}
	rc, err := st.Open(ctx, key)
	if err != nil || compression != CompressGzip {
		return rc, err
	}
	zr, err := gzip.NewReader(rc)
	if err != nil {
		_ = rc.Close()
		return nil, fmt.Errorf("open %s: not gzip-compressed as its run record says: %w", key, err)
	}
	return &gunzipReader{Reader: zr, zr: zr, rc: rc}, nil
}

// gunzipReader decompresses a stored object and closes it.
type gunzipReader struct {
	io.Reader
	zr *gzip.Reader
	rc io.ReadCloser
}

func (g *gunzipReader) Close() error {
	return errors.Join(g.zr.Close(), g.rc.Close())
}

// gzipChunk is how much of the entity file gzipReader compresses at a time.
const gzipChunk = 64 << 10

// gzipReader yields src gzip-compressed (BestSpeed), as it is read: the
// store's upload pulls compressed bytes while the entity file is read in
// chunks, so memory stays bounded by a chunk and the compressor's window,
// and src's errors reach the upload as they happen.
type gzipReader struct {
	src   io.Reader
	zw    *gzip.Writer
	out   bytes.Buffer // compressed bytes not read yet
	chunk []byte
	err   error // src's error, or io.EOF once the stream is closed
}

func newGzipReader(src io.Reader) *gzipReader {
	g := &gzipReader{src: src, chunk: make([]byte, gzipChunk)}
	// BestSpeed is a valid level: NewWriterLevel cannot fail.
	g.zw, _ = gzip.NewWriterLevel(&g.out, gzip.BestSpeed)
	return g
}

func (g *gzipReader) Read(p []byte) (int, error) {
	for g.out.Len() == 0 {
		if g.err != nil {
			return 0, g.err
		}
		n, err := g.src.Read(g.chunk)
		if n > 0 {
			_, _ = g.zw.Write(g.chunk[:n]) // writes to a bytes.Buffer: no error
		}
		switch {
		case err == io.EOF:
			_ = g.zw.Close()
			g.err = io.EOF
		case err != nil:
			g.err = err
		}
	}
	return g.out.Read(p)
}
