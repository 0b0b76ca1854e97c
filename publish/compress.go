package publish

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression names accepted by EntityOptions.Compression; each is also the
// AMQP content_encoding of the compressed messages.
const (
	CompressionNone = "none"
	CompressionGzip = "gzip"
	CompressionZstd = "zstd"
)

// compressor compresses message bodies with one reused encoder. Both
// formats favour speed: gzip level 1 and zstd's fastest level still shrink
// JSON batches several times, since keys repeat in every row.
type compressor struct {
	name string
	gz   *gzip.Writer
	zs   *zstd.Encoder
	buf  bytes.Buffer
}

// newCompressor returns nil for no compression. level 0 is the fastest;
// otherwise 1-9 for gzip and 1-4 for zstd (fastest, default, better, best).
func newCompressor(name string, level int) (*compressor, error) {
	switch strings.ToLower(name) {
	case "", CompressionNone:
		return nil, nil
	case CompressionGzip:
		if level == 0 {
			level = gzip.BestSpeed
		}
		if level < 1 || level > 9 {
			return nil, fmt.Errorf("gzip level %d: use 1 (fastest) to 9", level)
		}
		gz, err := gzip.NewWriterLevel(nil, level)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return &compressor{name: CompressionGzip, gz: gz}, nil
	case CompressionZstd:
		if level == 0 {
			level = int(zstd.SpeedFastest)
		}
		if level < int(zstd.SpeedFastest) || level > int(zstd.SpeedBestCompression) {
			return nil, fmt.Errorf("zstd level %d: use 1 (fastest) to 4", level)
		}
		zs, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevel(level)), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return &compressor{name: CompressionZstd, zs: zs}, nil
	}
	return nil, fmt.Errorf("compression %q is not supported: use none, gzip or zstd", name)
}

// compress returns a new slice holding src compressed; src may be reused
// by the caller afterwards.
func (c *compressor) compress(src []byte) ([]byte, error) {
	if c.zs != nil {
		return c.zs.EncodeAll(src, make([]byte, 0, len(src)/4+64)), nil
	}
	c.buf.Reset()
	c.gz.Reset(&c.buf)
	if _, err := c.gz.Write(src); err != nil {
		return nil, err
	}
	if err := c.gz.Close(); err != nil {
		return nil, err
	}
	return bytes.Clone(c.buf.Bytes()), nil
}
