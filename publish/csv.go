package publish

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

const (
	csvBufferSize = 1 << 20
	// csvMaxRecord caps one record (all its fields and line breaks): a file
	// with an unterminated quote would otherwise grow the buffer to its size.
	csvMaxRecord = 64 << 20
)

// csvSource reads a delimited text entity file with csvReader.
type csvSource struct {
	r    *csvReader
	rows int // data rows returned so far
}

// newCSVSource detects the encoding from the BOM (UTF-8, UTF-16 LE or BE)
// or, without one, from the first two characters: ASCII in UTF-16 (a zero
// in every other byte, as in a header line of F&O column names) means
// UTF-16 LE or BE, anything else UTF-8. When delim is 0 it detects the
// delimiter from the header line.
// UTF-8 input is read without a decoding pass: invalid bytes are replaced by
// U+FFFD when the values are encoded as JSON.
func newCSVSource(r io.Reader, delim rune) (*csvSource, error) {
	if delim != 0 && !validDelim(delim) {
		return nil, fmt.Errorf("delimiter %q is not supported: use one ASCII character other than a quote or line break", delim)
	}
	raw := bufio.NewReaderSize(r, 64<<10)
	bom, _ := raw.Peek(4)
	var in io.Reader = raw
	switch {
	case bytes.HasPrefix(bom, []byte{0xFF, 0xFE}), bytes.HasPrefix(bom, []byte{0xFE, 0xFF}):
		in = transform.NewReader(raw, unicode.BOMOverride(unicode.UTF8.NewDecoder()))
	case bytes.HasPrefix(bom, []byte{0xEF, 0xBB, 0xBF}):
		_, _ = raw.Discard(3)
	case utf16NoBOM(bom) == 'L':
		in = transform.NewReader(raw, unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM).NewDecoder())
	case utf16NoBOM(bom) == 'B':
		in = transform.NewReader(raw, unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM).NewDecoder())
	}
	cr := newCSVReader(in, byte(delim))
	if delim == 0 {
		head, _ := cr.peek(64 << 10)
		cr.delim = byte(detectDelimiter(head))
	}
	return &csvSource{r: cr}, nil
}

func validDelim(r rune) bool {
	return r > 0 && r < 0x80 && r != '"' && r != '\r' && r != '\n'
}

// detectDelimiter returns the candidate seen most often outside quotes in the
// first line of head (ties go to the earlier candidate; none seen: comma).
func detectDelimiter(head []byte) rune {
	candidates := [...]byte{',', ';', '\t', '|'}
	var counts [len(candidates)]int
	inQuotes := false
	for _, b := range head {
		if b == '"' {
			inQuotes = !inQuotes
			continue
		}
		if inQuotes {
			continue
		}
		if b == '\n' || b == '\r' {
			break
		}
		for i, c := range candidates {
			if b == c {
				counts[i]++
			}
		}
	}
	best := 0
	for i := range counts {
		if counts[i] > counts[best] {
			best = i
		}
	}
	return rune(candidates[best])
}

func (s *csvSource) header() ([]string, error) {
	rec, err := s.r.read()
	if err == io.EOF {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	h := make([]string, len(rec))
	for i, v := range rec {
		h[i] = string([]byte(v)) // copy: rec points into the reader's buffer
	}
	return h, nil
}

func (s *csvSource) next() ([]string, int, error) {
	if _, line, err := s.nextRecord(); err != nil {
		return nil, line, err
	}
	return s.r.strings(), s.r.recLine, nil
}

func (s *csvSource) close() error { return nil }

// nextRecord is next without the strings: the record's fields as spans of
// the reader's buffers, which batchEncoder.addRecord encodes directly.
func (s *csvSource) nextRecord() (csvRecord, int, error) {
	err := s.r.readSpans()
	if err == io.EOF {
		return csvRecord{}, 0, io.EOF
	}
	if err != nil {
		return csvRecord{}, s.r.recLine, fmt.Errorf("row %d: %w", s.rows+1, err)
	}
	s.rows++
	return s.r.record(), s.r.recLine, nil
}

// CSVSyntaxError describes malformed CSV: where it is and what is wrong.
type CSVSyntaxError struct {
	Line, Column int // 1-based; Column counts bytes of UTF-8
	Reason       string
}

func (e *CSVSyntaxError) Error() string {
	return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Column, e.Reason)
}

// csvReader is an RFC 4180 reader working on bytes in one reused buffer.
// Unlike encoding/csv it keeps every byte of a quoted field exactly as
// written, CR and CRLF included. Outside quotes, records end at LF or CRLF;
// empty lines are skipped. The strings it returns point into its buffers and
// are valid only until the next read.
type csvReader struct {
	r     io.Reader
	delim byte
	buf   []byte
	pos   int // start of unread data in buf
	end   int // end of data in buf
	eof   bool
	rerr  error

	line    int // lines fully consumed before pos
	recLine int // line the last record started on

	spans  []span
	esc    []byte // unescaped fields with doubled quotes
	fields []string

	// special marks the bytes that end or change an unquoted field (quote,
	// line breaks, the delimiter); stop marks those and every byte JSON
	// does not keep as is, so one scan finds the end of a field and whether
	// it is plain. Built for tableDelim.
	special, stop [256]bool
	tableDelim    byte
}

// span locates a field: buf[a:b], or esc[a:b] when inEsc. plain is set
// when every byte of the field is ASCII that JSON keeps as is.
type span struct {
	a, b         int
	inEsc, plain bool
}

var errNeedMore = errors.New("need more input")

func newCSVReader(r io.Reader, delim byte) *csvReader {
	if delim == 0 {
		delim = ','
	}
	return &csvReader{r: r, delim: delim, buf: make([]byte, csvBufferSize)}
}

// fill reads more input, first moving unread data to the front and growing
// the buffer when it is full. It reports false once nothing more can come.
func (c *csvReader) fill() bool {
	if c.eof {
		return false
	}
	if c.pos > 0 {
		c.end = copy(c.buf, c.buf[c.pos:c.end])
		c.pos = 0
	}
	if c.end == len(c.buf) {
		if len(c.buf) >= csvMaxRecord {
			c.rerr = fmt.Errorf("a record is over %d MiB: check the delimiter and the quotes", csvMaxRecord>>20)
			c.eof = true
			return false
		}
		nb := make([]byte, 2*len(c.buf))
		copy(nb, c.buf[:c.end])
		c.buf = nb
	}
	for tries := 0; tries < 100; tries++ {
		n, err := c.r.Read(c.buf[c.end:])
		c.end += n
		if err != nil {
			c.eof = true
			if err != io.EOF {
				c.rerr = err
			}
			return n > 0
		}
		if n > 0 {
			return true
		}
	}
	c.eof, c.rerr = true, io.ErrNoProgress
	return false
}

// peek returns up to n bytes of unread input without consuming them.
func (c *csvReader) peek(n int) ([]byte, error) {
	for c.end-c.pos < n && c.fill() {
	}
	if c.end-c.pos < n {
		n = c.end - c.pos
	}
	return c.buf[c.pos : c.pos+n], c.rerr
}

// read returns the next record's fields, or io.EOF.
func (c *csvReader) read() ([]string, error) {
	if err := c.readSpans(); err != nil {
		return nil, err
	}
	return c.strings(), nil
}

// strings returns the fields of the record last read by readSpans.
func (c *csvReader) strings() []string {
	c.fields = c.fields[:0]
	r := c.record()
	for i := range r.spans {
		v := r.field(i)
		c.fields = append(c.fields, unsafe.String(unsafe.SliceData(v), len(v)))
	}
	return c.fields
}

// csvRecord is a record as the reader found it: its fields are spans of
// the reader's buffers, valid until the next read.
type csvRecord struct {
	buf, esc []byte
	spans    []span
}

// field returns the bytes of field i.
func (r csvRecord) field(i int) []byte {
	s := r.spans[i]
	if s.inEsc {
		return r.esc[s.a:s.b]
	}
	return r.buf[s.a:s.b]
}

// record returns the record last read by readSpans.
func (c *csvReader) record() csvRecord {
	return csvRecord{buf: c.buf, esc: c.esc, spans: c.spans}
}

// readSpans reads the next record into c.spans, or returns io.EOF.
func (c *csvReader) readSpans() error {
	for {
		// Skip empty lines.
		for {
			if c.pos == c.end && !c.fill() {
				if c.rerr != nil {
					return fmt.Errorf("read: %w", c.rerr)
				}
				return io.EOF
			}
			b := c.buf[c.pos]
			if b == '\n' {
				c.pos++
				c.line++
				continue
			}
			if b == '\r' {
				if c.pos+1 == c.end && !c.eof {
					c.fill()
					continue
				}
				if c.pos+1 < c.end && c.buf[c.pos+1] == '\n' {
					c.pos += 2
					c.line++
					continue
				}
			}
			break
		}
		n, lines, err := c.parse()
		if err == errNeedMore {
			if c.fill() {
				continue
			}
			// The input ended inside the record: parse it as final.
			n, lines, err = c.parse()
			if err == errNeedMore {
				if c.rerr != nil {
					return fmt.Errorf("read: %w", c.rerr)
				}
				return &CSVSyntaxError{Line: c.line + 1, Column: 1, Reason: "the file ends inside a quoted field of the record starting here: a closing quote is missing"}
			}
		}
		c.recLine = c.line + 1
		if err != nil {
			return err
		}
		c.pos += n
		c.line += lines
		return nil
	}
}

// csvSpecial marks the bytes that end or change an unquoted field.
var csvSpecial = [256]bool{'"': true, '\n': true, '\r': true}

// buildTables sets special and stop for the current delimiter.
func (c *csvReader) buildTables() {
	c.special = csvSpecial
	c.special[c.delim] = true
	for b := range c.stop {
		c.stop[b] = c.special[b] || b >= utf8.RuneSelf || !jsonSafe[b]
	}
	c.tableDelim = c.delim
}

// stopMask sets the high bit of the first byte of x (little-endian) that
// stops the scan of an unquoted field: the delimiter (delimWord has it in
// every byte), a quote, a backslash, a byte below 0x20 (line breaks among
// them) or one of 0x80 and above; it is zero when there is none. Bits above
// the first may be set wrongly (a borrow carries into the next byte), never
// below it.
func stopMask(x, delimWord uint64) uint64 {
	d := x ^ delimWord
	q := x ^ (lsb8 * '"')
	b := x ^ (lsb8 * '\\')
	return ((x-lsb8*0x20)&^x | (d-lsb8)&^d | (q-lsb8)&^q | (b-lsb8)&^b | x) & msb8
}

// plainBytes reports whether every byte of b is ASCII that JSON keeps as is.
func plainBytes(b []byte) bool {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		if !plain8(binary.LittleEndian.Uint64(b[i:])) {
			return false
		}
	}
	for ; i < len(b); i++ {
		if x := b[i]; x >= utf8.RuneSelf || !jsonSafe[x] {
			return false
		}
	}
	return true
}

// parse scans one record starting at c.pos. It returns the bytes consumed
// (line end included) and the line breaks in them. errNeedMore means the
// record may continue past the buffered data, unless the input is at EOF.
func (c *csvReader) parse() (n, lines int, err error) {
	c.spans = c.spans[:0]
	c.esc = c.esc[:0]
	buf := c.buf[:c.end]
	i := c.pos
	lineStart := i
	delim := c.delim
	if c.tableDelim != delim {
		c.buildTables()
	}
	special, stop := &c.special, &c.stop
	delimWord := lsb8 * uint64(delim)
	for {
		// One field starts at i.
		if i < len(buf) && buf[i] == '"' {
			i++
			start := i
			escStart := -1
			plain := true
			for {
				j := bytes.IndexByte(buf[i:], '"')
				if j < 0 {
					return 0, 0, errNeedMore
				}
				seg := buf[i : i+j]
				segPlain := plainBytes(seg) // and so holds no line break
				if !segPlain {
					plain = false
					if k := bytes.Count(seg, nl); k > 0 {
						lines += k
						lineStart = i + bytes.LastIndexByte(seg, '\n') + 1
					}
				}
				i += j + 1
				if i < len(buf) && buf[i] == '"' { // doubled quote
					if escStart < 0 {
						escStart = len(c.esc)
						c.esc = append(c.esc, buf[start:i]...)
					} else {
						c.esc = append(c.esc, seg...)
						c.esc = append(c.esc, '"')
					}
					i++
					continue
				}
				if i == len(buf) && !c.eof {
					return 0, 0, errNeedMore
				}
				if escStart >= 0 {
					c.esc = append(c.esc, seg...)
					c.spans = append(c.spans, span{a: escStart, b: len(c.esc), inEsc: true})
				} else {
					c.spans = append(c.spans, span{a: start, b: i - 1, plain: plain})
				}
				break
			}
			// After the closing quote: a delimiter, a line end or the end.
			if i == len(buf) {
				return i - c.pos, lines, nil
			}
			switch b := buf[i]; {
			case b == delim:
				i++
				continue
			case b == '\n':
				return i + 1 - c.pos, lines + 1, nil
			case b == '\r' && i+1 < len(buf) && buf[i+1] == '\n':
				return i + 2 - c.pos, lines + 1, nil
			case b == '\r' && i+1 == len(buf) && !c.eof:
				return 0, 0, errNeedMore
			default:
				return 0, 0, &CSVSyntaxError{Line: c.line + 1 + lines, Column: i - lineStart + 1,
					Reason: fmt.Sprintf("unexpected %q after the closing quote of a field: a quote inside a quoted field must be doubled", rune(b))}
			}
		}
		start := i
		// Eight bytes at a time while none of them stops the scan.
		for i+8 <= len(buf) {
			m := stopMask(binary.LittleEndian.Uint64(buf[i:]), delimWord)
			if m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		for i < len(buf) && !stop[buf[i]] {
			i++
		}
		plain := true
		if i < len(buf) && !special[buf[i]] { // a byte JSON escapes or checks
			plain = false
			for i < len(buf) && !special[buf[i]] {
				i++
			}
		}
		if i == len(buf) {
			if !c.eof {
				return 0, 0, errNeedMore
			}
			c.spans = append(c.spans, span{a: start, b: i, plain: plain})
			return i - c.pos, lines, nil
		}
		switch b := buf[i]; b {
		case delim:
			c.spans = append(c.spans, span{a: start, b: i, plain: plain})
			i++
		case '\n':
			c.spans = append(c.spans, span{a: start, b: i, plain: plain})
			return i + 1 - c.pos, lines + 1, nil
		case '\r':
			if i+1 == len(buf) && !c.eof {
				return 0, 0, errNeedMore
			}
			if i+1 < len(buf) && buf[i+1] == '\n' {
				c.spans = append(c.spans, span{a: start, b: i, plain: plain})
				return i + 2 - c.pos, lines + 1, nil
			}
			// A lone CR outside quotes is data, as in encoding/csv.
			for i < len(buf) && (buf[i] == '\r' || !special[buf[i]]) {
				if buf[i] == '\r' && i+1 < len(buf) && buf[i+1] == '\n' {
					break
				}
				i++
			}
			if i == len(buf) && !c.eof {
				return 0, 0, errNeedMore
			}
			if i < len(buf) && buf[i] == '"' {
				return 0, 0, c.bareQuote(lines, i, lineStart)
			}
			c.spans = append(c.spans, span{a: start, b: i}) // holds a CR: not plain
			if i == len(buf) {
				return i - c.pos, lines, nil
			}
			switch buf[i] {
			case delim:
				i++
			case '\n':
				return i + 1 - c.pos, lines + 1, nil
			default: // CRLF
				return i + 2 - c.pos, lines + 1, nil
			}
		case '"':
			return 0, 0, c.bareQuote(lines, i, lineStart)
		}
	}
}

var nl = []byte{'\n'}

func (c *csvReader) bareQuote(lines, i, lineStart int) error {
	return &CSVSyntaxError{Line: c.line + 1 + lines, Column: i - lineStart + 1,
		Reason: "quote in an unquoted field: a field holding quotes must be quoted, with its quotes doubled"}
}
