package publish

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"github.com/dmfexport/dmfexport/internal/ctxio"
	"io"
	"math"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/klauspost/compress/flate"
)

// xlsxMaxSharedStrings caps the shared strings table held in memory.
const xlsxMaxSharedStrings = 512 << 20

// xlsxSource reads one sheet of a workbook with a streaming scanner over
// the sheet's XML, on a temporary copy of the input (a zip needs random
// access; holding the file in memory would not be bounded).
//
// Values are the cells' raw values: text as written, numbers as stored (no
// number formatting, so no rounding and no locale). A number whose cell
// style is a date or time format becomes ISO text "2006-01-02T15:04:05"
// like F&O's CSV dates (the workbook's 1900 or 1904 date system honoured);
// cells of the ISO date type keep their text; booleans become TRUE or
// FALSE; error cells their code (#N/A). Empty and missing cells are "", and
// rows are padded to the header's length. Rows with no value at all are
// skipped: in a sheet they cannot be told from absent rows.
type xlsxSource struct {
	tmp   string
	zr    *zip.ReadCloser
	sheet io.ReadCloser
	sc    *sheetScanner
	width int
}

func newXLSXSource(ctx context.Context, r io.Reader, sheet string) (src *xlsxSource, err error) {
	tf, err := os.CreateTemp("", "dmfexport-*.xlsx")
	if err != nil {
		return nil, fmt.Errorf("xlsx: create temporary copy: %w", err)
	}
	s := &xlsxSource{tmp: tf.Name()}
	defer func() {
		if err != nil {
			_ = s.close()
		}
	}()
	_, err = io.Copy(tf, ctxio.Reader(ctx, r))
	if cerr := tf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return s, fmt.Errorf("xlsx: copy to temporary file: %w", err)
	}
	s.zr, err = zip.OpenReader(s.tmp)
	if err != nil {
		return s, fmt.Errorf("xlsx: open workbook: %w: the file is not an xlsx workbook", err)
	}
	// klauspost's inflater reads a sheet about a third faster than the
	// standard library's, with the same output.
	s.zr.RegisterDecompressor(zip.Deflate, func(r io.Reader) io.ReadCloser { return flate.NewReader(r) })
	wb, err := readWorkbook(&s.zr.Reader, sheet)
	if err != nil {
		return s, err
	}
	f := wb.files[wb.sheetPath]
	if f == nil {
		return s, fmt.Errorf("xlsx: sheet %q: part %s is missing from the workbook", wb.sheetName, wb.sheetPath)
	}
	s.sheet, err = f.Open()
	if err != nil {
		return s, fmt.Errorf("xlsx: sheet %q: %w", wb.sheetName, err)
	}
	s.sc = newSheetScanner(s.sheet, wb.sst, wb.dateStyles, wb.date1904)
	return s, nil
}

func (s *xlsxSource) header() ([]string, error) {
	cells, _, err := s.sc.nextRow()
	if errors.Is(err, io.EOF) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("xlsx: %w", err)
	}
	if err := validCells(cells, s.sc.plain, 1); err != nil {
		return nil, err
	}
	s.width = len(cells)
	h := make([]string, len(cells))
	for i, c := range cells {
		h[i] = strings.Clone(c)
	}
	return h, nil
}

func (s *xlsxSource) next() ([]string, int, error) {
	cells, line, err := s.sc.nextRow()
	if errors.Is(err, io.EOF) {
		return nil, 0, io.EOF
	}
	if err != nil {
		return nil, line, fmt.Errorf("xlsx: %w", err)
	}
	if err := validCells(cells, s.sc.plain, line); err != nil {
		return nil, line, err
	}
	for len(cells) < s.width {
		cells = append(cells, "")
	}
	s.sc.cells = cells[:0]
	return cells, line, nil
}

// plain marks the values of the row next returned last that are ASCII JSON
// keeps as is, so they are copied without the escaping scan. It may be
// shorter than the row (the padding is not marked) and is valid until the
// next call of next.
func (s *xlsxSource) plain() []bool { return s.sc.plain }

// validCells refuses cells that are not valid UTF-8: a sheet is XML in
// UTF-8, so such bytes mean a damaged workbook, and a value must never
// reach the broker as U+FFFD. Cells marked plain are ASCII and not checked.
func validCells(cells []string, plain []bool, row int) error {
	for i, c := range cells {
		if i < len(plain) && plain[i] {
			continue
		}
		if !utf8.ValidString(c) {
			return fmt.Errorf("xlsx: row %d, column %s: the cell holds bytes that are not valid UTF-8: the workbook is damaged; export the entity again", row, columnName(i))
		}
	}
	return nil
}

func (s *xlsxSource) close() error {
	var err error
	if s.sheet != nil {
		err = s.sheet.Close()
	}
	if s.zr != nil {
		if cerr := s.zr.Close(); err == nil {
			err = cerr
		}
	}
	if s.tmp != "" {
		_ = os.Remove(s.tmp)
	}
	return err
}

// workbook is what the sheet scanner needs from the other parts.
type workbook struct {
	files      map[string]*zip.File
	sheetName  string
	sheetPath  string
	date1904   bool
	dateStyles []bool // by cell style index (the s attribute)
	sst        *sharedStrings
}

func readWorkbook(zr *zip.Reader, sheet string) (*workbook, error) {
	wb := &workbook{files: map[string]*zip.File{}}
	for _, f := range zr.File {
		wb.files[strings.TrimPrefix(f.Name, "/")] = f
	}
	var book struct {
		Pr struct {
			Date1904 string `xml:"date1904,attr"`
		} `xml:"workbookPr"`
		Sheets []struct {
			Name string `xml:"name,attr"`
			ID   string `xml:"http://schemas.openxmlformats.org/officeDocument/2006/relationships id,attr"`
		} `xml:"sheets>sheet"`
	}
	if err := wb.decodePart("xl/workbook.xml", &book); err != nil {
		return nil, err
	}
	wb.date1904 = book.Pr.Date1904 == "1" || book.Pr.Date1904 == "true"
	var rels struct {
		Rels []struct {
			ID     string `xml:"Id,attr"`
			Type   string `xml:"Type,attr"`
			Target string `xml:"Target,attr"`
		} `xml:"Relationship"`
	}
	if err := wb.decodePart("xl/_rels/workbook.xml.rels", &rels); err != nil {
		return nil, err
	}
	target := map[string]string{}
	sstPath, stylesPath := "xl/sharedStrings.xml", "xl/styles.xml"
	for _, r := range rels.Rels {
		p := r.Target
		if strings.HasPrefix(p, "/") {
			p = strings.TrimPrefix(p, "/")
		} else {
			p = path.Join("xl", p)
		}
		target[r.ID] = p
		switch {
		case strings.HasSuffix(r.Type, "/sharedStrings"):
			sstPath = p
		case strings.HasSuffix(r.Type, "/styles"):
			stylesPath = p
		}
	}
	if len(book.Sheets) == 0 {
		return nil, errors.New("xlsx: the workbook has no sheets")
	}
	names := make([]string, len(book.Sheets))
	for i, s := range book.Sheets {
		names[i] = s.Name
	}
	idx := pickSheet(names, sheet)
	wb.sheetName = book.Sheets[idx].Name
	wb.sheetPath = target[book.Sheets[idx].ID]
	if wb.sheetPath == "" {
		return nil, fmt.Errorf("xlsx: sheet %q has no part in the workbook relationships", wb.sheetName)
	}
	if f := wb.files[stylesPath]; f != nil {
		rc, err := f.Open()
		if err != nil {
			return nil, fmt.Errorf("xlsx: styles: %w", err)
		}
		wb.dateStyles, err = readDateStyles(rc)
		_ = rc.Close()
		if err != nil {
			return nil, fmt.Errorf("xlsx: styles: %w", err)
		}
	}
	wb.sst = &sharedStrings{}
	if f := wb.files[sstPath]; f != nil {
		rc, err := f.Open()
		if err != nil {
			return nil, fmt.Errorf("xlsx: shared strings: %w", err)
		}
		err = wb.sst.read(rc)
		_ = rc.Close()
		if err != nil {
			return nil, fmt.Errorf("xlsx: shared strings: %w", err)
		}
	}
	return wb, nil
}

// xlsxMaxSheetName is Excel's limit on a sheet name, to which F&O cuts the
// names it records in the manifest.
const xlsxMaxSheetName = 31

// pickSheet chooses the sheet to read among names (workbook order) for the
// manifest's sheet name want. F&O's record of the name is unreliable: a
// trailing "$" the workbook lacks, cut to 31 characters, the same for two
// entities, or empty; and the data is always on the first sheet. So it
// tries, in order: the exact name; the name without a trailing "$"; the
// same ignoring case; a sheet whose name and the wanted one agree ignoring
// case up to the shorter of them when that one is cut at 31 characters;
// and otherwise the first sheet. names must not be empty.
func pickSheet(names []string, want string) int {
	if want == "" {
		return 0
	}
	trimmed := strings.TrimSuffix(want, "$")
	cut := func(s string) string {
		if r := []rune(s); len(r) > xlsxMaxSheetName {
			return string(r[:xlsxMaxSheetName])
		}
		return s
	}
	for _, match := range []func(name string) bool{
		func(name string) bool { return name == want },
		func(name string) bool { return name == trimmed },
		func(name string) bool { return strings.EqualFold(name, want) || strings.EqualFold(name, trimmed) },
		func(name string) bool {
			a, b := []rune(strings.ToLower(name)), []rune(strings.ToLower(trimmed))
			if len(a) > len(b) {
				a, b = b, a
			}
			return len(a) >= xlsxMaxSheetName-1 && strings.HasPrefix(string(b), string(a)) || strings.EqualFold(cut(name), cut(trimmed))
		},
	} {
		for i, name := range names {
			if match(name) {
				return i
			}
		}
	}
	return 0
}

// decodePart decodes a small XML part (workbook, relationships).
func (wb *workbook) decodePart(name string, v any) error {
	f := wb.files[name]
	if f == nil {
		return fmt.Errorf("xlsx: part %s is missing: the file is not an xlsx workbook", name)
	}
	rc, err := f.Open()
	if err != nil {
		return fmt.Errorf("xlsx: %s: %w", name, err)
	}
	defer func() { _ = rc.Close() }()
	if err := xml.NewDecoder(io.LimitReader(rc, 16<<20)).Decode(v); err != nil {
		return fmt.Errorf("xlsx: %s: %w", name, err)
	}
	return nil
}

// readDateStyles returns, per cell format (cellXfs index), whether its
// number format shows a date or time.
func readDateStyles(r io.Reader) ([]bool, error) {
	var st struct {
		NumFmts []struct {
			ID   int    `xml:"numFmtId,attr"`
			Code string `xml:"formatCode,attr"`
		} `xml:"numFmts>numFmt"`
		Xfs []struct {
			NumFmtID int `xml:"numFmtId,attr"`
		} `xml:"cellXfs>xf"`
	}
	if err := xml.NewDecoder(io.LimitReader(r, 64<<20)).Decode(&st); err != nil {
		return nil, err
	}
	custom := map[int]bool{}
	for _, f := range st.NumFmts {
		custom[f.ID] = isDateFormat(f.Code)
	}
	dates := make([]bool, len(st.Xfs))
	for i, xf := range st.Xfs {
		if d, ok := custom[xf.NumFmtID]; ok {
			dates[i] = d
		} else {
			dates[i] = builtinDateFormat(xf.NumFmtID)
		}
	}
	return dates, nil
}

// builtinDateFormat reports whether a built-in number format id is a date
// or time format (ECMA-376 18.8.30: 14-22 and 45-47).
func builtinDateFormat(id int) bool {
	return (id >= 14 && id <= 22) || (id >= 45 && id <= 47)
}

// isDateFormat reports whether a custom number format code shows a date or
// time: it has d, m, y, h or s outside quoted text, escapes and brackets
// ([Red], [$-409]); elapsed-time brackets ([h], [mm], [ss]) count too.
func isDateFormat(code string) bool {
	// Only the first section (positive numbers) decides.
	inQuote := false
	for i := 0; i < len(code); i++ {
		c := code[i]
		switch {
		case inQuote:
			if c == '"' {
				inQuote = false
			}
		case c == '"':
			inQuote = true
		case c == '\\' || c == '_' || c == '*':
			i++ // the next character is literal
		case c == ';':
			return false
		case c == '[':
			end := strings.IndexByte(code[i:], ']')
			if end < 0 {
				return false
			}
			inner := strings.ToLower(code[i+1 : i+end])
			if inner != "" && strings.Trim(inner, "hms") == "" {
				return true
			}
			i += end
		default:
			switch c | 0x20 {
			case 'd', 'm', 'y', 'h', 's':
				if c == 'E' || c == 'e' {
					break
				}
				// "General" has none of these letters; AM/PM alone is not a date.
				return true
			}
		}
	}
	return false
}

// sharedStrings holds the shared strings table as one byte block.
type sharedStrings struct {
	blob  []byte
	ends  []uint32
	plain []bool // by string: ASCII that JSON keeps as is
}

func (t *sharedStrings) get(i int) (string, bool) {
	v, _, ok := t.getPlain(i)
	return v, ok
}

// getPlain is get, also reporting whether the string is plain.
func (t *sharedStrings) getPlain(i int) (v string, plain, ok bool) {
	if i < 0 || i >= len(t.ends) {
		return "", false, false
	}
	start := uint32(0)
	if i > 0 {
		start = t.ends[i-1]
	}
	b := t.blob[start:t.ends[i]]
	return unsafe.String(unsafe.SliceData(b), len(b)), t.plain[i], true
}

// read parses sharedStrings.xml: each <si> is plain <t> text or rich text
// runs (<r><t>), whose texts are joined; phonetic runs (<rPh>) are left out.
func (t *sharedStrings) read(r io.Reader) error {
	return t.readWindow(r, xmlWindow)
}

// readWindow is read with the scanner's window of the given size.
func (t *sharedStrings) readWindow(r io.Reader, window int) error {
	x := newXMLScanner(r, window)
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

func (t *sharedStrings) add(v []byte) {
	t.blob = append(t.blob, v...)
	t.ends = append(t.ends, uint32(len(t.blob)))
	t.plain = append(t.plain, plainBytes(v))
}

// sheetScanner yields the rows of a worksheet's XML one at a time.
type sheetScanner struct {
	x          *xmlScanner
	sst        *sharedStrings
	dateStyles []bool
	date1904   bool

	cells   []string
	plain   []bool     // by cell: the value is ASCII that JSON keeps as is
	arena   []byte     // values of the current row that are not shared strings
	pending []valueRef // arena values, turned into strings at row end
	raw     []byte     // text of the current cell's <v> or inline string
	dec     []byte     // raw with references resolved, when it has any
	line    int        // sheet row number of the last row
	inRow   bool
}

func newSheetScanner(r io.Reader, sst *sharedStrings, dateStyles []bool, date1904 bool) *sheetScanner {
	return &sheetScanner{x: newXMLScanner(r, xmlWindow), sst: sst, dateStyles: dateStyles, date1904: date1904}
}

// cellType is a cell's t attribute.
type cellType uint8

const (
	cellNumber cellType = iota // n or absent
	cellShared                 // s
	cellBool                   // b
	cellOther                  // str, inlineStr, e, d: the text as is
)

func parseCellType(t []byte) cellType {
	switch string(t) {
	case "", "n":
		return cellNumber
	case "s":
		return cellShared
	case "b":
		return cellBool
	}
	return cellOther
}

// cellState is the cell being read.
type cellState struct {
	col     int
	style   int
	typ     cellType
	inV     bool
	inIS    bool
	inT     bool
	rph     int
	hasText bool
}

// nextRow returns the next row with at least one non-empty cell, its cells
// up to the last non-empty one (empty cells in between are ""), and its
// sheet row number. The strings are valid until the next call.
func (s *sheetScanner) nextRow() ([]string, int, error) {
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
func (s *sheetScanner) readRow() ([]string, int, error) {
	s.cells, s.plain = s.cells[:0], s.plain[:0]
	s.arena, s.pending = s.arena[:0], s.pending[:0]
	var c cellState
	inCell := false
	next := 0 // column of a cell without an r attribute
	for {
		if s.inRow && !inCell {
			// Most cells are read here, start tag and value at once.
			if ref, st, typ, empty, ok := s.x.cellTag(); ok {
				var err error
				if inCell, err = s.startCell(&c, &next, ref, st, typ, empty); err != nil {
					return nil, s.line, err
				}
				continue
			}
		}
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
				if v, _, _ := cellAttrs(tok.raw); v != nil {
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
				ref, st, typ := cellAttrs(tok.raw)
				if inCell, err = s.startCell(&c, &next, ref, st, typ, tok.kind == tokEmpty); err != nil {
					return nil, s.line, err
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
				if err := s.endCell(&c, s.raw); err != nil {
					return nil, s.line, err
				}
			case "row":
				s.inRow = false
				for _, p := range s.pending {
					b := s.arena[p.start:p.end]
					s.cells[p.col] = unsafe.String(unsafe.SliceData(b), len(b))
				}
				return s.cells, s.line, nil
			}
		}
	}
}

// startCell begins the cell c whose start tag has the attributes ref, st
// and typ (cellAttrs; empty for <c/>) at column *next unless ref says
// otherwise, and reads its value at once when it is simple (simpleCell).
// inCell reports a cell whose content is still to be read as tokens.
func (s *sheetScanner) startCell(c *cellState, next *int, ref, st, typ []byte, empty bool) (inCell bool, err error) {
	*c = cellState{col: *next, style: -1}
	if ref != nil {
		col, ok := columnIndex(ref)
		if !ok {
			return false, fmt.Errorf("sheet row %d: bad cell reference %q", s.line, ref)
		}
		c.col = col
	}
	if st != nil {
		if n, ok := smallUint(st); ok {
			c.style = n
		} else if n, err := strconv.Atoi(string(st)); err == nil && n >= 0 {
			c.style = n
		}
	}
	c.typ = parseCellType(typ)
	*next = c.col + 1
	s.raw = s.raw[:0]
	if empty {
		s.setCell(c.col, "", true)
		return false, nil
	}
	if text, ok := s.x.simpleCell(); ok {
		// The cell's value read at once: the tokens would say the same.
		c.hasText = len(text) > 0
		return false, s.endCell(c, text)
	}
	return true, nil
}

// valueRef is a cell value in the row's arena, made a string at row end.
type valueRef struct{ col, start, end int }

// endCell sets the value of the cell c ends, whose raw text (references
// unresolved) is raw, in place or in the arena.
func (s *sheetScanner) endCell(c *cellState, raw []byte) error {
	v, stable, plain, err := s.cellValue(c, raw)
	if err != nil {
		return fmt.Errorf("sheet row %d, column %s: %w", s.line, columnName(c.col), err)
	}
	if stable {
		s.setCell(c.col, v, plain)
		return nil
	}
	start := len(s.arena)
	s.arena = append(s.arena, v...)
	s.setCell(c.col, "", plain)
	s.pending = append(s.pending, valueRef{c.col, start, len(s.arena)})
	return nil
}

// setCell puts v at column col, filling the gap with "".
func (s *sheetScanner) setCell(col int, v string, plain bool) {
	for len(s.cells) <= col {
		s.cells = append(s.cells, "")
		s.plain = append(s.plain, true)
	}
	s.cells[col], s.plain[col] = v, plain
}

// cellValue turns the current cell, whose raw text is raw, into its value.
// stable reports a value that outlives the row (a shared string, stable
// until the source closes, or a constant); otherwise the value is only
// valid until raw or s.dec change. plain reports a value of ASCII that JSON
// keeps as is.
func (s *sheetScanner) cellValue(c *cellState, raw []byte) (v string, stable, plain bool, err error) {
	if !c.hasText {
		return "", true, true, nil
	}
	if c.typ == cellShared {
		if n, ok := smallUint(raw); ok {
			if v, plain, ok := s.sst.getPlain(n); ok {
				return v, true, plain, nil
			}
		}
	}
	// Text that is plain needs no resolving either: it has no '&', CR or
	// '_'. Most values are, and are read in this one pass.
	text := raw
	plain = plainXMLText(raw)
	if !plain {
		if text, err = decodeXMLText(s.dec, raw); err != nil {
			return "", false, false, err
		}
		if len(text) > 0 && len(raw) > 0 && &text[0] != &raw[0] {
			s.dec = text
		}
	}
	switch c.typ {
	case cellShared:
		n, err := strconv.Atoi(strings.TrimSpace(string(text)))
		if err != nil {
			return "", false, false, fmt.Errorf("bad shared string index %q", text)
		}
		v, plain, ok := s.sst.getPlain(n)
		if !ok {
			return "", false, false, fmt.Errorf("shared string %d does not exist (the table has %d)", n, len(s.sst.ends))
		}
		return v, true, plain, nil
	case cellBool:
		if string(text) == "1" {
			return "TRUE", true, true, nil
		}
		return "FALSE", true, true, nil
	case cellNumber:
		if c.style >= 0 && c.style < len(s.dateStyles) && s.dateStyles[c.style] {
			if iso, ok := serialToISO(text, s.date1904); ok {
				return iso, false, true, nil
			}
		}
	}
	return unsafe.String(unsafe.SliceData(text), len(text)), false, plain, nil
}

// plainXMLText reports whether every byte of b is ASCII that JSON keeps as
// is and that XML text holds as it is: no reference ('&'), no escape
// ('_' of _xHHHH_) and, being no control character, no CR to normalize.
func plainXMLText(b []byte) bool {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		a, u := x^(lsb8*'&'), x^(lsb8*'_')
		if !plain8(x) || ((a-lsb8)&^a|(u-lsb8)&^u)&msb8 != 0 {
			return false
		}
	}
	for ; i < len(b); i++ {
		if x := b[i]; x >= utf8.RuneSelf || !jsonSafe[x] || x == '&' || x == '_' {
			return false
		}
	}
	return true
}

// serialToISO converts an Excel date serial number to ISO 8601 text,
// rounded to the second; ok is false for text that is not a date serial.
func serialToISO(text []byte, date1904 bool) (string, bool) {
	f, err := strconv.ParseFloat(string(text), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > 2958466 {
		return "", false
	}
	days := math.Floor(f)
	secs := math.Round((f - days) * 86400)
	if secs >= 86400 {
		days++
		secs -= 86400
	}
	var base time.Time
	switch {
	case date1904:
		base = time.Date(1904, 1, 1, 0, 0, 0, 0, time.UTC)
	case days < 60:
		// Serial 1 is 1900-01-01; 60 is the 1900-02-29 that never was.
		base = time.Date(1899, 12, 31, 0, 0, 0, 0, time.UTC)
	default:
		base = time.Date(1899, 12, 30, 0, 0, 0, 0, time.UTC)
	}
	t := base.AddDate(0, 0, int(days)).Add(time.Duration(secs) * time.Second)
	return t.Format("2006-01-02T15:04:05"), true
}

// columnIndex turns the letters of a cell reference ("AB12") into a 0-based
// column index.
func columnIndex(ref []byte) (int, bool) {
	col, n := 0, 0
	for _, b := range ref {
		switch {
		case b >= 'A' && b <= 'Z':
			col = col*26 + int(b-'A'+1)
		case b >= 'a' && b <= 'z':
			col = col*26 + int(b-'a'+1)
		default:
			if n == 0 {
				return 0, false
			}
			return col - 1, col <= 16384
		}
		n++
		if col > 16384 {
			return 0, false
		}
	}
	return col - 1, n > 0
}

// columnName is the letters of a 0-based column index.
func columnName(col int) string {
	var b []byte
	for col++; col > 0; col = (col - 1) / 26 {
		b = append([]byte{byte('A' + (col-1)%26)}, b...)
	}
	return string(b)
}

// decodeXMLText returns text with XML character and entity references
// resolved, line breaks normalized as XML requires (CRLF and CR become LF),
// and OOXML _xHHHH_ escapes decoded (how Excel writes characters XML
// cannot hold, such as a CR: _x000D_).
//
// Text without any of these is returned as is; otherwise the result is
// built in dst's storage (dst[:0]).
func decodeXMLText(dst, text []byte) ([]byte, error) {
	if !hasAny(text, "&\r_") {
		return text, nil
	}
	dst = dst[:0]
	for i := 0; i < len(text); i++ {
		b := text[i]
		switch b {
		case '\r':
			dst = append(dst, '\n')
			if i+1 < len(text) && text[i+1] == '\n' {
				i++
			}
		case '&':
			end := -1
			for j := i + 1; j < len(text) && j < i+12; j++ {
				if text[j] == ';' {
					end = j
					break
				}
			}
			if end < 0 {
				return nil, fmt.Errorf("bad character reference at %q", clip(text[i:]))
			}
			ref := string(text[i+1 : end])
			switch ref {
			case "amp":
				dst = append(dst, '&')
			case "lt":
				dst = append(dst, '<')
			case "gt":
				dst = append(dst, '>')
			case "quot":
				dst = append(dst, '"')
			case "apos":
				dst = append(dst, '\'')
			default:
				var n uint64
				var err error
				switch {
				case strings.HasPrefix(ref, "#x"):
					n, err = strconv.ParseUint(ref[2:], 16, 32)
				case strings.HasPrefix(ref, "#"):
					n, err = strconv.ParseUint(ref[1:], 10, 32)
				default:
					err = errors.New("unknown entity")
				}
				if err != nil || n > utf8.MaxRune {
					return nil, fmt.Errorf("bad character reference &%s;", ref)
				}
				dst = utf8.AppendRune(dst, rune(n))
			}
			i = end
		case '_':
			if i+6 < len(text) && text[i+1] == 'x' && text[i+6] == '_' {
				if n, err := strconv.ParseUint(string(text[i+2:i+6]), 16, 16); err == nil {
					dst = utf8.AppendRune(dst, rune(n))
					i += 6
					continue
				}
			}
			dst = append(dst, b)
		default:
			dst = append(dst, b)
		}
	}
	return dst, nil
}

// smallUint parses b when it is 1 to 9 ASCII digits.
func smallUint(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// hasAny reports whether b holds any of chars; a plain loop beats
// bytes.ContainsAny on the short texts of cells.
func hasAny(b []byte, chars string) bool {
	for _, c := range b {
		if strings.IndexByte(chars, c) >= 0 {
			return true
		}
	}
	return false
}

func clip(b []byte) string {
	if len(b) > 12 {
		b = b[:12]
	}
	return string(b)
}

// xmlScanner is a minimal, fast XML tokenizer for the flat markup of
// spreadsheet parts: start, end and empty-element tags (names without their
// namespace prefix) and raw text between them (references unresolved).
// Comments, processing instructions and declarations are skipped; CDATA
// sections are returned as text, which decodeXMLText would then resolve:
// spreadsheet writers do not use CDATA.
//
// It reads through a window of the input and hands out tokens that point
// into it, so a token costs no copy and no allocation; a token longer than
// the window grows it, up to xmlMaxToken.
type xmlScanner struct {
	r       io.Reader
	buf     []byte
	pos     int   // start of the unread input in buf
	end     int   // end of the input read into buf
	eof     bool  // r has no more input
	rerr    error // why r has no more input, when not io.EOF
	scratch []byte
	tag     xmlToken
	textTok xmlToken
	haveTag bool // tag holds a tag not yet returned
	ended   bool
}

type tokKind int

const (
	tokText tokKind = iota
	tokStart
	tokEnd
	tokEmpty
)

type xmlToken struct {
	kind tokKind
	name []byte // local name, without a namespace prefix
	data []byte // text, for tokText
	raw  []byte // attribute text of a tag
}

// attr returns the raw value of the attribute name (matched without a
// prefix), or nil when absent.
func (t *xmlToken) attr(name string) []byte {
	a := t.raw
	for len(a) > 0 {
		eq := bytes.IndexByte(a, '=')
		if eq < 0 {
			return nil
		}
		key := trimXMLSpace(a[:eq])
		if i := bytes.LastIndexByte(key, ':'); i >= 0 {
			key = key[i+1:]
		}
		rest := trimXMLSpace(a[eq+1:])
		if len(rest) == 0 || (rest[0] != '"' && rest[0] != '\'') {
			return nil
		}
		end := bytes.IndexByte(rest[1:], rest[0])
		if end < 0 {
			return nil
		}
		if string(key) == name {
			return rest[1 : 1+end]
		}
		a = rest[end+2:]
	}
	return nil
}

// cellAttrs returns the raw values of the attributes r, s and t of a tag
// (matched without a prefix; nil when absent) in one pass, reading a
// malformed attribute list exactly as far as attr does.
func cellAttrs(a []byte) (r, s, t []byte) {
	for len(a) > 0 {
		eq := 0
		for eq < len(a) && a[eq] != '=' {
			eq++
		}
		if eq == len(a) {
			return
		}
		key := trimXMLSpace(a[:eq])
		for i := len(key) - 1; i >= 0; i-- {
			if key[i] == ':' {
				key = key[i+1:]
				break
			}
		}
		i := eq + 1
		for i < len(a) && isXMLSpace(a[i]) {
			i++
		}
		if i == len(a) || (a[i] != '"' && a[i] != '\'') {
			return
		}
		j := i + 1
		for j < len(a) && a[j] != a[i] {
			j++
		}
		if j == len(a) {
			return
		}
		if len(key) == 1 {
			keepCellAttr(key[0], a[i+1:j], &r, &s, &t)
		}
		a = a[j+1:]
	}
	return
}

// keepCellAttr sets *r, *s or *t, by name, to v unless already set: the
// first of an attribute given twice counts.
func keepCellAttr(name byte, v []byte, r, s, t *[]byte) {
	var p *[]byte
	switch name {
	case 'r':
		p = r
	case 's':
		p = s
	case 't':
		p = t
	default:
		return
	}
	if *p == nil {
		*p = v
	}
}

func isXMLSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func trimXMLSpace(b []byte) []byte {
	for len(b) > 0 && isXMLSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isXMLSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// xmlWindow is the scanner's initial window; xmlMaxToken caps one token
// (a tag or the text between two tags).
const (
	xmlWindow   = 256 << 10
	xmlMaxToken = 64 << 20
)

func newXMLScanner(r io.Reader, window int) *xmlScanner {
	return &xmlScanner{r: r, buf: make([]byte, max(window, 1))}
}

// fill reads more input after buf[pos:end], moving the unread input to the
// front of the window first (which invalidates the tokens handed out) and
// growing the window when it is full. It reports whether input came.
func (x *xmlScanner) fill() bool {
	if x.eof {
		return false
	}
	if x.pos > 0 {
		x.end = copy(x.buf, x.buf[x.pos:x.end])
		x.pos = 0
	}
	if x.end == len(x.buf) {
		if x.end >= xmlMaxToken {
			x.eof, x.rerr = true, errors.New("an XML token is over 64 MiB")
			return false
		}
		nb := make([]byte, 2*len(x.buf))
		copy(nb, x.buf[:x.end])
		x.buf = nb
	}
	for empty := 0; ; empty++ {
		n, err := x.r.Read(x.buf[x.end:])
		x.end += n
		if err != nil {
			x.eof = true
			if err != io.EOF {
				x.rerr = err
			}
			return n > 0
		}
		if n > 0 {
			return true
		}
		if empty == 100 {
			x.eof, x.rerr = true, io.ErrNoProgress
			return false
		}
	}
}

// indexLT is bytes.IndexByte(b, '<'), faster for the few bytes that usually
// separate two tags in a sheet.
func indexLT(b []byte) int {
	n := min(len(b), 16)
	for i := 0; i < n; i++ {
		if b[i] == '<' {
			return i
		}
	}
	if len(b) <= n {
		return -1
	}
	if i := bytes.IndexByte(b[n:], '<'); i >= 0 {
		return n + i
	}
	return -1
}

// cellTag consumes a cell's start tag, "<c" then attributes then ">" (or
// "/>", an empty cell, reported by empty), when the buffer holds all of it
// and it has the shape spreadsheet writers give it: one space before each
// attribute, names without a prefix or white space, values in double
// quotes. It returns the raw values of the attributes r, s and t (nil when
// absent) as cellAttrs does for the tag's token. It consumes nothing
// otherwise, and the tokens are read as usual.
func (x *xmlScanner) cellTag() (r, s, t []byte, empty, ok bool) {
	if x.haveTag {
		return nil, nil, nil, false, false
	}
	b := x.buf[x.pos:x.end]
	if len(b) < 3 || b[0] != '<' || b[1] != 'c' || b[2] != ' ' {
		return nil, nil, nil, false, false
	}
	for i := 2; i < len(b); {
		switch b[i] {
		case '>':
			x.pos += i + 1
			return r, s, t, false, true
		case '/':
			if i+1 < len(b) && b[i+1] == '>' {
				x.pos += i + 2
				return r, s, t, true, true
			}
			return nil, nil, nil, false, false
		case ' ':
		default:
			return nil, nil, nil, false, false
		}
		// ` name="value"`
		k := i + 1
		j := k
		for j < len(b) && attrNameByte[b[j]] {
			j++
		}
		if j == k || j+1 >= len(b) || b[j] != '=' || b[j+1] != '"' {
			return nil, nil, nil, false, false
		}
		end := bytes.IndexByte(b[j+2:], '"')
		if end < 0 {
			return nil, nil, nil, false, false
		}
		if j-k == 1 {
			keepCellAttr(b[k], b[j+2:j+2+end], &r, &s, &t)
		}
		i = j + 2 + end + 1
	}
	return nil, nil, nil, false, false
}

// attrNameByte marks the bytes cellTag takes in an attribute name: ASCII
// letters, digits, '-', '_' and '.' (so no prefix, white space or markup).
var attrNameByte = func() (t [256]bool) {
	for c := range t {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
	}
	return t
}()

// The markup of the cells simpleCell reads at once.
var (
	openV         = []byte("<v>")
	closeVC       = []byte("</v></c>")
	openIST       = []byte("<is><t>")
	openISTKeep   = []byte(`<is><t xml:space="preserve">`)
	closeTISC     = []byte("</t></is></c>")
	emptyISTEmpty = []byte("<is><t/></is></c>")
)

// simpleCell consumes the rest of a cell that holds a value and nothing
// else, when the buffer holds all of it, and returns the value's raw text
// (references unresolved; valid until the next call of next), as the
// tokens of those tags would give it: "<v>text</v></c>" (a number or a
// shared string index), and the inline strings F&O writes for every cell,
// "<is><t>text</t></is></c>", with xml:space="preserve" on <t> (which
// changes nothing: text is always kept as written) or as an empty <t/>. It
// consumes nothing otherwise (other attributes, prefixes, white space, rich
// text runs, other markup), and the tokens are read as usual.
func (x *xmlScanner) simpleCell() (text []byte, ok bool) {
	if x.haveTag {
		return nil, false
	}
	b := x.buf[x.pos:x.end]
	var open int
	var closing []byte
	switch {
	case bytes.HasPrefix(b, openV):
		open, closing = len(openV), closeVC
	case bytes.HasPrefix(b, openIST):
		open, closing = len(openIST), closeTISC
	case bytes.HasPrefix(b, openISTKeep):
		open, closing = len(openISTKeep), closeTISC
	case bytes.HasPrefix(b, emptyISTEmpty):
		x.pos += len(emptyISTEmpty)
		return nil, true
	default:
		return nil, false
	}
	i := indexLT(b[open:])
	if i < 0 || !bytes.HasPrefix(b[open+i:], closing) {
		return nil, false
	}
	x.pos += open + i + len(closing)
	return b[open : open+i], true
}

// next returns the next token; it is valid until the next call.
func (x *xmlScanner) next() (*xmlToken, error) {
	if x.haveTag {
		x.haveTag = false
		return &x.tag, nil
	}
	for !x.ended {
		// The text up to the next '<': buf[pos:pos+lt].
		lt := 0
		for {
			if i := indexLT(x.buf[x.pos+lt : x.end]); i >= 0 {
				lt += i
				break
			}
			lt = x.end - x.pos
			if !x.fill() {
				if x.rerr != nil {
					return nil, x.rerr
				}
				x.ended = true
				if len(bytes.TrimSpace(x.buf[x.pos:x.end])) > 0 {
					return nil, errors.New("text after the last tag")
				}
				return nil, io.EOF
			}
		}
		// The tag: buf[pos+lt+1:pos+gt], its '>' at pos+gt. A '>' inside a
		// quoted attribute value or a comment does not end it.
		gt := lt + 1
		var q byte
	scan:
		for {
			b := x.buf[x.pos:x.end]
			for ; gt < len(b); gt++ {
				switch c := b[gt]; c {
				case '>':
					if q == 0 && b[lt+1] != '!' {
						break scan
					}
					tag := b[lt+1 : gt]
					switch {
					case len(tag) >= 3 && tag[0] == '!' && tag[1] == '-' && tag[2] == '-':
						if len(tag) >= 5 && tag[len(tag)-1] == '-' && tag[len(tag)-2] == '-' {
							break scan
						}
					case bytes.HasPrefix(tag, []byte("![CDATA[")):
						if bytes.HasSuffix(tag, []byte("]]")) {
							break scan
						}
					default:
						if q == 0 {
							break scan
						}
					}
				case '"', '\'':
					if q == 0 {
						q = c
					} else if q == c {
						q = 0
					}
				}
			}
			if !x.fill() {
				if x.rerr != nil {
					return nil, x.rerr
				}
				return nil, errors.New("the XML ends inside a tag")
			}
		}
		text, tag := x.buf[x.pos:x.pos+lt], x.buf[x.pos+lt+1:x.pos+gt]
		x.pos += gt + 1
		if len(tag) == 0 {
			return nil, errors.New("empty tag <>")
		}
		switch tag[0] {
		case '?':
			if len(text) > 0 {
				return x.text(text), nil
			}
			continue
		case '!':
			if bytes.HasPrefix(tag, []byte("![CDATA[")) {
				x.scratch = append(append(x.scratch[:0], text...), tag[8:len(tag)-2]...)
				text = x.scratch
			}
			if len(text) > 0 {
				return x.text(text), nil
			}
			continue
		}
		t := &x.tag
		t.kind = tokStart
		if tag[0] == '/' {
			t.kind = tokEnd
			tag = tag[1:]
		} else if tag[len(tag)-1] == '/' {
			t.kind = tokEmpty
			tag = tag[:len(tag)-1]
		}
		n, colon := 0, -1
		for ; n < len(tag); n++ {
			c := tag[n]
			if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
				break
			}
			if c == ':' && colon < 0 {
				colon = n
			}
		}
		t.name, t.raw = tag[colon+1:n], tag[n:]
		if len(text) > 0 {
			x.haveTag = true
			return x.text(text), nil
		}
		return t, nil
	}
	return nil, io.EOF
}

func (x *xmlScanner) text(b []byte) *xmlToken {
	x.textTok = xmlToken{kind: tokText, data: b}
	return &x.textTok
}

func balancedQuotes(b []byte) bool {
	var q byte
	for _, c := range b {
		switch {
		case q != 0:
			if c == q {
				q = 0
			}
		case c == '"' || c == '\'':
			q = c
		}
	}
	return q == 0
}
