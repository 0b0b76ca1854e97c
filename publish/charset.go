package publish

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/ianaindex"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
	"golang.org/x/text/transform"
)

// An entity file's text reaches the broker exactly as F&O meant it, or the
// entity fails with an EncodingError: no byte is ever replaced by U+FFFD and
// no byte of another encoding is passed on as if it were UTF-8.

// charsetKind says which decoder reads an encoding.
type charsetKind uint8

const (
	kindUTF8 charsetKind = iota
	kindUTF16LE
	kindUTF16BE
	kindUTF32LE
	kindUTF32BE
	kindUTF7
	kindSingleByte // a 256-entry table (charmap or us-ascii)
	kindMultiByte  // an x/text decoder whose U+FFFD marks a bad sequence
)

// charset is one encoding an `encoding` setting may name.
type charset struct {
	name string // canonical: lower case, as ParseEncoding returns it
	cp   int    // Windows code page number, 0 if Windows has none
	kind charsetKind
	enc  encoding.Encoding // kindSingleByte (nil: us-ascii) and kindMultiByte
	iana string            // IANA name for encodings x/text's ianaindex knows but enc does not give
}

// charsets lists every supported encoding. Stateful x/text encodings
// (iso-2022-jp, hz-gb-2312) are left out: the strict decoders here assume a
// decoder can be restarted at any character boundary.
var charsets = []charset{
	{name: "utf-8", cp: 65001, kind: kindUTF8, iana: "UTF-8"},
	{name: "utf-16le", cp: 1200, kind: kindUTF16LE, iana: "UTF-16LE"},
	{name: "utf-16be", cp: 1201, kind: kindUTF16BE, iana: "UTF-16BE"},
	{name: "utf-32le", cp: 12000, kind: kindUTF32LE},
	{name: "utf-32be", cp: 12001, kind: kindUTF32BE},
	{name: "utf-7", cp: 65000, kind: kindUTF7},
	{name: "us-ascii", cp: 20127, kind: kindSingleByte, iana: "US-ASCII"},
	{name: "windows-874", cp: 874, kind: kindSingleByte, enc: charmap.Windows874},
	{name: "windows-1250", cp: 1250, kind: kindSingleByte, enc: charmap.Windows1250},
	{name: "windows-1251", cp: 1251, kind: kindSingleByte, enc: charmap.Windows1251},
	{name: "windows-1252", cp: 1252, kind: kindSingleByte, enc: charmap.Windows1252},
	{name: "windows-1253", cp: 1253, kind: kindSingleByte, enc: charmap.Windows1253},
	{name: "windows-1254", cp: 1254, kind: kindSingleByte, enc: charmap.Windows1254},
	{name: "windows-1255", cp: 1255, kind: kindSingleByte, enc: charmap.Windows1255},
	{name: "windows-1256", cp: 1256, kind: kindSingleByte, enc: charmap.Windows1256},
	{name: "windows-1257", cp: 1257, kind: kindSingleByte, enc: charmap.Windows1257},
	{name: "windows-1258", cp: 1258, kind: kindSingleByte, enc: charmap.Windows1258},
	{name: "ibm037", cp: 37, kind: kindSingleByte, enc: charmap.CodePage037},
	{name: "ibm437", cp: 437, kind: kindSingleByte, enc: charmap.CodePage437},
	{name: "ibm850", cp: 850, kind: kindSingleByte, enc: charmap.CodePage850},
	{name: "ibm852", cp: 852, kind: kindSingleByte, enc: charmap.CodePage852},
	{name: "ibm855", cp: 855, kind: kindSingleByte, enc: charmap.CodePage855},
	{name: "ibm00858", cp: 858, kind: kindSingleByte, enc: charmap.CodePage858},
	{name: "ibm860", cp: 860, kind: kindSingleByte, enc: charmap.CodePage860},
	{name: "ibm862", cp: 862, kind: kindSingleByte, enc: charmap.CodePage862},
	{name: "ibm863", cp: 863, kind: kindSingleByte, enc: charmap.CodePage863},
	{name: "ibm865", cp: 865, kind: kindSingleByte, enc: charmap.CodePage865},
	{name: "ibm866", cp: 866, kind: kindSingleByte, enc: charmap.CodePage866},
	{name: "ibm1047", cp: 1047, kind: kindSingleByte, enc: charmap.CodePage1047},
	{name: "ibm01140", cp: 1140, kind: kindSingleByte, enc: charmap.CodePage1140},
	{name: "iso-8859-1", cp: 28591, kind: kindSingleByte, enc: charmap.ISO8859_1},
	{name: "iso-8859-2", cp: 28592, kind: kindSingleByte, enc: charmap.ISO8859_2},
	{name: "iso-8859-3", cp: 28593, kind: kindSingleByte, enc: charmap.ISO8859_3},
	{name: "iso-8859-4", cp: 28594, kind: kindSingleByte, enc: charmap.ISO8859_4},
	{name: "iso-8859-5", cp: 28595, kind: kindSingleByte, enc: charmap.ISO8859_5},
	{name: "iso-8859-6", cp: 28596, kind: kindSingleByte, enc: charmap.ISO8859_6},
	{name: "iso-8859-7", cp: 28597, kind: kindSingleByte, enc: charmap.ISO8859_7},
	{name: "iso-8859-8", cp: 28598, kind: kindSingleByte, enc: charmap.ISO8859_8},
	{name: "iso-8859-9", cp: 28599, kind: kindSingleByte, enc: charmap.ISO8859_9},
	{name: "iso-8859-10", cp: 28600, kind: kindSingleByte, enc: charmap.ISO8859_10},
	{name: "iso-8859-13", cp: 28603, kind: kindSingleByte, enc: charmap.ISO8859_13},
	{name: "iso-8859-14", cp: 28604, kind: kindSingleByte, enc: charmap.ISO8859_14},
	{name: "iso-8859-15", cp: 28605, kind: kindSingleByte, enc: charmap.ISO8859_15},
	{name: "iso-8859-16", kind: kindSingleByte, enc: charmap.ISO8859_16},
	{name: "koi8-r", cp: 20866, kind: kindSingleByte, enc: charmap.KOI8R},
	{name: "koi8-u", cp: 21866, kind: kindSingleByte, enc: charmap.KOI8U},
	{name: "macintosh", cp: 10000, kind: kindSingleByte, enc: charmap.Macintosh},
	{name: "x-mac-cyrillic", cp: 10007, kind: kindSingleByte, enc: charmap.MacintoshCyrillic},
	{name: "shift_jis", cp: 932, kind: kindMultiByte, enc: japanese.ShiftJIS},
	{name: "euc-jp", cp: 51932, kind: kindMultiByte, enc: japanese.EUCJP},
	{name: "euc-kr", cp: 949, kind: kindMultiByte, enc: korean.EUCKR},
	{name: "gbk", cp: 936, kind: kindMultiByte, enc: simplifiedchinese.GBK},
	{name: "gb18030", cp: 54936, kind: kindMultiByte, enc: simplifiedchinese.GB18030},
	{name: "big5", cp: 950, kind: kindMultiByte, enc: traditionalchinese.Big5},
}

// charsetAliases are names neither index maps the way F&O and Windows mean
// them: "unicode" and a bare "utf-16" are code page 1200 (little endian) in
// Windows, and "latin1" must stay ISO 8859-1 (WHATWG reads it as 1252).
var charsetAliases = map[string]string{
	"utf8": "utf-8", "unicode": "utf-16le", "utf-16": "utf-16le", "ucs-2": "utf-16le", "utf16": "utf-16le",
	"utf16le": "utf-16le", "utf16be": "utf-16be", "unicodefffe": "utf-16be",
	"utf-32": "utf-32le", "utf32": "utf-32le", "ucs-4": "utf-32le", "utf32le": "utf-32le", "utf32be": "utf-32be",
	"utf7": "utf-7", "unicode-1-1-utf-7": "utf-7", "csunicode11utf7": "utf-7",
	"ascii": "us-ascii", "latin1": "iso-8859-1", "l1": "iso-8859-1", "iso8859-1": "iso-8859-1",
	"iso88591": "iso-8859-1", "iso_8859-1": "iso-8859-1", "sjis": "shift_jis", "x-sjis": "shift_jis",
}

type charsetIndex struct {
	byName map[string]*charset
	byCP   map[int]*charset
	byIANA map[string]*charset // ianaindex.IANA.Name -> charset
}

var charsetTables = sync.OnceValue(func() *charsetIndex {
	x := &charsetIndex{byName: map[string]*charset{}, byCP: map[int]*charset{}, byIANA: map[string]*charset{}}
	for i := range charsets {
		c := &charsets[i]
		x.byName[c.name] = c
		if c.cp != 0 {
			x.byCP[c.cp] = c
		}
		iana := c.iana
		if c.enc != nil {
			if n, err := ianaindex.IANA.Name(c.enc); err == nil {
				iana = n
			}
		}
		if iana != "" {
			x.byIANA[iana] = c
		}
	}
	x.byCP[51949] = x.byName["euc-kr"]
	return x
})

// cpPrefixes may precede a code page number: "cp1252", "windows-1252", "ibm850", "ms932".
var cpPrefixes = []string{"windows-", "windows", "x-cp", "cp-", "cp_", "cp", "ibm-", "ibm", "ms"}

// supersetOf names the WHATWG encodings the HTML index gives for labels of a
// smaller code page (iso-8859-1, ascii -> windows-1252; iso-8859-9 ->
// windows-1254; tis-620 -> windows-874): accepted only when the label itself
// names that code page, since the two disagree on bytes 0x80-0x9F.
var supersetOf = map[string]string{"windows-1252": "1252", "windows-1254": "1254", "windows-874": "874"}

// ParseEncoding checks an `encoding` setting and returns its canonical name
// (lower case: "utf-8", "windows-1252", "utf-16le", "iso-8859-1", "shift_jis").
// It accepts, in any case, the names golang.org/x/text's IANA and WHATWG
// indexes know, "cp1252"-style names and Windows code page numbers as F&O
// shows them ("1252", "65001", "1200"). "iso-8859-1" and "latin1" are ISO
// 8859-1 proper, not windows-1252.
func ParseEncoding(name string) (string, error) {
	c, err := lookupCharset(name)
	if err != nil {
		return "", err
	}
	return c.name, nil
}

func lookupCharset(name string) (*charset, error) {
	x := charsetTables()
	n := strings.ToLower(strings.TrimSpace(name))
	if c := x.byName[n]; c != nil {
		return c, nil
	}
	if a, ok := charsetAliases[n]; ok {
		return x.byName[a], nil
	}
	num := n
	for _, p := range cpPrefixes {
		if strings.HasPrefix(num, p) {
			num = num[len(p):]
			break
		}
	}
	if num != "" && strings.Trim(num, "0123456789") == "" {
		if cp, err := strconv.Atoi(num); err == nil {
			if c := x.byCP[cp]; c != nil {
				return c, nil
			}
			return nil, fmt.Errorf("encoding %q: code page %d is not supported: use one such as 1252 (windows-1252), 1250, 65001 (utf-8) or 1200 (utf-16le)", name, cp)
		}
	}
	if n != "" {
		if e, err := ianaindex.IANA.Encoding(n); err == nil && e != nil {
			if in, err := ianaindex.IANA.Name(e); err == nil && x.byIANA[in] != nil {
				return x.byIANA[in], nil
			}
		}
		if e, err := htmlindex.Get(n); err == nil {
			if hn, err := htmlindex.Name(e); err == nil && x.byName[hn] != nil {
				if cp, ok := supersetOf[hn]; !ok || strings.Contains(n, cp) {
					return x.byName[hn], nil
				}
			}
		}
	}
	return nil, fmt.Errorf("encoding %q is not known: use a name such as utf-8, utf-16le, windows-1252, iso-8859-1 or shift_jis, or a Windows code page number such as 1252 or 65001", name)
}

// EncodingError reports that an entity file is not valid in the encoding it
// is read with. Everything before Offset was delivered; nothing after.
type EncodingError struct {
	Offset   int64  // byte offset in the file (0-based, a byte order mark counted) of the first bad byte
	Encoding string // the encoding the file was read with, e.g. "utf-8"
	Bytes    []byte // up to 4 offending bytes, starting at Offset
	Hint     string // the setting that fixes it
}

func (e *EncodingError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "byte %d: ", e.Offset)
	for i, c := range e.Bytes {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "0x%02X", c)
	}
	if len(e.Bytes) == 0 {
		b.WriteString("end of file")
	}
	fmt.Fprintf(&b, " is not valid %s", e.Encoding)
	if e.Hint != "" {
		b.WriteString(": ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// badBytes builds an EncodingError for the bytes at src (cut to 4 bytes and
// copied); the reader fills in Encoding and Hint.
func badBytes(off int64, src []byte) *EncodingError {
	return &EncodingError{Offset: off, Bytes: bytes.Clone(src[:min(len(src), 4)])}
}

type textMode uint8

const (
	modeUTF8   textMode = iota // validate in place
	modeAuto                   // ASCII so far; the first non-ASCII sequence decides
	modeDecode                 // a textDecoder converts t.in
)

const (
	// textMinRead is the smallest p Read decodes into directly: below it the
	// reader decodes into tiny and copies, so that a character always fits.
	textMinRead = 16
	textInSize  = 64 << 10
)

// textReader reads an entity file as UTF-8 text (newTextReader).
type textReader struct {
	r    io.Reader
	mode textMode
	enc  string      // what it reads with
	dec  textDecoder // modeDecode
	hint string      // for errors in the current mode
	dflt bool        // auto chose windows-1252

	off      int64  // file offset of the next byte not yet consumed (carry[0] or in[lo])
	carry    []byte // modeUTF8/modeAuto: bytes read but held back (an incomplete sequence, the peeked start)
	carryBuf [8]byte
	in       []byte // modeDecode: raw input in[lo:hi]
	lo, hi   int
	eof      bool  // r returned io.EOF
	rerr     error // r failed: returned once the bytes before are delivered
	err      error // sticky: io.EOF, an *EncodingError or rerr

	out  []byte // decoded bytes not yet returned (reads shorter than textMinRead)
	tiny [64]byte
}

// newTextReader returns r as UTF-8 text, decided as follows (first match):
//  1. A byte order mark: EF BB BF UTF-8; FF FE 00 00 UTF-32LE; 00 00 FE FF
//     UTF-32BE; FF FE UTF-16LE; FE FF UTF-16BE; 2B 2F 76 38|39|2B|2F UTF-7.
//     The mark is not part of the output, and it wins over the setting.
//  2. encoding, a name ParseEncoding accepts ("" = not set).
//  3. UTF-32 or UTF-16 without a mark, sniffed from ASCII in the first
//     characters (a zero in every other byte, or three zeros in four).
//  4. A Unicode sourceFormat (ending in "-Unicode", or an XML one): UTF-8.
//  5. Otherwise "auto": bytes pass as UTF-8 while they are ASCII; the first
//     non-ASCII sequence decides: valid UTF-8 means UTF-8 from there on,
//     anything else windows-1252 (F&O's default code page for non-Unicode
//     formats; the ASCII before reads the same in both), and defaulted
//     reports true.
//
// Whatever the encoding, a byte sequence it does not allow ends the text with
// an *EncodingError after every good byte before it was delivered; the
// output is always valid UTF-8 and holds U+FFFD only where the file encodes it.
func newTextReader(r io.Reader, encoding, sourceFormat string) (*textReader, error) {
	var set *charset
	if encoding != "" {
		c, err := lookupCharset(encoding)
		if err != nil {
			return nil, err
		}
		set = c
	}
	t := &textReader{r: r}
	// Peek at up to 4 bytes for a byte order mark or a sniff.
	n := 0
	for stalls := 0; n < 4 && !t.eof && t.rerr == nil; {
		m, err := r.Read(t.carryBuf[n:4])
		n += m
		switch {
		case err == io.EOF:
			t.eof = true
		case err != nil:
			t.rerr = err
		case m == 0:
			if stalls++; stalls > 100 {
				t.rerr = io.ErrNoProgress
			}
		}
	}
	head := t.carryBuf[:n]
	x := charsetTables()
	var c *charset
	bom := 0
	switch {
	case bytes.HasPrefix(head, []byte{0xEF, 0xBB, 0xBF}):
		c, bom = x.byName["utf-8"], 3
	case bytes.HasPrefix(head, []byte{0xFF, 0xFE, 0, 0}):
		c, bom = x.byName["utf-32le"], 4
	case bytes.HasPrefix(head, []byte{0, 0, 0xFE, 0xFF}):
		c, bom = x.byName["utf-32be"], 4
	case bytes.HasPrefix(head, []byte{0xFF, 0xFE}):
		c, bom = x.byName["utf-16le"], 2
	case bytes.HasPrefix(head, []byte{0xFE, 0xFF}):
		c, bom = x.byName["utf-16be"], 2
	case len(head) == 4 && bytes.HasPrefix(head, []byte("+/v")) && strings.IndexByte("89+/", head[3]) >= 0:
		// The mark is U+FEFF in modified base64 whose last character also
		// carries bits of what follows: the decoder drops the U+FEFF.
		c = x.byName["utf-7"]
	}
	switch {
	case c != nil:
		t.hint = fmt.Sprintf("the file starts with a %s byte order mark, which the encoding setting cannot override: the file is damaged or is not the one F&O wrote", c.name)
	case set != nil:
		c = set
		if c.kind == kindUTF8 {
			t.hint = "the encoding setting says utf-8: set encoding: windows-1252 for this entity, or the code page the file was written in"
		} else {
			t.hint = fmt.Sprintf("the encoding setting says %s: set encoding: to the code page of the entity's source format in F&O", c.name)
		}
	case utf32NoBOM(head) != 0:
		c = x.byName[map[byte]string{'L': "utf-32le", 'B': "utf-32be"}[utf32NoBOM(head)]]
		t.hint = fmt.Sprintf("the file looks like %s without a byte order mark: set encoding: to the code page of the entity's source format in F&O", c.name)
	case utf16NoBOM(head) != 0:
		c = x.byName[map[byte]string{'L': "utf-16le", 'B': "utf-16be"}[utf16NoBOM(head)]]
		t.hint = fmt.Sprintf("the file looks like %s without a byte order mark: set encoding: to the code page of the entity's source format in F&O", c.name)
	case unicodeFormat(sourceFormat):
		c = x.byName["utf-8"]
		t.hint = fmt.Sprintf("the source format %s says Unicode, but the file is not valid utf-8: set encoding: windows-1252 for this entity, or the code page the file was written in", sourceFormat)
	default:
		t.mode, t.enc = modeAuto, "utf-8"
		t.hint = "set encoding: windows-1252 (or the code page the file was written in) for this entity"
		t.carry = head
		return t, nil
	}
	t.off = int64(bom)
	rest := head[bom:]
	t.enc = c.name
	if c.kind == kindUTF8 {
		t.mode = modeUTF8
		t.carry = rest
		return t, nil
	}
	t.mode = modeDecode
	t.dec = newTextDecoder(c)
	t.in = make([]byte, textInSize)
	t.hi = copy(t.in, rest)
	return t, nil
}

// unicodeFormat reports whether an F&O source format writes Unicode text:
// the "-Unicode" types and XML (UTF-8 with a declaration).
func unicodeFormat(f string) bool {
	f = strings.ToLower(f)
	return strings.HasSuffix(f, "-unicode") || strings.Contains(f, "xml")
}

// utf32NoBOM sniffs UTF-32 text without a BOM from its first code unit: an
// ASCII character with three zero bytes, which neither UTF-8 nor UTF-16
// text starts with. It returns 'L', 'B' or 0.
func utf32NoBOM(b []byte) byte {
	if len(b) < 4 {
		return 0
	}
	switch {
	case b[0] != 0 && b[0] < 0x80 && b[1] == 0 && b[2] == 0 && b[3] == 0:
		return 'L'
	case b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] != 0 && b[3] < 0x80:
		return 'B'
	}
	return 0
}

// encoding names what the reader decodes with: "utf-8" while an auto file
// has shown only ASCII.
func (t *textReader) encoding() string { return t.enc }

// defaulted reports whether windows-1252 was chosen by the auto rule (a
// non-Unicode format, no setting, bytes that are not UTF-8).
func (t *textReader) defaulted() bool { return t.dflt }

// Read delivers UTF-8 text. After an *EncodingError or a read error every
// later call returns the same error.
func (t *textReader) Read(p []byte) (int, error) {
	if len(t.out) > 0 {
		n := copy(p, t.out)
		t.out = t.out[n:]
		return n, nil
	}
	if len(p) == 0 {
		return 0, nil
	}
	if t.err != nil {
		return 0, t.err
	}
	if len(p) < textMinRead {
		n, err := t.fill(t.tiny[:])
		if n == 0 {
			return 0, err
		}
		m := copy(p, t.tiny[:n])
		t.out = t.tiny[m:n]
		return m, nil
	}
	return t.fill(p)
}

// fill decodes into p (len(p) >= textMinRead): n > 0, or an error.
func (t *textReader) fill(p []byte) (int, error) {
	if t.mode == modeDecode {
		return t.fillDecode(p)
	}
	return t.fillUTF8(p)
}

// fillUTF8 reads into p and validates in place (modeUTF8, modeAuto). A
// sequence cut by the end of what was read is held back in carry.
func (t *textReader) fillUTF8(p []byte) (int, error) {
	for stalls := 0; ; {
		h := copy(p, t.carry)
		t.carry = t.carry[:0]
		n := 0
		if !t.eof && t.rerr == nil {
			var err error
			n, err = t.r.Read(p[h:])
			switch {
			case err == io.EOF:
				t.eof = true
			case err != nil:
				t.rerr = err
			}
		}
		m := h + n
		data := p[:m]
		cut := m
		if !t.eof {
			cut -= utf8Tail(data)
		}
		start := 0
		if t.mode == modeAuto {
			i := asciiPrefix(data[:cut])
			if i < cut {
				if r, size := utf8.DecodeRune(data[i:cut]); r == utf8.RuneError && size <= 1 {
					// Not UTF-8: windows-1252 from here; data[:i] is ASCII.
					t.switchTo1252(data[i:m])
					t.off += int64(i)
					if i > 0 {
						return i, nil
					}
					return t.fillDecode(p)
				}
				t.mode = modeUTF8
			}
			start = i
		}
		if t.mode == modeUTF8 && !utf8.Valid(data[start:cut]) {
			k := start + invalidUTF8(data[start:cut])
			e := badBytes(t.off+int64(k), data[k:k+badUTF8Len(data[k:m])])
			t.err = t.annotate(e)
			t.off += int64(k)
			if k > 0 {
				return k, nil
			}
			return 0, t.err
		}
		t.carry = append(t.carryBuf[:0], data[cut:m]...)
		t.off += int64(cut)
		if cut > 0 {
			return cut, nil
		}
		if t.rerr != nil {
			t.err = t.rerr // a sequence cut by the failed read is dropped
			return 0, t.err
		}
		if t.eof {
			t.err = io.EOF
			return 0, t.err
		}
		if n == 0 {
			if stalls++; stalls > 100 {
				t.rerr = io.ErrNoProgress
			}
		}
	}
}

// switchTo1252 makes an auto reader read rest, and what follows, as
// windows-1252.
func (t *textReader) switchTo1252(rest []byte) {
	c := charsetTables().byName["windows-1252"]
	t.mode, t.enc, t.dflt = modeDecode, c.name, true
	t.dec = newTextDecoder(c)
	t.in = make([]byte, max(textInSize, len(rest)))
	t.lo, t.hi = 0, copy(t.in, rest)
	t.hint = "the file is not utf-8, so it was read as windows-1252 (F&O's default for non-Unicode formats): set encoding: to the code page of the entity's source format in F&O"
}

// fillDecode converts t.in into p with t.dec, reading r as needed.
func (t *textReader) fillDecode(p []byte) (int, error) {
	for stalls := 0; ; {
		end := t.eof || t.rerr != nil
		// After a read error a character cut short is not an encoding error.
		nDst, nSrc, err := t.dec.decode(p, t.in[t.lo:t.hi], t.off, t.eof)
		t.lo += nSrc
		t.off += int64(nSrc)
		if err != nil {
			t.err = t.annotate(err)
			if nDst > 0 {
				return nDst, nil
			}
			return 0, t.err
		}
		if nDst > 0 {
			return nDst, nil
		}
		if nSrc > 0 {
			continue
		}
		if end {
			t.err = io.EOF
			if t.rerr != nil {
				t.err = t.rerr
			}
			return 0, t.err
		}
		if t.lo > 0 {
			t.hi = copy(t.in, t.in[t.lo:t.hi])
			t.lo = 0
		}
		n, err := t.r.Read(t.in[t.hi:])
		t.hi += n
		switch {
		case errors.Is(err, io.EOF):
			t.eof = true
		case err != nil:
			t.rerr = err
		case n == 0:
			if stalls++; stalls > 100 {
				t.rerr = io.ErrNoProgress
			}
		}
	}
}

// annotate completes an error from a decoder with the reader's encoding and hint.
func (t *textReader) annotate(err error) error {
	var e *EncodingError
	if errors.As(err, &e) {
		e.Encoding, e.Hint = t.enc, t.hint
	}
	return err
}

// asciiPrefix returns the length of the ASCII prefix of b, 32 bytes at a
// time where it can (the loop shape of utf8.Valid, which the compiler keeps
// free of bounds checks).
func asciiPrefix(b []byte) int {
	p := b[:len(b):len(b)]
	for len(p) >= 32 {
		x := binary.LittleEndian.Uint64(p) | binary.LittleEndian.Uint64(p[8:]) |
			binary.LittleEndian.Uint64(p[16:]) | binary.LittleEndian.Uint64(p[24:])
		if x&msb8 != 0 {
			break
		}
		p = p[32:]
	}
	for len(p) >= 8 && binary.LittleEndian.Uint64(p)&msb8 == 0 {
		p = p[8:]
	}
	for len(p) > 0 && p[0] < utf8.RuneSelf {
		p = p[1:]
	}
	return len(b) - len(p)
}

// utf8Tail returns how many bytes at the end of b (at most 3) start a UTF-8
// sequence that needs bytes not yet read.
func utf8Tail(b []byte) int {
	for j := len(b) - 1; j >= 0 && j >= len(b)-3; j-- {
		c := b[j]
		if c < 0x80 {
			return 0
		}
		if c >= 0xC0 {
			if n := utf8SeqLen(c); n > len(b)-j {
				return len(b) - j
			}
			return 0
		}
	}
	return 0
}

// utf8SeqLen is the length a lead byte announces (1 for a byte no sequence starts with).
func utf8SeqLen(c byte) int {
	switch {
	case c >= 0xC2 && c <= 0xDF:
		return 2
	case c >= 0xE0 && c <= 0xEF:
		return 3
	case c >= 0xF0 && c <= 0xF4:
		return 4
	}
	return 1
}

// invalidUTF8 returns the offset of the first invalid sequence in b, which
// utf8.Valid rejected.
func invalidUTF8(b []byte) int {
	i := asciiPrefix(b)
	for i < len(b) {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}

// badUTF8Len returns how many bytes to report for the invalid sequence at
// the start of b: the bytes that began a sequence and the one that broke it.
func badUTF8Len(b []byte) int {
	n := utf8SeqLen(b[0])
	if n == 1 {
		return 1
	}
	for j := 1; j < n; j++ {
		if j >= len(b) {
			return j // cut by the end of the file
		}
		lo, hi := byte(0x80), byte(0xBF)
		if j == 1 {
			switch b[0] {
			case 0xE0:
				lo = 0xA0
			case 0xED:
				hi = 0x9F
			case 0xF0:
				lo = 0x90
			case 0xF4:
				hi = 0x8F
			}
		}
		if b[j] < lo || b[j] > hi {
			return j + 1
		}
	}
	return n
}

// A textDecoder converts src, which starts at file offset off, to UTF-8 in
// dst. It stops before a character that dst has no room for or that src
// holds only part of (unless atEOF). On a sequence the encoding does not
// allow it returns an *EncodingError (without Encoding and Hint) and nSrc
// up to the bad bytes.
type textDecoder interface {
	decode(dst, src []byte, off int64, atEOF bool) (nDst, nSrc int, err error)
}

func newTextDecoder(c *charset) textDecoder {
	switch c.kind {
	case kindUTF16LE:
		return utf16Decoder{be: false}
	case kindUTF16BE:
		return utf16Decoder{be: true}
	case kindUTF32LE:
		return utf32Decoder{be: false}
	case kindUTF32BE:
		return utf32Decoder{be: true}
	case kindUTF7:
		return &utf7Decoder{skipBOM: true}
	case kindSingleByte:
		return singleByteDecoder{tab: singleByteTable(c)}
	case kindMultiByte:
		return &multiByteDecoder{t: c.enc.NewDecoder(), gb18030: c.name == "gb18030"}
	}
	panic("publish: no decoder for " + c.name)
}

// utf16Decoder is strict UTF-16: an unpaired surrogate or an odd last byte
// is an error (x/text's decoder turns them into U+FFFD).
type utf16Decoder struct{ be bool }

func (d utf16Decoder) unit(b []byte) rune {
	if d.be {
		return rune(b[0])<<8 | rune(b[1])
	}
	return rune(b[1])<<8 | rune(b[0])
}

func (d utf16Decoder) decode(dst, src []byte, off int64, atEOF bool) (nDst, nSrc int, err error) {
	for nSrc+2 <= len(src) {
		if len(dst)-nDst < utf8.UTFMax {
			return nDst, nSrc, nil
		}
		r := d.unit(src[nSrc:])
		if r < utf8.RuneSelf {
			dst[nDst] = byte(r)
			nDst++
			nSrc += 2
			continue
		}
		size := 2
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return nDst, nSrc, badBytes(off+int64(nSrc), src[nSrc:nSrc+2])
		case r >= 0xD800 && r <= 0xDBFF:
			if nSrc+4 > len(src) {
				if !atEOF {
					return nDst, nSrc, nil
				}
				return nDst, nSrc, badBytes(off+int64(nSrc), src[nSrc:])
			}
			r2 := d.unit(src[nSrc+2:])
			if r2 < 0xDC00 || r2 > 0xDFFF {
				return nDst, nSrc, badBytes(off+int64(nSrc), src[nSrc:nSrc+4])
			}
			r = 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00)
			size = 4
		}
		nDst += utf8.EncodeRune(dst[nDst:], r)
		nSrc += size
	}
	if atEOF && nSrc < len(src) {
		return nDst, nSrc, badBytes(off+int64(nSrc), src[nSrc:])
	}
	return nDst, nSrc, nil
}

// utf32Decoder is strict UTF-32: a surrogate, a value above U+10FFFF or a
// last unit of fewer than 4 bytes is an error.
type utf32Decoder struct{ be bool }

func (d utf32Decoder) decode(dst, src []byte, off int64, atEOF bool) (nDst, nSrc int, err error) {
	for nSrc+4 <= len(src) {
		if len(dst)-nDst < utf8.UTFMax {
			return nDst, nSrc, nil
		}
		var u uint32
		if d.be {
			u = binary.BigEndian.Uint32(src[nSrc:])
		} else {
			u = binary.LittleEndian.Uint32(src[nSrc:])
		}
		if u > utf8.MaxRune || (u >= 0xD800 && u <= 0xDFFF) {
			return nDst, nSrc, badBytes(off+int64(nSrc), src[nSrc:nSrc+4])
		}
		nDst += utf8.EncodeRune(dst[nDst:], rune(u))
		nSrc += 4
	}
	if atEOF && nSrc < len(src) {
		return nDst, nSrc, badBytes(off+int64(nSrc), src[nSrc:])
	}
	return nDst, nSrc, nil
}

// singleByteDecoder maps each byte through a table of UTF-8 encodings; a
// byte the code page leaves undefined (n == 0) is an error.
type singleByteDecoder struct{ tab *singleByteTab }

type singleByteTab struct {
	utf8  [256][4]byte // the UTF-8 bytes, [3] = their count (0: undefined)
	ascii bool         // bytes below 0x80 are ASCII (not EBCDIC)
}

var singleByteTabs sync.Map // canonical name -> *singleByteTab

// singleByteTable builds (once per code page) the table of c: x/text's
// charmap decodes a byte the code page leaves undefined (0x81, 0x8D, 0x8F,
// 0x90, 0x9D in windows-1252) as U+FFFD, which no charmap uses otherwise.
func singleByteTable(c *charset) *singleByteTab {
	if t, ok := singleByteTabs.Load(c.name); ok {
		return t.(*singleByteTab)
	}
	t := &singleByteTab{ascii: true}
	for b := 0; b < 256; b++ {
		r := rune(b)
		switch cm, _ := c.enc.(*charmap.Charmap); {
		case cm != nil:
			r = cm.DecodeByte(byte(b))
		case b >= utf8.RuneSelf: // us-ascii
			r = utf8.RuneError
		}
		if b < utf8.RuneSelf && r != rune(b) {
			t.ascii = false
		}
		if r == utf8.RuneError {
			continue
		}
		n := utf8.EncodeRune(t.utf8[b][:], r)
		t.utf8[b][3] = byte(n)
	}
	v, _ := singleByteTabs.LoadOrStore(c.name, t)
	return v.(*singleByteTab)
}

func (d singleByteDecoder) decode(dst, src []byte, off int64, _ bool) (nDst, nSrc int, err error) {
	tab := d.tab
	for nSrc < len(src) {
		if tab.ascii && nSrc+8 <= len(src) && len(dst)-nDst >= 8 {
			if x := binary.LittleEndian.Uint64(src[nSrc:]); x&msb8 == 0 {
				binary.LittleEndian.PutUint64(dst[nDst:], x)
				nDst += 8
				nSrc += 8
				continue
			}
		}
		if len(dst)-nDst < 3 {
			break
		}
		e := &tab.utf8[src[nSrc]]
		n := int(e[3])
		if n == 0 {
			return nDst, nSrc, badBytes(off+int64(nSrc), src[nSrc:nSrc+1])
		}
		copy(dst[nDst:nDst+3], e[:3])
		nDst += n
		nSrc++
	}
	return nDst, nSrc, nil
}

// multiByteDecoder runs an x/text decoder (shift_jis, euc-jp, euc-kr, gbk,
// gb18030, big5) and treats U+FFFD in its output as the error it stands
// for: these code pages cannot encode U+FFFD, except gb18030 (84 31 A4 37),
// which is let through. The offset of a bad sequence is found by decoding
// again up to the U+FFFD; it is exact as long as the decoder stops at
// character boundaries, which these stateless ones do, so treat it as
// approximate.
type multiByteDecoder struct {
	t       transform.Transformer
	gb18030 bool
	one     [utf8.UTFMax]byte
}

var replacementUTF8 = []byte("\uFFFD")

func (d *multiByteDecoder) decode(dst, src []byte, off int64, atEOF bool) (nDst, nSrc int, err error) {
	nDst, nSrc, terr := d.t.Transform(dst, src, atEOF)
	if terr != nil && !errors.Is(terr, transform.ErrShortDst) && !errors.Is(terr, transform.ErrShortSrc) {
		return 0, 0, terr
	}
	outBase, srcBase := 0, 0 // a character boundary: dst[:outBase] came from src[:srcBase]
	for {
		k := bytes.Index(dst[outBase:nDst], replacementUTF8)
		if k < 0 {
			return nDst, nSrc, nil
		}
		k += outBase
		// How much of src made dst[outBase:k]?
		d.t.Reset()
		_, s, _ := d.t.Transform(dst[outBase:k], src[srcBase:], atEOF)
		at := srcBase + s
		// How long is the sequence decoded as U+FFFD?
		d.t.Reset()
		_, bad, _ := d.t.Transform(d.one[:3], src[at:], atEOF)
		bad = max(bad, 1)
		seq := src[at:min(at+bad, len(src))]
		if d.gb18030 && bytes.Equal(seq, []byte{0x84, 0x31, 0xA4, 0x37}) {
			outBase, srcBase = k+3, at+len(seq)
			continue
		}
		d.t.Reset()
		return k, at, badBytes(off+int64(at), seq)
	}
}

// utf7Decoder is strict UTF-7 (RFC 2152): "+" starts modified base64 of
// UTF-16BE units ended by "-" (dropped) or any other character (kept); "+-"
// is "+". Leftover bits must be zero and fewer than 6, surrogates paired,
// and a "+" must be followed by base64 or "-". Direct characters are ASCII.
// An error in a base64 run is reported at the character that completed the
// bad unit, or at the character that ended the run.
type utf7Decoder struct {
	state   uint8  // utf7Direct, utf7Plus (just after "+"), utf7Base64
	bits    uint32 // pending bits, the low nbits of them
	nbits   uint8
	high    rune // a high surrogate waiting for its low one, or 0
	skipBOM bool // drop a U+FEFF at the very start
	started bool // a character was decoded
}

const (
	utf7Direct = iota
	utf7Plus
	utf7Base64
)

func base64Value(c byte) int {
	switch {
	case c >= 'A' && c <= 'Z':
		return int(c - 'A')
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 26
	case c >= '0' && c <= '9':
		return int(c-'0') + 52
	case c == '+':
		return 62
	case c == '/':
		return 63
	}
	return -1
}

func (d *utf7Decoder) decode(dst, src []byte, off int64, atEOF bool) (nDst, nSrc int, err error) {
	for ; nSrc < len(src); nSrc++ {
		if len(dst)-nDst < 2*utf8.UTFMax {
			return nDst, nSrc, nil
		}
		c := src[nSrc]
		bad := func() (int, int, error) {
			return nDst, nSrc, badBytes(off+int64(nSrc), src[nSrc:nSrc+1])
		}
		switch d.state {
		case utf7Plus:
			if c == '-' {
				dst[nDst] = '+'
				nDst++
				d.state = utf7Direct
				d.started = true
				continue
			}
			if base64Value(c) < 0 {
				return bad()
			}
			d.state = utf7Base64
			fallthrough
		case utf7Base64:
			if v := base64Value(c); v >= 0 {
				d.bits = d.bits<<6 | uint32(v)
				d.nbits += 6
				if d.nbits < 16 {
					continue
				}
				d.nbits -= 16
				u := rune(d.bits >> d.nbits & 0xFFFF)
				d.bits &= 1<<d.nbits - 1
				switch {
				case d.high != 0 && (u < 0xDC00 || u > 0xDFFF):
					return bad()
				case d.high != 0:
					nDst += d.emit(dst[nDst:], 0x10000+(d.high-0xD800)<<10+(u-0xDC00))
					d.high = 0
				case u >= 0xD800 && u <= 0xDBFF:
					d.high = u
				case u >= 0xDC00 && u <= 0xDFFF:
					return bad()
				default:
					nDst += d.emit(dst[nDst:], u)
				}
				continue
			}
			// The run ends here.
			if d.high != 0 || d.nbits >= 6 || d.bits != 0 {
				return bad()
			}
			d.state, d.nbits = utf7Direct, 0 // the next run starts afresh
			if c == '-' {
				continue
			}
		}
		// utf7Direct
		switch {
		case c == '+':
			d.state = utf7Plus
		case c >= utf8.RuneSelf:
			return bad()
		default:
			dst[nDst] = c
			nDst++
			d.started = true
		}
	}
	if atEOF && d.state != utf7Direct {
		// End of file in a base64 run ends it; after a lone "+" it is an error.
		if d.state == utf7Plus || d.high != 0 || d.nbits >= 6 || d.bits != 0 {
			return nDst, nSrc, &EncodingError{Offset: off + int64(nSrc)}
		}
		d.state, d.nbits = utf7Direct, 0
	}
	return nDst, nSrc, nil
}

// emit writes r as UTF-8, dropping a byte order mark at the start of the text.
func (d *utf7Decoder) emit(dst []byte, r rune) int {
	first := !d.started
	d.started = true
	if first && d.skipBOM && r == 0xFEFF {
		return 0
	}
	return utf8.EncodeRune(dst, r)
}

// utf16NoBOM sniffs UTF-16 text without a BOM from its first two code
// units: ASCII text in UTF-16 has a zero in every other byte, which UTF-8
// text never has. It returns 'L' (little endian), 'B' (big endian) or 0.
func utf16NoBOM(b []byte) byte {
	if len(b) < 4 {
		return 0
	}
	switch {
	case b[0] != 0 && b[1] == 0 && b[2] != 0 && b[3] == 0 && b[0] < 0x80 && b[2] < 0x80:
		return 'L'
	case b[0] == 0 && b[1] != 0 && b[2] == 0 && b[3] != 0 && b[1] < 0x80 && b[3] < 0x80:
		return 'B'
	}
	return 0
}
