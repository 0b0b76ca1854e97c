package publish

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"
)

// buildXLSX writes a workbook with the given rows on the named sheets (in order).
func buildXLSX(t *testing.T, sheets []string, rows [][]any) []byte {
	t.Helper()
	f := excelize.NewFile()
	defer f.Close()
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
		{"missing sheet", "Nope", `sheet "Nope" not found (the workbook has "Customers", "Other")`},
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
	if _, err := PublishEntity(context.Background(), strings.NewReader("not a zip"), &memSink{}, EntityOptions{Format: "xlsx"}); err == nil || !strings.Contains(err.Error(), "the file is not an xlsx workbook") {
		t.Errorf("garbage input: want an open workbook error, got %v", err)
	}
}
