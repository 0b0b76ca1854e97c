package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// xmlEvents publishes an XML entity file and returns each batch's columns
// and rows, the rows decoded as JSON values (any), so that child record
// arrays come out as they are.
func xmlEvents(t testing.TB, in []byte, batch int) (cols [][]string, rows []any, err error) {
	t.Helper()
	sink := &memSink{}
	_, err = PublishEntity(context.Background(), bytes.NewReader(in), sink, EntityOptions{
		Job: "j", ExecutionID: "x", Entity: "E", Format: "xml", BatchSize: batch,
	})
	if err != nil {
		return nil, nil, err
	}
	for i, m := range sink.msgs {
		var e struct {
			Data struct {
				RowCount int      `json:"row_count"`
				Columns  []string `json:"columns"`
				Rows     []any    `json:"rows"`
			} `json:"data"`
		}
		if err := json.Unmarshal(m.Body, &e); err != nil {
			t.Fatalf("message %d: %v: %s", i, err, m.Body)
		}
		if e.Data.RowCount != len(e.Data.Rows) {
			t.Fatalf("message %d: row_count %d, %d rows", i, e.Data.RowCount, len(e.Data.Rows))
		}
		cols = append(cols, e.Data.Columns)
		rows = append(rows, e.Data.Rows...)
	}
	return cols, rows, nil
}

// jsonValue decodes s, which the test writes, as a JSON value.
func jsonValue(t testing.TB, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("want %s: %v", s, err)
	}
	return v
}

// TestXMLComposite reads composite entities, whose records hold their
// child entity's records as nested elements, in both shapes.
func TestXMLComposite(t *testing.T) {
	tests := []struct {
		name string
		in   string
		cols string // JSON: the columns of each batch
		rows string // JSON: every row
	}{
		{
			name: "element shape, sales order with lines",
			in: xmlDecl + `<Document>
  <SALESORDERHEADERV2ENTITY>
    <SALESORDERNUMBER>SO-1</SALESORDERNUMBER>
    <CUSTOMERACCOUNT>C1</CUSTOMERACCOUNT>
    <SALESORDERLINEV2ENTITY>
      <LINENUMBER>1</LINENUMBER><ITEMNUMBER>A</ITEMNUMBER>
    </SALESORDERLINEV2ENTITY>
    <SALESORDERLINEV2ENTITY>
      <LINENUMBER>2</LINENUMBER><ITEMNUMBER>B</ITEMNUMBER>
    </SALESORDERLINEV2ENTITY>
  </SALESORDERHEADERV2ENTITY>
</Document>`,
			cols: `[["SALESORDERNUMBER","CUSTOMERACCOUNT","SALESORDERLINEV2ENTITY"]]`,
			rows: `[{"SALESORDERNUMBER":"SO-1","CUSTOMERACCOUNT":"C1","SALESORDERLINEV2ENTITY":[
				{"LINENUMBER":"1","ITEMNUMBER":"A"},{"LINENUMBER":"2","ITEMNUMBER":"B"}]}]`,
		},
		{
			name: "attribute shape, sales order with lines",
			in: xmlDecl + `<Document>
  <SALESORDERHEADERV2ENTITY SALESORDERNUMBER="SO-1" CUSTOMERACCOUNT="C1">
    <SALESORDERLINEV2ENTITY LINENUMBER="1" ITEMNUMBER="A" />
    <SALESORDERLINEV2ENTITY LINENUMBER="2" ITEMNUMBER="B" />
  </SALESORDERHEADERV2ENTITY>
</Document>`,
			cols: `[["SALESORDERNUMBER","CUSTOMERACCOUNT","SALESORDERLINEV2ENTITY"]]`,
			rows: `[{"SALESORDERNUMBER":"SO-1","CUSTOMERACCOUNT":"C1","SALESORDERLINEV2ENTITY":[
				{"LINENUMBER":"1","ITEMNUMBER":"A"},{"LINENUMBER":"2","ITEMNUMBER":"B"}]}]`,
		},
		{
			name: "element shape, nested two levels",
			in: `<D><H><NO>1</NO>
				<L><LINE>1</LINE><C><CODE>FRT</CODE><AMT>5</AMT></C><C><CODE>INS</CODE></C></L>
				<L><LINE>2</LINE></L></H></D>`,
			cols: `[["NO","L"]]`,
			rows: `[{"NO":"1","L":[{"LINE":"1","C":[{"CODE":"FRT","AMT":"5"},{"CODE":"INS"}]},{"LINE":"2"}]}]`,
		},
		{
			name: "attribute shape, nested two levels",
			in:   `<D><H NO="1"><L LINE="1"><C CODE="FRT" AMT="5"/><C CODE="INS"/></L><L LINE="2"/></H></D>`,
			cols: `[["NO","L"]]`,
			rows: `[{"NO":"1","L":[{"LINE":"1","C":[{"CODE":"FRT","AMT":"5"},{"CODE":"INS"}]},{"LINE":"2"}]}]`,
		},
		{
			name: "children interleaved with fields and with each other",
			in:   `<D><H><L><N>1</N></L><A>a</A><T><X>t1</X></T><L><N>2</N></L><B>b</B><T><X>t2</X></T></H></D>`,
			cols: `[["A","B","L","T"]]`,
			rows: `[{"A":"a","B":"b","L":[{"N":"1"},{"N":"2"}],"T":[{"X":"t1"},{"X":"t2"}]}]`,
		},
		{
			name: "attribute shape, children of several child entities interleaved",
			in:   `<D><H A="a"><L N="1"/><T X="t1"/><L N="2"/></H></D>`,
			cols: `[["A","L","T"]]`,
			rows: `[{"A":"a","L":[{"N":"1"},{"N":"2"}],"T":[{"X":"t1"}]}]`,
		},
		{
			name: "a header without children next to one with children",
			in:   `<D><H><NO>1</NO></H><H><NO>2</NO><L><N>1</N></L></H><H><NO>3</NO></H></D>`,
			cols: `[["NO","L"],["NO"]]`,
			rows: `[{"NO":"1"},{"NO":"2","L":[{"N":"1"}]},{"NO":"3"}]`,
		},
		{
			name: "attribute shape, headers without children and a child without fields",
			in:   `<D><H NO="1"/><H NO="2"><L/><L N="2"/></H><H NO="3"></H></D>`,
			cols: `[["NO","L"],["NO"]]`,
			rows: `[{"NO":"1"},{"NO":"2","L":[{},{"N":"2"}]},{"NO":"3"}]`,
		},
		{
			name: "attribute shape, a header without fields holds children",
			in:   `<D><H NO="1"/><H><L N="1"/></H></D>`,
			cols: `[["NO","L"]]`,
			rows: `[{"NO":"1"},{"L":[{"N":"1"}]}]`,
		},
		{
			name: "empty element: a field until its name is a child record, then an empty child record",
			in: `<D><H><NO>1</NO><L/></H><H><NO>2</NO><L><N>1</N></L></H>
				<H><NO>3</NO><L/><L>  </L><L><N>2</N></L></H><H><NO>4</NO><L>x</L></H></D>`,
			cols: `[["NO","L"],["NO","L"]]`,
			rows: `[{"NO":"1","L":""},{"NO":"2","L":[{"N":"1"}]},{"NO":"3","L":[{},{},{"N":"2"}]},{"NO":"4","L":"x"}]`,
		},
		{
			name: "xsi:nil fields of child records left out",
			in: `<D xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><H><NO>1</NO>
				<L><N i:nil="true"/><Q>2</Q></L></H></D>`,
			cols: `[["NO","L"]]`,
			rows: `[{"NO":"1","L":[{"Q":"2"}]}]`,
		},
		{
			name: "child records do not count toward the batch size",
			in:   `<D><H A="1"><L/><L/><L/></H><H A="2"><L/></H><H A="3"/></D>`,
			cols: `[["A","L"],["A"]]`,
			rows: `[{"A":"1","L":[{},{},{}]},{"A":"2","L":[{}]},{"A":"3"}]`,
		},
		{
			name: "values escaped in child records",
			in:   `<D><H><L><V>"a"&amp;&lt;b&gt;` + "\t\u2028é" + `</V></L></H></D>`,
			cols: `[["L"]]`,
			rows: `[{"L":[{"V":"\"a\"&<b>\t\u2028é"}]}]`,
		},
		{
			name: "depth of the cap is allowed",
			in:   nest(xmlMaxDepth, false),
			cols: `[["N","R"]]`,
			rows: nestJSON(xmlMaxDepth),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cols, rows, err := xmlEvents(t, []byte(tt.in), 2)
			if err != nil {
				t.Fatalf("PublishEntity: %v", err)
			}
			var gotCols any = jsonValue(t, mustJSON(t, cols))
			if want := jsonValue(t, tt.cols); !reflect.DeepEqual(gotCols, want) {
				t.Errorf("columns\ngot  %s\nwant %s", mustJSON(t, cols), mustJSON(t, want))
			}
			if want := jsonValue(t, tt.rows); !reflect.DeepEqual(any(rows), want) {
				t.Errorf("rows\ngot  %s\nwant %s", mustJSON(t, rows), mustJSON(t, want))
			}
		})
	}
}

// nest returns a document whose one record holds child records n levels
// deep in all: each record has a field N and one child record.
func nest(levels int, attrs bool) string {
	var b strings.Builder
	b.WriteString("<D>")
	for i := range levels {
		if attrs {
			b.WriteString(`<R N="` + string(rune('a'+i)) + `">`)
		} else {
			b.WriteString("<R><N>" + string(rune('a'+i)) + "</N>")
		}
	}
	b.WriteString(strings.Repeat("</R>", levels) + "</D>")
	return b.String()
}

// nestJSON is the row nest makes.
func nestJSON(levels int) string {
	var b strings.Builder
	b.WriteString("[")
	for i := range levels {
		if i > 0 {
			b.WriteString(`,"R":[`)
		}
		b.WriteString(`{"N":"` + string(rune('a'+i)) + `"`)
	}
	b.WriteString(strings.Repeat("}]", levels-1) + "}]")
	return b.String()
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestXMLCompositeErrors(t *testing.T) {
	tests := []struct{ name, in, wantErr string }{
		{"text and elements in a child element", "<D><H><L>text<N>1</N></L></H></D>",
			"record 1 (<H>), child record <L> holds both text and elements"},
		{"elements then text in a child record", "<D><H><L><N>1</N>text</L></H></D>",
			"record 1 (<H>), child record <L> holds both text and elements"},
		{"text and elements in a record", "<D><H>text<N>1</N></H></D>", "record 1 (<H>) holds both text and elements"},
		{"text and child records in an attribute record", `<D><H A="1"><L/>text</H></D>`, "record 1 (<H>) holds both text and elements"},
		{"text in an attribute child record", `<D><H A="1"><L N="1">text</L></H></D>`,
			"record 1 (<H>) holds fields as child elements, but the file's first records hold them as attributes"},
		{"child record named like a field before it", "<D><H><L>x</L><L><N>1</N></L></H></D>",
			`record 1 (<H>): field "L" and child records <L> share a name`},
		{"field named like a child record before it", "<D><H><L><N>1</N></L><L>x</L></H></D>",
			`record 1 (<H>): field "L" and child records <L> share a name`},
		{"attribute named like a child record", `<D><H L="x"><L N="1"/></H></D>`,
			`record 1 (<H>): field "L" and child records <L> share a name`},
		{"same name in a child record", "<D><H><L><C>x</C><C><N>1</N></C></L></H></D>",
			`record 1 (<H>), child record <L>: field "C" and child records <C> share a name`},
		{"field twice in an element child record", "<D><H><L><N>1</N><N>2</N></L></H></D>",
			`record 1 (<H>), child record <L>: field "N" occurs twice`},
		{"too deep, element shape", nest(xmlMaxDepth+1, false), "child record <R> is nested 17 levels deep, more than the 16"},
		{"too deep, attribute shape", nest(xmlMaxDepth+1, true), "child record <R> is nested 17 levels deep, more than the 16"},
		{"too deep without fields", "<D>" + strings.Repeat("<R>", 40) + "x" + strings.Repeat("</R>", 40) + "</D>", "nested 17 levels deep"},
		{"attribute records after element records with children", `<D><H><L><N>1</N></L></H><H A="1"><L N="1"/></H></D>`,
			"record 2 (<H>) holds fields as attributes, but the file's first records hold them as child elements"},
		{"truncated in a child record", "<D><H><L><N>1</N>", "after record 0: the file ends before the document does"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := xmlEvents(t, []byte(tt.in), 10)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestXMLCompositeTooLarge: a record's child records count toward the
// record size cap, even when they are empty.
func TestXMLCompositeTooLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 64 MiB")
	}
	n := xmlMaxRecord/(xmlNodeCost+1) + 1
	in := "<D><H A=\"1\">" + strings.Repeat("<L/>", n) + "</H></D>"
	_, _, err := xmlEvents(t, []byte(in), 10)
	if want := "record 1 (<H>) is larger than 64 MiB with its child records"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want one containing %q", err, want)
	}
}
