package publish

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

// fixedRead reads a whole fixed-width file: header, rows (copied, as the
// source reuses its slice), their line numbers, and the first error.
func fixedRead(r io.Reader, o fixedOptions) (header []string, rows [][]string, lines []int, err error) {
	s, err := newFixedSource(r, o)
	if err != nil {
		return nil, nil, nil, err
	}
	defer func() { _ = s.close() }()
	header, err = s.header()
	if err != nil {
		return slices.Clone(header), nil, nil, err
	}
	header = slices.Clone(header)
	for {
		rec, line, err := s.next()
		if errors.Is(err, io.EOF) {
			return header, rows, lines, nil
		}
		if err != nil {
			return header, rows, lines, err
		}
		rows = append(rows, slices.Clone(rec))
		lines = append(lines, line)
	}
}

// The documented slicing, written independently of fixed.go: characters
// are runes, values are trimmed of spaces only.

// fixedRefLayout returns each column's first character and the end of the
// last (-1: to the end of the line), from widths or else the header line.
func fixedRefLayout(headerLine string, widths []int) (starts []int, end int) {
	if widths != nil {
		end = 0
		for _, w := range widths {
			starts = append(starts, end)
			end += w
		}
		return starts, end
	}
	rs := []rune(headerLine)
	for i, r := range rs {
		if r != ' ' && (i == 0 || rs[i-1] == ' ') {
			starts = append(starts, i)
		}
	}
	return starts, -1
}

// fixedRefSlice slices one line (without its line end) by the layout.
func fixedRefSlice(line string, starts []int, end int) []string {
	rs := []rune(line)
	if end < 0 || end > len(rs) {
		end = len(rs)
	}
	var vals []string
	for i, a := range starts {
		b := end
		if i+1 < len(starts) {
			b = starts[i+1]
		}
		a, b = min(a, len(rs)), min(b, len(rs))
		vals = append(vals, strings.Trim(string(rs[a:b]), " "))
	}
	return vals
}

// fixedRefLine returns line n (1-based) of in without its line end (and
// without a BOM on line 1).
func fixedRefLine(in string, n int) string {
	parts := strings.Split(in, "\n")
	l := parts[n-1]
	if n < len(parts) { // it was followed by LF
		l = strings.TrimSuffix(l, "\r")
	}
	if n == 1 {
		l = strings.TrimPrefix(l, "\ufeff")
	}
	return l
}

// fixedCheckReference compares every row with the documented slicing of
// its line. headerLine is the file's first non-empty line.
func fixedCheckReference(t *testing.T, in string, o fixedOptions, rows [][]string, lines []int) {
	t.Helper()
	headerLine := ""
	if o.Header && len(rows) > 0 {
		for n := 1; ; n++ {
			if headerLine = fixedRefLine(in, n); headerLine != "" {
				break
			}
		}
	}
	starts, end := fixedRefLayout(headerLine, o.Widths)
	for i, row := range rows {
		raw := fixedRefLine(in, lines[i])
		if want := fixedRefSlice(raw, starts, end); !reflect.DeepEqual(row, want) {
			t.Errorf("row %d (line %d %q): want %q (the documented slicing), got %q", i+1, lines[i], raw, want, row)
		}
	}
}

func fixedLines(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

func TestFixedWidthRead(t *testing.T) {
	pad := func(format string, args ...any) string { return fmt.Sprintf(format, args...) }
	tests := []struct {
		name       string
		in         string
		o          fixedOptions
		wantHeader []string
		wantRows   [][]string // nil: only the documented slicing is checked
		wantLines  []int
	}{
		{
			name: "header-derived widths",
			in: fixedLines(
				pad("%-10s%-20s%s", "ItemId", "Name", "Qty"),
				pad("%-10s%-20s%5s", "A-1", "Contoso Europe", "5"),
				pad("%-10s%-20s%5s", "B-22", "Fabrikam", "1200"),
			),
			o:          fixedOptions{Header: true},
			wantHeader: []string{"ItemId", "Name", "Qty"},
			wantRows:   [][]string{{"A-1", "Contoso Europe", "5"}, {"B-22", "Fabrikam", "1200"}},
			wantLines:  []int{2, 3},
		},
		{
			name: "header-derived last column open-ended",
			in: fixedLines(
				"Id  Text",
				"1   a longer value than the header name",
				"2   x",
			),
			o:          fixedOptions{Header: true},
			wantHeader: []string{"Id", "Text"},
			wantRows:   [][]string{{"1", "a longer value than the header name"}, {"2", "x"}},
			wantLines:  []int{2, 3},
		},
		{
			name: "explicit widths with header",
			in: fixedLines(
				pad("%-6s%-16s%8s", "Item", "Customer name", "Amount"),
				pad("%-6s%-16s%8s", "A1", "Contoso Europe", "12.50"),
				pad("%-6s%-16s%8s", "A2", "", "-3"),
			),
			o:          fixedOptions{Header: true, Widths: []int{6, 16, 8}},
			wantHeader: []string{"Item", "Customer name", "Amount"},
			wantRows:   [][]string{{"A1", "Contoso Europe", "12.50"}, {"A2", "", "-3"}},
			wantLines:  []int{2, 3},
		},
		{
			name: "explicit widths without header",
			in: fixedLines(
				pad("%-4s%10s%-8s", "X1", "42", "USMF"),
				pad("%-4s%10s%-8s", "X2", "-7", "DEMF"),
			),
			o:          fixedOptions{Widths: []int{4, 10, 8}, Columns: []string{"Id", "Qty", "Company"}},
			wantHeader: []string{"Id", "Qty", "Company"},
			wantRows:   [][]string{{"X1", "42", "USMF"}, {"X2", "-7", "DEMF"}},
			wantLines:  []int{1, 2},
		},
		{
			name: "right-aligned numbers and inner spaces",
			in: fixedLines(
				"Name          Amount",
				"Contoso Europe   1.5",
				"  two  spaces     -2",
			),
			o:          fixedOptions{Header: true, Widths: []int{14, 6}},
			wantHeader: []string{"Name", "Amount"},
			wantRows:   [][]string{{"Contoso Europe", "1.5"}, {"two  spaces", "-2"}},
		},
		{
			name: "non-ASCII names count characters",
			in: fixedLines(
				"Name    City      Qty",
				"Müller  Köln        3",
				"東京      Ærøskøbing  4",
				"Ōno     Zürich    ½",
			),
			o:          fixedOptions{Header: true},
			wantHeader: []string{"Name", "City", "Qty"},
			wantRows:   [][]string{{"Müller", "Köln", "3"}, {"東京", "Ærøskøbing", "4"}, {"Ōno", "Zürich", "½"}},
		},
		{
			name:       "non-ASCII with explicit widths",
			in:         "Müller√Köln \r\nŠ      Ł    \r\n",
			o:          fixedOptions{Widths: []int{6, 1, 5}, Columns: []string{"Name", "Mark", "City"}},
			wantHeader: []string{"Name", "Mark", "City"},
			wantRows:   [][]string{{"Müller", "√", "Köln"}, {"Š", "", "Ł"}},
		},
		{
			name:       "CRLF",
			in:         "Id Name\r\n1  Anna\r\n2  Bo  \r\n",
			o:          fixedOptions{Header: true},
			wantHeader: []string{"Id", "Name"},
			wantRows:   [][]string{{"1", "Anna"}, {"2", "Bo"}},
		},
		{
			name:       "LF",
			in:         "Id Name\n1  Anna\n2  Bo  \n",
			o:          fixedOptions{Header: true},
			wantHeader: []string{"Id", "Name"},
			wantRows:   [][]string{{"1", "Anna"}, {"2", "Bo"}},
		},
		{
			name:       "mixed line ends and no final line end",
			in:         "Id Name\r\n1  Anna\n2  Bo",
			o:          fixedOptions{Header: true},
			wantHeader: []string{"Id", "Name"},
			wantRows:   [][]string{{"1", "Anna"}, {"2", "Bo"}},
			wantLines:  []int{2, 3},
		},
		{
			name:       "trailing empty lines",
			in:         "Id Name\r\n1  Anna\r\n\r\n\r\n",
			o:          fixedOptions{Header: true},
			wantHeader: []string{"Id", "Name"},
			wantRows:   [][]string{{"1", "Anna"}},
		},
		{
			name:       "empty lines inside count",
			in:         "\nId Name\n\n1  Anna\n\n\n2  Bo\n\n",
			o:          fixedOptions{Header: true},
			wantHeader: []string{"Id", "Name"},
			wantRows:   [][]string{{"1", "Anna"}, {"2", "Bo"}},
			wantLines:  []int{4, 7},
		},
		{
			name:       "BOM before the header",
			in:         "\ufeffId Name\n1  Anna\n",
			o:          fixedOptions{Header: true},
			wantHeader: []string{"Id", "Name"},
			wantRows:   [][]string{{"1", "Anna"}},
		},
		{
			name:       "BOM without header",
			in:         "\ufeff1  Anna\n",
			o:          fixedOptions{Widths: []int{3, 4}, Columns: []string{"Id", "Name"}},
			wantHeader: []string{"Id", "Name"},
			wantRows:   [][]string{{"1", "Anna"}},
		},
		{
			name:       "tabs and control characters are data",
			in:         "A   B\n\tx  y\t\n\x01  \r z\n",
			o:          fixedOptions{Header: true},
			wantHeader: []string{"A", "B"},
			wantRows:   [][]string{{"\tx", "y\t"}, {"\x01  \r", "z"}},
		},
		{
			name:       "a lone CR is data",
			in:         "ab\rc\n",
			o:          fixedOptions{Widths: []int{2, 2}, Columns: []string{"P", "Q"}},
			wantHeader: []string{"P", "Q"},
			wantRows:   [][]string{{"ab", "\rc"}},
		},
		{
			name:       "short line reaching into the last column",
			in:         "abcdefg\nab  d\nab   \n",
			o:          fixedOptions{Widths: []int{2, 2, 6}, Columns: []string{"P", "Q", "R"}},
			wantHeader: []string{"P", "Q", "R"},
			wantRows:   [][]string{{"ab", "cd", "efg"}, {"ab", "", "d"}, {"ab", "", ""}},
		},
		{
			name:       "line ending where the last column starts",
			in:         "abcd\n",
			o:          fixedOptions{Widths: []int{2, 2, 6}, Columns: []string{"P", "Q", "R"}},
			wantHeader: []string{"P", "Q", "R"},
			wantRows:   [][]string{{"ab", "cd", ""}},
		},
		{
			name:       "spaces past the widths",
			in:         "abcd      \n",
			o:          fixedOptions{Widths: []int{2, 2}, Columns: []string{"P", "Q"}},
			wantHeader: []string{"P", "Q"},
			wantRows:   [][]string{{"ab", "cd"}},
		},
		{
			name:       "line of spaces",
			in:         "      \n",
			o:          fixedOptions{Widths: []int{3, 3}, Columns: []string{"P", "Q"}},
			wantHeader: []string{"P", "Q"},
			wantRows:   [][]string{{"", ""}},
		},
		{
			name:       "only empty lines with header",
			in:         "\r\n\n",
			o:          fixedOptions{Header: true},
			wantHeader: nil,
		},
		{
			name:       "header only",
			in:         "Id Name\r\n",
			o:          fixedOptions{Header: true},
			wantHeader: []string{"Id", "Name"},
		},
		{
			name:       "empty file without header",
			in:         "",
			o:          fixedOptions{Widths: []int{3}, Columns: []string{"Id"}},
			wantHeader: []string{"Id"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header, rows, lines, err := fixedRead(strings.NewReader(tt.in), tt.o)
			if err != nil {
				t.Fatalf("want no error, got %v", err)
			}
			if !reflect.DeepEqual(header, tt.wantHeader) {
				t.Errorf("header: want %q, got %q", tt.wantHeader, header)
			}
			if tt.wantRows != nil && !reflect.DeepEqual(rows, tt.wantRows) {
				t.Errorf("rows: want %q, got %q", tt.wantRows, rows)
			}
			if tt.wantLines != nil && !reflect.DeepEqual(lines, tt.wantLines) {
				t.Errorf("lines: want %v, got %v", tt.wantLines, lines)
			}
			fixedCheckReference(t, tt.in, tt.o, rows, lines)

			// Read one byte at a time, the file gives the same.
			h2, rows2, lines2, err := fixedRead(iotest.OneByteReader(strings.NewReader(tt.in)), tt.o)
			if err != nil || !reflect.DeepEqual(h2, header) || !reflect.DeepEqual(rows2, rows) || !reflect.DeepEqual(lines2, lines) {
				t.Errorf("byte by byte: want %q %q %v, got %q %q %v (%v)", header, rows, lines, h2, rows2, lines2, err)
			}
		})
	}
}

func TestFixedWidthErrors(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		o        fixedOptions
		wantRows int    // rows read before the error
		wantLine int    // the FixedWidthError's line; 0: not a line error
		wantErr  string // the error's whole text, or the parts it must hold (separated by |)
	}{
		{
			name: "line too long",
			in: fixedLines(
				strings.Repeat("a", 10)+strings.Repeat("b", 20)+strings.Repeat("c", 30),
				strings.Repeat("a", 60),
				"",
				strings.Repeat("a", 60),
				strings.Repeat("a", 60)+"   ",
				"",
				strings.Repeat("a", 60)+"  x",
			),
			o:        fixedOptions{Widths: []int{10, 20, 30}, Columns: []string{"A", "B", "C"}},
			wantRows: 4,
			wantLine: 7,
			wantErr:  "line 7: 63 characters, longer than the 60 the widths add up to: check widths: (now [10 20 30]) or the file's fixed-width layout",
		},
		{
			name:     "header line too long",
			in:       "A B C x\n",
			o:        fixedOptions{Header: true, Widths: []int{2, 2, 2}},
			wantLine: 1,
			wantErr:  "line 1: 7 characters, longer than the 6 the widths add up to: check widths: (now [2 2 2])",
		},
		{
			name:     "line too short",
			in:       "aabbc\naabb\naab\n",
			o:        fixedOptions{Widths: []int{2, 2, 2}, Columns: []string{"A", "B", "C"}},
			wantRows: 2,
			wantLine: 3,
			wantErr:  "line 3: 3 characters, too short to reach the last column, which starts after 4: check widths: (now [2 2 2]) or the file's fixed-width layout",
		},
		{
			name:     "line too short for header-derived widths",
			in:       "Id  Name  Qty\r\n1   Anna  2\r\n\r\n2   Bo\r\n",
			o:        fixedOptions{Header: true},
			wantRows: 1,
			wantLine: 4,
			wantErr:  "line 4: 6 characters, too short to reach the last column, which starts after 10: check that the data lines are aligned with the column names of the header line, or set widths:",
		},
		{
			name:     "non-ASCII line too long counts characters",
			in:       "Müllerx\n",
			o:        fixedOptions{Widths: []int{6}, Columns: []string{"Name"}},
			wantLine: 1,
			wantErr:  "line 1: 7 characters, longer than the 6",
		},
		{
			name:    "missing columns without header",
			in:      "abc\n",
			o:       fixedOptions{Widths: []int{3}},
			wantErr: "columns:|widths:|0 columns, 1 widths",
		},
		{
			name:    "missing widths without header",
			in:      "abc\n",
			o:       fixedOptions{Columns: []string{"A"}},
			wantErr: "columns:|widths:|1 columns, 0 widths",
		},
		{
			name:    "columns and widths differ in number",
			in:      "abc\n",
			o:       fixedOptions{Columns: []string{"A", "B"}, Widths: []int{3}},
			wantErr: "columns: names 2 columns but widths: gives 1 widths",
		},
		{
			name:    "columns with header",
			in:      "A\n",
			o:       fixedOptions{Header: true, Columns: []string{"A"}},
			wantErr: "columns:|header line",
		},
		{
			name:    "empty column name",
			in:      "abc\n",
			o:       fixedOptions{Columns: []string{"A", ""}, Widths: []int{1, 2}},
			wantErr: "columns: name 2 is empty",
		},
		{
			name:    "zero width",
			in:      "abc\n",
			o:       fixedOptions{Header: true, Widths: []int{3, 0}},
			wantErr: "widths: width 0 of column 2 is not positive",
		},
		{
			name:     "header with a leading space",
			in:       " Id Name\n 1 Anna\n",
			o:        fixedOptions{Header: true},
			wantLine: 1,
			wantErr:  "line 1: the header line starts with a space|widths:",
		},
		{
			name:     "header with a leading space after empty lines",
			in:       "\r\n\r\n  Id\r\n",
			o:        fixedOptions{Header: true},
			wantLine: 3,
			wantErr:  "line 3: the header line starts with a space",
		},
		{
			name:     "header of spaces only",
			in:       "     \n1    2\n",
			o:        fixedOptions{Header: true},
			wantLine: 1,
			wantErr:  "line 1: the header line holds no column names",
		},
		{
			name:     "header with widths: empty name",
			in:       "Id      Qty\n",
			o:        fixedOptions{Header: true, Widths: []int{4, 4, 3}},
			wantLine: 1,
			wantErr:  "line 1: the header line has no name for column 2 (characters 5 to 8): check widths: (now [4 4 3]) or the header line",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, rows, _, err := fixedRead(strings.NewReader(tt.in), tt.o)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("want no error, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error holding %q, got none (rows %q)", tt.wantErr, rows)
			}
			if len(rows) != tt.wantRows {
				t.Errorf("want %d rows before the error, got %d", tt.wantRows, len(rows))
			}
			for _, part := range strings.Split(tt.wantErr, "|") {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("want an error holding %q, got %q", part, err)
				}
			}
			var fe *FixedWidthError
			switch {
			case tt.wantLine == 0 && errors.As(err, &fe):
				t.Errorf("want an options error, got a line error: %v", err)
			case tt.wantLine != 0 && !errors.As(err, &fe):
				t.Errorf("want a *FixedWidthError for line %d, got %T: %v", tt.wantLine, err, err)
			case tt.wantLine != 0 && fe.Line != tt.wantLine:
				t.Errorf("want line %d, got %d", tt.wantLine, fe.Line)
			}
		})
	}
}

// endlessReader yields b forever.
type endlessReader byte

func (e endlessReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(e)
	}
	return len(p), nil
}

func TestFixedWidthLineCap(t *testing.T) {
	r := io.MultiReader(strings.NewReader("Id  Name\n1   x\n"), endlessReader('a'))
	_, rows, _, err := fixedRead(r, fixedOptions{Header: true})
	var fe *FixedWidthError
	if !errors.As(err, &fe) || fe.Line != 3 || !strings.Contains(err.Error(), "over 64 MiB without a line break") {
		t.Fatalf("want line 3 over 64 MiB, got %v", err)
	}
	if len(rows) != 1 {
		t.Errorf("want 1 row before the error, got %d", len(rows))
	}
}

func TestFixedWidthLongLine(t *testing.T) {
	// Lines longer than the read buffer are read whole.
	long := strings.Repeat("é", 3<<20)
	in := "Id  Text\n1   " + long + "\n2   " + long + "  \n"
	header, rows, lines, err := fixedRead(strings.NewReader(in), fixedOptions{Header: true})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(header, []string{"Id", "Text"}) || len(rows) != 2 || !reflect.DeepEqual(lines, []int{2, 3}) {
		t.Fatalf("want header [Id Text] and 2 rows on lines 2 and 3, got %q, %d rows, lines %v", header, len(rows), lines)
	}
	for i, r := range rows {
		if r[0] != fmt.Sprint(i+1) || r[1] != long {
			t.Errorf("row %d: want %d and %d bytes of é, got %q and %d bytes", i+1, i+1, len(long), r[0], len(r[1]))
		}
	}
}

// fixedFuzzOptions derives a layout from two seed bytes: the header mode
// and up to eight widths of 1 to 8 characters.
func fixedFuzzOptions(mode, w byte) fixedOptions {
	n := int(mode>>2)%8 + 1
	widths := make([]int, n)
	for i := range widths {
		widths[i] = int(w>>(i%8)+byte(i))%8 + 1
	}
	switch mode % 3 {
	case 0:
		return fixedOptions{Header: true}
	case 1:
		return fixedOptions{Header: true, Widths: widths}
	default:
		cols := make([]string, n)
		for i := range cols {
			cols[i] = fmt.Sprint("C", i)
		}
		return fixedOptions{Widths: widths, Columns: cols}
	}
}

func FuzzFixedWidth(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzFixedWidth.
	f.Fuzz(func(t *testing.T, data []byte, mode, w byte) {
		o := fixedFuzzOptions(mode, w)
		in := string(data)
		header, rows, lines, err := fixedRead(bytes.NewReader(data), o)
		var fe *FixedWidthError
		if err != nil && errors.As(err, &fe) && (fe.Line < 1 || fe.Line > strings.Count(in, "\n")+1) {
			t.Fatalf("error on line %d of a file of %d lines: %v", fe.Line, strings.Count(in, "\n")+1, err)
		}
		if len(rows) > 0 && len(header) == 0 {
			t.Fatalf("rows %q without a header", rows)
		}
		for i, row := range rows {
			if len(row) != len(header) {
				t.Fatalf("row %d has %d fields, header %d: %q", i+1, len(row), len(header), row)
			}
			for _, v := range row {
				if strings.HasPrefix(v, " ") || strings.HasSuffix(v, " ") {
					t.Fatalf("row %d: value %q keeps padding", i+1, v)
				}
			}
			if i > 0 && lines[i] <= lines[i-1] {
				t.Fatalf("row %d on line %d, after line %d", i+1, lines[i], lines[i-1])
			}
		}
		for _, h := range header {
			if h == "" || strings.HasPrefix(h, " ") || strings.HasSuffix(h, " ") {
				t.Fatalf("header name %q is empty or padded", h)
			}
		}
		// The caller guarantees UTF-8 and the source keeps invalid bytes
		// as they are, where the reference's []rune makes them U+FFFD.
		if utf8.ValidString(in) {
			fixedCheckReference(t, in, o, rows, lines)
		}
	})
}

func BenchmarkFixedWidth(b *testing.B) {
	widths := []int{10, 20, 8, 12, 6, 14, 10, 4, 16, 12}
	cols := make([]string, len(widths))
	for i := range cols {
		cols[i] = fmt.Sprint("Column", i)
	}
	const rows = 100_000
	var buf bytes.Buffer
	for i := range rows {
		for c, w := range widths {
			v := fmt.Sprint("v", i*7+c)
			if c%3 == 1 {
				v = "Contoso " + v
			}
			if c%2 == 0 {
				fmt.Fprintf(&buf, "%*s", w, v[:min(len(v), w)]) // right-aligned
			} else {
				fmt.Fprintf(&buf, "%-*s", w, v[:min(len(v), w)])
			}
		}
		buf.WriteString("\r\n")
	}
	in := buf.Bytes()
	o := fixedOptions{Widths: widths, Columns: cols}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		s, err := newFixedSource(bytes.NewReader(in), o)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.header(); err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			_, _, err := s.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != rows {
			b.Fatalf("want %d rows, got %d", rows, n)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
