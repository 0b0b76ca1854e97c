package publish

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// FileSink writes every message body as one line of an NDJSON file named
// after the message's routing key, "<dir>/<escaped routing key>.ndjson"
// ("default.ndjson" for an empty key). It is meant for dry runs and demos
// without a broker; it is safe for concurrent use.
type FileSink struct {
	dir   string
	mu    sync.Mutex
	files map[string]*ndjsonFile
	// stored holds the OnStored hooks of messages written since the last
	// successful Flush.
	stored []func()
}

type ndjsonFile struct {
	f *os.File
	w *bufio.Writer
}

// NewFileSink creates dir (and its parents) when missing and returns a sink
// appending to the files in it.
func NewFileSink(dir string) (*FileSink, error) {
	if dir == "" {
		return nil, errors.New("file sink: directory is empty: set broker.path")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("file sink: create directory: %w", err)
	}
	return &FileSink{dir: dir, files: map[string]*ndjsonFile{}}, nil
}

// FileName returns the file name a routing key maps to: bytes other than
// letters, digits, '-', '_' and '.' (and a leading '.') are written as %XX,
// so every key gets its own file and no key can leave the directory.
func FileName(routingKey string) string {
	if routingKey == "" {
		return "default.ndjson"
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(routingKey)+len(".ndjson"))
	for i := 0; i < len(routingKey); i++ {
		c := routingKey[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.' && i > 0:
			b = append(b, c)
		default:
			b = append(b, '%', hex[c>>4], hex[c&0xf])
		}
	}
	return string(append(b, ".ndjson"...))
}

// Publish appends m.Body and a newline to the routing key's file. A body
// containing a line break is refused: it would not be one NDJSON line.
func (s *FileSink) Publish(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if bytes.ContainsAny(m.Body, "\r\n") {
		return fmt.Errorf("file sink: message %s: body contains a line break, which NDJSON cannot hold", m.MessageID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files == nil {
		return errors.New("file sink: closed")
	}
	name := FileName(m.RoutingKey)
	nf := s.files[name]
	if nf == nil {
		f, err := os.OpenFile(filepath.Join(s.dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("file sink: open: %w", err)
		}
		nf = &ndjsonFile{f: f, w: bufio.NewWriterSize(f, 256<<10)}
		s.files[name] = nf
	}
	if _, err := nf.w.Write(m.Body); err != nil {
		return fmt.Errorf("file sink: write %s: %w", name, err)
	}
	if err := nf.w.WriteByte('\n'); err != nil {
		return fmt.Errorf("file sink: write %s: %w", name, err)
	}
	if m.OnStored != nil {
		s.stored = append(s.stored, m.OnStored)
	}
	return nil
}

// Flush writes out buffered lines and fsyncs every file written to; when it
// returns nil, every message published so far is on disk.
func (s *FileSink) Flush(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.eachFile("sync", (*os.File).Sync); err != nil {
		return err
	}
	for i, f := range s.stored {
		f()
		s.stored[i] = nil
	}
	s.stored = s.stored[:0]
	return nil
}

// eachFile writes out every file's buffered lines, then applies fn (named
// op in errors) to it; it returns the first error.
func (s *FileSink) eachFile(op string, fn func(*os.File) error) error {
	var first error
	for name, nf := range s.files {
		if err := nf.w.Flush(); err != nil && first == nil {
			first = fmt.Errorf("file sink: write %s: %w", name, err)
		}
		if err := fn(nf.f); err != nil && first == nil {
			first = fmt.Errorf("file sink: %s %s: %w", op, name, err)
		}
	}
	return first
}

// Close writes out buffered lines (without fsync) and closes the files.
func (s *FileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := s.eachFile("close", (*os.File).Close)
	s.files = nil
	return first
}
