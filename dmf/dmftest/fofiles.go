package dmftest

import (
	"archive/zip"
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/encoding/unicode/utf32"
)

// Entity files shaped as F&O writes them, for Entity.Data: the demo uses
// them, and so can tests of readers.

// FOWorkbook returns an XLSX workbook as F&O's EXCEL format writes it: one
// sheet named sheet holding rows (the first is the header row), every cell
// an inline string (t="inlineStr") with no sharedStrings part, empty values
// left out (cells are placed by reference), and no XML declaration in the
// sheet XML. Values are written as given: F&O's are all strings, e.g.
// "2011-01-31 00:00:00" and "123.000000".
func FOWorkbook(sheet string, rows [][]string) []byte {
	const (
		main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
		rels = "http://schemas.openxmlformats.org/package/2006/relationships"
		doc  = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
	)
	var ws strings.Builder
	ws.WriteString(`<worksheet xmlns="` + main + `"><sheetData>`)
	for i, row := range rows {
		r := strconv.Itoa(i + 1)
		ws.WriteString(`<row r="` + r + `">`)
		for j, v := range row {
			if v == "" {
				continue
			}
			ws.WriteString(`<c r="` + columnName(j) + r + `" t="inlineStr"><is><t`)
			if strings.TrimSpace(v) != v {
				ws.WriteString(` xml:space="preserve"`)
			}
			ws.WriteString(">" + escape(v) + "</t></is></c>")
		}
		ws.WriteString("</row>")
	}
	ws.WriteString("</sheetData></worksheet>")

	parts := []struct{ name, body string }{
		{"[Content_Types].xml", `<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">` +
			`<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>` +
			`<Default Extension="xml" ContentType="application/xml"/>` +
			`<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>` +
			`<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>` +
			`</Types>`},
		{"_rels/.rels", `<Relationships xmlns="` + rels + `">` +
			`<Relationship Id="rId1" Type="` + doc + `/officeDocument" Target="xl/workbook.xml"/></Relationships>`},
		{"xl/workbook.xml", `<workbook xmlns="` + main + `" xmlns:r="` + doc + `"><sheets>` +
			`<sheet name="` + escape(sheet) + `" sheetId="1" r:id="rId1"/></sheets></workbook>`},
		{"xl/_rels/workbook.xml.rels", `<Relationships xmlns="` + rels + `">` +
			`<Relationship Id="rId1" Type="` + doc + `/worksheet" Target="worksheets/sheet1.xml"/></Relationships>`},
		{"xl/worksheets/sheet1.xml", ws.String()},
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, p := range parts {
		w, _ := zw.CreateHeader(&zip.FileHeader{Name: p.name, Method: zip.Deflate, Modified: packageTime})
		_, _ = w.Write([]byte(p.body)) // writes to a bytes.Buffer do not fail
	}
	_ = zw.Close()
	return buf.Bytes()
}

// columnName is the spreadsheet column letters of a 0-based index: A, B,
// ..., Z, AA, ...
func columnName(i int) string {
	var b []byte
	for i++; i > 0; i = (i - 1) / 26 {
		b = append([]byte{byte('A' + (i-1)%26)}, b...)
	}
	return string(b)
}

// XMLElementFile returns an entity file in F&O's XML-Element format: UTF-8
// with a declaration, a root element Document holding one element per row
// named record (the entity's upper-case name, e.g. CUSTCUSTOMERGROUPENTITY),
// with one child element per field of header; empty values are left out.
func XMLElementFile(record string, header []string, rows [][]string) []byte {
	var b bytes.Buffer
	b.WriteString(xml.Header[:len(xml.Header)-1] + "\r\n<Document>\r\n")
	for _, row := range rows {
		b.WriteString("  <" + record + ">\r\n")
		for j, v := range row {
			if v != "" && j < len(header) {
				b.WriteString("    <" + header[j] + ">" + escape(v) + "</" + header[j] + ">\r\n")
			}
		}
		b.WriteString("  </" + record + ">\r\n")
	}
	b.WriteString("</Document>\r\n")
	return b.Bytes()
}

// XMLAttributeFile returns an entity file in F&O's XML-Attribute format:
// as XMLElementFile, with one attribute per field instead of child elements.
func XMLAttributeFile(record string, header []string, rows [][]string) []byte {
	var b bytes.Buffer
	b.WriteString(xml.Header[:len(xml.Header)-1] + "\r\n<Document>\r\n")
	for _, row := range rows {
		b.WriteString("  <" + record)
		for j, v := range row {
			if v != "" && j < len(header) {
				b.WriteString(" " + header[j] + `="` + escape(v) + `"`)
			}
		}
		b.WriteString(" />\r\n")
	}
	b.WriteString("</Document>\r\n")
	return b.Bytes()
}

// TextFormat is how F&O's source format settings shape a delimited or
// fixed-width entity file. The zero value is a comma-separated UTF-8 file
// without BOM, with a header row and doubled quotes inside quoted values.
type TextFormat struct {
	// CodePage is the file's character set as a Windows code page number.
	// 0 means 65001, UTF-8: which encoding F&O's "CSV-Unicode" writes is
	// not public, and UTF-8 is what real packages most often hold (the
	// simulator's choice). Unicode code pages: 1200 (UTF-16 LE), 1201
	// (UTF-16 BE), 12000 (UTF-32 LE), 12001 (UTF-32 BE), 65000 (UTF-7),
	// 65001 (UTF-8). Others: any single-byte code page of
	// golang.org/x/text/encoding/charmap (CodePages lists them), 1252
	// (Western European) being F&O's default for non-Unicode formats.
	CodePage int
	// BOM writes the encoding's byte order mark; it applies to UTF-8,
	// UTF-16 and UTF-32 only. UTF-7 is written as .NET writes it, without
	// one, and single-byte code pages have none.
	BOM bool
	// Delimiter separates values: ',' when 0. F&O offers five: comma,
	// semicolon, tab, vertical bar and colon.
	Delimiter byte
	// Qualifier quotes a value holding the delimiter, the qualifier or a
	// line break: '"' when 0.
	Qualifier byte
	// NoHeader leaves the header row out ("First row header" = No): the
	// first line is data. Fixed-width files write a header only with
	// FixedHeader.
	NoHeader bool
	// UndoubledQuotes writes a qualifier inside a quoted value as it is
	// ("27" monitor" as "27" monitor") instead of doubling it: whether F&O
	// doubles it is not public, so both shapes can be produced.
	UndoubledQuotes bool
	// Widths makes the file fixed width: value i is padded with spaces to
	// Widths[i] characters (runes), left-aligned, with no delimiter or
	// qualifier. A value longer than its width, holding a line break, or a
	// row with another number of values is an error.
	Widths []int
	// FixedHeader writes a header line of the column names, padded the
	// same way, in a fixed-width file ("Enable header for fixed width file").
	FixedHeader bool
}

// Unicode reports whether the format writes a Unicode code page, as
// F&O's "-Unicode" format types do.
func (o TextFormat) Unicode() bool {
	switch o.codePage() {
	case 1200, 1201, 12000, 12001, 65000, 65001:
		return true
	}
	return false
}

// SourceFormat is the manifest's SourceFormat for files written in o:
// "CSV-Unicode" for Unicode delimited files, "CSV" for code page ones and
// "FixedWidth" for fixed-width files. F&O lets administrators name source
// formats freely; "FixedWidth" is the simulator's choice, a name holding
// "fixed" as readers detect fixed-width formats by.
func (o TextFormat) SourceFormat() string {
	switch {
	case o.Widths != nil:
		return "FixedWidth"
	case o.Unicode():
		return "CSV-Unicode"
	}
	return "CSV"
}

func (o TextFormat) codePage() int {
	if o.CodePage == 0 {
		return 65001
	}
	return o.CodePage
}

// codePages maps the single-byte Windows code pages the simulator writes to
// their encodings.
var codePages = map[int]*charmap.Charmap{
	37: charmap.CodePage037, 437: charmap.CodePage437, 850: charmap.CodePage850, 852: charmap.CodePage852,
	855: charmap.CodePage855, 858: charmap.CodePage858, 860: charmap.CodePage860, 862: charmap.CodePage862,
	863: charmap.CodePage863, 865: charmap.CodePage865, 866: charmap.CodePage866, 874: charmap.Windows874,
	1047: charmap.CodePage1047, 1140: charmap.CodePage1140,
	1250: charmap.Windows1250, 1251: charmap.Windows1251, 1252: charmap.Windows1252, 1253: charmap.Windows1253,
	1254: charmap.Windows1254, 1255: charmap.Windows1255, 1256: charmap.Windows1256, 1257: charmap.Windows1257,
	1258: charmap.Windows1258, 10000: charmap.Macintosh, 10007: charmap.MacintoshCyrillic,
	20866: charmap.KOI8R, 21866: charmap.KOI8U,
	28591: charmap.ISO8859_1, 28592: charmap.ISO8859_2, 28593: charmap.ISO8859_3, 28594: charmap.ISO8859_4,
	28595: charmap.ISO8859_5, 28596: charmap.ISO8859_6, 28597: charmap.ISO8859_7, 28598: charmap.ISO8859_8,
	28599: charmap.ISO8859_9, 28603: charmap.ISO8859_13, 28605: charmap.ISO8859_15,
}

// CodePages returns the code pages TextFile writes, in increasing order:
// the Unicode ones and the single-byte ones.
func CodePages() []int {
	cps := []int{1200, 1201, 12000, 12001, 65000, 65001}
	for cp := range codePages {
		cps = append(cps, cp)
	}
	slices.Sort(cps)
	return cps
}

// TextFile returns header and rows as F&O writes a delimited or fixed-width
// entity file in format o: lines ending in CRLF, every line (the last
// included) terminated. It fails for an unknown code page, a delimiter or
// qualifier that is not a distinct ASCII character other than CR and LF,
// a fixed-width value that does not fit, and a value the code page cannot
// encode (as F&O's DMF1957 refuses to export Unicode data as a non-Unicode
// file type).
func TextFile(o TextFormat, header []string, rows [][]string) ([]byte, error) {
	cp := o.codePage()
	delim, qual := cmp.Or(o.Delimiter, ','), cmp.Or(o.Qualifier, '"')
	if o.Widths == nil {
		if delim == qual || delim >= 0x80 || qual >= 0x80 || delim == '\r' || delim == '\n' || qual == '\r' || qual == '\n' {
			return nil, fmt.Errorf("text file: delimiter %q and qualifier %q must be distinct ASCII characters other than CR and LF", delim, qual)
		}
	}
	var b strings.Builder
	line := func(n int, vals []string) error {
		if o.Widths != nil {
			return fixedLine(&b, o.Widths, n, vals)
		}
		for i, v := range vals {
			if i > 0 {
				b.WriteByte(delim)
			}
			if !strings.ContainsAny(v, string([]byte{delim, qual, '\r', '\n'})) {
				b.WriteString(v)
				continue
			}
			b.WriteByte(qual)
			if o.UndoubledQuotes {
				b.WriteString(v)
			} else {
				b.WriteString(strings.ReplaceAll(v, string(qual), string([]byte{qual, qual})))
			}
			b.WriteByte(qual)
		}
		b.WriteString("\r\n")
		return nil
	}
	if (o.Widths == nil && !o.NoHeader) || (o.Widths != nil && o.FixedHeader) {
		if err := line(0, header); err != nil {
			return nil, err
		}
	}
	for i, row := range rows {
		if err := line(i+1, row); err != nil {
			return nil, err
		}
	}
	out, err := encodeText(cp, o.BOM, b.String())
	switch {
	case errors.Is(err, errCodePage), errors.Is(err, errNotUTF8):
		return nil, fmt.Errorf("text file: %w", err)
	case err != nil:
		return nil, fmt.Errorf("text file: %w", unencodable(cp, header, rows, err))
	}
	return out, nil
}

// fixedLine writes one fixed-width line; n is the line's number (0 for the
// header) for errors.
func fixedLine(b *strings.Builder, widths []int, n int, vals []string) error {
	if len(vals) != len(widths) {
		return fmt.Errorf("text file: line %d has %d values for %d fixed widths", n, len(vals), len(widths))
	}
	for i, v := range vals {
		if strings.ContainsAny(v, "\r\n") {
			return fmt.Errorf("text file: line %d, column %d: %q holds a line break, which a fixed-width file cannot carry", n, i+1, v)
		}
		w := utf8.RuneCountInString(v)
		if w > widths[i] {
			return fmt.Errorf("text file: line %d, column %d: %q is %d characters, wider than its width %d", n, i+1, v, w, widths[i])
		}
		b.WriteString(v)
		b.WriteString(strings.Repeat(" ", widths[i]-w))
	}
	b.WriteString("\r\n")
	return nil
}

// unencodable names the first value the code page cannot encode, or
// returns err as it is.
func unencodable(cp int, header []string, rows [][]string, err error) error {
	for i, row := range append([][]string{header}, rows...) {
		for j, v := range row {
			if _, e := encodeText(cp, false, v); e != nil {
				return fmt.Errorf("line %d, column %d: %q: can't export unicode data as an ascii file type (code page %d); use XML or a -Unicode type (DMF1957)", i, j+1, v, cp)
			}
		}
	}
	return err
}

var (
	errCodePage = errors.New("code page not supported")
	errNotUTF8  = errors.New("the values are not valid UTF-8")
)

// encodeText encodes s in code page cp, with the byte order mark if bom
// and the encoding has one.
func encodeText(cp int, bom bool, s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return nil, errNotUTF8
	}
	var enc encoding.Encoding
	switch cp {
	case 65001:
		if bom {
			return append([]byte("\ufeff"), s...), nil
		}
		return []byte(s), nil
	case 65000:
		return []byte(utf7(s)), nil
	case 1200, 1201:
		order, policy := unicode.LittleEndian, unicode.IgnoreBOM
		if cp == 1201 {
			order = unicode.BigEndian
		}
		if bom {
			policy = unicode.UseBOM
		}
		enc = unicode.UTF16(order, policy)
	case 12000, 12001:
		order, policy := utf32.LittleEndian, utf32.IgnoreBOM
		if cp == 12001 {
			order = utf32.BigEndian
		}
		if bom {
			policy = utf32.UseBOM
		}
		enc = utf32.UTF32(order, policy)
	default:
		cm, ok := codePages[cp]
		if !ok {
			return nil, fmt.Errorf("%w: %d; see CodePages", errCodePage, cp)
		}
		enc = cm
	}
	return enc.NewEncoder().Bytes([]byte(s))
}

// utf7 encodes s in UTF-7 (RFC 2152): the characters of Set D, Set O
// (except "\" and "~"), space, tab, CR and LF as they are, "+" as "+-",
// every other run as "+", the modified base64 of its UTF-16 big-endian
// code units, and "-" (always written, so the run's end is never in doubt).
func utf7(s string) string {
	direct := func(r rune) bool {
		return r < 0x80 && r != '+' && r != '\\' && r != '~' &&
			(r == ' ' || r == '\t' || r == '\r' || r == '\n' || (r > 0x20 && r < 0x7f))
	}
	var b strings.Builder
	rs := []rune(s)
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case r == '+':
			b.WriteString("+-")
			i++
		case direct(r):
			b.WriteRune(r)
			i++
		default:
			j := i
			for j < len(rs) && !direct(rs[j]) && rs[j] != '+' {
				j++
			}
			units := utf16.Encode(rs[i:j])
			raw := make([]byte, 0, 2*len(units))
			for _, u := range units {
				raw = append(raw, byte(u>>8), byte(u))
			}
			b.WriteByte('+')
			b.WriteString(base64.RawStdEncoding.EncodeToString(raw))
			b.WriteByte('-')
			i = j
		}
	}
	return b.String()
}

// Record is one record of a composite entity's XML file: an element named
// Name (the entity's upper-case name, e.g. SALESORDERHEADERV2ENTITY) with
// its fields in order and the records of its child entities nested inside.
type Record struct {
	Name     string
	Fields   [][2]string // name, value; an empty value is left out
	Children []Record
}

// CompositeXMLFile returns a composite entity's file as F&O writes it, the
// only way it exports one: UTF-8 with an XML declaration, a Document root
// holding records, each with its fields and then its child records nested
// inside. With attr false the format is XML-Element (one child element per
// field); with attr true XML-Attribute (one attribute per field). Fields
// without a value are left out, as in XMLElementFile and XMLAttributeFile.
func CompositeXMLFile(attr bool, records []Record) []byte {
	var b bytes.Buffer
	b.WriteString(xml.Header[:len(xml.Header)-1] + "\r\n<Document>\r\n")
	var write func(r Record, depth int)
	write = func(r Record, depth int) {
		ind := strings.Repeat("  ", depth)
		b.WriteString(ind + "<" + r.Name)
		if attr {
			for _, f := range r.Fields {
				if f[1] != "" {
					b.WriteString(" " + f[0] + `="` + escape(f[1]) + `"`)
				}
			}
			if len(r.Children) == 0 {
				b.WriteString(" />\r\n")
				return
			}
			b.WriteString(">\r\n")
		} else {
			b.WriteString(">\r\n")
			for _, f := range r.Fields {
				if f[1] != "" {
					b.WriteString(ind + "  <" + f[0] + ">" + escape(f[1]) + "</" + f[0] + ">\r\n")
				}
			}
		}
		for _, c := range r.Children {
			write(c, depth+1)
		}
		b.WriteString(ind + "</" + r.Name + ">\r\n")
	}
	for _, r := range records {
		write(r, 1)
	}
	b.WriteString("</Document>\r\n")
	return b.Bytes()
}
