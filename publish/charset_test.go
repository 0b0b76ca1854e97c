package publish

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
	"golang.org/x/text/encoding/unicode"
)

func TestParseEncoding(t *testing.T) {
	tests := []struct {
		in, want string // want "" = an error
	}{
		{"utf-8", "utf-8"},
		{"UTF8", "utf-8"},
		{"65001", "utf-8"},
		{"1200", "utf-16le"},
		{"Unicode", "utf-16le"},
		{"UTF-16LE", "utf-16le"},
		{"1201", "utf-16be"},
		{"utf-16be", "utf-16be"},
		{"12000", "utf-32le"},
		{"12001", "utf-32be"},
		{"UTF-32BE", "utf-32be"},
		{"65000", "utf-7"},
		{"UTF-7", "utf-7"},
		{"1252", "windows-1252"},
		{"cp1252", "windows-1252"},
		{"CP1252", "windows-1252"},
		{"x-cp1252", "windows-1252"},
		{"Windows-1252", "windows-1252"},
		{"windows1252", "windows-1252"},
		{" 1252 ", "windows-1252"},
		{"1250", "windows-1250"},
		{"1251", "windows-1251"},
		{"1253", "windows-1253"},
		{"1254", "windows-1254"},
		{"1255", "windows-1255"},
		{"1256", "windows-1256"},
		{"1257", "windows-1257"},
		{"1258", "windows-1258"},
		{"874", "windows-874"},
		{"437", "ibm437"},
		{"cp437", "ibm437"},
		{"850", "ibm850"},
		{"IBM850", "ibm850"},
		{"852", "ibm852"},
		{"866", "ibm866"},
		{"932", "shift_jis"},
		{"ms932", "shift_jis"},
		{"Shift_JIS", "shift_jis"},
		{"sjis", "shift_jis"},
		{"MS_Kanji", "shift_jis"},
		{"936", "gbk"},
		{"GBK", "gbk"},
		{"949", "euc-kr"},
		{"ks_c_5601-1987", "euc-kr"},
		{"950", "big5"},
		{"Big5", "big5"},
		{"20127", "us-ascii"},
		{"ascii", "us-ascii"},
		{"US-ASCII", "us-ascii"},
		{"28591", "iso-8859-1"},
		{"iso-8859-1", "iso-8859-1"},
		{"ISO-8859-1", "iso-8859-1"},
		{"latin1", "iso-8859-1"},
		{"iso88591", "iso-8859-1"},
		{"ISO_8859-1:1987", "iso-8859-1"},
		{"28592", "iso-8859-2"},
		{"csISOLatin2", "iso-8859-2"},
		{"28599", "iso-8859-9"},
		{"latin5", "iso-8859-9"},
		{"28605", "iso-8859-15"},
		{"20866", "koi8-r"},
		{"KOI8-R", "koi8-r"},
		{"21866", "koi8-u"},
		{"51932", "euc-jp"},
		{"EUC-JP", "euc-jp"},
		{"54936", "gb18030"},
		{"gb18030", "gb18030"},
		{"", ""},
		{"klingon", ""},
		{"1234", ""},
		{"cp9999", ""},
		{"iso-2022-jp", ""}, // stateful: not supported
		{"tis-620", ""},     // WHATWG reads it as windows-874, which differs
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseEncoding(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("ParseEncoding(%q) = %q, want an error", tc.in, got)
				}
				if !strings.Contains(err.Error(), "windows-1252") {
					t.Errorf("error %q names no valid example", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseEncoding(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

// readText reads all of r with reads of size n; it returns the text and the
// error that ended it (nil for io.EOF), and checks the error is sticky.
func readText(t *testing.T, r io.Reader, n int) ([]byte, error) {
	t.Helper()
	var out []byte
	buf := make([]byte, n)
	for {
		m, err := r.Read(buf)
		out = append(out, buf[:m]...)
		if err == nil {
			continue
		}
		if m2, err2 := r.Read(buf); m2 != 0 || !errors.Is(err2, err) {
			t.Errorf("Read after %v = %d, %v; want 0 and the same error", err, m2, err2)
		}
		if err == io.EOF {
			err = nil
		}
		return out, err
	}
}

func enc16(s string, be bool) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		if be {
			b = append(b, byte(u>>8), byte(u))
		} else {
			b = append(b, byte(u), byte(u>>8))
		}
	}
	return b
}

func enc32(s string, be bool) []byte {
	var b []byte
	for _, r := range s {
		if be {
			b = append(b, 0, byte(r>>16), byte(r>>8), byte(r))
		} else {
			b = append(b, byte(r), byte(r>>8), byte(r>>16), 0)
		}
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func mustEncode(t testing.TB, e encoding.Encoding, s string) []byte {
	t.Helper()
	b, err := e.NewEncoder().Bytes([]byte(s))
	if err != nil {
		t.Fatalf("encode %q: %v", s, err)
	}
	return b
}

func mustDecode(t testing.TB, e encoding.Encoding, b []byte) string {
	t.Helper()
	s, err := e.NewDecoder().Bytes(b)
	if err != nil {
		t.Fatalf("decode % X: %v", b, err)
	}
	return string(s)
}

var (
	bomUTF8    = []byte{0xEF, 0xBB, 0xBF}
	bomUTF16LE = []byte{0xFF, 0xFE}
	bomUTF16BE = []byte{0xFE, 0xFF}
	bomUTF32LE = []byte{0xFF, 0xFE, 0, 0}
	bomUTF32BE = []byte{0, 0, 0xFE, 0xFF}
)

type textCase struct {
	name        string
	in          []byte
	encoding    string // the setting
	format      string // the source format
	want        string // the text delivered (before the error, if any)
	wantEnc     string // encoding() at the end
	wantDefault bool
	wantErr     *EncodingError // Offset, Encoding, Bytes; nil: no error
	hint        string         // a part of the hint, when it matters
}

func textCases(t testing.TB) []textCase {
	const western = "Straße,Müller,café,€5,Œuvre\r\n"
	w1252 := mustEncode(t, charmap.Windows1252, western)
	header := "CUSTOMERACCOUNT,NAME\r\n"
	cases := []textCase{
		// Byte order marks.
		{name: "bom utf-8", in: cat(bomUTF8, []byte("a,é\r\n")), want: "a,é\r\n", wantEnc: "utf-8"},
		{name: "bom utf-16le", in: cat(bomUTF16LE, enc16(header+western, false)), want: header + western, wantEnc: "utf-16le"},
		{name: "bom utf-16be", in: cat(bomUTF16BE, enc16(header+western+"😀", true)), want: header + western + "😀", wantEnc: "utf-16be"},
		{name: "bom utf-32le not read as utf-16le", in: cat(bomUTF32LE, enc32("A,é😀", false)), want: "A,é😀", wantEnc: "utf-32le"},
		{name: "bom utf-32be", in: cat(bomUTF32BE, enc32("A,é😀", true)), want: "A,é😀", wantEnc: "utf-32be"},
		{name: "bom utf-7 +/v8-", in: []byte("+/v8-Hi"), want: "Hi", wantEnc: "utf-7"},
		{name: "bom utf-7 +/v9", in: []byte("+/v9OAA-x"), want: "一x", wantEnc: "utf-7"},
		{name: "bom utf-7 +/v+", in: []byte("+/v+AHg-"), want: "\u801e", wantEnc: "utf-7"},
		{name: "bom wins over setting", in: cat(bomUTF8, []byte("é")), encoding: "windows-1252", want: "é", wantEnc: "utf-8"},
		{name: "bom utf-8 then bad byte", in: cat(bomUTF8, []byte("ab\xE9 ")), want: "ab", wantEnc: "utf-8",
			wantErr: &EncodingError{Offset: 5, Encoding: "utf-8", Bytes: []byte{0xE9, 0x20}}, hint: "byte order mark"},

		// Settings.
		{name: "setting 1252", in: w1252, encoding: "1252", want: western, wantEnc: "windows-1252"},
		{name: "setting cp1252", in: w1252, encoding: "cp1252", want: western, wantEnc: "windows-1252"},
		{name: "setting 1252 ignores format", in: w1252, encoding: "windows-1252", format: "CSV-Unicode", want: western, wantEnc: "windows-1252"},
		{name: "setting 1252 undefined byte", in: []byte("ab\x81c"), encoding: "1252", want: "ab", wantEnc: "windows-1252",
			wantErr: &EncodingError{Offset: 2, Encoding: "windows-1252", Bytes: []byte{0x81}}, hint: "encoding: to the code page"},
		{name: "setting latin1 keeps C1", in: []byte("\x80\x9F\xE9"), encoding: "latin1", want: "\u0080\u009Fé", wantEnc: "iso-8859-1"},
		{name: "setting 28591", in: []byte("\x80"), encoding: "28591", want: "\u0080", wantEnc: "iso-8859-1"},
		{name: "setting 20127", in: []byte("ok\x80"), encoding: "20127", want: "ok", wantEnc: "us-ascii",
			wantErr: &EncodingError{Offset: 2, Encoding: "us-ascii", Bytes: []byte{0x80}}},
		{name: "setting 65001", in: []byte("a\xEF\xBF\xBDb"), encoding: "65001", want: "a\uFFFDb", wantEnc: "utf-8"},
		{name: "setting 65001 bad byte", in: []byte("abc\xE9def"), encoding: "65001", want: "abc", wantEnc: "utf-8",
			wantErr: &EncodingError{Offset: 3, Encoding: "utf-8", Bytes: []byte{0xE9, 'd'}}, hint: "windows-1252"},
		{name: "setting utf-8 cut at end", in: []byte("ab\xE2\x82"), encoding: "utf-8", want: "ab", wantEnc: "utf-8",
			wantErr: &EncodingError{Offset: 2, Encoding: "utf-8", Bytes: []byte{0xE2, 0x82}}},
		{name: "setting utf-8 surrogate", in: []byte("ab\xED\xA0\x80"), encoding: "utf-8", want: "ab", wantEnc: "utf-8",
			wantErr: &EncodingError{Offset: 2, Encoding: "utf-8", Bytes: []byte{0xED, 0xA0}}},
		{name: "setting 1200", in: enc16(western, false), encoding: "1200", want: western, wantEnc: "utf-16le"},
		{name: "setting 1201", in: enc16(western, true), encoding: "1201", want: western, wantEnc: "utf-16be"},
		{name: "setting 12000", in: enc32(western, false), encoding: "12000", want: western, wantEnc: "utf-32le"},
		{name: "setting 12001", in: enc32(western, true), encoding: "12001", want: western, wantEnc: "utf-32be"},
		{name: "setting 1200 with bom", in: cat(bomUTF16LE, enc16("x", false)), encoding: "1200", want: "x", wantEnc: "utf-16le"},

		// UTF-16 and UTF-32 errors and sniffing.
		{name: "utf-16le unpaired high surrogate", in: cat(bomUTF16LE, []byte{'A', 0, 0x00, 0xD8, 'B', 0}), want: "A", wantEnc: "utf-16le",
			wantErr: &EncodingError{Offset: 4, Encoding: "utf-16le", Bytes: []byte{0x00, 0xD8, 'B', 0}}},
		{name: "utf-16le lone low surrogate", in: cat(bomUTF16LE, []byte{'A', 0, 0x00, 0xDC}), want: "A", wantEnc: "utf-16le",
			wantErr: &EncodingError{Offset: 4, Encoding: "utf-16le", Bytes: []byte{0x00, 0xDC}}},
		{name: "utf-16be high surrogate at end", in: cat(bomUTF16BE, []byte{0, 'A', 0xD8, 0x3D}), want: "A", wantEnc: "utf-16be",
			wantErr: &EncodingError{Offset: 4, Encoding: "utf-16be", Bytes: []byte{0xD8, 0x3D}}},
		{name: "utf-16le odd last byte", in: cat(bomUTF16LE, []byte{'A', 0, 'B'}), want: "A", wantEnc: "utf-16le",
			wantErr: &EncodingError{Offset: 4, Encoding: "utf-16le", Bytes: []byte{'B'}}, hint: "byte order mark"},
		{name: "utf-16le sniffed", in: enc16(header+western, false), want: header + western, wantEnc: "utf-16le"},
		{name: "utf-16be sniffed", in: enc16(header+western, true), want: header + western, wantEnc: "utf-16be"},
		{name: "utf-16le sniffed in csv-unicode", in: enc16(header, false), format: "CSV-Unicode", want: header, wantEnc: "utf-16le"},
		{name: "utf-32le sniffed", in: enc32(header+western, false), want: header + western, wantEnc: "utf-32le"},
		{name: "utf-32be sniffed", in: enc32(header+western, true), want: header + western, wantEnc: "utf-32be"},
		{name: "utf-32le above 10FFFF", in: cat(bomUTF32LE, enc32("A", false), []byte{0, 0, 0x11, 0}), want: "A", wantEnc: "utf-32le",
			wantErr: &EncodingError{Offset: 8, Encoding: "utf-32le", Bytes: []byte{0, 0, 0x11, 0}}},
		{name: "utf-32le surrogate", in: cat(bomUTF32LE, []byte{0x00, 0xD8, 0, 0}), want: "", wantEnc: "utf-32le",
			wantErr: &EncodingError{Offset: 4, Encoding: "utf-32le", Bytes: []byte{0x00, 0xD8, 0, 0}}},
		{name: "utf-32be short last unit", in: cat(bomUTF32BE, enc32("A", true), []byte{0, 0}), want: "A", wantEnc: "utf-32be",
			wantErr: &EncodingError{Offset: 8, Encoding: "utf-32be", Bytes: []byte{0, 0}}},

		// UTF-7.
		{name: "utf-7 rfc example", in: []byte("Hi Mom -+Jjo--!"), encoding: "utf-7", want: "Hi Mom -☺-!", wantEnc: "utf-7"},
		{name: "utf-7 e acute", in: []byte("+AOk-"), encoding: "65000", want: "é", wantEnc: "utf-7"},
		{name: "utf-7 run ended by a direct char", in: []byte("A+ImIDkQ."), encoding: "utf-7", want: "A≢Α.", wantEnc: "utf-7"},
		{name: "utf-7 plus minus", in: []byte("1 +- 1"), encoding: "utf-7", want: "1 + 1", wantEnc: "utf-7"},
		{name: "utf-7 surrogate pair", in: []byte("+2D3eAA-"), encoding: "utf-7", want: "😀", wantEnc: "utf-7"},
		// A run ending with unused (zero) bits leaves none for the next.
		{name: "utf-7 runs after a run with leftover bits", in: []byte("+Z3FOrFVGTos-,+2D3eAA- +A6k-"), encoding: "utf-7", want: "東京商事,😀 Ω", wantEnc: "utf-7"},
		{name: "utf-7 run at end", in: []byte("x+AOk"), encoding: "utf-7", want: "xé", wantEnc: "utf-7"},
		{name: "utf-7 leftover bits not zero", in: []byte("ab+AOl-"), encoding: "utf-7", want: "abé", wantEnc: "utf-7",
			wantErr: &EncodingError{Offset: 6, Encoding: "utf-7", Bytes: []byte{'-'}}},
		{name: "utf-7 plus then bang", in: []byte("a+!"), encoding: "utf-7", want: "a", wantEnc: "utf-7",
			wantErr: &EncodingError{Offset: 2, Encoding: "utf-7", Bytes: []byte{'!'}}},
		{name: "utf-7 unpaired high surrogate", in: []byte("+2D0-"), encoding: "utf-7", want: "", wantEnc: "utf-7",
			wantErr: &EncodingError{Offset: 4, Encoding: "utf-7", Bytes: []byte{'-'}}},
		{name: "utf-7 8-bit byte", in: []byte("ab\xE9"), encoding: "utf-7", want: "ab", wantEnc: "utf-7",
			wantErr: &EncodingError{Offset: 2, Encoding: "utf-7", Bytes: []byte{0xE9}}},
		{name: "utf-7 lone plus at end", in: []byte("ab+"), encoding: "utf-7", want: "ab", wantEnc: "utf-7",
			wantErr: &EncodingError{Offset: 3, Encoding: "utf-7"}},

		// The auto rule (no BOM, no setting, a non-Unicode format).
		{name: "auto ascii", in: []byte(header), format: "CSV", want: header, wantEnc: "utf-8"},
		{name: "auto empty", in: nil, format: "CSV", want: "", wantEnc: "utf-8"},
		{name: "auto 1252", in: cat([]byte(header), w1252), format: "CSV", want: header + western, wantEnc: "windows-1252", wantDefault: true},
		{name: "auto 1252 first byte", in: w1252[4:], format: "", want: western[4:], wantEnc: "windows-1252", wantDefault: true},
		{name: "auto 1252 lead byte cut at end", in: []byte("ab\xC3"), format: "CSV", want: "abÃ", wantEnc: "windows-1252", wantDefault: true},
		{name: "auto 1252 undefined byte", in: []byte("ab\xE9\x81"), format: "CSV", want: "abé", wantEnc: "windows-1252", wantDefault: true,
			wantErr: &EncodingError{Offset: 3, Encoding: "windows-1252", Bytes: []byte{0x81}}, hint: "default for non-Unicode"},
		{name: "auto utf-8", in: []byte(header + western), format: "CSV", want: header + western, wantEnc: "utf-8"},
		{name: "auto utf-8 then bad byte", in: []byte(header + "1,é\r\n2,caf\xE9 au lait\r\n"), format: "CSV",
			want: header + "1,é\r\n2,caf", wantEnc: "utf-8",
			wantErr: &EncodingError{Offset: int64(len(header) + len("1,é\r\n2,caf")), Encoding: "utf-8", Bytes: []byte{0xE9, 0x20}},
			hint:    "set encoding: windows-1252"},

		// Unicode formats: UTF-8, validated.
		{name: "csv-unicode utf-8", in: []byte(western), format: "CSV-Unicode", want: western, wantEnc: "utf-8"},
		{name: "csv-unicode 1252 bytes", in: cat([]byte("ab"), w1252), format: "csv-unicode", want: "abStra", wantEnc: "utf-8",
			wantErr: &EncodingError{Offset: 6, Encoding: "utf-8", Bytes: []byte{0xDF, 'e'}}, hint: "source format csv-unicode says Unicode"},
		{name: "xml-element utf-8", in: []byte("<Document><A>é</A></Document>"), format: "XML-Element", want: "<Document><A>é</A></Document>", wantEnc: "utf-8"},
		{name: "xml-attribute bad byte", in: []byte("<D a=\"\xE9\"/>"), format: "XML-Attribute", want: "<D a=\"", wantEnc: "utf-8",
			wantErr: &EncodingError{Offset: 6, Encoding: "utf-8", Bytes: []byte{0xE9, '"'}}},
	}

	// Code pages: the reference is x/text's own decoder on the same valid bytes.
	for _, cp := range []struct {
		setting string
		enc     encoding.Encoding
		text    string
	}{
		{"1250", charmap.Windows1250, "Łódź,Žluťoučký kůň,Őrség\r\n"},
		{"1251", charmap.Windows1251, "Москва,Київ\r\n"},
		{"1253", charmap.Windows1253, "Αθήνα\r\n"},
		{"1254", charmap.Windows1254, "İstanbul,Ağrı\r\n"},
		{"1255", charmap.Windows1255, "שלום\r\n"},
		{"1256", charmap.Windows1256, "مرحبا\r\n"},
		{"1257", charmap.Windows1257, "Rīga,Vilnius\r\n"},
		{"1258", charmap.Windows1258, "Hà Nam,Đà\r\n"},
		{"874", charmap.Windows874, "กรุงเทพ\r\n"},
		{"437", charmap.CodePage437, "╔═╗ café\r\n"},
		{"850", charmap.CodePage850, "Ærø,café\r\n"},
		{"852", charmap.CodePage852, "Łódź\r\n"},
		{"866", charmap.CodePage866, "Москва\r\n"},
		{"28592", charmap.ISO8859_2, "Łódź\r\n"},
		{"28605", charmap.ISO8859_15, "€ œ\r\n"},
		{"20866", charmap.KOI8R, "Москва\r\n"},
		{"21866", charmap.KOI8U, "Київ\r\n"},
		{"932", japanese.ShiftJIS, "東京,ｶﾀｶﾅ,テスト\r\n"},
		{"51932", japanese.EUCJP, "東京,テスト\r\n"},
		{"936", simplifiedchinese.GBK, "北京,上海\r\n"},
		{"54936", simplifiedchinese.GB18030, "北京,😀,\uFFFD\r\n"},
		{"949", korean.EUCKR, "서울,부산\r\n"},
		{"950", traditionalchinese.Big5, "臺北,高雄\r\n"},
	} {
		in := mustEncode(t, cp.enc, cp.text)
		want := mustDecode(t, cp.enc, in)
		name, _ := ParseEncoding(cp.setting)
		cases = append(cases, textCase{name: "code page " + cp.setting, in: in, encoding: cp.setting, want: want, wantEnc: name})
	}
	cases = append(cases,
		textCase{name: "shift_jis bad trail byte", in: []byte("ab\x81\x20cd"), encoding: "932", want: "ab", wantEnc: "shift_jis",
			wantErr: &EncodingError{Offset: 2, Encoding: "shift_jis", Bytes: []byte{0x81}}},
		textCase{name: "shift_jis cut at end", in: cat(mustEncode(t, japanese.ShiftJIS, "東京"), []byte{0x93}), encoding: "932", want: "東京", wantEnc: "shift_jis",
			wantErr: &EncodingError{Offset: 4, Encoding: "shift_jis", Bytes: []byte{0x93}}},
		textCase{name: "gbk undefined", in: cat(mustEncode(t, simplifiedchinese.GBK, "北京"), []byte{0xFF, 'x'}), encoding: "gbk", want: "北京", wantEnc: "gbk",
			wantErr: &EncodingError{Offset: 4, Encoding: "gbk", Bytes: []byte{0xFF}}},
		textCase{name: "gb18030 legit U+FFFD then bad", in: []byte("a\x84\x31\xA4\x37b\x84\x31\xA4\x37\xFF"), encoding: "gb18030", want: "a\uFFFDb\uFFFD", wantEnc: "gb18030",
			wantErr: &EncodingError{Offset: 10, Encoding: "gb18030", Bytes: []byte{0xFF}}},
	)
	return cases
}

// TestTextReader reads every case whole, through a reader that gives one
// byte at a time, and with one-byte reads of the output: all three must
// give the same text, encoding and error.
func TestTextReader(t *testing.T) {
	for _, tc := range textCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			for _, how := range []string{"whole", "one byte in", "one byte out", "odd reads"} {
				var in io.Reader = bytes.NewReader(tc.in)
				if how == "one byte in" {
					in = iotest.OneByteReader(in)
				}
				if how == "odd reads" {
					in = iotest.HalfReader(in)
				}
				tr, err := newTextReader(in, tc.encoding, tc.format)
				if err != nil {
					t.Fatalf("%s: newTextReader: %v", how, err)
				}
				size := 32 << 10
				switch how {
				case "one byte out":
					size = 1
				case "odd reads":
					size = 17
				}
				got, err := readText(t, tr, size)
				if string(got) != tc.want {
					t.Errorf("%s: text\n got %q\nwant %q", how, got, tc.want)
				}
				if !utf8.Valid(got) {
					t.Errorf("%s: text is not valid UTF-8: %q", how, got)
				}
				if tr.encoding() != tc.wantEnc || tr.defaulted() != tc.wantDefault {
					t.Errorf("%s: encoding, defaulted = %q, %v; want %q, %v", how, tr.encoding(), tr.defaulted(), tc.wantEnc, tc.wantDefault)
				}
				checkEncodingError(t, how, err, tc.wantErr, tc.hint)
			}
		})
	}
}

func checkEncodingError(t *testing.T, how string, err error, want *EncodingError, hint string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Errorf("%s: error %v, want none", how, err)
		}
		return
	}
	var e *EncodingError
	if !errors.As(err, &e) {
		t.Errorf("%s: error %v, want an *EncodingError at byte %d", how, err, want.Offset)
		return
	}
	if e.Offset != want.Offset || e.Encoding != want.Encoding || !bytes.Equal(e.Bytes, want.Bytes) {
		t.Errorf("%s: error at byte %d in %s, bytes % X; want byte %d in %s, bytes % X (%v)",
			how, e.Offset, e.Encoding, e.Bytes, want.Offset, want.Encoding, want.Bytes, e)
	}
	if e.Hint == "" || !strings.Contains(e.Hint, hint) {
		t.Errorf("%s: hint %q, want one with %q", how, e.Hint, hint)
	}
	if !strings.HasPrefix(e.Error(), fmt.Sprintf("byte %d: ", want.Offset)) || !strings.Contains(e.Error(), e.Hint) {
		t.Errorf("%s: message %q", how, e.Error())
	}
}

func TestEncodingErrorMessage(t *testing.T) {
	e := &EncodingError{Offset: 1234, Encoding: "utf-8", Bytes: []byte{0xE9, 0x20},
		Hint: "set encoding: windows-1252 (or the code page the file was written in) for this entity"}
	want := "byte 1234: 0xE9 0x20 is not valid utf-8: set encoding: windows-1252 (or the code page the file was written in) for this entity"
	if got := e.Error(); got != want {
		t.Errorf("Error()\n got %q\nwant %q", got, want)
	}
}

func TestTextReaderBadSetting(t *testing.T) {
	if _, err := newTextReader(strings.NewReader("x"), "klingon", "CSV"); err == nil {
		t.Fatal("newTextReader accepted encoding klingon")
	}
}

// TestTextReaderReadError: a failing file delivers the good text before the
// failure, then the failure, not an encoding error for a sequence it cut.
func TestTextReaderReadError(t *testing.T) {
	for _, tc := range []struct {
		name, encoding string
		in             []byte
		want           string
	}{
		{"utf-8 cut sequence", "utf-8", []byte("abc\xC3"), "abc"},
		{"auto", "", []byte("abc"), "abc"},
		{"utf-16le", "utf-16le", []byte("a\x00b"), "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			boom := errors.New("boom")
			r := io.MultiReader(bytes.NewReader(tc.in), iotest.ErrReader(boom))
			tr, err := newTextReader(r, tc.encoding, "CSV")
			if err != nil {
				t.Fatal(err)
			}
			got, err := readText(t, tr, 64)
			if string(got) != tc.want || !errors.Is(err, boom) {
				t.Errorf("got %q, %v; want %q, %v", got, err, tc.want, boom)
			}
		})
	}
}

// TestSingleByteUndefined pins which bytes x/text leaves undefined in the
// code pages F&O uses most: they must be errors, not U+FFFD.
func TestSingleByteUndefined(t *testing.T) {
	for _, tc := range []struct {
		enc  string
		want []byte
	}{
		{"windows-1252", []byte{0x81, 0x8D, 0x8F, 0x90, 0x9D}},
		{"windows-1250", []byte{0x81, 0x83, 0x88, 0x90, 0x98}},
		{"iso-8859-1", nil},
	} {
		c, err := lookupCharset(tc.enc)
		if err != nil {
			t.Fatal(err)
		}
		tab := singleByteTable(c)
		var got []byte
		for b := 0; b < 256; b++ {
			if tab.utf8[b][3] == 0 {
				got = append(got, byte(b))
			}
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%s: undefined bytes % X, want % X", tc.enc, got, tc.want)
		}
	}
}

// csvText makes about size bytes of CSV in the shape F&O writes; names, when
// set, gives every row a few non-ASCII letters.
func csvText(size int, names []string) []byte {
	var b bytes.Buffer
	b.WriteString("CUSTOMERACCOUNT,NAME,CURRENCY,CREDITLIMIT,CREATEDDATETIME\r\n")
	for i := 0; b.Len() < size; i++ {
		name := "Contoso Retail Seattle"
		if names != nil {
			name = names[i%len(names)]
		}
		fmt.Fprintf(&b, "US-%06d,\"%s\",USD,%d.000000,2024-03-01 00:00:00\r\n", i, name, i%100000)
	}
	return b.Bytes()
}

func BenchmarkTextReaderUTF8(b *testing.B) {
	const size = 20 << 20
	mixed := []string{"Contoso Retail Seattle", "Müller GmbH", "Café Noir Straße", "Fabrikam, Inc.", "Łódź Sp. z o.o.", "東京商事"}
	western := []string{"Contoso Retail Seattle", "Müller GmbH", "Café Noir Straße", "Fabrikam, Inc.", "Œuvre €"}
	ascii := csvText(size, nil)
	w1252, err := charmap.Windows1252.NewEncoder().Bytes(csvText(size, western))
	if err != nil {
		b.Fatal(err)
	}
	u16, err := unicode.UTF16(unicode.LittleEndian, unicode.UseBOM).NewEncoder().Bytes(csvText(size/2, mixed))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name, encoding, format string
		in                     []byte
	}{
		{"raw copy", "-", "", ascii},
		{"ascii auto", "", "CSV", ascii},
		{"ascii utf-8", "", "CSV-Unicode", ascii},
		{"mixed utf-8 auto", "", "CSV", csvText(size, mixed)},
		{"mixed utf-8", "", "CSV-Unicode", csvText(size, mixed)},
		{"windows-1252 auto", "", "CSV", w1252},
		{"windows-1252 set", "1252", "CSV", w1252},
		{"utf-16le bom", "", "CSV-Unicode", u16},
	} {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, csvBufferSize)
			br := bytes.NewReader(bc.in)
			b.SetBytes(int64(len(bc.in)))
			for b.Loop() {
				br.Reset(bc.in)
				var r io.Reader = br
				if bc.encoding != "-" {
					tr, err := newTextReader(br, bc.encoding, bc.format)
					if err != nil {
						b.Fatal(err)
					}
					r = tr
				}
				for {
					_, err := r.Read(buf)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
