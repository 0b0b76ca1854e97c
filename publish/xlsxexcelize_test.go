package publish

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/xuri/excelize/v2"
)

// readOurs reads every row of a workbook's first sheet with the XLSX source
// (header first), trailing empty cells cut.
func readOurs(t *testing.T, wb []byte) [][]string {
	t.Helper()
	src, err := newXLSXSource(context.Background(), bytes.NewReader(wb), "")
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer func() { _ = src.close() }()
	h, err := src.header()
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	rows := [][]string{h}
	for {
		rec, _, err := src.next()
		if errors.Is(err, io.EOF) {
			return rows
		}
		if err != nil {
			t.Fatalf("row %d: %v", len(rows)+1, err)
		}
		cp := make([]string, len(rec))
		for i, v := range rec {
			cp[i] = strings.Clone(v)
		}
		for len(cp) > 0 && cp[len(cp)-1] == "" {
			cp = cp[:len(cp)-1]
		}
		rows = append(rows, cp)
	}
}

// compareWithExcelize reads wb with excelize and with the XLSX source and
// compares every cell. The documented differences are mapped, not
// skipped: a number in a date column (dateCols, 0-based) is excelize's
// ExcelDateToTime in ISO form; a boolean is TRUE or FALSE where excelize's
// raw value is 1 or 0; rows with no value are not rows.
func compareWithExcelize(t *testing.T, wb []byte, dateCols map[int]bool) {
	t.Helper()
	f, err := excelize.OpenReader(bytes.NewReader(wb))
	if err != nil {
		t.Fatalf("excelize: %v", err)
	}
	defer func() { _ = f.Close() }()
	sheet := f.GetSheetName(0)
	raw, err := f.GetRows(sheet, excelize.Options{RawCellValue: true})
	if err != nil {
		t.Fatalf("excelize rows: %v", err)
	}
	date1904 := false
	if p, err := f.GetWorkbookProps(); err == nil && p.Date1904 != nil {
		date1904 = *p.Date1904
	}
	var want [][]string
	for r, row := range raw {
		var out []string
		for c, v := range row {
			cell, _ := excelize.CoordinatesToCellName(c+1, r+1)
			typ, _ := f.GetCellType(sheet, cell)
			switch {
			case typ == excelize.CellTypeBool:
				v = map[string]string{"1": "TRUE", "0": "FALSE"}[v]
			case dateCols[c] && r > 0 && v != "":
				if serial, err := strconv.ParseFloat(v, 64); err == nil {
					tm, err := excelize.ExcelDateToTime(serial, date1904)
					if err != nil {
						t.Fatalf("excelize date %s: %v", v, err)
					}
					v = tm.Round(time.Second).Format("2006-01-02T15:04:05")
				}
			}
			out = append(out, v)
		}
		for len(out) > 0 && out[len(out)-1] == "" {
			out = out[:len(out)-1]
		}
		if len(out) > 0 {
			want = append(want, out)
		}
	}
	got := readOurs(t, wb)
	if len(got) != len(want) {
		t.Fatalf("want %d rows (excelize), got %d:\nwant %q\ngot  %q", len(want), len(got), want, got)
	}
	cells := 0
	for r := range want {
		if len(got[r]) != len(want[r]) {
			t.Errorf("row %d: want %d cells (excelize) %q, got %d %q", r+1, len(want[r]), want[r], len(got[r]), got[r])
			continue
		}
		for c := range want[r] {
			cells++
			if got[r][c] != want[r][c] {
				t.Errorf("row %d column %s: want %q (excelize), got %q", r+1, columnName(c), want[r][c], got[r][c])
			}
		}
	}
	if cells == 0 {
		t.Fatal("no cells compared")
	}
}

// excelizeBook writes rows with excelize itself: strings become shared
// strings; time.Time values get a date style (numFmt, or a custom format
// when custom is set); excelize.RichTextRun slices become rich text.
func excelizeBook(t *testing.T, rows [][]any, date1904 bool) []byte {
	t.Helper()
	f := excelize.NewFile()
	defer func() { _ = f.Close() }()
	if date1904 {
		if err := f.SetWorkbookProps(&excelize.WorkbookPropsOptions{Date1904: &date1904}); err != nil {
			t.Fatal(err)
		}
	}
	custom := "yyyy-mm-dd hh:mm:ss"
	styles := []int{}
	for _, st := range []*excelize.Style{{NumFmt: 14}, {NumFmt: 22}, {CustomNumFmt: &custom}} {
		id, err := f.NewStyle(st)
		if err != nil {
			t.Fatal(err)
		}
		styles = append(styles, id)
	}
	for r, row := range rows {
		for c, v := range row {
			cell, _ := excelize.CoordinatesToCellName(c+1, r+1)
			var err error
			switch v := v.(type) {
			case nil:
				continue
			case []excelize.RichTextRun:
				err = f.SetCellRichText("Sheet1", cell, v)
			case time.Time:
				if err = f.SetCellValue("Sheet1", cell, v); err == nil {
					err = f.SetCellStyle("Sheet1", cell, cell, styles[(r+c)%len(styles)])
				}
			default:
				err = f.SetCellValue("Sheet1", cell, v)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	var b bytes.Buffer
	if _, err := f.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestXLSXMatchesExcelize reads workbooks of several shapes with excelize
// and with the XLSX source and requires every cell to agree.
func TestXLSXMatchesExcelize(t *testing.T) {
	day := time.Date(2024, 3, 1, 13, 45, 30, 0, time.UTC)
	mixed := [][]any{{"ACCOUNT", "NAME", "AMOUNT", "CREATED", "FLAG", "NOTE"}}
	for i := 0; i < 300; i++ {
		row := []any{strconv.Itoa(100000 + i), "Contoso & <Sons> \"Ltd\" 東京", float64(i) * 1.25, day.AddDate(0, 0, i).Add(time.Duration(i) * time.Minute), i%2 == 0, nil}
		switch i % 5 {
		case 0:
			row[5] = "  leading and trailing  "
		case 1:
			row[1] = nil // a gap
		case 2:
			row[5] = []excelize.RichTextRun{{Text: "bold "}, {Text: "and plain", Font: &excelize.Font{Bold: true}}}
		case 3:
			row[5] = "line1\nline2\ttab"
		}
		mixed = append(mixed, row)
		if i%50 == 0 {
			mixed = append(mixed, []any{}) // an empty row
		}
	}
	fo := [][]string{{"CUSTOMERACCOUNT", "NAME", "CREDITLIMIT", "CREATEDDATETIME", "NOTE"}}
	for i := 0; i < 300; i++ {
		note := ""
		switch i % 6 {
		case 0:
			note = "a & b < c > d \"e\" 'f' é東 _x0041_ literal"
		case 1:
			note = "  kept spaces  " // xml:space="preserve"
		case 2:
			note = "line1\nline2\ttab \\ back"
		case 3:
			note = "_x000D_ is text here"
		}
		fo = append(fo, []string{"US-" + strconv.Itoa(i), "Name " + strconv.Itoa(i), strconv.Itoa(i) + ".000000", "2011-01-31 00:00:00", note})
	}
	// The same rows with every other value a shared string: a workbook
	// mixing both, as an Excel re-save of part of a sheet leaves it.
	mixedFO, table := sharedXLSXRows(fo)
	for r := range mixedFO {
		for c := range mixedFO[r] {
			if (r+c)%2 == 0 {
				mixedFO[r][c] = fo[r][c]
			}
		}
	}
	// Inline strings in every shape the markup allows.
	inline := sheetHead + `<row r="1"><c r="A1" t="inlineStr"><is><t>ID</t></is></c><c r="B1" t="inlineStr"><is><t>TEXT</t></is></c></row>` +
		`<row r="2"><c r="A2" t="inlineStr"><is><t/></is></c><c r="B2" t="inlineStr"><is><t xml:space="preserve">  both  </t></is></c></row>` +
		`<row r="3"><c r="A3" t="inlineStr"><is><t>1</t></is></c><c r="B3" t="inlineStr"><is><r><t>ri</t></r><r><rPr><b/></rPr><t xml:space="preserve">ch </t></r><rPh sb="0" eb="1"><t>ph</t></rPh></is></c></row>` +
		`<row r="4"><c r="A4" t="inlineStr"><is><t>&amp;&lt;&gt;&quot;&apos;&#233;&#x6771;</t></is></c><c r="B4" t="inlineStr"><is><t>cr_x000D_lf_x000A_</t></is></c></row>` +
		`<row r="5"><c r="A5" t="inlineStr"><is><t></t></is></c><c r="B5" t="inlineStr"><is><t>"quoted" back\slash</t></is></c></row>` + sheetTail
	sst := `<?xml version="1.0"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">` +
		`<si><t>ID</t></si><si><r><t>WH</t></r><r><rPr><b/></rPr><t>EN</t></r></si><si><t>TEXT</t></si>` +
		`<si><t xml:space="preserve"> 007 </t><rPh sb="0" eb="1"><t>phonetic</t></rPh></si>` +
		`<si><t>cr_x000D_lf_x000A_tab_x0009_under_x005F_x0041_</t></si><si><t>&amp;&lt;&#233;&#x6771;</t></si></sst>`
	styles := `<?xml version="1.0"?><styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">` +
		`<numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy\-mm\-dd&quot;T&quot;hh:mm:ss"/></numFmts>` +
		`<cellXfs count="3"><xf numFmtId="0"/><xf numFmtId="164" applyNumberFormat="1"/><xf numFmtId="14"/></cellXfs></styleSheet>`
	sheet := sheetHead + `<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="s"><v>2</v></c></row>` +
		`<row r="2"><c r="A2" t="s"><v>3</v></c><c r="B2" s="1"><v>45352.25</v></c><c r="C2" t="s"><v>4</v></c></row>` +
		`<row r="3"><c r="A3" t="s"><v>5</v></c><c r="B3" s="2"><v>45353</v></c>` +
		`<c r="C3" t="inlineStr"><is><r><t>in</t></r><r><t>line_x000D_</t></r></is></c></row>` +
		`<row r="5"><c r="A5"><v>1.50</v></c><c r="C5" t="inlineStr"><is><t>a&amp;b</t></is></c></row>` + sheetTail

	tests := []struct {
		name     string
		book     func(t *testing.T) []byte
		dateCols map[int]bool
	}{
		{"shared strings, numbers, dates, booleans, rich text, gaps (excelize, 1900)", func(t *testing.T) []byte { return excelizeBook(t, mixed, false) }, map[int]bool{3: true}},
		{"the same in the 1904 date system", func(t *testing.T) []byte { return excelizeBook(t, mixed, true) }, map[int]bool{3: true}},
		{"inline strings as F&O writes them", func(t *testing.T) []byte { return dmftest.FOWorkbook("Customers V3", fo) }, nil},
		{"inline and shared strings mixed", func(t *testing.T) []byte { return foWorkbook(t, "Customers V3", mixedFO, table) }, nil},
		{"inline strings: empty, preserved, rich, escaped", func(t *testing.T) []byte { return minimalXLSX(t, inline, "", "", false) }, nil},
		{"escapes, rich and phonetic runs, inline rich text (1900)", func(t *testing.T) []byte { return minimalXLSX(t, sheet, sst, styles, false) }, map[int]bool{1: true}},
		{"escapes, rich and phonetic runs, inline rich text (1904)", func(t *testing.T) []byte { return minimalXLSX(t, sheet, sst, styles, true) }, map[int]bool{1: true}},
	}
	// Workbooks F&O wrote (testdata; a 0-byte file is an entity without rows).
	real, _ := filepath.Glob(filepath.Join("..", "testdata", "packages", "real-excel", "*.xlsx"))
	for _, p := range real {
		if b, err := os.ReadFile(p); err == nil && len(b) > 0 {
			tests = append(tests, struct {
				name     string
				book     func(t *testing.T) []byte
				dateCols map[int]bool
			}{"F&O's own " + filepath.Base(p), func(*testing.T) []byte { return b }, nil})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			compareWithExcelize(t, tt.book(t), tt.dateCols)
		})
	}
}
