package dmftest

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDemoProject(t *testing.T) {
	ents := DemoProject()
	tests := []struct {
		name       string
		file       string
		format     string
		prefix     []byte // encoding mark the raw bytes start with
		wantRows   int
		wantHeader string
	}{
		{"Customers V3", "Customers V3.csv", "CSV-Unicode", []byte{0xEF, 0xBB, 0xBF}, 12345, "CUSTOMERACCOUNT"},
		{"Vendors V2", "Vendors V2.csv", "CSV-Unicode", []byte{0xFF, 0xFE}, 800, "VENDORACCOUNTNUMBER"},
		{"Sales order lines V2", "Sales order lines V2.csv", "CSV", []byte("INVENTORYLOTID,"), 3000, "INVENTORYLOTID"},
	}
	if len(ents) != len(tests) {
		t.Fatalf("want %d demo entities, got %d", len(tests), len(ents))
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ents[i]
			if e.Name != tt.name || e.File != tt.file || e.SourceFormat != tt.format {
				t.Fatalf("want %s/%s/%s, got %s/%s/%s", tt.name, tt.file, tt.format, e.Name, e.File, e.SourceFormat)
			}
			if !bytes.HasPrefix(e.Data, tt.prefix) {
				t.Errorf("want data starting with % x, got % x", tt.prefix, e.Data[:4])
			}
			text := decodeText(t, e.Data)
			if !utf8.ValidString(text) || strings.ContainsRune(text, utf8.RuneError) {
				t.Errorf("decoded text is not clean UTF-8")
			}
			if strings.Count(text, "\n") != strings.Count(text, "\r\n") || !strings.HasSuffix(text, "\r\n") {
				t.Errorf("want every line ending in CRLF")
			}
			r := csv.NewReader(strings.NewReader(text))
			recs, err := r.ReadAll()
			if err != nil {
				t.Fatalf("parse CSV: %v", err)
			}
			header := recs[0]
			if header[0] != tt.wantHeader {
				t.Errorf("want first column %s, got %s", tt.wantHeader, header[0])
			}
			for _, h := range header {
				if h != strings.ToUpper(h) {
					t.Errorf("header field %q is not upper case", h)
				}
			}
			rows := recs[1:]
			if len(rows) != tt.wantRows {
				t.Errorf("want %d rows, got %d", tt.wantRows, len(rows))
			}
			seen := make(map[string]bool, len(rows))
			for _, row := range rows {
				if seen[row[0]] {
					t.Fatalf("first column %q repeats", row[0])
				}
				seen[row[0]] = true
			}
		})
	}

	cust := decodeText(t, ents[0].Data)
	features := []struct{ name, substr string }{
		{"comma inside quotes", `, Ltd. `},
		{"doubled quotes", `""Premium""`},
		{"line break inside quotes", "\r\nWarehouse "},
		{"non-ASCII", "Müller & Søn"},
		{"empty field", ",,"},
		{"padded account", "\r\n000123,"},
		{"date format", ",2024-03-01T"},
		{"on hold", ",Yes\r\n"},
	}
	for _, f := range features {
		if !strings.Contains(cust, f.substr) {
			t.Errorf("Customers V3: want %s (%q) somewhere, found none", f.name, f.substr)
		}
	}
	if !strings.Contains(decodeText(t, ents[1].Data), "🚚") {
		t.Errorf("Vendors V2: want a character outside the BMP (surrogate pair in UTF-16)")
	}

	again := DemoProject()
	for i := range ents {
		if !bytes.Equal(ents[i].Data, again[i].Data) {
			t.Errorf("%s: two calls return different bytes", ents[i].Name)
		}
	}
	again[0].Data[0] = 'X'
	if DemoProject()[0].Data[0] == 'X' {
		t.Error("modifying a returned entity changed later results")
	}
}
