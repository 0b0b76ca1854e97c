package publish

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"unicode/utf8"
	"unsafe"
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
	// columns names the columns of a file without a header row (nil: the
	// first record is the header).
	columns []string
}

// newCSVSource reads r, UTF-8 text (see newTextReader), with the delimiter,
// qualifier and header settings of o. When o.Delimiter is 0 it detects
// the delimiter from the first line.
func newCSVSource(r io.Reader, o EntityOptions) (*csvSource, error) {
	delim := o.Delimiter
	if delim != 0 && !validDelim(delim) {
		return nil, fmt.Errorf("delimiter %q is not supported: use one ASCII character other than a quote or line break", delim)
	}
	qual, err := parseQualifier(o.TextQualifier)
	if err != nil {
		return nil, err
	}
	if delim != 0 && byte(delim) == qual {
		return nil, fmt.Errorf("text qualifier %q is also the delimiter: set text_qualifier to another character, or none", qual)
	}
	src := &csvSource{}
	if o.NoHeader {
		if len(o.Columns) == 0 {
			return nil, errors.New("the file has no header row (header: false) and no column names: set columns: [the entity's field names in file order] for this entity")
		}
		src.columns = o.Columns
	}
	cr := newCSVReader(r, byte(delim))
	cr.qual, cr.strict = qual, o.StrictQuotes
	if delim == 0 {
		head, _ := cr.peek(64 << 10)
		cr.delim = byte(detectDelimiter(head, qual))
	}
	src.r = cr
	return src, nil
}

// parseQualifier reads EntityOptions.TextQualifier: 0 for none.
func parseQualifier(q string) (byte, error) {
	switch {
	case q == "":
		return '"', nil
	case q == "none":
		return 0, nil
	case len(q) == 1 && validDelim(rune(q[0])) || q == `"`:
		return q[0], nil
	}
	return 0, fmt.Errorf("text qualifier %q is not supported: use one ASCII character other than a line break, or none", q)
}

func validDelim(r rune) bool {
	return r > 0 && r < 0x80 && r != '"' && r != '\r' && r != '\n'
}

// detectDelimiter returns the candidate seen most often outside the
// qualifier's quotes (qual 0: none) in the first line of head: comma,
// semicolon, tab or vertical bar (ties go to the earlier one), or colon
// when none of those occurs, else comma. Colon is F&O's fifth delimiter;
// it comes last because times ("00:00:00") hold colons.
func detectDelimiter(head []byte, qual byte) rune {
	candidates := [...]byte{',', ';', '\t', '|', ':'}
	var counts [len(candidates)]int
	inQuotes := false
	for _, b := range head {
		if b == qual && qual != 0 {
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
	for i := range counts[:len(counts)-1] {
		if counts[i] > counts[best] {
			best = i
		}
	}
	if counts[best] == 0 && counts[len(counts)-1] > 0 {
		return ':'
	}
	return rune(candidates[best])
}

func (s *csvSource) header() ([]string, error) {
	if s.columns != nil {
		return slices.Clone(s.columns), nil
	}
	rec, err := s.r.read()
	if errors.Is(err, io.EOF) {
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
	if errors.Is(err, io.EOF) {
		return csvRecord{}, 0, io.EOF
	}
	if err != nil {
		return csvRecord{}, s.r.recLine, fmt.Errorf("row %d: %w", s.rows+1, err)
	}
	s.rows++
	return s.r.record(), s.r.recLine, nil
}

// encodePlain is nextRecord and batchEncoder.addRecord in one pass, for
// the common record; see csvReader.encodePlain.
func (s *csvSource) encodePlain(e *batchEncoder, limit int) plainOutcome {
	o := s.r.encodePlain(e, limit)
	if o == plainDone {
		s.rows++
	}
	return o
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

	// qual is the text qualifier ('"' unless set; 0: none, quotes are
	// data). strict refuses a qualifier inside a value that is not
	// doubled; otherwise such a qualifier is kept as data and counted in
	// loose (the record being parsed: recLoose; the first: looseLine).
	qual            byte
	strict          bool
	recLoose, loose int
	looseLine       int

	// special marks the bytes that end or change an unquoted field (the
	// qualifier, line breaks, the delimiter); stop marks those and every
	// byte JSON does not keep as is, so one scan finds the end of a field
	// and whether it is plain. Built for tableDelim and tableQual.
	special, stop         [256]bool
	tableDelim, tableQual byte
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
	return &csvReader{r: r, delim: delim, qual: '"', buf: make([]byte, csvBufferSize)}
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
		if errors.Is(err, errNeedMore) {
			if c.fill() {
				continue
			}
			// The input ended inside the record: parse it as final.
			n, lines, err = c.parse()
			if errors.Is(err, errNeedMore) {
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
		if c.recLoose > 0 {
			if c.loose == 0 {
				c.looseLine = c.recLine
			}
			c.loose += c.recLoose
		}
		c.pos += n
		c.line += lines
		return nil
	}
}

// buildTables sets special and stop for the current delimiter and
// qualifier.
func (c *csvReader) buildTables() {
	c.special = [256]bool{'\n': true, '\r': true}
	c.special[c.delim] = true
	if c.qual != 0 {
		c.special[c.qual] = true
	}
	for b := range c.stop {
		c.stop[b] = c.special[b] || b >= utf8.RuneSelf || !jsonSafe[b]
	}
	c.tableDelim, c.tableQual = c.delim, c.qual
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
	return ((x - lsb8*0x20) | x | (d-lsb8)&^d | (q-lsb8)&^q | (b-lsb8)&^b) & msb8
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
// c.recLoose counts the qualifiers the record holds as data (see strict).
func (c *csvReader) parse() (n, lines int, err error) {
	c.spans = c.spans[:0]
	c.esc = c.esc[:0]
	c.recLoose = 0
	buf := c.buf[:c.end]
	i := c.pos
	lineStart := i
	delim, qual := c.delim, c.qual
	if c.tableDelim != delim || c.tableQual != qual {
		c.buildTables()
	}
	special, stop := &c.special, &c.stop
	delimWord := lsb8 * uint64(delim)
	// The eight-byte scan stops at quotes but not at other qualifiers.
	wideEnd := len(buf)
	if qual != '"' && qual != 0 {
		wideEnd = 0
	}
	// quoted is the qualifier as an int; none (256) matches no byte.
	quoted := int(qual)
	if qual == 0 {
		quoted = 256
	}
	// The end of the buffer ends the record only at the end of the input,
	// never where a read failed: the record may go on past the bad bytes.
	eof := c.eof && c.rerr == nil
	for {
		// One field starts at i.
		if i < len(buf) && int(buf[i]) == quoted {
			i++
			start := i
			escStart := -1
			plain := true
			for {
				j := bytes.IndexByte(buf[i:], qual)
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
				// What follows the qualifier says whether it closes the field.
				closing := true
				switch {
				case i == len(buf):
					if !eof {
						return 0, 0, errNeedMore
					}
				case buf[i] == qual: // doubled
					if escStart < 0 {
						escStart = len(c.esc)
						c.esc = append(c.esc, buf[start:i]...)
					} else {
						c.esc = append(c.esc, seg...)
						c.esc = append(c.esc, qual)
					}
					i++
					continue
				case buf[i] == delim, buf[i] == '\n':
				case buf[i] == '\r':
					if i+1 == len(buf) && !eof {
						return 0, 0, errNeedMore
					}
					closing = i+1 == len(buf) || buf[i+1] == '\n'
				default:
					closing = false
				}
				if !closing {
					// A qualifier inside the value that was not doubled.
					if c.strict {
						return 0, 0, &CSVSyntaxError{Line: c.line + 1 + lines, Column: i - lineStart + 1,
							Reason: fmt.Sprintf("unexpected %q after the closing %q of a field: a %q inside a quoted field must be doubled (strict_quotes is on; leave it off to keep such a %q as data)", rune(buf[i]), rune(qual), rune(qual), rune(qual))}
					}
					c.recLoose++
					plain = false
					if escStart >= 0 {
						c.esc = append(c.esc, seg...)
						c.esc = append(c.esc, qual)
					}
					continue
				}
				if escStart >= 0 {
					c.esc = append(c.esc, seg...)
					c.spans = append(c.spans, span{a: escStart, b: len(c.esc), inEsc: true})
				} else {
					c.spans = append(c.spans, span{a: start, b: i - 1, plain: plain})
				}
				break
			}
			// After the closing qualifier: a delimiter, a line end or the end.
			if i == len(buf) {
				return i - c.pos, lines, nil
			}
			switch buf[i] {
			case delim:
				i++
				continue
			case '\n':
				return i + 1 - c.pos, lines + 1, nil
			default: // '\r': CRLF, or a CR that ends the input
				if i+1 < len(buf) {
					return i + 2 - c.pos, lines + 1, nil
				}
				return i + 1 - c.pos, lines + 1, nil
			}
		}
		start := i
		// Eight bytes at a time while none of them stops the scan.
		for i+8 <= wideEnd {
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
		if i < len(buf) && buf[i] != delim && buf[i] != '\n' && (buf[i] != '\r' || i+1 == len(buf) || buf[i+1] != '\n') {
			// A CR or a qualifier: the field may go on.
			end, err := c.unquotedTail(buf, i, eof, lines, lineStart)
			if err != nil {
				return 0, 0, err
			}
			i, plain = end, false
		}
		if i == len(buf) {
			if !eof {
				return 0, 0, errNeedMore
			}
			c.spans = append(c.spans, span{a: start, b: i, plain: plain})
			return i - c.pos, lines, nil
		}
		c.spans = append(c.spans, span{a: start, b: i, plain: plain})
		switch buf[i] {
		case delim:
			i++
		case '\n':
			return i + 1 - c.pos, lines + 1, nil
		default: // CRLF
			return i + 2 - c.pos, lines + 1, nil
		}
	}
}

// unquotedTail scans on from buf[i], a CR or a qualifier inside an
// unquoted field, to the field's end: the delimiter, a line end or the end
// of buf. A lone CR is data, as in encoding/csv; so is a qualifier, unless
// c.strict. errNeedMore means the field may go on past buf.
func (c *csvReader) unquotedTail(buf []byte, i int, eof bool, lines, lineStart int) (int, error) {
	for i < len(buf) {
		switch b := buf[i]; {
		case b == c.delim, b == '\n':
			return i, nil
		case b == '\r':
			if i+1 == len(buf) && !eof {
				return 0, errNeedMore
			}
			if i+1 < len(buf) && buf[i+1] == '\n' {
				return i, nil
			}
		case b == c.qual:
			if c.strict {
				q := rune(c.qual)
				return 0, &CSVSyntaxError{Line: c.line + 1 + lines, Column: i - lineStart + 1,
					Reason: fmt.Sprintf("%q in an unquoted field: a field holding %q must be quoted, with its %q doubled (strict_quotes is on; leave it off to keep such a %q as data)", q, q, q, q)}
			}
			c.recLoose++
		}
		i++
		for i < len(buf) && !c.special[buf[i]] {
			i++
		}
	}
	return i, nil
}

var nl = []byte{'\n'}

// plainOutcome is what csvReader.encodePlain did with the next record.
type plainOutcome uint8

const (
	// plainNo: the record is not plain or not wholly buffered; nothing
	// was read or encoded.
	plainNo plainOutcome = iota
	// plainDone: the record is read and is the batch's last row.
	plainDone
	// plainFull: the record is plain but would take the batch's rows past
	// the limit; nothing was read or encoded.
	plainFull
)

// plainMaxRecord bounds the bytes of a record encodePlain reads, so that
// the room of the batch buffer is checked once per record.
const plainMaxRecord = 16 << 10

// encodePlain reads the next record and encodes it as e's next row in one
// pass, when it is the common kind: wholly buffered, every field unquoted
// or quoted without a doubled qualifier, every byte of every value ASCII
// that JSON keeps as is, as many fields as e has columns, ended by LF or
// CRLF, at most plainMaxRecord bytes. Eight bytes at a time, it copies a
// value into the batch while it looks for the value's end; the key written
// next overwrites what was copied past it. Any other record it leaves to
// readSpans and addRecord, which encode a plain record to the same bytes.
// limit caps the batch's row bytes (a record past it is left unread).
func (c *csvReader) encodePlain(e *batchEncoder, limit int) plainOutcome {
	if !e.shortKeys || len(e.keys) == 0 || c.qual != '"' && c.qual != 0 || c.pos >= c.end {
		return plainNo
	}
	if e.buf == nil {
		e.start()
	}
	buf, in, end := c.buf, c.pos, c.end
	if b := buf[in]; b == '\n' || b == '\r' {
		return plainNo // empty lines, which readSpans skips
	}
	o := len(e.buf)
	// The row's bytes: a comma, the keys, the values (no more than the
	// record's bytes) and the closing quote and brace, which the padding
	// of the last key covers, as it does the last word copied.
	if cap(e.buf)-o < 1+e.keyBytes+plainMaxRecord+keyWidth {
		return plainNo // the batch must grow: addRecord does that
	}
	// Words are read at in < lim only: in the buffered record, eight bytes
	// before the end of buf.
	lim := min(end, len(buf)-7, in+plainMaxRecord)
	src, dst := unsafe.Pointer(unsafe.SliceData(buf)), unsafe.Pointer(unsafe.SliceData(e.buf))
	if e.rows > 0 {
		*(*byte)(unsafe.Add(dst, o)) = ','
		o++
	}
	delim := c.delim
	delimWord := lsb8 * uint64(delim)
	k, last := &e.keys[0], &e.keys[len(e.keys)-1]
	for {
		if in >= lim {
			return plainNo
		}
		*(*[keyWidth]byte)(unsafe.Add(dst, o)) = k.b
		o += k.n
		w := binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(src, in))[:])
		var b byte // the byte after the value
		if byte(w) == '"' {
			// Quoted: the value ends at the next qualifier, which must
			// close the field (a doubled one is left to readSpans).
			// Without a qualifier the quote is data, which JSON escapes.
			if c.qual == 0 {
				return plainNo
			}
			in++
			var m uint64
			for {
				if in >= lim {
					return plainNo
				}
				w = binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(src, in))[:])
				binary.LittleEndian.PutUint64((*[8]byte)(unsafe.Add(dst, o))[:], w)
				if m = quotedStopMask(w); m != 0 {
					break
				}
				in += 8
				o += 8
			}
			n := bits.TrailingZeros64(m) >> 3
			in += n + 1
			o += n
			if in >= lim || byte(w>>(n<<3)) != '"' {
				return plainNo
			}
			b = *(*byte)(unsafe.Add(src, in))
		} else {
			var m uint64
			for {
				binary.LittleEndian.PutUint64((*[8]byte)(unsafe.Add(dst, o))[:], w)
				if m = stopMask(w, delimWord); m != 0 {
					break
				}
				in += 8
				o += 8
				if in >= lim {
					return plainNo
				}
				w = binary.LittleEndian.Uint64((*[8]byte)(unsafe.Add(src, in))[:])
			}
			n := bits.TrailingZeros64(m) >> 3
			in += n
			o += n
			if in >= lim {
				return plainNo // past the record's buffered bytes
			}
			b = byte(w >> (n << 3))
		}
		if b == delim {
			if k == last {
				return plainNo // a field too many
			}
			k = (*columnKey)(unsafe.Add(unsafe.Pointer(k), unsafe.Sizeof(*k)))
			in++
			continue
		}
		if k != last {
			return plainNo // a field too few, or a byte readSpans deals with
		}
		switch {
		case b == '\n':
			in++
		case b == '\r' && in+1 < end && buf[in+1] == '\n':
			in += 2
		default:
			return plainNo
		}
		break
	}
	*(*[2]byte)(unsafe.Add(dst, o)) = [2]byte{'"', '}'}
	o += 2
	if o-e.gap > limit {
		return plainFull
	}
	e.buf = e.buf[:o]
	e.rows++
	c.pos = in
	c.line++
	c.recLine = c.line
	return plainDone
}

// quotedStopMask is stopMask inside a quoted field, where the delimiter is
// data: it marks a quote, a backslash, a byte below 0x20 or one of 0x80
// and above.
func quotedStopMask(x uint64) uint64 {
	q := x ^ (lsb8 * '"')
	b := x ^ (lsb8 * '\\')
	return ((x - lsb8*0x20) | x | (q-lsb8)&^q | (b-lsb8)&^b) & msb8
}
