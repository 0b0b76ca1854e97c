package publish

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// chunkReader hands out its input at most n bytes per Read, so the
// scanner's window is refilled and moved in the middle of tokens.
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.n, len(r.b))
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

// sheetResult is everything a scanner made of a sheet: its rows, their
// sheet row numbers and the error that ended it.
type sheetResult struct {
	rows  [][]string
	lines []int
	err   string
}

func readAllRows(next func() ([]string, int, error)) sheetResult {
	var r sheetResult
	for i := 0; i < 100000; i++ {
		cells, line, err := next()
		if errors.Is(err, io.EOF) {
			return r
		}
		if err != nil {
			r.err = err.Error()
			return r
		}
		cp := make([]string, len(cells))
		for i, c := range cells {
			cp[i] = strings.Clone(c)
		}
		r.rows, r.lines = append(r.rows, cp), append(r.lines, line)
	}
	r.err = "too many rows"
	return r
}

// diffSheet reads in with the byte scanner (its window window bytes, the
// input coming chunk bytes at a time) and with the reference scanner, and
// reports how they differ.
func diffSheet(t *testing.T, in []byte, chunk, window int) {
	t.Helper()
	tab := &sharedStrings{}
	for _, s := range []string{"s0", "", "a&b", "x\ny"} {
		tab.add([]byte(s))
	}
	dates := []bool{false, true, false, true}
	for _, d1904 := range []bool{false, true} {
		ref := newRefSheetScanner(bytes.NewReader(in), tab, dates, d1904)
		want := readAllRows(ref.nextRow)
		sc := newSheetScanner(&chunkReader{in, chunk}, tab, dates, d1904)
		sc.x.buf = make([]byte, window)
		got := readAllRows(func() ([]string, int, error) {
			cells, line, err := sc.nextRow()
			for i, v := range cells {
				if i < len(sc.plain) && sc.plain[i] && !plainBytes([]byte(v)) {
					t.Fatalf("input %q: row %d column %s %q marked plain", in, line, columnName(i), v)
				}
			}
			return cells, line, err
		})
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("input %q (chunks of %d, window %d, 1904 %v):\nwant %+v\ngot  %+v", in, chunk, window, d1904, want, got)
		}
	}
}

func TestSheetScannerMatchesReference(t *testing.T) {
	tests := []struct{ name, in string }{
		{"shared and inline", sheetHead + `<row r="1"><c r="A1" t="s"><v>2</v></c><c r="B1" t="inlineStr"><is><t>x&amp;y_x000D_</t></is></c></row>` + sheetTail},
		{"dates and booleans", sheetHead + `<row r="2"><c r="C2" s="1"><v>45352.5</v></c><c t="b"><v>1</v></c><c s="3"><v>1</v></c></row><row/>` + sheetTail},
		{"prefixes, comments, CDATA", sheetHead + `<!-- c > d --><x:row><x:c r="ZZ9"><x:v>1</x:v></x:c></x:row><![CDATA[a]]>` + sheetTail},
		{"CDATA inside a value", sheetHead + `<row><c t="str"><v>a<![CDATA[<b>]]>c</v></c></row>` + sheetTail},
		{"quoted > in attributes", sheetHead + `<row r="1" a='x>"y'><c r="A1" t="inlineStr" z=">"><is><t>v</t></is></c></row>` + sheetTail},
		{"rich text and phonetic runs", sheetHead + `<row><c t="inlineStr"><is><r><t>a</t></r><rPh><t>p</t></rPh><r><rPr/><t xml:space="preserve"> b</t></r></is></c></row>` + sheetTail},
		{"shared index as a reference", sheetHead + `<row><c t="s"><v> &#51; </v></c></row>` + sheetTail},
		{"formula text ignored", sheetHead + `<row><c><f>SUM(A1:A2)</f><v>3</v></c></row>` + sheetTail},
		{"inline strings read at once", sheetHead + `<row r="1"><c r="A1" s="0" t="inlineStr"><is><t>US-001</t></is></c><c r="B1" t="inlineStr"><is><t xml:space="preserve"> a b </t></is></c>` +
			`<c r="C1" t="inlineStr"><is><t/></is></c><c r="D1" t="inlineStr"><is><t></t></is></c><c r="E1" t="inlineStr"><is><t>a &amp; &lt;b&gt; &#233;&#x6771; _x000D_ "q" \</t></is></c>` +
			`<c r="F1" t="inlineStr"><is><t>line1` + "\r\n" + `line2</t></is></c><c r="G1" t="inlineStr"><is><t>東京</t></is></c><c r="H1"/><c r="I1" s="1"><v>45352.5</v></c></row>` + sheetTail},
		{"inline strings read as tokens", sheetHead + `<row r="1"><c r="A1" t="inlineStr"><is><t xml:space="default">x</t></is></c><c r="B1" t="inlineStr"><is> <t>y</t></is></c>` +
			`<c r="C1" t="inlineStr"><is><t>a<![CDATA[<b>]]></t></is></c><c r="D1" t="inlineStr"><is><t>z</t><t>w</t></is></c><c r="E1" t="inlineStr"><is><t>v</t></is> </c>` +
			`<c r="F1" t="inlineStr"><is><r><t>ri</t></r><r><rPr><b/></rPr><t xml:space="preserve">ch</t></r></is></c><c r="G1" t="inlineStr"><x:is><x:t>p</x:t></x:is></c>` +
			`<c r="H1" t="inlineStr"><is><t/><t>after</t></is></c><c r="I1" t="inlineStr"><v>1</v><is><t>2</t></is></c></row>` + sheetTail},
		{"cell tags read at once and not", sheetHead + `<row r="1"><c r="A1" t="inlineStr" ><is><t>a</t></is></c><c  r="B1"><v>2</v></c><c r='C1'><v>3</v></c>` +
			`<c x:r="D1"><v>4</v></c><c r="E1" z="a>b" t="s"><v>1</v></c><c r="F1" t="b" /><c r="G1" r="H1" s="3" s="0"><v>1</v></c><c r="I1"/><c t="s" r="J1"><v>2</v></c>` +
			`<c r=""><v>x</v></c><c r="K1" t="inlineStr"><is><t>k</t></is></c><c r="L1" 1="2"><v>5</v></c><c r="M1" s="+1"><v>6</v></c><c r="N1" s="-1"><v>7</v></c></row>` + sheetTail},
		{"values read at once and not", sheetHead + `<row r="1"><c r="A1"><v></v></c><c t="s"><v>&#49;</v></c><c><v>1</v></c ><c><v>2</v>x</c><c><v a="1">3</v></c><c><v>4</v></x:c></c></row>` + sheetTail},
		{"truncated in a tag", `<row r="1"><c r="A1"><v>1</v`},
		{"truncated in a row", `<row r="1"><c r="A1"><v>1</v>`},
		{"text after the last tag", `<row r="1"></row>tail`},
		{"empty tag", `<row><></row>`},
		{"bad row number", `<row r="0"/>`},
		{"bad shared index", `<row><c t="s"><v>9</v></c></row>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, chunk := range []int{1, 2, 3, 7, 64, 1 << 20} {
				for _, window := range []int{1, 4, 16, xmlWindow} {
					diffSheet(t, []byte(tt.in), chunk, window)
				}
			}
		})
	}
}

// FuzzSheetScannerDiff: the byte scanner reads any input, however it
// arrives, exactly as the reference scanner does: same rows, same row
// numbers, same error.
func FuzzSheetScannerDiff(f *testing.F) {
	for _, s := range []string{
		sheetHead + `<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="inlineStr"><is><t>x&amp;y_x000D_</t></is></c></row>` + sheetTail,
		sheetHead + `<row r="2"><c r="C2" s="1"><v>45352.5</v></c><c t="b"><v>1</v></c></row><row/>` + sheetTail,
		sheetHead + `<!-- c --><x:row><x:c r="ZZ9"><x:v>1</x:v></x:c></x:row><![CDATA[a]]>` + sheetTail,
		`<row r="1" a='>'><c r="A1" s="3"><v>1`,
		`<c r="A1"/><row r="0">`,
		sheetHead + `<row r="1"><c r="A1" s="0" t="inlineStr"><is><t>US-001</t></is></c><c r="B1" t="inlineStr"><is><t xml:space="preserve"> a </t></is></c>` +
			`<c r="C1" t="inlineStr"><is><t/></is></c><c r="D1" t="inlineStr"><is><r><t>x</t></r><r><t>&amp;_x0041_</t></r></is></c></row>` + sheetTail,
	} {
		f.Add([]byte(s), uint8(3), uint8(5))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk, window uint8) {
		diffSheet(t, in, int(chunk)%64+1, int(window)%64+1)
	})
}

// FuzzSharedStringsDiff: the shared strings table comes out of the byte
// scanner exactly as out of the reference one.
func FuzzSharedStringsDiff(f *testing.F) {
	f.Add([]byte(`<sst><si><t>a</t></si><si><r><t>b</t></r><rPh><t>c</t></rPh></si><si/><si><t>&lt;&#x41;_x0041_</t></si></sst>`), uint8(2), uint8(3))
	f.Fuzz(func(t *testing.T, in []byte, chunk, window uint8) {
		want := &sharedStrings{}
		werr := refReadSharedStrings(want, bytes.NewReader(in))
		got := &sharedStrings{}
		gerr := got.readWindow(&chunkReader{in, int(chunk)%64 + 1}, int(window)%64+1)
		if errText(werr) != errText(gerr) || !bytes.Equal(want.blob, got.blob) || !reflect.DeepEqual(want.ends, got.ends) {
			t.Fatalf("input %q: want %q %v (%v), got %q %v (%v)", in, want.blob, want.ends, werr, got.blob, got.ends, gerr)
		}
	})
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// benchSheet is a sheet of rows rows of 20 shared-string cells, the shape
// common writers produce, and its shared strings table.
func benchSheet(rows int) ([]byte, *sharedStrings) {
	var b bytes.Buffer
	b.WriteString(sheetHead)
	tab := &sharedStrings{}
	for r := 1; r <= rows; r++ {
		fmt.Fprintf(&b, `<row r="%d">`, r)
		for c := 0; c < 20; c++ {
			fmt.Fprintf(&b, `<c r="%s%d" t="s"><v>%d</v></c>`, columnName(c), r, len(tab.ends))
			tab.add([]byte(fmt.Sprintf("value %d.%d", r, c)))
		}
		b.WriteString(`</row>`)
	}
	b.WriteString(sheetTail)
	return b.Bytes(), tab
}

// BenchmarkSheetScan compares the byte scanner with the reference scanner
// on the decompressed sheet XML (no inflate, no encoding).
func BenchmarkSheetScan(b *testing.B) {
	const rows = 20000
	in, tab := benchSheet(rows)
	for _, tc := range []struct {
		name string
		next func(io.Reader) func() ([]string, int, error)
	}{
		{"bytescanner", func(r io.Reader) func() ([]string, int, error) { return newSheetScanner(r, tab, nil, false).nextRow }},
		{"reference", func(r io.Reader) func() ([]string, int, error) { return newRefSheetScanner(r, tab, nil, false).nextRow }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				next := tc.next(bytes.NewReader(in))
				n := 0
				for {
					_, _, err := next()
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
		})
	}
}
