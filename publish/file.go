package publish

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
		f, err := openNDJSON(filepath.Join(s.dir, name))
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

// openNDJSON opens an NDJSON file for appending. A last line without its
// newline is what a process killed mid-write leaves; it was never flushed,
// so never reported stored, and will be published again: it is cut off, so
// the next line does not run into it.
func openNDJSON(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	end, err := completeLinesEnd(f)
	if err == nil {
		err = f.Truncate(end)
	}
	if err == nil {
		_, err = f.Seek(end, io.SeekStart)
	}
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// completeLinesEnd returns the offset just after the last newline of f (0
// when there is none).
func completeLinesEnd(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	for end := fi.Size(); end > 0; {
		start := max(0, end-int64(len(buf)))
		chunk := buf[:end-start]
		if _, err := f.ReadAt(chunk, start); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	return 0, nil
}
