package publish

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// scanSheet reads every non-empty row of a sheet's XML.
func scanSheet(t testing.TB, sheet string, sst []string, dateStyles []bool, date1904 bool) ([][]string, []int, error) {
	t.Helper()
	tab := &sharedStrings{}
	for _, s := range sst {
		tab.add([]byte(s))
	}
	sc := newSheetScanner(strings.NewReader(sheet), tab, dateStyles, date1904)
	var rows [][]string
	var lines []int
	for {
		cells, line, err := sc.nextRow()
		if errors.Is(err, io.EOF) {
			return rows, lines, nil
		}
		if err != nil {
			return rows, lines, err
		}
		cp := make([]string, len(cells))
		for i, c := range cells {
			cp[i] = strings.Clone(c)
		}
		rows = append(rows, cp)
		lines = append(lines, line)
	}
}

const sheetHead = `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>` + "\r\n" +
	`<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>`
const sheetTail = `</sheetData></worksheet>`

func TestSheetScanner(t *testing.T) {
	sst := []string{"ACCOUNT", "NAME", "000123"}
	dates := []bool{false, true, false}
	tests := []struct {
		name  string
		rows  string
		want  [][]string
		lines []int
	}{
		{"shared strings", `<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row><row r="2"><c r="A2" t="s"><v>2</v></c></row>`,
			[][]string{{"ACCOUNT", "NAME"}, {"000123"}}, []int{1, 2}},
		{"inline string, rich text and phonetic run", `<row r="1"><c r="A1" t="inlineStr"><is><t>plain</t></is></c><c r="B1" t="inlineStr"><is><r><t>ri</t></r><r><rPr/><t xml:space="preserve">ch </t></r><rPh><t>skip</t></rPh></is></c></row>`,
			[][]string{{"plain", "rich "}}, []int{1}},
		{"gaps become empty strings", `<row r="3"><c r="B3"><v>2</v></c><c r="D3"><v>4</v></c></row>`, [][]string{{"", "2", "", "4"}}, []int{3}},
		{"cells without references", `<row><c><v>1</v></c><c><v>2</v></c></row><row><c><v>3</v></c></row>`, [][]string{{"1", "2"}, {"3"}}, []int{1, 2}},
		{"empty rows skipped", `<row r="1"/><row r="2"><c r="A2" s="2"/></row><row r="5"><c r="A5"><v>x</v></c></row>`, [][]string{{"x"}}, []int{5}},
		{"trailing empty cells dropped", `<row r="1"><c r="A1"><v>1</v></c><c r="B1" s="2"/><c r="C1" t="inlineStr"><is><t></t></is></c></row>`, [][]string{{"1"}}, []int{1}},
		{"date style", `<row r="1"><c r="A1" s="1"><v>45352.5</v></c><c r="B1" s="1"><v>45352.99999999</v></c><c r="C1" s="0"><v>45352.5</v></c></row>`,
			[][]string{{"2024-03-01T12:00:00", "2024-03-02T00:00:00", "45352.5"}}, []int{1}},
		{"iso date type kept", `<row r="1"><c r="A1" t="d" s="1"><v>2024-03-01T00:00:00</v></c></row>`, [][]string{{"2024-03-01T00:00:00"}}, []int{1}},
		{"numbers raw", `<row r="1"><c r="A1"><v>1.5000</v></c><c r="B1"><v>1E-3</v></c><c r="C1" t="n"><v>00042</v></c></row>`, [][]string{{"1.5000", "1E-3", "00042"}}, []int{1}},
		{"booleans, errors, formula strings", `<row r="1"><c r="A1" t="b"><v>1</v></c><c r="B1" t="b"><v>0</v></c><c r="C1" t="e"><v>#N/A</v></c><c r="D1" t="str"><f>A1&amp;"x"</f><v>TRUEx</v></c></row>`,
			[][]string{{"TRUE", "FALSE", "#N/A", "TRUEx"}}, []int{1}},
		{"entities and escapes", `<row r="1"><c r="A1" t="inlineStr"><is><t>a&amp;b &lt;c&gt; &quot;d&quot; &apos;e&apos; &#233;&#x6771;</t></is></c><c r="B1" t="inlineStr"><is><t>line1_x000D_` + "\n" + `line2 _x005F_x</t></is></c></row>`,
			[][]string{{"a&b <c> \"d\" 'e' é東", "line1\r\nline2 _x"}}, []int{1}},
		{"literal CRLF in text normalized like XML", "<row r=\"1\"><c r=\"A1\" t=\"inlineStr\"><is><t>a\r\nb\rc</t></is></c></row>", [][]string{{"a\nb\nc"}}, []int{1}},
		{"namespace prefixes", `<x:row r="1"><x:c r="A1" t="inlineStr"><x:is><x:t>p</x:t></x:is></x:c></x:row>`, [][]string{{"p"}}, []int{1}},
		{"comments and quoted >", `<!-- a > b --><row r="1" spans="1:2" x14ac:dyDescent="0.25" note="a>b"><c r="A1"><v>1</v></c></row>`, [][]string{{"1"}}, []int{1}},
		{"wide column letters", `<row r="1"><c r="AB1"><v>z</v></c></row>`, [][]string{append(make([]string, 27), "z")}, []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, lines, err := scanSheet(t, sheetHead+tt.rows+sheetTail, sst, dates, false)
			if err != nil {
				t.Fatalf("want no error, got %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) || !reflect.DeepEqual(lines, tt.lines) {
				t.Errorf("want rows %q on lines %v, got %q on %v", tt.want, tt.lines, got, lines)
			}
		})
	}
}

func TestSheetScannerErrors(t *testing.T) {
	tests := []struct{ name, rows, want string }{
		{"shared string out of range", `<row r="1"><c r="A1" t="s"><v>7</v></c></row>`, "sheet row 1, column A: shared string 7 does not exist"},
		{"bad shared string index", `<row r="1"><c r="B1" t="s"><v>x</v></c></row>`, "column B: bad shared string index"},
		{"bad reference", `<row r="1"><c r="1A"><v>1</v></c></row>`, `bad cell reference "1A"`},
		{"bad entity", `<row r="1"><c r="A1" t="inlineStr"><is><t>a &nope; b</t></is></c></row>`, "bad character reference"},
		{"truncated", `<row r="1"><c r="A1"><v>1</v>`, "ends inside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := scanSheet(t, sheetHead+tt.rows, []string{"a"}, nil, false)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("want error containing %q, got %v", tt.want, err)
			}
		})
	}
}

func TestIsDateFormat(t *testing.T) {
	tests := []struct {
		code string
		want bool
	}{
		{"yyyy-mm-dd", true}, {"dd/mm/yyyy hh:mm", true}, {"[$-409]m/d/yy h:mm AM/PM;@", true}, {"h:mm:ss", true},
		{"[h]:mm", true}, {"mmm-yy", true}, {"General", false}, {"0.00", false}, {"#,##0.00_);[Red](#,##0.00)", false},
		{`0.0 "days"`, false}, {`\d0`, false}, {"[Red]0", false}, {"0.00E+00", false}, {"@", false}, {"", false}, {"0;[Red]yyyy", false},
	}
	for _, tt := range tests {
		if got := isDateFormat(tt.code); got != tt.want {
			t.Errorf("isDateFormat(%q): want %v, got %v", tt.code, tt.want, got)
		}
	}
}

func TestSerialToISO(t *testing.T) {
	tests := []struct {
		in       string
		date1904 bool
		want     string
		ok       bool
	}{
		{"45352", false, "2024-03-01T00:00:00", true},
		{"45352.75", false, "2024-03-01T18:00:00", true},
		{"1", false, "1900-01-01T00:00:00", true},
		{"61", false, "1900-03-01T00:00:00", true},
		{"0", true, "1904-01-01T00:00:00", true},
		{"43890.5", true, "2024-03-01T12:00:00", true},
		{"-1", false, "", false},
		{"abc", false, "", false},
		{"NaN", false, "", false},
	}
	for _, tt := range tests {
		got, ok := serialToISO([]byte(tt.in), tt.date1904)
		if got != tt.want || ok != tt.ok {
			t.Errorf("serialToISO(%s, 1904=%v): want %q %v, got %q %v", tt.in, tt.date1904, tt.want, tt.ok, got, ok)
		}
	}
}

// minimalXLSX builds a workbook zip by hand from its parts.
func minimalXLSX(t testing.TB, sheetXML, sstXML, stylesXML string, date1904 bool) []byte {
	t.Helper()
	var b bytes.Buffer
	z := zip.NewWriter(&b)
	pr := ""
	if date1904 {
		pr = `<workbookPr date1904="1"/>`
	}
	parts := map[string]string{
		"[Content_Types].xml": `<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">` +
			`<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>` +
			`<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>` +
			`<Override PartName="/xl/worksheets/data.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>` +
			`<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>` +
			`<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/></Types>`,
		"_rels/.rels": `<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">` +
			`<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>`,
		"xl/workbook.xml": `<?xml version="1.0"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">` +
			pr + `<sheets><sheet name="Data" sheetId="1" r:id="rId1"/></sheets></workbook>`,
		"xl/_rels/workbook.xml.rels": `<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">` +
			`<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="/xl/worksheets/data.xml"/>` +
			`<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>` +
			`<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/></Relationships>`,
		"xl/worksheets/data.xml": sheetXML,
	}
	if sstXML != "" {
		parts["xl/sharedStrings.xml"] = sstXML
	}
	if stylesXML != "" {
		parts["xl/styles.xml"] = stylesXML
	}
	for name, body := range parts {
		w, err := z.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(w, body)
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestXLSXHandBuilt(t *testing.T) {
	sst := `<?xml version="1.0"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="3" uniqueCount="3">` +
		`<si><t>ID</t></si><si><r><t>WHEN</t></r></si><si><t xml:space="preserve"> 007 </t><rPh sb="0" eb="1"><t>x</t></rPh></si></sst>`
	styles := `<?xml version="1.0"?><styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">` +
		`<numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy\-mm\-dd&quot;T&quot;hh:mm:ss"/></numFmts>` +
		`<cellXfs count="3"><xf numFmtId="0"/><xf numFmtId="164" applyNumberFormat="1"/><xf numFmtId="14"/></cellXfs></styleSheet>`
	sheet := sheetHead + `<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="inlineStr"><is><t>DAY</t></is></c></row>` +
		`<row r="2"><c r="A2" t="s"><v>2</v></c><c r="B2" s="1"><v>45352.25</v></c><c r="C2" s="2"><v>45353</v></c></row>` + sheetTail
	for _, tt := range []struct {
		name     string
		date1904 bool
		want     []string
	}{
		{"1900 date system", false, []string{" 007 ", "2024-03-01T06:00:00", "2024-03-02T00:00:00"}},
		{"1904 date system", true, []string{" 007 ", "2028-03-02T06:00:00", "2028-03-03T00:00:00"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			_, err := PublishEntity(context.Background(), bytes.NewReader(minimalXLSX(t, sheet, sst, styles, tt.date1904)), sink, EntityOptions{Format: "xlsx"})
			if err != nil {
				t.Fatalf("want no error, got %v", err)
			}
			cols, rows := rowsOf(t, bodiesOf(sink.msgs))
			if want := []string{"ID", "WHEN", "DAY"}; !reflect.DeepEqual(cols, want) {
				t.Errorf("columns: want %q, got %q", want, cols)
			}
			if len(rows) != 1 || !reflect.DeepEqual(rows[0], tt.want) {
				t.Errorf("rows: want [%q], got %q", tt.want, rows)
			}
		})
	}
}

// TestSheetScannerPlain checks which values are marked plain: ASCII that
// JSON keeps as is, read at once or as tokens, from the sheet or the
// shared strings table; never a value that needs escaping or was decoded.
func TestSheetScannerPlain(t *testing.T) {
	tab := &sharedStrings{}
	for _, s := range []string{"USMF", `say "hi"`, "é"} {
		tab.add([]byte(s))
	}
	sheet := sheetHead + `<row r="1">` +
		`<c r="A1" t="inlineStr"><is><t>US-001</t></is></c>` + // plain, at once
		`<c r="B1" t="inlineStr"><is><t xml:space="preserve"> 2011-01-31 00:00:00 </t></is></c>` +
		`<c r="C1" t="inlineStr"><is><r><t>ri</t></r><r><t>ch</t></r></is></c>` + // plain, as tokens
		`<c r="D1" t="s"><v>0</v></c><c r="E1" t="s"><v>1</v></c><c r="F1" t="s"><v>2</v></c>` +
		`<c r="G1"><v>123.000000</v></c><c r="H1" t="b"><v>1</v></c><c r="I1" s="1"><v>45352.5</v></c>` +
		`<c r="J1" t="inlineStr"><is><t>a &amp; b</t></is></c>` + // decoded: not marked
		`<c r="K1" t="inlineStr"><is><t>a_b</t></is></c>` + // may be an escape: not marked
		`<c r="L1" t="inlineStr"><is><t>"q"</t></is></c><c r="M1" t="inlineStr"><is><t>back\slash</t></is></c>` +
		`<c r="N1" t="inlineStr"><is><t>東京</t></is></c><c r="O1" t="inlineStr"><is><t>tab	x</t></is></c>` +
		`</row>` + sheetTail
	want := []bool{true, true, true, true, false, false, true, true, true, false, false, false, false, false, false}
	sc := newSheetScanner(strings.NewReader(sheet), tab, []bool{false, true}, false)
	cells, _, err := sc.nextRow()
	if err != nil {
		t.Fatal(err)
	}
	if len(cells) != len(want) || len(sc.plain) < len(want) {
		t.Fatalf("want %d cells with plain marks, got %d cells %q, %d marks", len(want), len(cells), cells, len(sc.plain))
	}
	for i, w := range want {
		if sc.plain[i] != w {
			t.Errorf("column %s %q: want plain %v, got %v", columnName(i), cells[i], w, sc.plain[i])
		}
	}
}
