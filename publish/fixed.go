package publish

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

const (
	// fixedBufferSize is the read buffer: many lines per read; a longer
	// line is gathered in fixedSource.long.
	fixedBufferSize = 64 << 10
	// fixedMaxLine caps one line in bytes: a file that is not fixed-width
	// text (no line breaks) would otherwise be read whole into memory.
	fixedMaxLine = csvMaxRecord
)

// fixedOptions describes the layout of a fixed-width entity file. F&O pads
// every value with spaces to its column's width and writes a header line of
// column names only with the framework parameter "Enable header for fixed
// width file".
type fixedOptions struct {
	// Widths are the column widths in characters; nil (or empty) takes
	// them from the header line.
	Widths []int
	// Header: the first line holds the column names (F&O's "Enable header
	// for fixed width file").
	Header bool
	// Columns names the columns when the file has no header line; with
	// Header it must be nil.
	Columns []string
}

// FixedWidthError is a line of a fixed-width file that does not fit the
// layout: where it is and what is wrong.
type FixedWidthError struct {
	Line   int // 1-based, counting the header line and empty lines
	Reason string
}

func (e *FixedWidthError) Error() string {
	return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
}

// fixedSource reads a fixed-width entity file as a rowSource (see
// entity.go). The input is UTF-8 text (already decoded by the caller; a
// UTF-8 BOM may still lead the first line: it is dropped). Widths count
// characters (runes), not bytes.
//
// Lines end with LF or CRLF (a lone CR is data); a final line without a
// line end is a line; empty lines are skipped. Values are the columns'
// characters without leading and trailing spaces (U+0020 only: tabs and
// other control characters are data). A line must reach at least the start
// of the last column, so a writer may drop the trailing padding; with
// explicit widths, characters past their sum must be spaces.
//
// Memory is bounded by one line (at most fixedMaxLine bytes); each data
// line costs one string, whose substrings are the values.
type fixedSource struct {
	br      *bufio.Reader
	o       fixedOptions
	cols    []string // column names
	starts  []int    // each column's first character
	total   int      // sum of the widths; -1: the last column is open-ended
	widths  []int    // as given, for error messages
	line    int      // lines read so far, empty ones included
	started bool     // the header has been read (or there is none)
	hdrErr  error
	long    []byte   // a line longer than br's buffer
	rec     []string // reused by next
	offs    []int    // byte offsets of the columns' bounds in the line
}

// newFixedSource checks the options and returns a source reading r. The
// header line, if any, is read by the first call of header or next.
func newFixedSource(r io.Reader, o fixedOptions) (*fixedSource, error) {
	s := &fixedSource{br: bufio.NewReaderSize(r, fixedBufferSize), o: o, total: -1}
	if len(o.Widths) > 0 {
		s.widths = o.Widths
		s.starts = make([]int, len(o.Widths))
		sum := 0
		for i, w := range o.Widths {
			if w <= 0 {
				return nil, fmt.Errorf("fixed width: widths: width %d of column %d is not positive: give every column's width in characters (now %v)", w, i+1, o.Widths)
			}
			s.starts[i] = sum
			sum += w
			if sum > fixedMaxLine {
				return nil, fmt.Errorf("fixed width: widths: add up to more than %d MiB, longer than a line may be (now %v)", fixedMaxLine>>20, o.Widths)
			}
		}
		s.total = sum
	}
	switch {
	case o.Header && o.Columns != nil:
		return nil, errors.New("fixed width: columns: is set but the file has a header line: remove columns: (the header line names the columns) or turn the header off")
	case o.Header:
	case len(o.Columns) == 0 || len(o.Widths) == 0:
		return nil, fmt.Errorf("fixed width: a file without a header line needs both columns: and widths: (now %d columns, %d widths): name the columns and give their widths in characters", len(o.Columns), len(o.Widths))
	case len(o.Columns) != len(o.Widths):
		return nil, fmt.Errorf("fixed width: columns: names %d columns but widths: gives %d widths: give one width per column", len(o.Columns), len(o.Widths))
	default:
		for i, c := range o.Columns {
			if c == "" {
				return nil, fmt.Errorf("fixed width: columns: name %d is empty: name every column", i+1)
			}
		}
		s.cols = append([]string(nil), o.Columns...)
		s.started = true
	}
	return s, nil
}

func (s *fixedSource) header() ([]string, error) {
	if s.started {
		return s.cols, s.hdrErr
	}
	s.started = true
	b, err := s.readLine()
	if errors.Is(err, io.EOF) {
		return nil, nil // only empty lines: an empty entity
	}
	if err != nil {
		s.hdrErr = fmt.Errorf("header: %w", err)
		return nil, s.hdrErr
	}
	line := string(b)
	if s.total < 0 {
		s.hdrErr = s.headerColumns(line)
	} else {
		s.hdrErr = s.headerNames(line)
	}
	if s.hdrErr != nil {
		s.cols = nil
	}
	return s.cols, s.hdrErr
}

// headerColumns takes the columns from the header line: each name is a run
// of non-space characters, and its column starts where the name starts.
func (s *fixedSource) headerColumns(line string) error {
	pos := 0 // characters before i
	nameStart, nameChar := -1, 0
	for i, r := range line {
		if r == ' ' {
			if nameStart >= 0 {
				s.cols = append(s.cols, line[nameStart:i])
				s.starts = append(s.starts, nameChar)
				nameStart = -1
			}
		} else if nameStart < 0 {
			nameStart, nameChar = i, pos
		}
		pos++
	}
	if nameStart >= 0 {
		s.cols = append(s.cols, line[nameStart:])
		s.starts = append(s.starts, nameChar)
	}
	if len(s.cols) == 0 {
		return &FixedWidthError{Line: s.line, Reason: "the header line holds no column names (only spaces): turn the header off and set columns: and widths: if the file has none"}
	}
	if line[0] == ' ' {
		s.cols, s.starts = nil, nil
		return &FixedWidthError{Line: s.line, Reason: "the header line starts with a space, but the first column starts at the line's first character: set widths: if the column names are not where their columns start"}
	}
	return nil
}

// headerNames slices the header line by the widths.
func (s *fixedSource) headerNames(line string) error {
	names, err := s.split(line)
	if err != nil {
		return err
	}
	for i, n := range names {
		if n == "" {
			return &FixedWidthError{Line: s.line, Reason: fmt.Sprintf("the header line has no name for column %d (characters %d to %d): check widths: (now %v) or the header line",
				i+1, s.starts[i]+1, s.starts[i]+s.widths[i], s.widths)}
		}
	}
	s.cols = append([]string(nil), names...)
	return nil
}

// next returns the next data line's values; the slice is valid until the
// following call, the strings in it for good.
func (s *fixedSource) next() ([]string, int, error) {
	if !s.started {
		if _, err := s.header(); err != nil {
			return nil, s.line, err
		}
	}
	if s.hdrErr != nil {
		return nil, s.line, s.hdrErr
	}
	if s.cols == nil {
		return nil, 0, io.EOF // an empty file
	}
	b, err := s.readLine()
	if errors.Is(err, io.EOF) {
		return nil, 0, io.EOF
	}
	if err != nil {
		return nil, s.line, err
	}
	rec, err := s.split(string(b))
	return rec, s.line, err
}

func (s *fixedSource) close() error { return nil }

// readLine returns the next line that is not empty, without its line end,
// or io.EOF. The bytes are valid until the next call.
func (s *fixedSource) readLine() ([]byte, error) {
	for {
		b, err := s.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			s.long = append(s.long[:0], b...)
			for errors.Is(err, bufio.ErrBufferFull) {
				if len(s.long) > fixedMaxLine {
					return nil, &FixedWidthError{Line: s.line + 1, Reason: fmt.Sprintf("over %d MiB without a line break: check that the file is fixed-width text", fixedMaxLine>>20)}
				}
				b, err = s.br.ReadSlice('\n')
				s.long = append(s.long, b...)
			}
			b = s.long
		}
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("read line %d: %w", s.line+1, err)
		}
		if len(b) == 0 {
			return nil, io.EOF
		}
		s.line++
		if b[len(b)-1] == '\n' {
			b = b[:len(b)-1]
			if len(b) > 0 && b[len(b)-1] == '\r' {
				b = b[:len(b)-1]
			}
		}
		if len(b) > fixedMaxLine {
			return nil, &FixedWidthError{Line: s.line, Reason: fmt.Sprintf("over %d MiB without a line break: check that the file is fixed-width text", fixedMaxLine>>20)}
		}
		if s.line == 1 {
			b = bytes.TrimPrefix(b, []byte("\ufeff"))
		}
		if len(b) > 0 {
			return b, nil
		}
	}
}

// split slices line by the columns into s.rec, checking its length.
func (s *fixedSource) split(line string) ([]string, error) {
	k := len(s.starts)
	s.offs = s.offs[:0]
	var n int // characters in line
	if asciiString(line) {
		n = len(line)
		for _, st := range s.starts {
			s.offs = append(s.offs, min(st, n))
		}
		if s.total >= 0 {
			s.offs = append(s.offs, min(s.total, n))
		} else {
			s.offs = append(s.offs, n)
		}
	} else {
		// One pass: the byte offset of every bound (the columns' starts,
		// then the end of the last) that lies within the line.
		j := 0
		for i := range line {
			for j < k && s.starts[j] == n || j == k && s.total == n {
				s.offs = append(s.offs, i)
				j++
			}
			n++
		}
		for ; j <= k; j++ {
			s.offs = append(s.offs, len(line))
		}
	}
	if last := s.starts[k-1]; n < last {
		return nil, &FixedWidthError{Line: s.line, Reason: fmt.Sprintf("%d characters, too short to reach the last column, which starts after %d: %s", n, last, s.fix())}
	}
	if s.total >= 0 && n > s.total {
		for _, c := range []byte(line[s.offs[k]:]) {
			if c != ' ' {
				return nil, &FixedWidthError{Line: s.line, Reason: fmt.Sprintf("%d characters, longer than the %d the widths add up to: %s", n, s.total, s.fix())}
			}
		}
	}
	s.rec = s.rec[:0]
	for i := range k {
		s.rec = append(s.rec, trimSpaces(line[s.offs[i]:s.offs[i+1]]))
	}
	return s.rec, nil
}

// fix says what to check when a line does not fit the layout.
func (s *fixedSource) fix() string {
	if s.widths != nil {
		return fmt.Sprintf("check widths: (now %v) or the file's fixed-width layout", s.widths)
	}
	return "check that the data lines are aligned with the column names of the header line, or set widths:"
}

// trimSpaces drops the padding: leading and trailing spaces, nothing else.
func trimSpaces(v string) string {
	for len(v) > 0 && v[0] == ' ' {
		v = v[1:]
	}
	for len(v) > 0 && v[len(v)-1] == ' ' {
		v = v[:len(v)-1]
	}
	return v
}

// asciiString reports whether every byte of v is below 0x80.
func asciiString(v string) bool {
	i := 0
	for ; i+8 <= len(v); i += 8 {
		w := uint64(v[i]) | uint64(v[i+1])<<8 | uint64(v[i+2])<<16 | uint64(v[i+3])<<24 |
			uint64(v[i+4])<<32 | uint64(v[i+5])<<40 | uint64(v[i+6])<<48 | uint64(v[i+7])<<56
		if w&msb8 != 0 {
			return false
		}
	}
	for ; i < len(v); i++ {
		if v[i] >= 0x80 {
			return false
		}
	}
	return true
}
