package publish

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// xmlRows publishes an XML entity file and returns every row as a map and
// the columns of each batch.
func xmlRows(t testing.TB, in []byte, batch int) (rows []map[string]string, cols [][]string, err error) {
	t.Helper()
	sink := &memSink{}
	_, err = PublishEntity(context.Background(), bytes.NewReader(in), sink, EntityOptions{
		Job: "j", ExecutionID: "x", Entity: "E", Format: "xml", BatchSize: batch,
	})
	if err != nil {
		return nil, nil, err
	}
	for _, m := range sink.msgs {
		e := decodeEvent(t, m.Body)
		if e.Data.RowCount != len(e.Data.Rows) {
			t.Fatalf("row_count %d, %d rows", e.Data.RowCount, len(e.Data.Rows))
		}
		rows = append(rows, e.Data.Rows...)
		cols = append(cols, e.Data.Columns)
	}
	return rows, cols, nil
}

const xmlDecl = `<?xml version="1.0" encoding="utf-8"?>` + "\r\n"

func TestXMLEntity(t *testing.T) {
	type row = map[string]string
	tests := []struct {
		name string
		in   []byte
		want []row
	}{
		{"XML-Element as F&O writes it", []byte(xmlDecl + "<Document>\r\n\t<CUSTCUSTOMERV3ENTITY>\r\n\t\t<CUSTOMERACCOUNT>US-001</CUSTOMERACCOUNT>\r\n\t\t<NAME>Contoso &amp; Sons</NAME>\r\n\t</CUSTCUSTOMERV3ENTITY>\r\n" +
			"\t<CUSTCUSTOMERV3ENTITY><CUSTOMERACCOUNT>US-002</CUSTOMERACCOUNT></CUSTCUSTOMERV3ENTITY>\r\n</Document>\r\n"),
			[]row{{"CUSTOMERACCOUNT": "US-001", "NAME": "Contoso & Sons"}, {"CUSTOMERACCOUNT": "US-002"}}},
		{"XML-Attribute", []byte(xmlDecl + `<Document><VEND ACCOUNT="V1" NAME="a &lt;b&gt; &#233;"/><VEND ACCOUNT="V2" NOTE=""/></Document>`),
			[]row{{"ACCOUNT": "V1", "NAME": "a <b> é"}, {"ACCOUNT": "V2", "NOTE": ""}}},
		{"records of any name", []byte(`<Root><A X="1"/><B Y="2"/></Root>`), []row{{"X": "1"}, {"Y": "2"}}},
		{"values kept as written", []byte("<D><R><V>  000123 </V><W>line1\nline2</W><E></E><F/></R></D>"),
			[]row{{"V": "  000123 ", "W": "line1\nline2", "E": "", "F": ""}}},
		{"CDATA and comments", []byte("<D><!-- c --><R><V><![CDATA[<x>&]]></V></R></D>"), []row{{"V": "<x>&"}}},
		{"xsi:nil field left out", []byte(`<D xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><R><A i:nil="true"/><B>1</B></R></D>`), []row{{"B": "1"}}},
		{"namespaces dropped from names", []byte(`<d:D xmlns:d="urn:x"><d:R><d:A>1</d:A></d:R></d:D>`), []row{{"A": "1"}}},
		{"namespace declarations are not fields", []byte(`<D xmlns="urn:x"><R xmlns:p="urn:y" A="1"/></D>`), []row{{"A": "1"}}},
		{"empty records, shape decided later", []byte(`<D><R/><R></R><R A="1"/></D>`), []row{{}, {}, {"A": "1"}}},
		{"empty root", []byte(xmlDecl + "<Document/>"), nil},
		{"prolog only", []byte(xmlDecl), nil},
		{"UTF-16 LE with BOM", utf16Bytes(`<?xml version="1.0" encoding="utf-16"?><D><R A="Müller"/></D>`, false), []row{{"A": "Müller"}}},
		{"UTF-16 BE with BOM", utf16Bytes(`<D><R><A>x</A></R></D>`, true), []row{{"A": "x"}}},
		{"UTF-16 LE without BOM", utf16Bytes(`<D><R><A>x</A></R></D>`, false)[2:], []row{{"A": "x"}}},
		{"UTF-8 BOM", []byte("\xEF\xBB\xBF<D><R><A>x</A></R></D>"), []row{{"A": "x"}}},
		{"text after the root ignored", []byte(`<D><R A="1"/></D>trailing`), []row{{"A": "1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, cols, err := xmlRows(t, tt.in, 1000)
			if err != nil {
				t.Fatalf("PublishEntity: %v", err)
			}
			if len(got) != len(tt.want) || len(got) > 0 && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("rows = %q, want %q", got, tt.want)
			}
			if len(cols) != 1 {
				t.Fatalf("%d messages, want 1", len(cols))
			}
		})
	}
}

func TestXMLEntityErrors(t *testing.T) {
	tests := []struct{ name, in, wantErr string }{
		{"not XML", "ACCOUNT,NAME\r\n1,2\r\n", "the file is not an XML document"},
		{"binary", "PK\x03\x04\x00", "not a well-formed XML document"},
		{"truncated in a record", "<D><R><A>1</A>", "after record 0: the file ends before the document does"},
		{"truncated after a record", "<D><R A='1'/>", "after record 1: the file ends before the document does"},
		{"mismatched tags", "<D><R><A>1</B></R></D>", "not a well-formed XML document"},
		{"bad entity", "<D><R><A>&nope;</A></R></D>", "not a well-formed XML document"},
		{"attribute record after element records", `<D><R><A>1</A></R><R A="1"/></D>`, "record 2 (<R>) holds fields as attributes, but the file's first records hold them as child elements"},
		{"element record after attribute records", `<D><R A="1"/><R><A>1</A></R></D>`, "record 2 (<R>) holds fields as child elements"},
		{"field with text and an element", "<D><R><A>1<B>1</B></A></R></D>", "child record <A> holds both text and elements"},
		{"field twice", "<D><R><A>1</A><A>2</A></R></D>", `field "A" occurs twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := xmlRows(t, []byte(tt.in), 10)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestXMLEntityColumnsPerBatch: a batch's columns are the fields its rows
// use, in order of first use, and rows carry only their own fields.
func TestXMLEntityColumnsPerBatch(t *testing.T) {
	in := `<D><R><A>1</A><B>2</B></R><R><C>3</C><A>4</A></R><R><B>5</B></R></D>`
	rows, cols, err := xmlRows(t, []byte(in), 2)
	if err != nil {
		t.Fatal(err)
	}
	wantCols := [][]string{{"A", "B", "C"}, {"B"}}
	wantRows := []map[string]string{{"A": "1", "B": "2"}, {"C": "3", "A": "4"}, {"B": "5"}}
	if !reflect.DeepEqual(cols, wantCols) || !reflect.DeepEqual(rows, wantRows) {
		t.Errorf("columns %q rows %q, want %q %q", cols, rows, wantCols, wantRows)
	}
}

// xmlGen streams an XML-Element document of n records without holding it.
type xmlGen struct {
	n, i int
	buf  bytes.Buffer
}

func (g *xmlGen) Read(p []byte) (int, error) {
	for g.buf.Len() < len(p) && g.i <= g.n {
		switch {
		case g.i == 0:
			g.buf.WriteString(xmlDecl + "<Document>")
		case g.i < g.n:
			fmt.Fprintf(&g.buf, "<ENTITY><ID>%d</ID><NAME>Name of record %d, with &amp; and text to make it longer</NAME><AMOUNT>%d.000000</AMOUNT></ENTITY>\r\n", g.i, g.i, g.i)
		default:
			g.buf.WriteString("</Document>")
		}
		g.i++
	}
	if g.buf.Len() == 0 {
		return 0, io.EOF
	}
	return g.buf.Read(p)
}

// TestXMLEntityMemoryFlat publishes a 27 MB XML-Element file: the heap
// stays bounded by a batch (about 4 MB seen), well below the file, so a
// reader that held the file would fail; more megabytes would only make
// the test slower (about 4 minutes for 100 MB under -race).
func TestXMLEntityMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 27 MB")
	}
	const records = 200_000
	var peak uint64
	var ms runtime.MemStats
	runtime.GC() // what earlier tests left is not this test's heap
	_, err := PublishEntity(context.Background(), &xmlGen{n: records}, discardSink{}, EntityOptions{
		Entity: "E", Format: "xml", BatchSize: 1000,
		Progress: func(s EntityStats) {
			if s.Batches%50 == 0 {
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if peak > 16<<20 {
		t.Errorf("heap reached %d MB while reading about 27 MB of XML, want it bounded by a batch", peak>>20)
	}
	t.Logf("peak heap %d MB", peak>>20)
}

// TestRefreshType: the manifest's DefaultRefreshType reaches every batch
// as the CloudEvents extension "refreshtype" and the AMQP header
// "refresh_type", and neither appears when it is unknown.
func TestRefreshType(t *testing.T) {
	for _, rt := range []string{"FullPush", "IncrementalPush", ""} {
		t.Run("refresh type "+rt, func(t *testing.T) {
			sink := &memSink{}
			_, err := PublishEntity(context.Background(), strings.NewReader("A\r\n1\r\n2\r\n3\r\n"), sink, EntityOptions{
				Entity: "E", Format: "csv", BatchSize: 2, RefreshType: rt,
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(sink.msgs) != 2 {
				t.Fatalf("%d messages, want 2", len(sink.msgs))
			}
			for i, m := range sink.msgs {
				e := decodeEvent(t, m.Body)
				h, ok := m.Headers["refresh_type"]
				if e.RefreshType != rt || (rt != "") != ok || ok && h != rt {
					t.Errorf("batch %d: refreshtype %q, header %v (%v); want %q", i, e.RefreshType, h, ok, rt)
				}
				if rt == "" && strings.Contains(string(m.Body), "refreshtype") {
					t.Errorf("batch %d names a refresh type it does not know: %s", i, m.Body)
				}
			}
		})
	}
}

// TestEmptyFileAnyFormat: a 0-byte entity file is an entity without rows
// whatever its format; a format no reader knows fails with its name.
func TestEmptyFileAnyFormat(t *testing.T) {
	for _, format := range []string{"csv", "xlsx", "xml", "fixed-width", "unknown"} {
		t.Run(format, func(t *testing.T) {
			sink := &memSink{}
			st, err := PublishEntity(context.Background(), strings.NewReader(""), sink, EntityOptions{Entity: "E", Format: format})
			if err != nil {
				t.Fatalf("PublishEntity of 0 bytes: %v", err)
			}
			if len(sink.msgs) != 1 || st.Rows != 0 {
				t.Fatalf("%d messages, %d rows; want one message without rows", len(sink.msgs), st.Rows)
			}
			if e := decodeEvent(t, sink.msgs[0].Body); e.Data.RowCount != 0 || !e.Data.LastBatch || len(e.Data.Columns) != 0 {
				t.Errorf("got %+v, want row_count 0, last_batch, no columns", e.Data)
			}
		})
	}
	_, err := PublishEntity(context.Background(), strings.NewReader("0001ABC  Contoso   \r\n"), &memSink{}, EntityOptions{Entity: "E", Format: "json"})
	if err == nil || !strings.Contains(err.Error(), `format "json" is not supported`) {
		t.Errorf("json file: err = %v, want one naming the format", err)
	}
}

// xmlPlainDoc builds an XML document of n plain records of 20 fields with
// F&O-like values, in element or attribute shape.
func xmlPlainDoc(n int, attrs bool) []byte {
	var b bytes.Buffer
	b.WriteString(xmlDecl + "<Document>\r\n")
	for r := range n {
		if attrs {
			b.WriteString("<CUSTCUSTOMERV3ENTITY")
		} else {
			b.WriteString("<CUSTCUSTOMERV3ENTITY>")
		}
		for c := range 20 {
			var v string
			switch c % 5 {
			case 0:
				v = fmt.Sprintf("%08d", r)
			case 1:
				v = fmt.Sprintf("Customer %d &amp; Sons", r)
			case 2:
				v = "2024-03-01 00:00:00"
			case 3:
				v = fmt.Sprintf("%d.000000", r*7)
			default:
				v = "USMF"
			}
			if attrs {
				fmt.Fprintf(&b, ` FIELDNAME%02d="%s"`, c, v)
			} else {
				fmt.Fprintf(&b, "<FIELDNAME%02d>%s</FIELDNAME%02d>", c, v, c)
			}
		}
		if attrs {
			b.WriteString(" />\r\n")
		} else {
			b.WriteString("</CUSTCUSTOMERV3ENTITY>\r\n")
		}
	}
	b.WriteString("</Document>\r\n")
	return b.Bytes()
}

// xmlCompositeDoc builds an XML-Element document of n sales order headers
// of 10 fields, each holding 4 lines of 10 fields with 2 charges each.
func xmlCompositeDoc(n int) []byte {
	var b bytes.Buffer
	b.WriteString(xmlDecl + "<Document>\r\n")
	fields := func(prefix string, r int) {
		for c := range 10 {
			fmt.Fprintf(&b, "<%s%02d>value %d of %d</%s%02d>", prefix, c, c, r, prefix, c)
		}
	}
	for r := range n {
		b.WriteString("<SALESORDERHEADERV2ENTITY>")
		fields("HEADERFIELD", r)
		for range 4 {
			b.WriteString("<SALESORDERLINEV2ENTITY>")
			fields("LINEFIELD", r)
			for range 2 {
				b.WriteString("<SALESORDERLINECHARGEENTITY><CODE>FRT</CODE><AMOUNT>5.000000</AMOUNT></SALESORDERLINECHARGEENTITY>")
			}
			b.WriteString("</SALESORDERLINEV2ENTITY>")
		}
		b.WriteString("</SALESORDERHEADERV2ENTITY>\r\n")
	}
	b.WriteString("</Document>\r\n")
	return b.Bytes()
}

// BenchmarkXML publishes plain XML records in both shapes to a discarding
// sink: the rate composite support must not lower. "composite" reports
// headers (rows) per second of a sales order entity with lines and
// charges.
func BenchmarkXML(b *testing.B) {
	const rows = 20000
	for _, shape := range []struct {
		name  string
		attrs bool
	}{{"element", false}, {"attribute", true}} {
		b.Run(shape.name, func(b *testing.B) {
			in := xmlPlainDoc(rows, shape.attrs)
			benchXML(b, in, rows)
		})
	}
	b.Run("composite", func(b *testing.B) {
		benchXML(b, xmlCompositeDoc(rows/10), rows/10)
	})
}

func benchXML(b *testing.B, in []byte, rows int64) {
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		st, err := PublishEntity(context.Background(), bytes.NewReader(in), discardSink{}, EntityOptions{
			Job: "bench", ExecutionID: "e", Entity: "E", Format: "xml",
		})
		if err != nil || st.Rows != rows {
			b.Fatalf("want %d rows and no error, got %d, %v", rows, st.Rows, err)
		}
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(rows)*float64(b.N)/sec, "rows/s")
	b.ReportMetric(float64(len(in))*float64(b.N)/sec/1e6, "MB/s")
}
