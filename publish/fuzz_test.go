package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func FuzzCSVEntity(f *testing.F) {
	seeds := []string{
		"", "A,B\r\n1,2\r\n", "\xef\xbb\xbfA;B\n1;2\n3;4\n", "A\n\"x\ny\"\n", "A,B\n\"1,2\n",
		"A|B\n1|2", "A\tB\n\"a\"\"b\"\tc\n", "A,A\n1,2\n", "\xff\xfeA\x00,\x00B\x00\n\x001\x00,\x002\x00", "A,B\n1\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s), uint8(2))
	}
	f.Fuzz(func(t *testing.T, in []byte, batch uint8) {
		sink := &memSink{}
		st, err := PublishEntity(context.Background(), bytes.NewReader(in), sink, EntityOptions{
			Job: "j", Entity: "E", Format: "csv", BatchSize: int(batch%8) + 1,
		})
		if err != nil {
			return
		}
		var rows int64
		for i, m := range sink.msgs {
			if !json.Valid(m.Body) {
				t.Fatalf("message %d is not valid JSON: %s", i, m.Body)
			}
			var e event
			if err := json.Unmarshal(m.Body, &e); err != nil {
				t.Fatalf("message %d: decode: %v", i, err)
			}
			if e.Data.RowCount != len(e.Data.Rows) {
				t.Fatalf("message %d: row_count %d but %d rows", i, e.Data.RowCount, len(e.Data.Rows))
			}
			if e.Data.LastBatch != (i == len(sink.msgs)-1) {
				t.Fatalf("message %d of %d: last_batch %v", i, len(sink.msgs), e.Data.LastBatch)
			}
			rows += int64(e.Data.RowCount)
		}
		if len(sink.msgs) == 0 || rows != st.Rows {
			t.Fatalf("want at least one message and rows %d, got %d messages with %d rows", st.Rows, len(sink.msgs), rows)
		}
	})
}

// FuzzCSVReaderChunks checks that the reader gives the same records, or the
// same error, whatever the sizes of the reads that feed it.
func FuzzCSVReaderChunks(f *testing.F) {
	for _, s := range []string{"a,b\r\n\"c\r\nd\",e\n", "\"x\"\"y\"\n\n", "a\rb\n", "\"unterminated\n", "a,\"b\"c\n", ",,\r\n\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, errWhole := readAll(t, bytes.NewReader(in), ',')
		bytewise, errByte := readAll(t, iotest.OneByteReader(bytes.NewReader(in)), ',')
		if (errWhole == nil) != (errByte == nil) || (errWhole != nil && errWhole.Error() != errByte.Error()) {
			t.Fatalf("errors differ on %q: whole %v, byte by byte %v", in, errWhole, errByte)
		}
		if !reflect.DeepEqual(whole, bytewise) {
			t.Fatalf("records differ on %q:\nwhole %q\nbytes %q", in, whole, bytewise)
		}
		if errWhole == nil {
			// Quoted bytes are kept exactly: the records hold every
			// non-structural byte of the input.
			var n int
			for _, r := range whole {
				for _, v := range r {
					n += len(v)
				}
			}
			if n > len(in) {
				t.Fatalf("records hold %d bytes, more than the %d of the input", n, len(in))
			}
		}
	})
}

// FuzzXLSXSheet feeds arbitrary sheet XML to the scanner: it must never
// panic or hang, and every row it returns must fit the sheet limits.
func FuzzXLSXSheet(f *testing.F) {
	seeds := []string{
		sheetHead + `<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="inlineStr"><is><t>x&amp;y_x000D_</t></is></c></row>` + sheetTail,
		sheetHead + `<row r="2"><c r="C2" s="1"><v>45352.5</v></c><c t="b"><v>1</v></c></row><row/>` + sheetTail,
		sheetHead + `<!-- c --><x:row><x:c r="ZZ9"><x:v>1</x:v></x:c></x:row><![CDATA[a]]>` + sheetTail,
		`<row r="1"><c r="A1"><v>1`,
		`<c r="A1"/><row r="0">`,
		sheetHead + `<row r="1"><c r="A1" s="0" t="inlineStr"><is><t>US-001</t></is></c><c r="B1" t="inlineStr"><is><t xml:space="preserve"> a </t></is></c>` +
			`<c r="C1" t="inlineStr"><is><t/></is></c><c r="D1" t="inlineStr"><is><r><t>x</t></r><r><t>&amp;_x0041_</t></r></is></c></row>` + sheetTail,
		`<row r="1"><c r="A1" t="inlineStr"><is><t>1</t></is`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		tab := &sharedStrings{}
		tab.add([]byte("s0"))
		sc := newSheetScanner(bytes.NewReader(in), tab, []bool{false, true}, false)
		for i := 0; i < 100000; i++ {
			cells, line, err := sc.nextRow()
			if err != nil {
				return
			}
			if len(cells) == 0 || len(cells) > 16384 || line < 1 || line > 1<<20 {
				t.Fatalf("row %d: %d cells on line %d", i, len(cells), line)
			}
			for c, v := range cells {
				if c < len(sc.plain) && sc.plain[c] && !plainBytes([]byte(v)) {
					t.Fatalf("row %d column %s %q marked plain", i, columnName(c), v)
				}
			}
		}
		t.Fatalf("more rows than the input could hold")
	})
}

// FuzzSharedStrings: the shared strings parser never panics.
func FuzzSharedStrings(f *testing.F) {
	f.Add([]byte(`<sst><si><t>a</t></si><si><r><t>b</t></r><rPh><t>c</t></rPh></si><si/></sst>`))
	f.Fuzz(func(t *testing.T, in []byte) {
		tab := &sharedStrings{}
		_ = tab.read(bytes.NewReader(in))
		for i := range tab.ends {
			if _, ok := tab.get(i); !ok {
				t.Fatalf("string %d of %d missing", i, len(tab.ends))
			}
		}
	})
}

// FuzzXMLEntity feeds arbitrary bytes to the XML entity reader in both
// shapes: it must never panic, and what it publishes is valid JSON whose
// rows hold only the columns their batch names.
func FuzzXMLEntity(f *testing.F) {
	seeds := []string{
		"", xmlDecl + "<Document><R><A>1</A><B>x &amp; y</B></R><R><A>2</A></R></Document>",
		`<Document><R A="1" B="&lt;"/><R A="2"/></Document>`, `<D><R/><R A="1"/></D>`,
		`<D xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><R><A i:nil="true"/></R></D>`,
		"<D><R><A><![CDATA[x]]></A></R></D>", "<D><R><A>1</A><A>2</A></R></D>", "<D><R><A>1</A>",
		"\xff\xfe<\x00D\x00/\x00>\x00", "A,B\r\n1,2",
		// composite entities: child records, nested, interleaved, empty
		"<D><H><NO>1</NO><L><N>1</N><C><X>a</X></C></L><T><Y/></T><L><N>2</N></L></H><H><NO>2</NO><L/></H></D>",
		`<D><H NO="1"><L N="1"><C X="a"/><C/></L><T/><L N="2"/></H><H NO="2"/></D>`,
		"<D><H><L>x<N>1</N></L></H></D>", "<D><H><L>x</L><L><N>1</N></L></H></D>",
		`<D><H L="x"><L/></H></D>`, "<D><R><R><R><R><R><R><R><R><R><R><R><R><R><R><R><R><R><N>1</N></R></R></R></R></R></R></R></R></R></R></R></R></R></R></R></R></R></D>",
	}
	for _, s := range seeds {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, in []byte, batch uint8) {
		sink := &memSink{}
		st, err := PublishEntity(context.Background(), bytes.NewReader(in), sink, EntityOptions{
			Job: "j", Entity: "E", Format: "xml", BatchSize: int(batch%8) + 1, RefreshType: "FullPush",
		})
		if err != nil {
			return
		}
		var rows int64
		for i, m := range sink.msgs {
			var e struct {
				Data struct {
					LastBatch bool             `json:"last_batch"`
					RowCount  int              `json:"row_count"`
					Columns   []string         `json:"columns"`
					Rows      []map[string]any `json:"rows"`
				} `json:"data"`
			}
			if !json.Valid(m.Body) || json.Unmarshal(m.Body, &e) != nil {
				t.Fatalf("message %d is not a valid event: %s", i, m.Body)
			}
			for _, r := range e.Data.Rows {
				if err := checkRow(r, 1); err != nil {
					t.Fatalf("message %d: %v: %s", i, err, m.Body)
				}
			}
			cols := map[string]bool{}
			for _, c := range e.Data.Columns {
				if cols[c] {
					t.Fatalf("message %d: column %q listed twice", i, c)
				}
				cols[c] = true
			}
			for _, r := range e.Data.Rows {
				for k := range r {
					if !cols[k] {
						t.Fatalf("message %d: row field %q not among the columns %q", i, k, e.Data.Columns)
					}
				}
			}
			if e.Data.RowCount != len(e.Data.Rows) || e.Data.LastBatch != (i == len(sink.msgs)-1) {
				t.Fatalf("message %d of %d: row_count %d with %d rows, last_batch %v", i, len(sink.msgs), e.Data.RowCount, len(e.Data.Rows), e.Data.LastBatch)
			}
			rows += int64(e.Data.RowCount)
		}
		if len(sink.msgs) == 0 || rows != st.Rows {
			t.Fatalf("want at least one message and rows %d, got %d messages with %d rows", st.Rows, len(sink.msgs), rows)
		}
	})
}

// checkRow reports a row value other than a string or an array of rows,
// or child rows nested deeper than xmlMaxDepth: what the message schema
// and the reader's depth cap allow.
func checkRow(r map[string]any, level int) error {
	if level > xmlMaxDepth {
		return fmt.Errorf("rows nested %d levels deep", level)
	}
	for k, v := range r {
		switch v := v.(type) {
		case string:
		case []any:
			if len(v) == 0 {
				return fmt.Errorf("field %q: an empty array of child rows", k)
			}
			for _, c := range v {
				cr, ok := c.(map[string]any)
				if !ok {
					return fmt.Errorf("field %q: %T in an array of child rows", k, c)
				}
				if err := checkRow(cr, level+1); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("field %q holds %T", k, v)
		}
	}
	return nil
}

// FuzzXMLEntityChunks checks that the XML reader gives the same records,
// or fails alike, whatever the sizes of the reads that feed it.
func FuzzXMLEntityChunks(f *testing.F) {
	for _, s := range []string{`<D><R A="1" B="2"/><R A="3"/></D>`, "<D><R><A>1</A></R><R><B>&#233;</B></R></D>", "<D><R><A>1</A>", "\xef\xbb\xbf<D><R><A/></R></D>",
		"<D><H><A>1</A><L><N>1</N><C><X/></C></L><L>\n</L></H><H><L/></H></D>", `<D><H A="1"><L N="1"><C/></L> <L/></H></D>`} {
		f.Add([]byte(s))
	}
	read := func(r io.Reader) ([]string, error) {
		text, err := newTextReader(r, "", "XML-Element")
		if err != nil {
			return nil, err
		}
		src := newXMLSource(text)
		var out []string
		for {
			rec, _, err := src.next()
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			if err != nil {
				return out, err
			}
			// The record as the encoder writes it, child records included.
			var e batchEncoder
			e.init(EntityOptions{Entity: "E"}, nil)
			e.initNamed()
			if tree := src.nested(); tree != nil {
				e.addTreeRow(tree)
			} else {
				e.addNamedRow(src.fields(), rec)
			}
			out = append(out, string(e.buf[e.gap:]))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, errWhole := read(bytes.NewReader(in))
		bytewise, errByte := read(iotest.OneByteReader(bytes.NewReader(in)))
		if (errWhole == nil) != (errByte == nil) {
			t.Fatalf("errors differ on %q: whole %v, byte by byte %v", in, errWhole, errByte)
		}
		if !reflect.DeepEqual(whole, bytewise) {
			t.Fatalf("records differ on %q:\nwhole %q\nbytes %q", in, whole, bytewise)
		}
	})
}

// FuzzCSVPlainFields checks the reader's plain flags: a field marked plain
// holds only ASCII that JSON keeps as is, and a record encoded from the
// reader's buffers (plain values copied) is byte for byte the record encoded
// from its strings (every value escaped), whatever the delimiter.
func FuzzCSVPlainFields(f *testing.F) {
	for _, s := range []string{"a,b\r\n\"c\r\nd\",e\n", "x\\y,\"q\"\"\",\x01\n", "caf\xc3\xa9,\xff,\"\xe2\x80\xa8\"\n", "a\rb,c\n", "\"plain quoted\",1\n"} {
		f.Add([]byte(s), byte(','))
	}
	f.Add([]byte("a\tb\\\t\"c\td\"\n"), byte('\t'))
	f.Fuzz(func(t *testing.T, in []byte, delim byte) {
		if !validDelim(rune(delim)) {
			delim = ','
		}
		cr := newCSVReader(bytes.NewReader(in), delim)
		for n := 0; n < 1000; n++ {
			if err := cr.readSpans(); err != nil {
				return
			}
			raw := cr.record()
			rec := make([]string, len(raw.spans))
			for i, s := range raw.spans {
				rec[i] = string(raw.field(i))
				if s.plain && !plainBytes(raw.field(i)) {
					t.Fatalf("field %d %q marked plain", i, rec[i])
				}
			}
			header := make([]string, len(rec))
			for i := range header {
				header[i] = "C" + string(rune('A'+i%26)) + strings.Repeat("x", i/26)
			}
			var with, without batchEncoder
			with.init(EntityOptions{Entity: "E"}, header)
			without.init(EntityOptions{Entity: "E"}, header)
			with.addRecord(raw)
			without.addRow(rec, nil)
			if !bytes.Equal(with.buf, without.buf) {
				t.Fatalf("row %q: encoded with plain flags\n%s\nwithout\n%s", rec, with.buf, without.buf)
			}
		}
	})
}
