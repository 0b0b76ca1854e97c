package publish

import (
	"bytes"
	"context"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
	"unicode/utf16"
)

func utf16Bytes(s string, big bool) []byte {
	u := utf16.Encode([]rune(s))
	var b bytes.Buffer
	if big {
		b.Write([]byte{0xFE, 0xFF})
	} else {
		b.Write([]byte{0xFF, 0xFE})
	}
	for _, c := range u {
		if big {
			_ = binary.Write(&b, binary.BigEndian, c)
		} else {
			_ = binary.Write(&b, binary.LittleEndian, c)
		}
	}
	return b.Bytes()
}

func TestCSVVariants(t *testing.T) {
	basic := "ACCOUNT,NAME\r\n001,Contoso\r\n002,\"Fabrikam, Inc.\"\r\n"
	basicCols := []string{"ACCOUNT", "NAME"}
	basicRows := [][]string{{"001", "Contoso"}, {"002", "Fabrikam, Inc."}}
	tests := []struct {
		name  string
		in    []byte
		delim rune
		cols  []string
		rows  [][]string
	}{
		{"utf8 no bom", []byte(basic), 0, basicCols, basicRows},
		{"utf8 bom", append([]byte{0xEF, 0xBB, 0xBF}, basic...), 0, basicCols, basicRows},
		{"utf16 le bom", utf16Bytes(basic, false), 0, basicCols, basicRows},
		{"utf16 be bom", utf16Bytes(basic, true), 0, basicCols, basicRows},
		{"utf16 le without bom", utf16Bytes(basic, false)[2:], 0, basicCols, basicRows},
		{"utf16 be without bom", utf16Bytes(basic, true)[2:], 0, basicCols, basicRows},
		{"utf16 le without bom, non-ascii values", utf16Bytes("NAME;CITY\r\nMüller;Zürich\r\n", false)[2:], 0,
			[]string{"NAME", "CITY"}, [][]string{{"Müller", "Zürich"}}},
		{"utf8 starting with a one-letter column stays utf8", []byte("A\r\n\x00x\r\n"), 0, []string{"A"}, [][]string{{"\x00x"}}},
		{"utf16 le non-ascii", utf16Bytes("NAME;CITY\r\nMüller;Zürich\r\n東京;😀\r\n", false), 0,
			[]string{"NAME", "CITY"}, [][]string{{"Müller", "Zürich"}, {"東京", "😀"}}},
		{"semicolon", []byte("A;B;C\r\n1;2;3\r\n"), 0, []string{"A", "B", "C"}, [][]string{{"1", "2", "3"}}},
		{"tab", []byte("A\tB\r\n1,5\t2;3\r\n"), 0, []string{"A", "B"}, [][]string{{"1,5", "2;3"}}},
		{"pipe", []byte("A|B\n1|2\n"), 0, []string{"A", "B"}, [][]string{{"1", "2"}}},
		{"explicit delimiter", []byte("A;B,C\n1;2,3\n"), ';', []string{"A", "B,C"}, [][]string{{"1", "2,3"}}},
		{"quoted delimiter in header not counted", []byte("\"A;B\",C\n1,2\n"), 0, []string{"A;B", "C"}, [][]string{{"1", "2"}}},
		{"quoted delimiter", []byte("A,B\n\"x,y\",\"p;q\"\n"), 0, []string{"A", "B"}, [][]string{{"x,y", "p;q"}}},
		{"doubled quotes", []byte("A,B\n\"say \"\"hi\"\"\",\"\"\"\"\n"), 0, []string{"A", "B"}, [][]string{{`say "hi"`, `"`}}},
		{"crlf in quotes", []byte("A,B\r\n\"line1\r\nline2\",x\r\n"), 0, []string{"A", "B"}, [][]string{{"line1\r\nline2", "x"}}},
		{"lf endings", []byte("A,B\n1,2\n3,4"), 0, []string{"A", "B"}, [][]string{{"1", "2"}, {"3", "4"}}},
		{"trailing empty lines", []byte("A,B\r\n1,2\r\n\r\n\r\n\n"), 0, []string{"A", "B"}, [][]string{{"1", "2"}}},
		{"leading zeros kept", []byte("ID,AMOUNT\n000123,0001.500\n"), 0, []string{"ID", "AMOUNT"}, [][]string{{"000123", "0001.500"}}},
		{"empty fields", []byte("A,B,C\n,,\n1,,3\n"), 0, []string{"A", "B", "C"}, [][]string{{"", "", ""}, {"1", "", "3"}}},
		{"spaces kept", []byte("A,B\n  x , y\n"), 0, []string{"A", "B"}, [][]string{{"  x ", " y"}}},
		{"header names as written", []byte("Customer Account,name\n1,2\n"), 0, []string{"Customer Account", "name"}, [][]string{{"1", "2"}}},
		{"control chars and json specials", []byte("A,B\n\"a\tb\\c\",\"</script>\u2028\"\n"), 0, []string{"A", "B"}, [][]string{{"a\tb\\c", "</script>\u2028"}}},
		{"not utf-8 is windows-1252 in a non-unicode format", []byte("A\nx\xe9\x80y\n"), 0, []string{"A"}, [][]string{{"xé€y"}}},
		{"utf-32 le bom", append([]byte{0xFF, 0xFE, 0, 0}, utf32le("A,B\r\nü,😀\r\n")...), 0, []string{"A", "B"}, [][]string{{"ü", "😀"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			st, err := PublishEntity(context.Background(), bytes.NewReader(tt.in), sink, EntityOptions{
				Job: "j", Entity: "E", Format: "csv", Delimiter: tt.delim,
			})
			if err != nil {
				t.Fatalf("PublishEntity: want no error, got %v", err)
			}
			cols, rows := rowsOf(t, bodiesOf(sink.msgs))
			if !reflect.DeepEqual(cols, tt.cols) {
				t.Errorf("columns: want %q, got %q", tt.cols, cols)
			}
			if !reflect.DeepEqual(rows, tt.rows) {
				t.Errorf("rows: want %q, got %q", tt.rows, rows)
			}
			if st.Rows != int64(len(tt.rows)) || st.BytesIn != int64(len(tt.in)) {
				t.Errorf("stats: want rows %d bytes in %d, got %+v", len(tt.rows), len(tt.in), st)
			}
			if sink.flushes != 1 {
				t.Errorf("flushes: want 1, got %d", sink.flushes)
			}
		})
	}
}

func TestCSVEmptyEntity(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		cols []string
	}{
		{"zero bytes", nil, []string{}},
		{"only utf8 bom", []byte{0xEF, 0xBB, 0xBF}, []string{}},
		{"only utf16 bom", []byte{0xFF, 0xFE}, []string{}},
		{"only empty lines", []byte("\r\n\n"), []string{}},
		{"header only", []byte("A,B\r\n"), []string{"A", "B"}},
		{"header only no newline", []byte("A;B"), []string{"A", "B"}},
		{"header only utf16", utf16Bytes("A,B\r\n", false), []string{"A", "B"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			st, err := PublishEntity(context.Background(), bytes.NewReader(tt.in), sink, EntityOptions{
				Job: "j", ExecutionID: "x", Entity: "E", Format: "csv",
			})
			if err != nil {
				t.Fatalf("PublishEntity: want no error, got %v", err)
			}
			if len(sink.msgs) != 1 || st.Batches != 1 || st.Rows != 0 {
				t.Fatalf("want 1 message and 0 rows, got %d messages, stats %+v", len(sink.msgs), st)
			}
			e := decodeEvent(t, sink.msgs[0].Body)
			if !strings.Contains(string(sink.msgs[0].Body), `"rows":[]`) {
				t.Errorf("want an empty rows array, got %s", sink.msgs[0].Body)
			}
			if e.Data.RowCount != 0 || !e.Data.LastBatch || e.Data.BatchCount == nil || *e.Data.BatchCount != 1 || e.Data.FirstRow != 1 || e.Data.BatchIndex != 0 {
				t.Errorf("want row_count 0, last_batch, batch_count 1, first_row 1, batch_index 0; got %+v", e.Data)
			}
			if e.Data.Columns == nil || !reflect.DeepEqual(e.Data.Columns, tt.cols) {
				t.Errorf("columns: want %q, got %q", tt.cols, e.Data.Columns)
			}
			if e.ID != "x/E/0" {
				t.Errorf("id: want x/E/0, got %s", e.ID)
			}
		})
	}
}

func TestCSVErrors(t *testing.T) {
	tests := []struct {
		name, in string
		opts     EntityOptions
		want     string
	}{
		{"too few fields", "A,B\n1,2\n3\n", EntityOptions{}, "row 2 (line 3): has 1 fields, header has 2"},
		{"too many fields", "A,B\n1,2,3\n", EntityOptions{}, "row 1 (line 2): has 3 fields, header has 2"},
		{"line counts quoted newlines", "A,B\n\"x\ny\",2\n1\n", EntityOptions{}, "row 2 (line 4): has 1 fields, header has 2"},
		{"bare quote, strict", "A,B\n1,2\n3,x\"y\n", EntityOptions{StrictQuotes: true}, "row 2: line 3, column 4: '\"' in an unquoted field"},
		{"undoubled quote, strict", "A,B\n\"27\" monitor\",2\n", EntityOptions{StrictQuotes: true}, "row 1: line 2, column 5: unexpected ' ' after the closing '\"'"},
		{"no header without columns", "A\n", EntityOptions{NoHeader: true}, "set columns:"},
		{"header holds no field name", "C1,Contoso\r\nC2,Fabrikam\r\n", EntityOptions{FieldNames: []string{"ACCOUNTNUM", "NAME"}}, `the first row ("C1", "Contoso") holds none of the 2 field names Manifest.xml lists`},
		{"qualifier is the delimiter", "A\n", EntityOptions{Delimiter: ';', TextQualifier: ";"}, "is also the delimiter"},
		{"qualifier too long", "A\n", EntityOptions{TextQualifier: "''"}, "text qualifier \"''\" is not supported"},
		{"not utf-8 in a unicode format", "A\r\nok\r\nx\xe9y\r\n", EntityOptions{SourceFormat: "CSV-Unicode"}, "row 2: read: byte 8: 0xE9 0x79 is not valid utf-8"},
		{"not utf-8 in a unicode format names the setting", "A\r\nx\xe9y\r\n", EntityOptions{SourceFormat: "CSV-Unicode"}, "encoding: windows-1252"},
		{"utf-8, then not", "A\r\nü\r\nx\xe9y\r\n", EntityOptions{SourceFormat: "CSV"}, "row 2: read: byte 8: 0xE9 0x79 is not valid utf-8"},
		{"undefined windows-1252 byte", "A\r\nx\x81y\r\n", EntityOptions{Encoding: "windows-1252"}, "is not valid windows-1252"},
		{"unknown encoding", "A\r\n", EntityOptions{Encoding: "klingon"}, "klingon"},
		{"unterminated quote", "A,B\n\"1,2\n", EntityOptions{}, "row 1: line 2, column 1: the file ends inside a quoted field"},
		{"bad header", "A,\"B\n", EntityOptions{}, "header: line 1, column 1: the file ends inside a quoted field"},
		{"duplicate header", "A,B,A,C,B\n1,2,3,4,5\n", EntityOptions{}, `header has duplicate column names "A", "B"`},
		{"unknown format", "A\n", EntityOptions{Format: "json"}, `format "json" is not supported`},
		{"bad delimiter", "A\n", EntityOptions{Delimiter: '"'}, "delimiter '\"' is not supported"},
		{"negative batch", "A\n", EntityOptions{BatchSize: -1}, "batch size -1 is negative"},
		{"message too big", "A\n" + strings.Repeat("xxxxxxxxxx\n", 100), EntityOptions{MaxMessageBytes: 500}, "is over 500 bytes, the message size limit: lower batch_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			if o.Format == "" {
				o.Format = "csv"
			}
			_, err := PublishEntity(context.Background(), strings.NewReader(tt.in), &memSink{}, o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("want error containing %q, got %v", tt.want, err)
			}
		})
	}
}

func TestDetectDelimiter(t *testing.T) {
	tests := []struct {
		name, head string
		want       rune
	}{
		{"empty", "", ','},
		{"single column", "ACCOUNT\r\n1", ','},
		{"comma", "A,B,C", ','},
		{"semicolon beats comma", "A;B;C,D", ';'},
		{"tie goes to comma", "A,B;C", ','},
		{"tab", "A\tB\tC\n1,2,3,4,5", '\t'},
		{"pipe", "A|B", '|'},
		{"only first line", "A;B\n1,2,3,4", ';'},
		{"quoted ignored", "\"a,b,c,d\";\"e\"", ';'},
		{"quoted newline", "\"a\nb\";c\n1,2,3", ';'},
		{"colon", "A:B:C\r\n1:2:3", ':'},
		{"colon only without the others", "A:B,C\r\n", ','},
		{"times do not make colon", "C1,2024-03-01 00:00:00,2024-03-02 00:00:00\r\n", ','},
		{"colon in quotes ignored", "\"a:b\"\r\n", ','},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := detectDelimiter([]byte(tt.head), '"'); got != tt.want {
				t.Errorf("detectDelimiter(%q): want %q, got %q", tt.head, tt.want, got)
			}
		})
	}
}

// TestCSVHeaderRow: the first line is the header, unless header: false
// says it is data (Columns name the columns); the manifest's field map
// tells a header from data.
func TestCSVHeaderRow(t *testing.T) {
	tests := []struct {
		name, in string
		opts     EntityOptions
		cols     []string
		rows     []map[string]string
	}{
		{"header naming a listed field", "ACCOUNTNUM,NAME\r\nC1,Contoso\r\n", EntityOptions{FieldNames: []string{"NAME", "RECID"}},
			[]string{"ACCOUNTNUM", "NAME"}, []map[string]string{{"ACCOUNTNUM": "C1", "NAME": "Contoso"}}},
		{"header of names the map leaves out", "ACCOUNTNUM,NAME\r\nC1,Contoso\r\n", EntityOptions{FieldNames: []string{"RECID", "DATAAREAID"}},
			[]string{"ACCOUNTNUM", "NAME"}, []map[string]string{{"ACCOUNTNUM": "C1", "NAME": "Contoso"}}},
		{"map in another case", "accountnum,Name\r\nC1,Contoso\r\n", EntityOptions{FieldNames: []string{"ACCOUNTNUM"}},
			[]string{"accountnum", "Name"}, []map[string]string{{"accountnum": "C1", "Name": "Contoso"}}},
		{"no header row", "C1,Contoso\r\nC2,\"Fabrikam, Inc.\"\r\n", EntityOptions{NoHeader: true, Columns: []string{"ACCOUNTNUM", "NAME"}, FieldNames: []string{"NAME"}},
			[]string{"ACCOUNTNUM", "NAME"}, []map[string]string{{"ACCOUNTNUM": "C1", "NAME": "Contoso"}, {"ACCOUNTNUM": "C2", "NAME": "Fabrikam, Inc."}}},
		{"no header row, colon detected from data", "C1:Contoso\r\n", EntityOptions{NoHeader: true, Columns: []string{"ACCOUNTNUM", "NAME"}},
			[]string{"ACCOUNTNUM", "NAME"}, []map[string]string{{"ACCOUNTNUM": "C1", "NAME": "Contoso"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			o.Format, o.Entity = "csv", "E"
			sink := &memSink{}
			if _, err := PublishEntity(context.Background(), strings.NewReader(tt.in), sink, o); err != nil {
				t.Fatalf("PublishEntity: %v", err)
			}
			e := decodeEvent(t, sink.msgs[0].Body)
			if !reflect.DeepEqual(e.Data.Columns, tt.cols) {
				t.Errorf("columns: want %q, got %q", tt.cols, e.Data.Columns)
			}
			if !reflect.DeepEqual(e.Data.Rows, tt.rows) {
				t.Errorf("rows: want %q, got %q", tt.rows, e.Data.Rows)
			}
		})
	}
}

// utf32le encodes s as UTF-32 little endian, without a byte order mark.
func utf32le(s string) []byte {
	var b []byte
	for _, r := range s {
		b = binary.LittleEndian.AppendUint32(b, uint32(r))
	}
	return b
}
