package publish

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// readAll reads every record of in with csvReader, copying the fields.
func readAll(t testing.TB, r io.Reader, delim byte) ([][]string, error) {
	t.Helper()
	return readAllWith(t, newCSVReader(r, delim))
}

// readAllWith reads every record with cr, copying the fields.
func readAllWith(t testing.TB, cr *csvReader) ([][]string, error) {
	t.Helper()
	var out [][]string
	for {
		rec, err := cr.read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		cp := make([]string, len(rec))
		for i, v := range rec {
			cp[i] = strings.Clone(v)
		}
		out = append(out, cp)
	}
}

func TestCSVReaderExact(t *testing.T) {
	tests := []struct {
		name, in string
		want     [][]string
	}{
		{"crlf inside quotes kept", "a,\"x\r\ny\"\r\n", [][]string{{"a", "x\r\ny"}}},
		{"lone cr inside quotes kept", "\"x\ry\",b\n", [][]string{{"x\ry", "b"}}},
		{"lf inside quotes kept", "\"x\ny\"\n", [][]string{{"x\ny"}}},
		{"doubled quotes", "\"a\"\"b\"\"\",\"\"\"\"\n", [][]string{{`a"b"`, `"`}}},
		{"doubled quote then newline", "\"a\"\"\r\nb\"\n", [][]string{{"a\"\r\nb"}}},
		{"empty quoted", "\"\",\"\"\r\n", [][]string{{"", ""}}},
		{"no final newline", "a,b", [][]string{{"a", "b"}}},
		{"quoted at eof", "a,\"b\"", [][]string{{"a", "b"}}},
		{"lone cr outside quotes is data", "a\rb,c\n", [][]string{{"a\rb", "c"}}},
		{"trailing delimiter", "a,\n", [][]string{{"a", ""}}},
		{"empty lines skipped", "\n\r\na\n\n\r\nb\r\n\r\n", [][]string{{"a"}, {"b"}}},
		{"utf8 kept", "Zürich,東京\n", [][]string{{"Zürich", "東京"}}},
		// A qualifier inside a value that F&O did not double is data.
		{"undoubled quote in quoted field", "\"27\" monitor\",b\r\n", [][]string{{`27" monitor`, "b"}}},
		{"undoubled then doubled", "\"a\"b\"\"c\",d\n", [][]string{{`a"b"c`, "d"}}},
		{"doubled then undoubled", "\"a\"\"b\"c\",d\n", [][]string{{`a"b"c`, "d"}}},
		{"undoubled before line break", "\"5\" x\r\ny\"\n", [][]string{{"5\" x\r\ny"}}},
		{"quote inside unquoted field", "c,d\"e\"\n", [][]string{{"c", `d"e"`}}},
		{"closing quote then cr at end", "\"a\"\r", [][]string{{"a"}}},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tt.in)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			got, err := readAll(t, r, ',')
			if err != nil {
				t.Errorf("%s (one byte reads %v): want no error, got %v", tt.name, oneByte, err)
				continue
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s (one byte reads %v): want %q, got %q", tt.name, oneByte, tt.want, got)
			}
		}
	}
}

// TestCSVReaderQualifiers reads with other text qualifiers than '"' and
// counts the qualifiers kept as data.
func TestCSVReaderQualifiers(t *testing.T) {
	tests := []struct {
		name, in string
		qual     byte
		want     [][]string
		loose    int
		line     int // of the first loose qualifier
	}{
		{"apostrophe", "'a,b',\"c\"\n'x''y',z\n", '\'', [][]string{{"a,b", `"c"`}, {"x'y", "z"}}, 0, 0},
		{"apostrophe undoubled", "a,b\n'it's',c\n", '\'', [][]string{{"a", "b"}, {"it's", "c"}}, 1, 2},
		{"none: quotes are data", "\"a,b\"\n", 0, [][]string{{`"a`, `b"`}}, 0, 0},
		{"quote: counted per record", "a\n\"1\"2\"3\"\nx\"y\n", '"', [][]string{{"a"}, {`1"2"3`}, {`x"y`}}, 3, 2},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tt.in)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			cr := newCSVReader(r, ',')
			cr.qual = tt.qual
			got, err := readAllWith(t, cr)
			if err != nil {
				t.Errorf("%s (one byte reads %v): want no error, got %v", tt.name, oneByte, err)
				continue
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s (one byte reads %v): want %q, got %q", tt.name, oneByte, tt.want, got)
			}
			if cr.loose != tt.loose || cr.looseLine != tt.line {
				t.Errorf("%s (one byte reads %v): want %d loose qualifiers from line %d, got %d from line %d", tt.name, oneByte, tt.loose, tt.line, cr.loose, cr.looseLine)
			}
		}
	}
}

func TestCSVReaderErrors(t *testing.T) {
	tests := []struct {
		name, in   string
		line, col  int
		reasonPart string
	}{
		{"bare quote", "a,b\nc,d\"e\n", 2, 4, "in an unquoted field"},
		{"text after closing quote", "a\n\"x\ny\"z\n", 3, 3, "after the closing"},
		{"unterminated", "a\n\"x\ny\n", 2, 1, "closing quote is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cr := newCSVReader(iotest.OneByteReader(strings.NewReader(tt.in)), ',')
			cr.strict = true
			_, err := readAllWith(t, cr)
			var se *CSVSyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("want a *CSVSyntaxError, got %v", err)
			}
			if se.Line != tt.line || se.Column != tt.col || !strings.Contains(se.Reason, tt.reasonPart) {
				t.Errorf("want line %d column %d reason containing %q, got %v", tt.line, tt.col, tt.reasonPart, se)
			}
		})
	}
}

// TestCSVReaderMatchesEncodingCSV compares with encoding/csv on random
// files without CR inside quotes (where the two differ by design), read in
// chunks of random size to exercise every buffer boundary.
func TestCSVReaderMatchesEncodingCSV(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "b", "Z", ",", ";", "\"", "\n", " ", "é", "東", "0"}
	for iter := 0; iter < 300; iter++ {
		var b bytes.Buffer
		rows, cols := rnd.IntN(20)+1, rnd.IntN(5)+1
		for r := 0; r < rows; r++ {
			for c := 0; c < cols; c++ {
				if c > 0 {
					b.WriteByte(',')
				}
				var f strings.Builder
				for k := rnd.IntN(6); k > 0; k-- {
					f.WriteString(alphabet[rnd.IntN(len(alphabet))])
				}
				v := f.String()
				if strings.ContainsAny(v, ",\"\n") || rnd.IntN(4) == 0 {
					v = `"` + strings.ReplaceAll(v, `"`, `""`) + `"`
				}
				b.WriteString(v)
			}
			if rnd.IntN(2) == 0 {
				b.WriteString("\r\n")
			} else {
				b.WriteString("\n")
			}
		}
		in := b.Bytes()
		std := csv.NewReader(bytes.NewReader(in))
		std.FieldsPerRecord = -1
		want, err := std.ReadAll()
		if err != nil {
			t.Fatalf("encoding/csv on %q: %v", in, err)
		}
		got, err := readAll(t, iotest.HalfReader(bytes.NewReader(in)), ',')
		if err != nil {
			t.Fatalf("csvReader on %q: want no error, got %v", in, err)
		}
		if len(want) == 0 {
			want = nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("csvReader on %q:\nwant %q\n got %q", in, want, got)
		}
	}
}

func TestCSVReaderLongRecord(t *testing.T) {
	long := strings.Repeat("x", 3*csvBufferSize)
	got, err := readAll(t, strings.NewReader("a,\""+long+"\"\nb,c\n"), ',')
	if err != nil {
		t.Fatalf("want no error, got %v", err)
	}
	if len(got) != 2 || got[0][1] != long || got[1][1] != "c" {
		t.Errorf("want the 3 MiB field and the next row intact, got %d records", len(got))
	}
}

// TestCSVFixtures reads every file in testdata/csv: the same entity in each
// encoding, delimiter and line-end variant, all matching expected.json.
func TestCSVFixtures(t *testing.T) {
	var want struct {
		Columns []string   `json:"columns"`
		Rows    [][]string `json:"rows"`
	}
	b, err := os.ReadFile("testdata/csv/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("testdata/csv/*.csv")
	if len(files) < 9 {
		t.Fatalf("want the 9 fixtures, found %d", len(files))
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = f.Close() }()
			sink := &memSink{}
			if _, err := PublishEntity(context.Background(), f, sink, EntityOptions{Format: "csv", BatchSize: 2}); err != nil {
				t.Fatalf("want no error, got %v", err)
			}
			cols, rows := rowsOf(t, bodiesOf(sink.msgs))
			if !reflect.DeepEqual(cols, want.Columns) || !reflect.DeepEqual(rows, want.Rows) {
				t.Errorf("want %q %q, got %q %q", want.Columns, want.Rows, cols, rows)
			}
		})
	}
}

// TestCSVPlainFields checks which fields the reader marks plain: those the
// encoder copies without its escaping scan. A field that is plain but not
// marked only costs time; the fuzz target checks that none is marked wrongly.
func TestCSVPlainFields(t *testing.T) {
	tests := []struct {
		name, in string
		want     []bool
	}{
		{"unquoted ascii", "SO-1,2024-03-01T00:00:00,,12.50\r\n", []bool{true, true, true, true}},
		{"quoted ascii with delimiter", "\"Contoso, Ltd.\",x\n", []bool{true, true}},
		{"backslash", "a\\b,c\n", []bool{false, true}},
		{"control byte", "a\x01,c\n", []bool{false, true}},
		{"utf-8", "caf\xc3\xa9,c\n", []bool{false, true}},
		{"doubled quote", "\"a\"\"b\",c\n", []bool{false, true}},
		{"line break inside quotes", "\"a\r\nb\",c\n", []bool{false, true}},
		{"lone cr", "a\rb,c\n", []bool{false, true}},
		{"tab delimiter is not data", "a\tb\n", []bool{true, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			delim := byte(',')
			if strings.Contains(tt.in, "\t") {
				delim = '\t'
			}
			cr := newCSVReader(strings.NewReader(tt.in), delim)
			if err := cr.readSpans(); err != nil {
				t.Fatal(err)
			}
			var got []bool
			for _, s := range cr.record().spans {
				got = append(got, s.plain)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("plain = %v, want %v", got, tt.want)
			}
		})
	}
}
