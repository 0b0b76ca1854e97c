package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// TestMessagesMatchSchema validates every message the publisher emits, for
// each input format, with and without compression, first, middle and last
// batches, against docs/message.schema.json, the contract consumers code to.
func TestMessagesMatchSchema(t *testing.T) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	schemaPath := filepath.Join("..", "docs", "message.schema.json")
	f, err := os.Open(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(f)
	_ = f.Close()
	if err != nil {
		t.Fatalf("schema %s: %v", schemaPath, err)
	}
	if err := c.AddResource("message.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("message.schema.json")
	if err != nil {
		t.Fatalf("compile %s: %v", schemaPath, err)
	}

	var csv strings.Builder
	csv.WriteString("ACCOUNT,NAME,AMOUNT\r\n")
	for i := range 25 {
		fmt.Fprintf(&csv, "C%03d,\"Name, %d\",%d.50\r\n", i, i, i)
	}
	tests := []struct {
		name  string
		input []byte
		opts  EntityOptions
	}{
		{"csv, several batches", []byte(csv.String()), EntityOptions{Format: "csv", BatchSize: 10}},
		{"csv, gzip", []byte(csv.String()), EntityOptions{Format: "csv", BatchSize: 10, Compression: CompressionGzip}},
		{"csv, zstd", []byte(csv.String()), EntityOptions{Format: "csv", BatchSize: 10, Compression: CompressionZstd}},
		{"csv, header only", []byte("ACCOUNT,NAME\r\n"), EntityOptions{Format: "csv"}},
		{"csv, incremental", []byte(csv.String()), EntityOptions{Format: "csv", BatchSize: 100, RefreshType: "IncrementalPush"}},
		{"xml, plain", []byte(`<Document><R A="1" B="x"/><R A="2"/></Document>`), EntityOptions{Format: "xml", BatchSize: 1}},
		{"xml composite, element shape, two levels", []byte(xmlDecl + `<Document><H><NO>SO-1</NO>` +
			`<L><LINE>1</LINE><C><CODE>FRT</CODE></C><C><CODE>INS</CODE></C></L><L><LINE>2</LINE></L><T><X>1</X></T></H>` +
			`<H><NO>SO-2</NO></H></Document>`), EntityOptions{Format: "xml", BatchSize: 1}},
		{"xml composite, attribute shape, two levels, gzip", []byte(xmlDecl + `<Document><H NO="SO-1">` +
			`<L LINE="1"><C CODE="FRT"/><C/></L><L LINE="2"/></H><H NO="SO-2"/></Document>`), EntityOptions{Format: "xml", BatchSize: 5, Compression: CompressionGzip}},
		{"xlsx", buildXLSX(t, []string{"Customers"}, [][]any{{"ACCOUNT", "AMOUNT"}, {"C1", 1.5}, {"C2", 2}}), EntityOptions{Format: "xlsx", BatchSize: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			o := tt.opts
			o.Job, o.RunID, o.ExecutionID, o.Entity = "customers", "20261125T100000Z-aaaaaaaa", "G-2026-11-25_10-00-00-0011223344556677", "Customers V3"
			if _, err := PublishEntity(context.Background(), bytes.NewReader(tt.input), sink, o); err != nil {
				t.Fatalf("PublishEntity: %v", err)
			}
			if len(sink.msgs) == 0 {
				t.Fatal("no message published")
			}
			for i, m := range sink.msgs {
				body := decompressed(t, m)
				v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
				if err != nil {
					t.Fatalf("message %d is not JSON: %v", i, err)
				}
				if err := schema.Validate(v); err != nil {
					t.Errorf("message %d does not match %s: %v\n%.300s", i, schemaPath, err, body)
				}
			}
		})
	}
	// The schema must be able to refuse: a message without its data fails.
	var bad map[string]any
	if err := json.Unmarshal([]byte(`{"specversion":"1.0","type":"com.dmfexport.batch.v1"}`), &bad); err != nil {
		t.Fatal(err)
	}
	if err := schema.Validate(bad); err == nil {
		t.Error("the schema accepts a message without source, id, time, subject and data")
	}

	// Rows hold strings, or arrays of rows (composite entities), nothing
	// else: the schema refuses every other value, at any depth.
	sink := &memSink{}
	if _, err := PublishEntity(context.Background(), strings.NewReader(`<D><R A="1"/></D>`), sink, EntityOptions{Job: "j", Entity: "E", Format: "xml"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, rows string }{
		{"a number", `[{"A":1}]`},
		{"null", `[{"A":null}]`},
		{"an object not in an array", `[{"A":{"B":"1"}}]`},
		{"an array of strings", `[{"A":["1"]}]`},
		{"a number in a child row", `[{"L":[{"B":"1"},{"B":2}]}]`},
		{"an object in a child row", `[{"L":[{"C":{"B":"1"}}]}]`},
		{"a row that is a string", `["A"]`},
	} {
		var msg map[string]any
		if err := json.Unmarshal(sink.msgs[0].Body, &msg); err != nil {
			t.Fatal(err)
		}
		var rows any
		if err := json.Unmarshal([]byte(tt.rows), &rows); err != nil {
			t.Fatal(err)
		}
		msg["data"].(map[string]any)["rows"] = rows
		if err := schema.Validate(msg); err == nil {
			t.Errorf("the schema accepts rows holding %s: %s", tt.name, tt.rows)
		}
	}
	var msg map[string]any
	if err := json.Unmarshal(sink.msgs[0].Body, &msg); err != nil {
		t.Fatal(err)
	}
	if err := schema.Validate(msg); err != nil {
		t.Errorf("the unchanged message for the refusals above does not match: %v", err)
	}
}

// decompressed returns m's body as JSON, undoing its content encoding.
func decompressed(t *testing.T, m Message) []byte {
	t.Helper()
	var r io.Reader
	switch m.ContentEncoding {
	case "":
		return m.Body
	case CompressionGzip:
		zr, err := gzip.NewReader(bytes.NewReader(m.Body))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	case CompressionZstd:
		zr, err := zstd.NewReader(bytes.NewReader(m.Body))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	default:
		t.Fatalf("unknown content encoding %q", m.ContentEncoding)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
