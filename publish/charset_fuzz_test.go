package publish

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/unicode"
)

// fuzzSettings are the (encoding, source format) pairs FuzzTextReader picks from.
var fuzzSettings = []struct{ encoding, format string }{
	{"", "CSV"},
	{"", "CSV-Unicode"},
	{"utf-8", "CSV"},
	{"utf-16le", "CSV"},
	{"utf-16be", "CSV"},
	{"utf-32le", "CSV"},
	{"windows-1252", "CSV"},
	{"utf-7", "CSV"},
	{"shift_jis", "CSV"},
	{"gb18030", "CSV"},
}

// replacementIn is how each encoding writes U+FFFD: text read with it may
// hold U+FFFD only where the file holds these bytes (nil: never).
var replacementIn = map[string][]byte{
	"utf-8":    {0xEF, 0xBF, 0xBD},
	"utf-16le": {0xFD, 0xFF},
	"utf-16be": {0xFF, 0xFD},
	"utf-32le": {0xFD, 0xFF, 0, 0},
	"utf-32be": {0, 0, 0xFF, 0xFD},
	"utf-7":    {'+'}, // base64: only a shift can hold it
	"gb18030":  {0x84, 0x31, 0xA4, 0x37},
}

// FuzzTextReader: the reader never panics, its text is valid UTF-8 whatever
// the input, it holds U+FFFD only where the input encodes it, an error
// points at bytes that are in the file, reading one byte at a time changes
// nothing, and where x/text decodes the same bytes the text is the same.
func FuzzTextReader(f *testing.F) {
	f.Add([]byte("CUSTOMERACCOUNT,NAME\r\nUS-001,Caf\xE9\r\n"), byte(0))
	f.Add([]byte("a,\xC3\xA9\r\nb,\xE9\r\n"), byte(0))
	f.Add([]byte("\xEF\xBB\xBFa,\xEF\xBF\xBD"), byte(1))
	f.Add([]byte("\xFF\xFEA\x00\x00\xD8B\x00"), byte(3))
	f.Add([]byte("\x00A\xD8\x3D\xDE\x00"), byte(4))
	f.Add([]byte("Hi Mom -+Jjo--!+AOk-+2D3eAA"), byte(7))
	f.Add([]byte("a\x84\x31\xA4\x37\x81\x30"), byte(9))
	f.Fuzz(func(t *testing.T, data []byte, setting byte) {
		s := fuzzSettings[int(setting)%len(fuzzSettings)]
		read := func(in io.Reader, size int) (*textReader, []byte, error) {
			tr, err := newTextReader(in, s.encoding, s.format)
			if err != nil {
				t.Fatalf("newTextReader(%q, %q): %v", s.encoding, s.format, err)
			}
			out, err := readText(t, tr, size)
			return tr, out, err
		}
		tr, out, err := read(bytes.NewReader(data), 4096)
		if !utf8.Valid(out) {
			t.Fatalf("text is not valid UTF-8: %q", out)
		}
		enc := tr.encoding()
		if bytes.Contains(out, replacementUTF8) {
			if w := replacementIn[enc]; w == nil || !bytes.Contains(data, w) {
				t.Fatalf("text read as %s holds U+FFFD the input does not encode: % X -> %q", enc, data, out)
			}
		}
		var e *EncodingError
		if err != nil {
			if !errors.As(err, &e) {
				t.Fatalf("error %v, want nil or an *EncodingError", err)
			}
			if e.Encoding != enc || e.Hint == "" || e.Offset < 0 || e.Offset > int64(len(data)) ||
				!bytes.Equal(e.Bytes, data[e.Offset:min(int(e.Offset)+len(e.Bytes), len(data))]) {
				t.Fatalf("error %#v does not point into % X (read as %s)", e, data, enc)
			}
		}
		for _, how := range []struct {
			in   io.Reader
			size int
		}{
			{iotest.OneByteReader(bytes.NewReader(data)), 4096},
			{bytes.NewReader(data), 1},
		} {
			tr2, out2, err2 := read(how.in, how.size)
			if !bytes.Equal(out2, out) || tr2.encoding() != enc || tr2.defaulted() != tr.defaulted() {
				t.Fatalf("read in small pieces: %q as %s, want %q as %s", out2, tr2.encoding(), out, enc)
			}
			var e2 *EncodingError
			if (err == nil) != (err2 == nil) || (e != nil && (!errors.As(err2, &e2) || e2.Offset != e.Offset || !bytes.Equal(e2.Bytes, e.Bytes))) {
				t.Fatalf("read in small pieces: error %v, want %v", err2, err)
			}
		}
		if err != nil {
			return
		}
		// x/text as the reference where it decodes the same encoding.
		var ref encoding.Encoding
		body := data
		switch enc {
		case "utf-8":
			if out2 := bytes.TrimPrefix(data, bomUTF8); !bytes.Equal(out, out2) {
				t.Fatalf("utf-8 text %q, want the input %q", out, out2)
			}
		case "utf-16le":
			ref, body = unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM), bytes.TrimPrefix(data, bomUTF16LE)
		case "utf-16be":
			ref, body = unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM), bytes.TrimPrefix(data, bomUTF16BE)
		case "windows-1252":
			ref = charmap.Windows1252
		case "shift_jis":
			ref = japanese.ShiftJIS
		case "gb18030":
			ref = simplifiedchinese.GB18030
		}
		if ref != nil {
			want, rerr := ref.NewDecoder().Bytes(body)
			if rerr != nil || !bytes.Equal(out, want) {
				t.Fatalf("%s text %q, x/text gives %q (%v)", enc, out, want, rerr)
			}
		}
	})
}
