package dmftest

import (
	"bytes"
	"encoding/csv"
	"encoding/xml"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/xuri/excelize/v2"
	"golang.org/x/text/encoding/charmap"
)

// demoEntity returns the demo entity with the given name.
func demoEntity(t *testing.T, ents []Entity, name string) Entity {
	t.Helper()
	for _, e := range ents {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("demo project has no entity %q", name)
	return Entity{}
}

func TestDemoProject(t *testing.T) {
	ents := DemoProject()
	tests := []struct {
		name       string
		file       string
		format     string
		prefix     []byte // encoding mark the raw bytes start with
		wantRows   int
		wantHeader string
		cp1252     bool // code page 1252, not Unicode
	}{
		{"Customers V3", "Customers V3.csv", "CSV-Unicode", []byte{0xEF, 0xBB, 0xBF}, 12345, "CUSTOMERACCOUNT", false},
		{"Vendors V2", "Vendors V2.csv", "CSV-Unicode", []byte{0xFF, 0xFE}, 800, "VENDORACCOUNTNUMBER", false},
		{"Sales order lines V2", "Sales order lines V2.csv", "CSV", []byte("INVENTORYLOTID,"), 3000, "INVENTORYLOTID", false},
		{"Sales order headers V2", "Sales order headers V2.csv", "CSV-Unicode", []byte{0xEF, 0xBB, 0xBF}, 300, "SALESORDERNUMBER", false},
		{"Customer addresses", "Customer addresses.csv", "CSV", []byte("ADDRESSID,"), 500, "ADDRESSID", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := demoEntity(t, ents, tt.name)
			if e.Name != tt.name || e.File != tt.file || e.SourceFormat != tt.format {
				t.Fatalf("want %s/%s/%s, got %s/%s/%s", tt.name, tt.file, tt.format, e.Name, e.File, e.SourceFormat)
			}
			if !bytes.HasPrefix(e.Data, tt.prefix) {
				t.Errorf("want data starting with % x, got % x", tt.prefix, e.Data[:4])
			}
			text := decodeText(t, e.Data)
			if tt.cp1252 {
				if utf8.Valid(e.Data) {
					t.Errorf("want code page 1252 bytes, got valid UTF-8")
				}
				b, err := charmap.Windows1252.NewDecoder().Bytes(e.Data)
				if err != nil {
					t.Fatalf("decode code page 1252: %v", err)
				}
				text = string(b)
			}
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
			if !slices.Equal(e.Fields, header) {
				t.Errorf("want Fields as the header %q (for the manifest's EntityMapList), got %q", header, e.Fields)
			}
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
	addr, _ := charmap.Windows1252.NewDecoder().Bytes(demoEntity(t, ents, "Customer addresses").Data)
	for _, c := range []string{"é", "ü", "ß", "€", "à", "ç", "ñ", `""Weiß""`, `"Çelik Ltd., Zürich"`} {
		if !strings.Contains(string(addr), c) {
			t.Errorf("Customer addresses: want %q somewhere, found none", c)
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

// TestDemoPackageShape checks the manifest-level traits of the demo's
// entities: file names, formats, refresh types, absent and empty files.
func TestDemoPackageShape(t *testing.T) {
	ents := DemoProject()
	tests := []struct {
		name, file, format, sheet, refresh string
		omitRefresh, absent, empty         bool
	}{
		{"Customers V3", "Customers V3.csv", "CSV-Unicode", "", FullPush, false, false, false},
		{"Vendors V2", "Vendors V2.csv", "CSV-Unicode", "", FullPush, false, false, false},
		{"Sales order lines V2", "Sales order lines V2.csv", "CSV", "", FullPush, false, false, false},
		{"Country/regions", "Countryregions.xlsx", "EXCEL", "Countryregions$", FullPush, false, false, false},
		{"Customer groups", "Customer groups.xml", "XML-Element", "", FullPush, false, false, false},
		{"Vendor groups", "VENDVENDORGROUPENTITY.xml", "XML-Attribute", "", FullPush, false, false, false},
		{"Sales order headers V2", "Sales order headers V2.csv", "CSV-Unicode", "", IncrementalPush, false, false, false},
		{"Customer addresses", "Customer addresses.csv", "CSV", "", FullPush, false, false, false},
		{"Payment terms", "Payment terms.csv", "CSV-Unicode", "", FullPush, true, false, true},
		{"Bank accounts", "Bank accounts.csv", "CSV-Unicode", "", FullPush, false, true, true},
	}
	if len(ents) != len(tests) {
		t.Fatalf("want %d demo entities, got %d", len(tests), len(ents))
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ents[i]
			if e.Name != tt.name || e.File != tt.file || e.SourceFormat != tt.format || manifestSheet(e) != tt.sheet ||
				e.RefreshType != tt.refresh || e.OmitRefreshType != tt.omitRefresh || e.Absent != tt.absent || (len(e.Data) == 0) != tt.empty {
				t.Errorf("want %+v, got name %q file %q format %q sheet %q refresh %q omit %v absent %v %d bytes",
					tt, e.Name, e.File, e.SourceFormat, manifestSheet(e), e.RefreshType, e.OmitRefreshType, e.Absent, len(e.Data))
			}
		})
	}
}

// TestDemoWorkbook checks that the demo's XLSX is shaped as F&O writes it
// and opens as a workbook.
func TestDemoWorkbook(t *testing.T) {
	e := demoEntity(t, DemoProject(), "Country/regions")
	parts, _ := openZip(t, e.Data)
	sheet := string(parts["xl/worksheets/sheet1.xml"])
	raw := []struct {
		name string
		ok   bool
	}{
		{"no sharedStrings part", parts["xl/sharedStrings.xml"] == nil},
		{"no XML declaration in the sheet", !strings.HasPrefix(sheet, "<?xml")},
		{"inline strings only", strings.Count(sheet, `t="inlineStr"`) == strings.Count(sheet, "<c ")},
		{"dates as F&O strings", strings.Contains(sheet, "<t>2024-02-29 00:00:00</t>")},
		{"decimals with six places", regexp.MustCompile(`<t>\d+\.000000</t>`).MatchString(sheet)},
		{"empty cells left out", strings.Contains(sheet, `<c r="A14" t="inlineStr"><is><t>AN3</t></is></c><c r="B14"`)},
	}
	for _, c := range raw {
		if !c.ok {
			t.Errorf("%s: not so in %.300s...", c.name, sheet)
		}
	}
	f, err := excelize.OpenReader(bytes.NewReader(e.Data))
	if err != nil {
		t.Fatalf("open the workbook: %v", err)
	}
	defer func() { _ = f.Close() }()
	if got := f.GetSheetList(); len(got) != 1 || got[0] != "Countryregions" {
		t.Fatalf("want one sheet Countryregions, got %q", got)
	}
	rows, err := f.GetRows("Countryregions")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+demoCountries || rows[0][0] != "COUNTRYREGIONID" || rows[1][6] != "2024-02-29 00:00:00" {
		t.Errorf("want a header and %d rows starting 2024-02-29, got %d rows, %q, %q", demoCountries, len(rows), rows[0], rows[1])
	}
	if rows[13][2] != "" || rows[13][3] == "" {
		t.Errorf("row 13: want ISOCODE left out and the next column in place, got %q", rows[13])
	}
}

// TestDemoXML checks the demo's XML-Element and XML-Attribute files.
func TestDemoXML(t *testing.T) {
	type record struct {
		XMLName xml.Name
		Attrs   []xml.Attr `xml:",any,attr"`
		Fields  []struct {
			XMLName xml.Name
			Value   string `xml:",chardata"`
		} `xml:",any"`
	}
	tests := []struct {
		entity, record string
		rows, fields   int
		attributes     bool
		want           string // a value found in some record
	}{
		{"Customer groups", "CUSTCUSTOMERGROUPENTITY", demoCustomerGroups, len(demoCustomerGroupHeader), false, "Wholesale & retail <7>"},
		{"Vendor groups", "VENDVENDORGROUPENTITY", demoVendorGroups, len(demoVendorGroupHeader), true, `Vendors "1" & partners`},
	}
	for _, tt := range tests {
		t.Run(tt.entity, func(t *testing.T) {
			e := demoEntity(t, DemoProject(), tt.entity)
			if !bytes.HasPrefix(e.Data, []byte(`<?xml version="1.0" encoding="UTF-8"?>`)) {
				t.Errorf("want a UTF-8 XML declaration, got %.60q", e.Data)
			}
			var doc struct {
				XMLName xml.Name `xml:"Document"`
				Records []record `xml:",any"`
			}
			if err := xml.Unmarshal(e.Data, &doc); err != nil {
				t.Fatalf("parse: %v", err)
			}
			if len(doc.Records) != tt.rows {
				t.Fatalf("want %d records, got %d", tt.rows, len(doc.Records))
			}
			full, short, found := 0, 0, false
			for _, r := range doc.Records {
				if r.XMLName.Local != tt.record {
					t.Fatalf("want records named %s, got %s", tt.record, r.XMLName.Local)
				}
				n := len(r.Fields)
				if tt.attributes {
					n = len(r.Attrs)
					if len(r.Fields) > 0 {
						t.Fatalf("want attributes only, got child elements in %+v", r)
					}
				}
				for _, a := range r.Attrs {
					found = found || a.Value == tt.want
				}
				for _, f := range r.Fields {
					found = found || f.Value == tt.want
				}
				if n == tt.fields {
					full++
				} else {
					short++
				}
			}
			if full == 0 || short == 0 || !found {
				t.Errorf("want records with every field (%d), records with some left out (%d) and the value %q (%v)", full, short, tt.want, found)
			}
		})
	}
}

func TestDemoRowCounts(t *testing.T) {
	counts := DemoRowCounts()
	for _, e := range DemoProject() {
		n, ok := counts[e.Name]
		if !ok {
			t.Errorf("entity %q has no row count", e.Name)
			continue
		}
		if (e.Absent || len(e.Data) == 0) != (n == 0) {
			t.Errorf("entity %q: %d rows for %d bytes (absent %v)", e.Name, n, len(e.Data), e.Absent)
		}
	}
	if counts["Customers V3"] != 12345 {
		t.Errorf("Customers V3: %d rows, want 12345", counts["Customers V3"])
	}
}
