package publish

// The XLSX reader as it was before its byte scanner: kept as the oracle of
// the differential fuzz tests (xlsxdiff_test.go), which require the fast
// scanner to read every input exactly as this one did.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unsafe"
)

// read parses sharedStrings.xml: each <si> is plain <t> text or rich text
// runs (<r><t>), whose texts are joined; phonetic runs (<rPh>) are left out.
func refReadSharedStrings(t *sharedStrings, r io.Reader) error {
	x := newRefXMLScanner(r)
	inSI, inT, rph := false, false, 0
	var text []byte
	for {
		tok, err := x.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch tok.kind {
		case tokText:
			if inT && rph == 0 {
				text = append(text, tok.data...)
			}
		case tokStart, tokEmpty:
			switch string(tok.name) {
			case "si":
				inSI, text = true, text[:0]
				if tok.kind == tokEmpty {
					t.add(nil)
					inSI = false
				}
			case "t":
				inT = tok.kind == tokStart
			case "rPh":
				if tok.kind == tokStart {
					rph++
				}
			}
		case tokEnd:
			switch string(tok.name) {
			case "si":
				if inSI {
					v, err := decodeXMLText(nil, text)
					if err != nil {
						return fmt.Errorf("string %d: %w", len(t.ends), err)
					}
					t.add(v)
					if len(t.blob) > xlsxMaxSharedStrings {
						return fmt.Errorf("the shared strings table is over %d MiB", xlsxMaxSharedStrings>>20)
					}
				}
				inSI = false
			case "t":
				inT = false
			case "rPh":
				rph = max(0, rph-1)
			}
		}
	}
}

// refSheetScanner yields the rows of a worksheet's XML one at a time.
type refSheetScanner struct {
	x          *refXMLScanner
	sst        *sharedStrings
	dateStyles []bool
	date1904   bool

	cells []string
	arena []byte // values of the current row that are not shared strings
	raw   []byte // text of the current cell's <v> or inline string
	dec   []byte // raw with references resolved, when it has any
	line  int    // sheet row number of the last row
	inRow bool
}

func newRefSheetScanner(r io.Reader, sst *sharedStrings, dateStyles []bool, date1904 bool) *refSheetScanner {
	return &refSheetScanner{x: newRefXMLScanner(r), sst: sst, dateStyles: dateStyles, date1904: date1904}
}

// nextRow returns the next row with at least one non-empty cell, its cells
// up to the last non-empty one (empty cells in between are ""), and its
// sheet row number. The strings are valid until the next call.
func (s *refSheetScanner) nextRow() ([]string, int, error) {
	for {
		cells, line, err := s.readRow()
		if err != nil {
			return nil, line, err
		}
		for i := len(cells) - 1; i >= 0; i-- {
			if cells[i] != "" {
				return cells[:i+1], line, nil
			}
		}
	}
}

// readRow reads up to the end of the next <row>.
func (s *refSheetScanner) readRow() ([]string, int, error) {
	s.cells = s.cells[:0]
	s.arena = s.arena[:0]
	var c cellState
	type valueRef struct{ col, start, end int }
	var pending []valueRef // arena values, turned into strings at row end
	inCell := false
	next := 0 // column of a cell without an r attribute
	for {
		tok, err := s.x.next()
		if errors.Is(err, io.EOF) {
			if s.inRow {
				return nil, s.line, fmt.Errorf("sheet row %d: the sheet XML ends inside the row", s.line)
			}
			return nil, s.line, io.EOF
		}
		if err != nil {
			return nil, s.line, fmt.Errorf("after sheet row %d: %w", s.line, err)
		}
		switch tok.kind {
		case tokStart, tokEmpty:
			switch string(tok.name) {
			case "row":
				s.line++
				if v := tok.attr("r"); v != nil {
					n, err := strconv.Atoi(string(v))
					if err != nil || n < 1 || n > 1<<20 {
						return nil, s.line, fmt.Errorf("sheet row %d: bad row number %q", s.line, v)
					}
					s.line = n
				}
				next = 0
				if tok.kind == tokEmpty {
					return s.cells, s.line, nil
				}
				s.inRow = true
			case "c":
				if !s.inRow {
					continue
				}
				c = cellState{col: next, style: -1}
				if ref := tok.attr("r"); ref != nil {
					col, ok := columnIndex(ref)
					if !ok {
						return nil, s.line, fmt.Errorf("sheet row %d: bad cell reference %q", s.line, ref)
					}
					c.col = col
				}
				if st := tok.attr("s"); st != nil {
					n, err := strconv.Atoi(string(st))
					if err == nil && n >= 0 {
						c.style = n
					}
				}
				c.typ = parseCellType(tok.attr("t"))
				next = c.col + 1
				s.raw = s.raw[:0]
				inCell = tok.kind == tokStart
				if !inCell {
					s.setCell(c.col, "")
				}
			case "v":
				c.inV = inCell && tok.kind == tokStart
			case "is":
				c.inIS = inCell && tok.kind == tokStart
			case "t":
				c.inT = c.inIS && tok.kind == tokStart
			case "rPh":
				if tok.kind == tokStart {
					c.rph++
				}
			}
		case tokText:
			if (c.inV || (c.inT && c.rph == 0)) && inCell {
				s.raw = append(s.raw, tok.data...)
				c.hasText = true
			}
		case tokEnd:
			switch string(tok.name) {
			case "v":
				c.inV = false
			case "t":
				c.inT = false
			case "is":
				c.inIS = false
			case "rPh":
				c.rph = max(0, c.rph-1)
			case "c":
				if !inCell {
					continue
				}
				inCell = false
				v, shared, err := s.cellValue(&c)
				if err != nil {
					return nil, s.line, fmt.Errorf("sheet row %d, column %s: %w", s.line, columnName(c.col), err)
				}
				if shared {
					s.setCell(c.col, v)
				} else {
					start := len(s.arena)
					s.arena = append(s.arena, v...)
					s.setCell(c.col, "")
					pending = append(pending, valueRef{c.col, start, len(s.arena)})
				}
			case "row":
				s.inRow = false
				for _, p := range pending {
					b := s.arena[p.start:p.end]
					s.cells[p.col] = unsafe.String(unsafe.SliceData(b), len(b))
				}
				return s.cells, s.line, nil
			}
		}
	}
}

// setCell puts v at column col, filling the gap with "".
func (s *refSheetScanner) setCell(col int, v string) {
	for len(s.cells) <= col {
		s.cells = append(s.cells, "")
	}
	s.cells[col] = v
}

// cellValue turns the current cell into its value. shared reports a value
// that lives in the shared strings table (stable until the source closes);
// otherwise the value is only valid until s.raw changes.
func (s *refSheetScanner) cellValue(c *cellState) (v string, shared bool, err error) {
	if !c.hasText {
		return "", true, nil
	}
	text, err := decodeXMLText(s.dec, s.raw)
	if err != nil {
		return "", false, err
	}
	if len(text) > 0 && len(s.raw) > 0 && &text[0] != &s.raw[0] {
		s.dec = text
	}
	switch c.typ {
	case cellShared:
		n, err := strconv.Atoi(strings.TrimSpace(string(text)))
		if err != nil {
			return "", false, fmt.Errorf("bad shared string index %q", text)
		}
		v, ok := s.sst.get(n)
		if !ok {
			return "", false, fmt.Errorf("shared string %d does not exist (the table has %d)", n, len(s.sst.ends))
		}
		return v, true, nil
	case cellBool:
		if string(text) == "1" {
			return "TRUE", true, nil
		}
		return "FALSE", true, nil
	case cellNumber:
		if c.style >= 0 && c.style < len(s.dateStyles) && s.dateStyles[c.style] {
			if iso, ok := serialToISO(text, s.date1904); ok {
				return iso, false, nil
			}
		}
	}
	return unsafe.String(unsafe.SliceData(text), len(text)), false, nil
}

// xmlScanner is a minimal, fast XML tokenizer for the flat markup of
// spreadsheet parts: start, end and empty-element tags (names without their
// namespace prefix) and raw text between them (references unresolved).
// Comments, processing instructions and declarations are skipped; CDATA
// sections are returned as text, which decodeXMLText would then resolve:
// spreadsheet writers do not use CDATA.
type refXMLScanner struct {
	br      *bufio.Reader
	text    []byte // text of the last text token
	tagBuf  []byte // the last tag, between < and >
	tag     xmlToken
	textTok xmlToken
	haveTag bool // tag holds a tag not yet returned
	ended   bool
}

func newRefXMLScanner(r io.Reader) *refXMLScanner {
	return &refXMLScanner{br: bufio.NewReaderSize(r, 256<<10)}
}

// appendUntil appends the bytes up to (not including) delim to dst; io.EOF
// when the input ends first.
func (x *refXMLScanner) appendUntil(dst []byte, delim byte) ([]byte, error) {
	for {
		b, err := x.br.ReadSlice(delim)
		if err == nil {
			return append(dst, b[:len(b)-1]...), nil
		}
		dst = append(dst, b...)
		if len(dst) > 64<<20 {
			return dst, errors.New("an XML token is over 64 MiB")
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return dst, err
		}
	}
}

// next returns the next token; it is valid until the next call.
func (x *refXMLScanner) next() (*xmlToken, error) {
	if x.haveTag {
		x.haveTag = false
		return &x.tag, nil
	}
	for !x.ended {
		var err error
		x.text, err = x.appendUntil(x.text[:0], '<')
		if errors.Is(err, io.EOF) {
			x.ended = true
			if len(bytes.TrimSpace(x.text)) > 0 {
				return nil, errors.New("text after the last tag")
			}
			return nil, io.EOF
		}
		if err != nil {
			return nil, err
		}
		skip, err := x.readTag()
		if err != nil {
			return nil, err
		}
		if len(x.text) > 0 {
			x.textTok = xmlToken{kind: tokText, data: x.text}
			x.haveTag = !skip
			return &x.textTok, nil
		}
		if !skip {
			return &x.tag, nil
		}
	}
	return nil, io.EOF
}

// readTag reads a tag after its '<' into x.tag; skip reports markup that is
// not an element (comment, declaration, processing instruction). CDATA is
// appended to x.text and skipped as a tag.
func (x *refXMLScanner) readTag() (skip bool, err error) {
	b, err := x.appendUntil(x.tagBuf[:0], '>')
	for err == nil {
		// A '>' inside a quoted attribute value or a comment does not end it.
		if bytes.HasPrefix(b, []byte("!--")) {
			if bytes.HasSuffix(b, []byte("--")) && len(b) >= 5 {
				break
			}
		} else if bytes.HasPrefix(b, []byte("![CDATA[")) {
			if bytes.HasSuffix(b, []byte("]]")) {
				break
			}
		} else if balancedQuotes(b) {
			break
		}
		b = append(b, '>')
		b, err = x.appendUntil(b, '>')
	}
	x.tagBuf = b
	if errors.Is(err, io.EOF) {
		return false, errors.New("the XML ends inside a tag")
	}
	if err != nil {
		return false, err
	}
	if len(b) == 0 {
		return false, errors.New("empty tag <>")
	}
	switch b[0] {
	case '?':
		return true, nil
	case '!':
		if bytes.HasPrefix(b, []byte("![CDATA[")) {
			x.text = append(x.text, b[8:len(b)-2]...)
		}
		return true, nil
	}
	t := &x.tag
	t.kind = tokStart
	if b[0] == '/' {
		t.kind = tokEnd
		b = b[1:]
	} else if b[len(b)-1] == '/' {
		t.kind = tokEmpty
		b = b[:len(b)-1]
	}
	n := 0
	for n < len(b) && b[n] != ' ' && b[n] != '\t' && b[n] != '\r' && b[n] != '\n' {
		n++
	}
	t.name, t.raw = b[:n], b[n:]
	if i := bytes.IndexByte(t.name, ':'); i >= 0 {
		t.name = t.name[i+1:]
	}
	return false, nil
}
