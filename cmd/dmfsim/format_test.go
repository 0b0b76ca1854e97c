package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/unicode"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

func TestFormatFlag(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"Addresses.csv": "\ufeffID,NAME,CITY\r\n1,Hélène,Besançon\r\n2,\"Weiß, Jürgen\",Köln\r\n",
		"Items.csv":     "ITEMID,PRICE\r\nA1,3.50\r\n",
		"Notes.xml":     "<Document/>",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	entity := func(t *testing.T, c config, group, name string) dmftest.Entity {
		t.Helper()
		for _, e := range c.opts.Projects[group] {
			if e.Name == name {
				return e
			}
		}
		t.Fatalf("group %s has no entity %q", group, name)
		return dmftest.Entity{}
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, c config)
	}{
		{"fields from the header without --format", []string{"--project", "P=" + dir}, "", func(t *testing.T, c config) {
			e := entity(t, c, "P", "Addresses")
			if !slices.Equal(e.Fields, []string{"ID", "NAME", "CITY"}) || e.SourceFormat != "CSV-Unicode" || string(e.Data) != files["Addresses.csv"] {
				t.Errorf("want the file as it is with fields ID, NAME, CITY; got %q, %s, %q", e.Fields, e.SourceFormat, e.Data)
			}
		}},
		{"code page 1252 with semicolons", []string{"--project", "P=" + dir, "--format", "Addresses=codepage=1252,delimiter=semicolon"}, "", func(t *testing.T, c config) {
			e := entity(t, c, "P", "Addresses")
			text, err := charmap.Windows1252.NewDecoder().Bytes(e.Data)
			if err != nil || e.SourceFormat != "CSV" || string(text) != "ID;NAME;CITY\r\n1;Hélène;Besançon\r\n2;Weiß, Jürgen;Köln\r\n" {
				t.Errorf("want the file in 1252 with semicolons, source format CSV; got %s %q (%v)", e.SourceFormat, text, err)
			}
			if e := entity(t, c, "P", "Items"); string(e.Data) != files["Items.csv"] {
				t.Errorf("Items: want the file untouched, got %q", e.Data)
			}
		}},
		{"star for all, an entity's own wins", []string{"--project", "P=" + dir, "--format", "*=codepage=1200,bom", "--format", "Items=fixed=6/6,fixedheader"}, "", func(t *testing.T, c config) {
			e := entity(t, c, "P", "Addresses")
			text, err := unicode.UTF16(unicode.LittleEndian, unicode.ExpectBOM).NewDecoder().Bytes(e.Data)
			if err != nil || !strings.HasPrefix(string(text), "ID,NAME,CITY\r\n") || e.SourceFormat != "CSV-Unicode" {
				t.Errorf("Addresses: want UTF-16 LE with BOM, CSV-Unicode; got %s %q (%v)", e.SourceFormat, text, err)
			}
			if e := entity(t, c, "P", "Items"); string(e.Data) != "ITEMIDPRICE \r\nA1    3.50  \r\n" || e.SourceFormat != "FixedWidth" {
				t.Errorf("Items: want fixed width with a header, got %s %q", e.SourceFormat, e.Data)
			}
			if e := entity(t, c, "P", "Notes"); string(e.Data) != files["Notes.xml"] {
				t.Errorf("Notes: want an XML entity untouched, got %q", e.Data)
			}
		}},
		{"no header, undoubled, tab", []string{"--project", "P=" + dir, "--format", "Addresses=noheader,undoubled,delimiter=tab,qualifier=|"}, "", func(t *testing.T, c config) {
			if e := entity(t, c, "P", "Addresses"); string(e.Data) != "1\tHélène\tBesançon\r\n2\tWeiß, Jürgen\tKöln\r\n" {
				t.Errorf("want tab-separated rows without header, got %q", e.Data)
			}
		}},
		{"composite attribute", []string{"--project", "P=" + dir, "--format", "Items=composite=attribute"}, "", func(t *testing.T, c config) {
			e := entity(t, c, "P", "Items")
			if e.SourceFormat != "XML-Attribute" || e.File != "Items.xml" || !bytes.Contains(e.Data, []byte(`<ITEMSENTITY ITEMID="A1" PRICE="3.50" />`)) {
				t.Errorf("want XML-Attribute Items.xml with ITEMSENTITY records, got %s %s %q", e.SourceFormat, e.File, e.Data)
			}
		}},
		{"demo entity", []string{"--format", "Customer addresses=codepage=65001,bom,delimiter=colon"}, "", func(t *testing.T, c config) {
			e := entity(t, c, dmftest.DemoDefinitionGroup, "Customer addresses")
			if !bytes.HasPrefix(e.Data, []byte("\ufeffADDRESSID:CUSTOMERACCOUNT:")) || !bytes.Contains(e.Data, []byte("€")) || e.SourceFormat != "CSV-Unicode" {
				t.Errorf("want the 1252 demo file re-written as UTF-8 with BOM and colons, got %s %q", e.SourceFormat, e.Data[:40])
			}
		}},
		{"value the code page cannot hold", []string{"--format", "Customers V3=codepage=1252"}, "can't export unicode data as an ascii file type", nil},
		{"too narrow", []string{"--project", "P=" + dir, "--format", "Items=fixed=2/2"}, "wider than its width", nil},
		{"unknown entity", []string{"--project", "P=" + dir, "--format", "Nope=bom"}, `no CSV entity "Nope"`, nil},
		{"XML entity is not CSV", []string{"--project", "P=" + dir, "--format", "Notes=bom"}, `no CSV entity "Notes"`, nil},
		{"unknown item", []string{"--format", "*=fancy"}, `unknown item "fancy"`, nil},
		{"unknown code page", []string{"--format", "*=codepage=42"}, "code page not supported: 42", nil},
		{"bad widths", []string{"--format", "*=fixed=3/x"}, "want column widths", nil},
		{"bad delimiter", []string{"--format", "*=delimiter=€"}, "want one ASCII character", nil},
		{"entity twice", []string{"--format", "*=bom", "--format", "*=noheader"}, "given twice", nil},
		{"no spec", []string{"--format", "Items"}, "want ENTITY=SPEC", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseArgs(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want error containing %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("want no error, got %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestConcurrentExcelFlag(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want bool
	}{
		{"one at a time by default", nil, false},
		{"flag lets them run at once", []string{"--concurrent-excel"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseArgs(tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.opts.ConcurrentExcel != tt.want {
				t.Errorf("want ConcurrentExcel %v, got %v", tt.want, c.opts.ConcurrentExcel)
			}
		})
	}
}
