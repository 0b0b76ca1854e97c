package dmftest

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/encoding/unicode/utf32"
)

// textHeader and textRows are the table every TextFile case writes.
var (
	textHeader = []string{"ITEMID", "NAME", "PRICE"}
	textRows   = [][]string{
		{"A1", "Café crème", "3.50"},
		{"A2", `27" monitor, matte`, "199.00"},
		{"A3", "two\r\nlines", ""},
	}
)

func TestTextFileCodePages(t *testing.T) {
	tests := []struct {
		name     string
		cp       int
		bom      bool
		prefix   []byte
		decoder  encoding.Encoding // nil: UTF-7, decoded by hand
		wantSize int               // bytes per ASCII character, 0: not checked
	}{
		{"zero is UTF-8 without BOM", 0, false, []byte("ITEMID,"), unicode.UTF8, 0},
		{"UTF-8 with BOM", 65001, true, []byte{0xEF, 0xBB, 0xBF, 'I'}, unicode.UTF8BOM, 0},
		{"UTF-16 LE with BOM", 1200, true, []byte{0xFF, 0xFE, 'I', 0}, unicode.UTF16(unicode.LittleEndian, unicode.ExpectBOM), 0},
		{"UTF-16 LE without BOM", 1200, false, []byte{'I', 0, 'T', 0}, unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM), 2},
		{"UTF-16 BE with BOM", 1201, true, []byte{0xFE, 0xFF, 0, 'I'}, unicode.UTF16(unicode.BigEndian, unicode.ExpectBOM), 0},
		{"UTF-32 LE with BOM", 12000, true, []byte{0xFF, 0xFE, 0, 0, 'I', 0, 0, 0}, utf32.UTF32(utf32.LittleEndian, utf32.ExpectBOM), 0},
		{"UTF-32 BE without BOM", 12001, false, []byte{0, 0, 0, 'I'}, utf32.UTF32(utf32.BigEndian, utf32.IgnoreBOM), 4},
		{"UTF-7 has no BOM", 65000, true, []byte("ITEMID,"), nil, 0},
		{"Windows-1252", 1252, false, []byte("ITEMID,"), charmap.Windows1252, 1},
		{"Windows-1252 ignores BOM", 1252, true, []byte("ITEMID,"), charmap.Windows1252, 1},
		{"ISO 8859-15", 28605, false, []byte("ITEMID,"), charmap.ISO8859_15, 1},
		{"OEM 850", 850, false, []byte("ITEMID,"), charmap.CodePage850, 1},
		{"EBCDIC 1140", 1140, false, []byte{0xC9, 0xE3}, charmap.CodePage1140, 1},
	}
	want := "ITEMID,NAME,PRICE\r\nA1,Café crème,3.50\r\nA2,\"27\"\" monitor, matte\",199.00\r\nA3,\"two\r\nlines\",\r\n"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TextFile(TextFormat{CodePage: tt.cp, BOM: tt.bom}, textHeader, textRows)
			if err != nil {
				t.Fatalf("want a file, got %v", err)
			}
			if !bytes.HasPrefix(got, tt.prefix) {
				t.Errorf("want bytes starting % x, got % x", tt.prefix, got[:min(len(got), 8)])
			}
			var text string
			if tt.decoder == nil {
				text = decodeUTF7(t, string(got))
			} else {
				b, err := tt.decoder.NewDecoder().Bytes(got)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				text = string(b)
			}
			if text != want {
				t.Errorf("decoded file:\nwant %q\ngot  %q", want, text)
			}
			if tt.wantSize > 0 && len(got) != tt.wantSize*utf8.RuneCountInString(want) {
				t.Errorf("want %d bytes per character (%d in all), got %d", tt.wantSize, tt.wantSize*utf8.RuneCountInString(want), len(got))
			}
		})
	}
}

// decodeUTF7 decodes the UTF-7 the writer produces (every base64 run ends
// in "-"), independently of utf7.
func decodeUTF7(t *testing.T, s string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var out []rune
	for i := 0; i < len(s); i++ {
		if s[i] != '+' {
			out = append(out, rune(s[i]))
			continue
		}
		end := strings.IndexByte(s[i:], '-')
		if end < 0 {
			t.Fatalf("unterminated UTF-7 run at %d", i)
		}
		var bits, n uint32
		var units []uint16
		for _, c := range s[i+1 : i+end] {
			bits = bits<<6 | uint32(strings.IndexRune(alphabet, c))
			if n += 6; n >= 16 {
				n -= 16
				units = append(units, uint16(bits>>n))
			}
		}
		if end == 1 {
			out = append(out, '+')
		}
		for len(units) > 0 {
			r := rune(units[0])
			units = units[1:]
			if r >= 0xD800 && r < 0xDC00 && len(units) > 0 {
				r = (r-0xD800)<<10 | (rune(units[0]) - 0xDC00) + 0x10000
				units = units[1:]
			}
			out = append(out, r)
		}
		i += end
	}
	return string(out)
}

func TestUTF7Vectors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"e acute", "é", "+AOk-"},
		{"RFC 2152 smiley", "Hi Mom -☺-!", "Hi Mom -+Jjo--!"},
		{"RFC 2152 A-not-identical", "A≢Α.", "A+ImIDkQ-."},
		{"plus sign", "1+1", "1+-1"},
		{"backslash and tilde", `a\~`, "a+AFwAfg-"},
		{"outside the BMP", "🚚", "+2D3emg-"},
		{"plain ASCII", "Hello, world\r\n", "Hello, world\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := utf7(tt.in); got != tt.want {
				t.Errorf("utf7(%q): want %q, got %q", tt.in, tt.want, got)
			}
			if back := decodeUTF7(t, utf7(tt.in)); back != tt.in {
				t.Errorf("round trip of %q gave %q", tt.in, back)
			}
		})
	}
}

func TestTextFileShapes(t *testing.T) {
	tests := []struct {
		name string
		o    TextFormat
		want string
	}{
		{"semicolon", TextFormat{Delimiter: ';'}, "ITEMID;NAME;PRICE\r\nA1;Café crème;3.50\r\nA2;\"27\"\" monitor, matte\";199.00\r\nA3;\"two\r\nlines\";\r\n"},
		{"colon and no header", TextFormat{Delimiter: ':', NoHeader: true}, "A1:Café crème:3.50\r\nA2:\"27\"\" monitor, matte\":199.00\r\nA3:\"two\r\nlines\":\r\n"},
		{"tab", TextFormat{Delimiter: '\t', NoHeader: true}, "A1\tCafé crème\t3.50\r\nA2\t\"27\"\" monitor, matte\"\t199.00\r\nA3\t\"two\r\nlines\"\t\r\n"},
		{"pipe with undoubled quotes", TextFormat{Delimiter: '|', NoHeader: true, UndoubledQuotes: true}, "A1|Café crème|3.50\r\nA2|\"27\" monitor, matte\"|199.00\r\nA3|\"two\r\nlines\"|\r\n"},
		{"single quote qualifier", TextFormat{Qualifier: '\'', NoHeader: true}, "A1,Café crème,3.50\r\nA2,'27\" monitor, matte',199.00\r\nA3,'two\r\nlines',\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TextFile(tt.o, textHeader, textRows)
			if err != nil {
				t.Fatalf("want a file, got %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("want %q\ngot  %q", tt.want, got)
			}
		})
	}
}

func TestTextFileFixedWidth(t *testing.T) {
	header := []string{"ID", "NAME", "AMOUNT"}
	rows := [][]string{{"1", "Müller", "12.50"}, {"22", "Straße 7, Köln", ""}, {"333", "", "7"}}
	widths := []int{4, 15, 8}
	tests := []struct {
		name       string
		o          TextFormat
		wantHeader bool
	}{
		{"no header", TextFormat{Widths: widths}, false},
		{"NoHeader false does not add one", TextFormat{Widths: widths, NoHeader: false}, false},
		{"header enabled", TextFormat{Widths: widths, FixedHeader: true}, true},
		{"header in code page 1252", TextFormat{Widths: widths, FixedHeader: true, CodePage: 1252}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TextFile(tt.o, header, rows)
			if err != nil {
				t.Fatalf("want a file, got %v", err)
			}
			if tt.o.CodePage == 1252 {
				if got, err = charmap.Windows1252.NewDecoder().Bytes(got); err != nil {
					t.Fatal(err)
				}
			}
			lines := strings.Split(strings.TrimSuffix(string(got), "\r\n"), "\r\n")
			want := rows
			if tt.wantHeader {
				want = append([][]string{header}, rows...)
			}
			if len(lines) != len(want) {
				t.Fatalf("want %d lines, got %d: %q", len(want), len(lines), got)
			}
			for i, line := range lines {
				rs := []rune(line)
				if len(rs) != 4+15+8 {
					t.Errorf("line %d: want 27 characters, got %d: %q", i, len(rs), line)
					continue
				}
				at := 0
				for j, w := range widths {
					cell := string(rs[at : at+w])
					if strings.TrimRight(cell, " ") != want[i][j] || !strings.HasPrefix(cell, want[i][j]) {
						t.Errorf("line %d column %d: want %q left-aligned in %d characters, got %q", i, j, want[i][j], w, cell)
					}
					at += w
				}
			}
			if tt.o.SourceFormat() != "FixedWidth" {
				t.Errorf("want SourceFormat FixedWidth, got %s", tt.o.SourceFormat())
			}
		})
	}
}

func TestTextFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		o       TextFormat
		header  []string
		rows    [][]string
		wantErr string
	}{
		{"unicode in 1252", TextFormat{CodePage: 1252}, []string{"A"}, [][]string{{"ok"}, {"東京"}}, `line 2, column 1: "東京": can't export unicode data as an ascii file type`},
		{"euro in ISO 8859-1", TextFormat{CodePage: 28591}, []string{"A"}, [][]string{{"5 €"}}, "DMF1957"},
		{"unknown code page", TextFormat{CodePage: 99}, []string{"A"}, nil, "code page not supported: 99"},
		{"too wide", TextFormat{Widths: []int{3}}, []string{"A"}, [][]string{{"abcd"}}, "wider than its width 3"},
		{"header too wide", TextFormat{Widths: []int{3}, FixedHeader: true}, []string{"ABCD"}, nil, "line 0"},
		{"line break in fixed width", TextFormat{Widths: []int{9}}, []string{"A"}, [][]string{{"a\r\nb"}}, "line break"},
		{"wrong column count", TextFormat{Widths: []int{3, 3}}, []string{"A", "B"}, [][]string{{"a"}}, "1 values for 2 fixed widths"},
		{"delimiter equals qualifier", TextFormat{Delimiter: '"'}, []string{"A"}, nil, "must be distinct"},
		{"invalid UTF-8", TextFormat{}, []string{"A"}, [][]string{{"\xff"}}, "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := TextFile(tt.o, tt.header, tt.rows)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("want error containing %q, got %v", tt.wantErr, err)
			}
		})
	}
}

func TestTextFormatSourceFormat(t *testing.T) {
	tests := []struct {
		name string
		o    TextFormat
		want string
	}{
		{"default", TextFormat{}, "CSV-Unicode"},
		{"UTF-16", TextFormat{CodePage: 1200}, "CSV-Unicode"},
		{"UTF-7", TextFormat{CodePage: 65000}, "CSV-Unicode"},
		{"1252", TextFormat{CodePage: 1252}, "CSV"},
		{"fixed", TextFormat{Widths: []int{1}}, "FixedWidth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.o.SourceFormat(); got != tt.want {
				t.Errorf("want %s, got %s", tt.want, got)
			}
		})
	}
	for _, cp := range CodePages() {
		if _, err := TextFile(TextFormat{CodePage: cp}, []string{"A"}, [][]string{{"x"}}); err != nil {
			t.Errorf("code page %d listed by CodePages: %v", cp, err)
		}
	}
}

func TestCompositeXMLFile(t *testing.T) {
	records := []Record{
		{Name: "SALESORDERHEADERV2ENTITY", Fields: [][2]string{{"SALESORDERNUMBER", "SO-1"}, {"NOTE", ""}, {"NAME", `Müller & "Søn" <GmbH>`}},
			Children: []Record{
				{Name: "SALESORDERLINEV2ENTITY", Fields: [][2]string{{"LINENUMBER", "1"}, {"ITEMNUMBER", "A0001"}}},
				{Name: "SALESORDERLINEV2ENTITY", Fields: [][2]string{{"LINENUMBER", "2"}, {"ITEMNUMBER", "A0002"}}},
			}},
		{Name: "SALESORDERHEADERV2ENTITY", Fields: [][2]string{{"SALESORDERNUMBER", "SO-2"}}},
	}
	// node is a generic XML tree: attributes and child elements both become
	// fields, so both formats compare equal.
	type node struct {
		XMLName  xml.Name
		Attrs    []xml.Attr `xml:",any,attr"`
		Text     string     `xml:",chardata"`
		Children []node     `xml:",any"`
	}
	var flatten func(n node) Record
	flatten = func(n node) Record {
		r := Record{Name: n.XMLName.Local}
		for _, a := range n.Attrs {
			r.Fields = append(r.Fields, [2]string{a.Name.Local, a.Value})
		}
		for _, c := range n.Children {
			if len(c.Children) == 0 && len(c.Attrs) == 0 && strings.TrimSpace(c.Text) != "" {
				r.Fields = append(r.Fields, [2]string{c.XMLName.Local, c.Text})
				continue
			}
			r.Children = append(r.Children, flatten(c))
		}
		return r
	}
	want := "[{SALESORDERHEADERV2ENTITY [[SALESORDERNUMBER SO-1] [NAME Müller & \"Søn\" <GmbH>]] [{SALESORDERLINEV2ENTITY [[LINENUMBER 1] [ITEMNUMBER A0001]] []} {SALESORDERLINEV2ENTITY [[LINENUMBER 2] [ITEMNUMBER A0002]] []}]} {SALESORDERHEADERV2ENTITY [[SALESORDERNUMBER SO-2]] []}]"
	for _, tt := range []struct {
		name string
		attr bool
		mark string
	}{{"XML-Element", false, "<SALESORDERNUMBER>SO-1</SALESORDERNUMBER>"}, {"XML-Attribute", true, `SALESORDERNUMBER="SO-1"`}} {
		t.Run(tt.name, func(t *testing.T) {
			b := CompositeXMLFile(tt.attr, records)
			if !bytes.HasPrefix(b, []byte(`<?xml version="1.0" encoding="UTF-8"?>`+"\r\n<Document>")) || !bytes.Contains(b, []byte(tt.mark)) {
				t.Errorf("want a declaration, a Document root and %s, got:\n%s", tt.mark, b)
			}
			var doc node
			if err := xml.Unmarshal(b, &doc); err != nil {
				t.Fatalf("parse: %v\n%s", err, b)
			}
			var got []Record
			for _, c := range doc.Children {
				got = append(got, flatten(c))
			}
			if s := strings.ReplaceAll(strings.ReplaceAll(fmtRecords(got), "[] ", "[]"), "  ", " "); s != want {
				t.Errorf("records:\nwant %s\ngot  %s", want, s)
			}
		})
	}
}

// fmtRecords prints records with empty child lists as [].
func fmtRecords(rs []Record) string {
	var b strings.Builder
	b.WriteString("[")
	for i, r := range rs {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString("{" + r.Name + " [")
		for j, f := range r.Fields {
			if j > 0 {
				b.WriteString(" ")
			}
			b.WriteString("[" + f[0] + " " + f[1] + "]")
		}
		b.WriteString("] ")
		if len(r.Children) == 0 {
			b.WriteString("[]")
		} else {
			b.WriteString(fmtRecords(r.Children))
		}
		b.WriteString("}")
	}
	b.WriteString("]")
	return b.String()
}
