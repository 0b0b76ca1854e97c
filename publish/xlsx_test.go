package publish

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"
)

// buildXLSX writes a workbook with the given rows on the named sheets (in order).
func buildXLSX(t *testing.T, sheets []string, rows [][]any) []byte {
	t.Helper()
	f := excelize.NewFile()
	defer func() { _ = f.Close() }()
	for i, name := range sheets {
		if i == 0 {
			if err := f.SetSheetName("Sheet1", name); err != nil {
				t.Fatal(err)
			}
		} else if _, err := f.NewSheet(name); err != nil {
			t.Fatal(err)
		}
	}
	date, err := f.NewStyle(&excelize.Style{NumFmt: 14})
	if err != nil {
		t.Fatal(err)
	}
	for r, row := range rows {
		for c, v := range row {
			cell, _ := excelize.CoordinatesToCellName(c+1, r+1)
			if err := f.SetCellValue(sheets[0], cell, v); err != nil {
				t.Fatal(err)
			}
			if _, ok := v.(time.Time); ok {
				if err := f.SetCellStyle(sheets[0], cell, cell, date); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	var b bytes.Buffer
	if _, err := f.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestXLSX(t *testing.T) {
	rows := [][]any{
		{"ACCOUNT", "NAME", "AMOUNT", "CREATED", "NOTE"},
		{"000123", "Contoso", 1.5, time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC), "x"},
		{"000124", "", 42, "2024-03-02T00:00:00", ""},
		{},
		{"000125", "Fabrikam \"quoted\"\nline"},
	}
	book := buildXLSX(t, []string{"Customers", "Other"}, rows)
	want := [][]string{
		{"000123", "Contoso", "1.5", "2024-03-01T00:00:00", "x"},
		{"000124", "", "42", "2024-03-02T00:00:00", ""},
		{"000125", "Fabrikam \"quoted\"\nline", "", "", ""},
	}
	tests := []struct {
		name, sheet string
		wantErr     string
	}{
		{"first sheet", "", ""},
		{"named sheet", "Customers", ""},
		{"sheet name as F&O records it", "Customers$", ""},
		{"unknown sheet name reads the first sheet", "Nope", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			st, err := PublishEntity(context.Background(), bytes.NewReader(book), sink, EntityOptions{
				Entity: "E", Format: "xlsx", Sheet: tt.sheet, BatchSize: 2,
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want error containing %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("PublishEntity: want no error, got %v", err)
			}
			cols, got := rowsOf(t, bodiesOf(sink.msgs))
			if wantCols := []string{"ACCOUNT", "NAME", "AMOUNT", "CREATED", "NOTE"}; !reflect.DeepEqual(cols, wantCols) {
				t.Errorf("columns: want %q, got %q", wantCols, cols)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("rows: want %q, got %q", want, got)
			}
			if st.Batches != 2 || st.Rows != 3 || st.BytesIn != int64(len(book)) {
				t.Errorf("stats: want 2 batches, 3 rows, %d bytes in; got %+v", len(book), st)
			}
		})
	}
}

func TestXLSXEdgeCases(t *testing.T) {
	tests := []struct {
		name    string
		rows    [][]any
		wantErr string
		cols    []string
	}{
		{"empty sheet", nil, "", []string{}},
		{"header only", [][]any{{"A", "B"}}, "", []string{"A", "B"}},
		{"extra cell", [][]any{{"A", "B"}, {"1", "2", "3"}}, "row 1 (line 2): has 3 fields, header has 2", nil},
		{"duplicate header", [][]any{{"A", "A"}}, `duplicate column names "A"`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			_, err := PublishEntity(context.Background(), bytes.NewReader(buildXLSX(t, []string{"S"}, tt.rows)), sink, EntityOptions{Format: "xlsx"})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want error containing %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("want no error, got %v", err)
			}
			if len(sink.msgs) != 1 {
				t.Fatalf("want 1 message, got %d", len(sink.msgs))
			}
			e := decodeEvent(t, sink.msgs[0].Body)
			if !reflect.DeepEqual(e.Data.Columns, tt.cols) || e.Data.RowCount != 0 || !e.Data.LastBatch {
				t.Errorf("want columns %q, 0 rows, last batch; got %+v", tt.cols, e.Data)
			}
		})
	}
	// A sheet is UTF-8 XML: other bytes fail the entity, never U+FFFD.
	for _, rows := range [][][]string{{{"A", "B"}, {"1", "#raw:M\xfcller"}}, {{"A", "#raw:\xe9"}}} {
		_, err := PublishEntity(context.Background(), bytes.NewReader(foWorkbook(t, "S", rows, nil)), &memSink{}, EntityOptions{Format: "xlsx"})
		if err == nil || !strings.Contains(err.Error(), "column B: the cell holds bytes that are not valid UTF-8") {
			t.Errorf("cell of invalid UTF-8 in %q: want an error naming its column, got %v", rows, err)
		}
	}
	if _, err := PublishEntity(context.Background(), strings.NewReader("not a zip"), &memSink{}, EntityOptions{Format: "xlsx"}); err == nil || !strings.Contains(err.Error(), "the file is not an xlsx workbook") {
		t.Errorf("garbage input: want an open workbook error, got %v", err)
	}
}

func TestPickSheet(t *testing.T) {
	long := "Released_products_V2_EcoResRele" // 31 characters, as Excel allows
	tests := []struct {
		name  string
		names []string
		want  string
		idx   int
	}{
		{"empty name: first sheet", []string{"A", "B"}, "", 0},
		{"exact", []string{"A", "B$", "B"}, "B$", 1},
		{"trailing $ dropped", []string{"A", "Customers"}, "Customers$", 1},
		{"case differs", []string{"A", "customers"}, "CUSTOMERS$", 1},
		{"recorded name cut to 31 with $", []string{"A", long}, long[:30] + "$", 1},
		{"recorded name longer than the sheet's", []string{"A", long}, long + "xyz$", 1},
		{"short prefix is not a match", []string{"Data", "Cust"}, "Customers$", 0},
		{"unknown: first sheet", []string{"Sheet1", "Sheet2"}, "Vendors V2$", 0},
		{"same name for two entities: first sheet of each workbook", []string{"Sheet1"}, "Released_products_V2_EcoResRel$", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pickSheet(tt.names, tt.want); got != tt.idx {
				t.Errorf("pickSheet(%q, %q) = %d, want %d", tt.names, tt.want, got, tt.idx)
			}
		})
	}
}

// foWorkbook builds a workbook as F&O writes it: no XML declarations, every
// cell an inline string (t="inlineStr"), empty cells left out, no
// sharedStrings part unless shared lists strings for cells written as
// <c t="s"> (an Excel re-save, or a mix of both). A value starting with
// "#s" followed by an index refers to shared string that index.
func foWorkbook(t testing.TB, sheet string, rows [][]string, shared []string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	put := func(name, body string) {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(body))
	}
	const ns = `xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"`
	put("[Content_Types].xml", `<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>`)
	put("_rels/.rels", `<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>`)
	put("xl/workbook.xml", `<workbook `+ns+`><sheets><sheet name="`+sheet+`" sheetId="1" r:id="rId1"/></sheets></workbook>`)
	rels := `<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>`
	if shared != nil {
		rels += `<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>`
		var sst strings.Builder
		for _, s := range shared {
			sst.WriteString("<si><t>" + xmlEscape(s) + "</t></si>")
		}
		put("xl/sharedStrings.xml", `<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">`+sst.String()+`</sst>`)
	}
	put("xl/_rels/workbook.xml.rels", `<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">`+rels+`</Relationships>`)
	var sh strings.Builder
	sh.WriteString(`<worksheet ` + ns + `><sheetData>`)
	for r, row := range rows {
		fmt.Fprintf(&sh, `<row r="%d">`, r+1)
		for c, v := range row {
			if v == "" {
				continue // F&O leaves empty cells out
			}
			ref := columnName(c) + strconv.Itoa(r+1)
			if raw, ok := strings.CutPrefix(v, "#raw:"); ok { // bytes as they are, even invalid ones
				fmt.Fprintf(&sh, `<c r="%s" t="inlineStr"><is><t>%s</t></is></c>`, ref, raw)
			} else if strings.HasPrefix(v, "#s") {
				fmt.Fprintf(&sh, `<c r="%s" t="s"><v>%s</v></c>`, ref, v[2:])
			} else {
				fmt.Fprintf(&sh, `<c r="%s" t="inlineStr"><is><t>%s</t></is></c>`, ref, xmlEscape(v))
			}
		}
		sh.WriteString(`</row>`)
	}
	sh.WriteString(`</sheetData></worksheet>`)
	put("xl/worksheets/sheet1.xml", sh.String())
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// sharedXLSXRows turns rows into foWorkbook's shared string references and
// the table they refer to, as a workbook re-saved in Excel holds them.
func sharedXLSXRows(rows [][]string) ([][]string, []string) {
	index := map[string]int{}
	var table []string
	out := make([][]string, len(rows))
	for r, row := range rows {
		out[r] = make([]string, len(row))
		for c, v := range row {
			if v == "" {
				continue
			}
			i, ok := index[v]
			if !ok {
				i = len(table)
				index[v] = i
				table = append(table, v)
			}
			out[r][c] = "#s" + strconv.Itoa(i)
		}
	}
	return out, table
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func TestXLSXAsFOWritesIt(t *testing.T) {
	want := [][]string{
		{"2011-01-31 00:00:00", "123.000000", "Yes", "US-001"},
		{"2011-02-01 00:00:00", "", "No", "US-002 & co"},
	}
	head := []string{"CREATEDDATE", "AMOUNT", "BLOCKED", "ACCOUNT"}
	tests := []struct {
		name   string
		rows   [][]string
		shared []string
		sheet  string
	}{
		{"inline strings, no sharedStrings part", append([][]string{head}, want...), nil, "Customers_V3$"},
		{"re-saved with shared strings", [][]string{{"#s0", "#s1", "#s2", "#s3"}, {"#s4", "#s5", "#s6", "#s7"}, {"#s8", "", "#s9", "#s10"}},
			[]string{"CREATEDDATE", "AMOUNT", "BLOCKED", "ACCOUNT", "2011-01-31 00:00:00", "123.000000", "Yes", "US-001", "2011-02-01 00:00:00", "No", "US-002 & co"}, ""},
		{"mixed inline and shared", [][]string{{"#s0", "AMOUNT", "#s1", "ACCOUNT"}, {"2011-01-31 00:00:00", "#s2", "Yes", "US-001"}, {"#s3", "", "No", "US-002 & co"}},
			[]string{"CREATEDDATE", "BLOCKED", "123.000000", "2011-02-01 00:00:00"}, "A sheet name the workbook does not have"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			st, err := PublishEntity(context.Background(), bytes.NewReader(foWorkbook(t, "Customers_V3", tt.rows, tt.shared)), sink,
				EntityOptions{Entity: "E", Format: "xlsx", Sheet: tt.sheet})
			if err != nil {
				t.Fatalf("PublishEntity: %v", err)
			}
			cols, rows := rowsOf(t, bodiesOf(sink.msgs))
			if !reflect.DeepEqual(cols, head) || !reflect.DeepEqual(rows, want) || st.Rows != 2 {
				t.Errorf("got columns %q rows %q (stats %+v), want %q %q", cols, rows, st, head, want)
			}
		})
	}
}
