package sink

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// decodeCases are bodies both decoders must read alike; ok: they decode.
var decodeCases = []struct {
	name string
	body string
	ok   bool
}{
	{"as published", body(2, `"columns":["ID","NAME"],"rows":[{"ID":"1","NAME":"a"},{"ID":"2","NAME":""}]`), true},
	{"a field left out is nil", body(2, `"columns":["ID","NAME"],"rows":[{"ID":"1"},{"NAME":"b"}]`), true},
	{"fields in another order", body(1, `"columns":["ID","NAME"],"rows":[{"NAME":"a","ID":"1"}]`), true},
	{"a column's name the start of another's", body(2, `"columns":["A","AB"],"rows":[{"AB":"1","A":"2"},{"A":"3","AB":"4"}]`), true},
	{"non-ASCII column names", body(2, `"columns":["É","N"],"rows":[{"É":"1","N":"a"},{"\u00c9":"2"}]`), true},
	{"a repeated field: the last wins", body(1, `"columns":["ID","NAME"],"rows":[{"ID":"1","ID":"2"}]`), true},
	{"a null row", body(2, `"columns":["ID"],"rows":[null,{"ID":"1"}]`), true},
	{"no rows", body(0, `"columns":["ID"],"rows":[]`), true},
	{"null rows and columns", body(0, `"columns":null,"rows":null`), true},
	{"rows before columns", body(2, `"rows":[{"ID":"1"},{"NAME":"x"}],"columns":["ID","NAME"]`), true},
	{"repeated and null column names", body(2, `"columns":["ID","ID",null,"NAME"],"rows":[{"ID":"1","":"e"},{"NAME":"n"}]`), true},
	{"escapes", body(2, `"columns":["A\"B","C"],"rows":[{"A\"B":"x\n\t\\\/\"\b\f\r","C":"\u00e9\u6771\ud83d\ude00"},{"C":"\u0000"}]`), true},
	{"lone surrogates", body(2, `"columns":["A"],"rows":[{"A":"\ud800x\udc00\ud800\u0041"},{"A":"\ud83d\ud83d\ude00"}]`), true},
	{"invalid UTF-8", body(2, "\"columns\":[\"A\"],\"rows\":[{\"A\":\"a\xffb\xc3\"},{\"A\":\"\xed\xa0\x80 ok é\"}]"), true},
	{"escaped member names", strings.Replace(body(2, `"columns":["ID"],"rows":[{"\u0049D":"1"},{"ID":"2"}]`), `"type"`, `"\u0074ype"`, 1), true},
	{"names in other cases", strings.NewReplacer(`"type"`, `"TYPE"`, `"run_id"`, `"Run_ID"`).Replace(body(2, `"columns":["ID"],"rows":[{"ID":"1"},{"ID":"2"}]`)), true},
	{"unknown members of any shape", strings.Replace(body(2, `"columns":["ID"],"rows":[{"ID":"1"},{"ID":"2"}],"x":{"y":[1,-2.5e+3,true,false,null,"z",{}]}`), `"source"`, `"more":[[]],"source"`, 1), true},
	{"white space", strings.ReplaceAll(body(2, `"columns" : [ "ID" ] , "rows" : [ { "ID" : "1" } , null ]`), ",", " ,\n\t\r"), true},
	{"null header fields", strings.NewReplacer(`"time":"2026-03-01T02:00:00Z"`, `"time":null`, `"FullPush"`, `null`, `"batch_count":1,"last_batch":true`, `"batch_count":null,"last_batch":null`).Replace(body(2, `"columns":["ID"],"rows":[{"ID":"1"},{"ID":"2"}]`)), true},
	{"a traceparent", strings.Replace(body(2, `"columns":["ID"],"rows":[{"ID":"1"},{"ID":"2"}]`), `"source"`, `"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","source"`, 1), true},
	{"a traceparent that is not a string", strings.Replace(body(2, `"columns":["ID"],"rows":[{"ID":"1"},{"ID":"2"}]`), `"source"`, `"traceparent":{"x":[1,null]},"source"`, 1), true},
	{"child records", body(2, `"columns":["ID","LINES"],"rows":[{"ID":"1","LINES":[{"L":"1"}]},{"ID":"2"}]`), true},

	{"a number value", body(2, `"columns":["ID"],"rows":[{"ID":1},{"ID":"2"}]`), false},
	{"a null value", body(2, `"columns":["ID"],"rows":[{"ID":null},{"ID":"2"}]`), false},
	{"an object value", body(2, `"columns":["ID"],"rows":[{"ID":{}},{"ID":"2"}]`), false},
	{"a field columns does not list", body(2, `"columns":["ID"],"rows":[{"ID":"1","X":"2"},{"ID":"2"}]`), false},
	{"row count differs", body(2, `"columns":["ID"],"rows":[{"ID":"1"}]`), false},
	{"a row that is not an object", body(2, `"columns":["ID"],"rows":["ID",{"ID":"2"}]`), false},
	{"a fractional index", strings.Replace(body(2, `"columns":["ID"],"rows":[{"ID":"1"},{"ID":"2"}]`), `"batch_index":0`, `"batch_index":0.0`, 1), false},
	{"a quoted index", strings.Replace(body(2, `"columns":["ID"],"rows":[{"ID":"1"},{"ID":"2"}]`), `"batch_index":0`, `"batch_index":"0"`, 1), false},
	{"a bad time", strings.Replace(body(2, `"columns":["ID"],"rows":[{"ID":"1"},{"ID":"2"}]`), `02:00:00Z`, `2:00`, 1), false},
	{"a control character", body(2, "\"columns\":[\"ID\"],\"rows\":[{\"ID\":\"a\tb\"},{\"ID\":\"2\"}]"), false},
	{"a bad escape", body(2, `"columns":["ID"],"rows":[{"ID":"\x"},{"ID":"2"}]`), false},
	{"a trailing comma", body(2, `"columns":["ID"],"rows":[{"ID":"1"},{"ID":"2"},]`), false},
	{"data after the event", body(2, `"columns":["ID"],"rows":[{"ID":"1"},{"ID":"2"}]`) + "{}", false},
	{"a traceparent number out of range", strings.Replace(body(2, `"columns":["ID"],"rows":[{"ID":"1"},{"ID":"2"}]`), `"source"`, `"traceparent":1e400,"source"`, 1), false},
	{"a leading zero", strings.Replace(body(2, `"columns":["ID"],"rows":[{"ID":"1"},{"ID":"2"}]`), `"first_row":1`, `"first_row":01`, 1), false},
	{"not an object", `[]`, false},
	{"null", `null`, false},
	{"empty", ``, false},
}

// body is a batch event of rows rows, with data members ending in tail.
func body(rows int, tail string) string {
	return `{"specversion":"1.0","type":"com.dmfexport.batch.v1","source":"dmfexport/e","id":"x/E/0","time":"2026-03-01T02:00:00Z",` +
		`"subject":"E","datacontenttype":"application/json","refreshtype":"FullPush","data":{"version":1,"job":"e",` +
		`"run_id":"20260301T020000Z-aa","execution_id":"x","entity":"E","batch_index":0,"batch_count":1,"last_batch":true,` +
		`"first_row":1,"row_count":` + fmt.Sprint(rows) + `,` + tail + `}}`
}

// TestDecodeFast: the scanner reads what encoding/json reads, and refuses
// what it refuses.
func TestDecodeFast(t *testing.T) {
	for _, tc := range decodeCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeBatch([]byte(tc.body), "")
			want, wantErr := decodeStd([]byte(tc.body))
			if tc.ok != (err == nil) || tc.ok != (wantErr == nil) {
				t.Fatalf("decode: %v, encoding/json: %v; want both to succeed: %v", err, wantErr, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Errorf("error %v does not wrap ErrMalformed", err)
				}
				return
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decoded\n%s\nencoding/json decodes\n%s", show(got), show(want))
			}
		})
	}
}

func show(b *Batch) string {
	var rows []string
	for _, r := range b.Rows {
		var vals []string
		for _, v := range r {
			if v == nil {
				vals = append(vals, "nil")
			} else {
				vals = append(vals, fmt.Sprintf("%q", *v))
			}
		}
		rows = append(rows, "["+strings.Join(vals, " ")+"]")
	}
	h := *b
	h.Rows = nil
	return fmt.Sprintf("%+v\nrows %s", h, strings.Join(rows, " "))
}

// FuzzDecodeBatch holds the scanner to encoding/json: what it decodes,
// encoding/json decodes alike, and what encoding/json decodes, it decodes
// too, but for a member given twice in the event or its data.
func FuzzDecodeBatch(f *testing.F) {
	for _, tc := range decodeCases {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := decodeFast(raw)
		if errors.Is(err, errComposite) {
			return // decodeStd reads it
		}
		want, wantErr := decodeStd(raw)
		switch {
		case err == nil && wantErr != nil:
			t.Fatalf("decoded what encoding/json refuses (%v):\n%s", wantErr, show(got))
		case err != nil && wantErr == nil && !errors.Is(err, errTwice):
			t.Fatalf("refused (%v) what encoding/json decodes:\n%s", err, show(want))
		case err == nil && !reflect.DeepEqual(got, want):
			t.Fatalf("decoded\n%s\nencoding/json decodes\n%s", show(got), show(want))
		}
	})
}

// benchBody is a batch of n rows of the bench's narrow entity shape.
func benchBody(n int) []byte {
	cols := []string{"SALESORDERNUMBER", "LINENUMBER", "ITEMNUMBER", "LINEDESCRIPTION", "ORDEREDSALESQUANTITY",
		"SALESPRICE", "CURRENCYCODE", "SALESUNITSYMBOL", "SHIPPINGWAREHOUSEID", "REQUESTEDSHIPPINGDATE",
		"SALESORDERLINESTATUS", "CUSTOMERREQUISITIONNUMBER", "SHIPPINGSITEID", "LINEDISCOUNTPERCENTAGE", "ISDELIVERYADDRESSORDERSPECIFIC"}
	rows := make([]string, n)
	for i := range rows {
		vals := []string{fmt.Sprintf("SO-%08d", i/4), fmt.Sprint(i%4 + 1), fmt.Sprintf("A%05d", i%9973), fmt.Sprintf("Item %d", i%9973),
			fmt.Sprint(i % 100), fmt.Sprintf("%d.%02d", i%1000, i%100), "USD", "pcs", fmt.Sprintf("WH-%d", i%5),
			"2025-02-01T00:00:00", "Open", "", "SITE1", "0.5887", "No"}
		// Members in the columns' order, as dmfexport writes them.
		var row []string
		for j, c := range cols {
			k, _ := json.Marshal(c)
			v, _ := json.Marshal(vals[j])
			row = append(row, string(k)+":"+string(v))
		}
		rows[i] = "{" + strings.Join(row, ",") + "}"
	}
	c, _ := json.Marshal(cols)
	return []byte(body(n, `"columns":`+string(c)+`,"rows":[`+strings.Join(rows, ",")+"]"))
}

func BenchmarkDecodeBatch(b *testing.B) {
	raw := benchBody(5000)
	for _, bc := range []struct {
		name   string
		decode func([]byte) (*Batch, error)
	}{{"scanner", decodeFast}, {"encoding-json", decodeStd}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.decode(raw); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(5000*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
