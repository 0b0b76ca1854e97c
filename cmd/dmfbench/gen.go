package main

import (
	"archive/zip"
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf16"
)

// The generated files mirror ../shared/bench/genpkg.py: a wide customer-like
// CSV (60 columns, UTF-8 BOM, quoted commas and quotes, multi-line fields,
// leading zeros), a narrow order-lines CSV (15 columns) and a 20-column
// XLSX, every cell an inline string as F&O writes it (or, with
// -xlsx-strings shared, a shared strings table as Excel re-saves it), plus
// a data package zip holding them with a UTF-16 Manifest.xml.

func wideCols() []string {
	base := []string{"CUSTOMERACCOUNT", "ORGANIZATIONNAME", "NAMEALIAS", "CUSTOMERGROUPID", "CURRENCYCODE",
		"CREDITLIMIT", "ADDRESSSTREET", "ADDRESSCITY", "ADDRESSZIPCODE", "ADDRESSCOUNTRYREGIONID",
		"PRIMARYCONTACTEMAIL", "PRIMARYCONTACTPHONE", "CREATEDDATETIME", "MODIFIEDDATETIME", "ISBLOCKED",
		"PAYMENTTERMS", "DELIVERYMODE", "SALESTAXGROUP", "LANGUAGEID", "NOTES"}
	for i := 0; len(base) < 60; i++ {
		base = append(base, fmt.Sprintf("EXTRAFIELD%02d", i))
	}
	return base
}

func pick(r *rand.Rand, v ...string) string { return v[r.IntN(len(v))] }

func wideRow(i int, r *rand.Rand, v []string) []string {
	v = append(v[:0],
		fmt.Sprintf("%08d", i), fmt.Sprintf("Contoso, Ltd. %d", i), fmt.Sprintf("CONT%d", i%1000), pick(r, "10", "20", "30"),
		pick(r, "USD", "EUR", "GBP"), fmt.Sprintf("%d.%02d", r.IntN(1000000), r.IntN(100)),
		fmt.Sprintf("%d Main Street\nBuilding %d", r.IntN(9999)+1, i%7), pick(r, "Seattle", "München", "Zürich", "São Paulo", "Kraków", "東京"),
		fmt.Sprintf("%05d", r.IntN(100000)), pick(r, "USA", "DEU", "CHE", "BRA"), fmt.Sprintf("ap%d@contoso.example", i),
		fmt.Sprintf("+1 555 %07d", i), fmt.Sprintf("2024-%02d-%02dT%02d:00:00", 1+i%12, 1+i%28, i%24),
		fmt.Sprintf("2025-01-%02dT08:30:00", 1+i%28), pick(r, "No", "Invoice", "All"), pick(r, "Net30", "Net60", "COD"),
		pick(r, "Truck", "Air"), pick(r, "WA", "EU", "EXEMPT"), pick(r, "en-us", "de", "fr"), pick(r, "", "VIP", `Said "call back", later`, "x"))
	for k := 0; k < 40; k++ {
		if k%3 != 0 {
			v = append(v, strconv.Itoa(r.IntN(1000001)))
		} else {
			v = append(v, "")
		}
	}
	return v
}

var narrowCols = []string{"SALESORDERNUMBER", "LINENUMBER", "ITEMNUMBER", "LINEDESCRIPTION", "ORDEREDSALESQUANTITY",
	"SALESPRICE", "CURRENCYCODE", "SALESUNITSYMBOL", "SHIPPINGWAREHOUSEID", "REQUESTEDSHIPPINGDATE",
	"SALESORDERLINESTATUS", "CUSTOMERREQUISITIONNUMBER", "SHIPPINGSITEID", "LINEDISCOUNTPERCENTAGE", "ISDELIVERYADDRESSORDERSPECIFIC"}

func narrowRow(i int, r *rand.Rand, v []string) []string {
	return append(v[:0], fmt.Sprintf("SO-%08d", i/4), strconv.Itoa(i%4+1), fmt.Sprintf("A%05d", i%9973), fmt.Sprintf("Item %d", i%9973),
		strconv.Itoa(r.IntN(100)+1), fmt.Sprintf("%.2f", r.Float64()*1000), "USD", "pcs", fmt.Sprintf("WH-%d", i%5),
		fmt.Sprintf("2025-02-%02dT00:00:00", 1+i%28), "Open", "", "SITE1", fmt.Sprintf("%.4f", r.Float64()), "No")
}

func quoteCSV(v string) string {
	if strings.ContainsAny(v, ",\"\n\r") {
		return `"` + strings.ReplaceAll(v, `"`, `""`) + `"`
	}
	return v
}

func writeCSV(path string, cols []string, n int, row func(int, *rand.Rand, []string) []string, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString("\ufeff" + strings.Join(cols, ",") + "\r\n")
	r := rand.New(rand.NewPCG(seed, seed))
	var v []string
	for i := 0; i < n; i++ {
		v = row(i, r, v)
		for k, s := range v {
			if k > 0 {
				w.WriteByte(',')
			}
			w.WriteString(quoteCSV(s))
		}
		w.WriteString("\r\n")
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

var xlsxCols = append(append([]string(nil), narrowCols...), "EXTRA0", "EXTRA1", "EXTRA2", "EXTRA3", "EXTRA4")

// writeXLSX writes a workbook with one sheet and a styles part, its cells
// as F&O writes them (inline: every cell an inline string, no XML
// declaration, no sharedStrings part) or as Excel re-saves them (every text
// cell a shared string).
func writeXLSX(path string, n int, seed uint64, inline bool) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	z := zip.NewWriter(f)
	add := func(name, body string) {
		w, _ := z.Create(name)
		io.WriteString(w, body)
	}
	decl := `<?xml version="1.0" encoding="UTF-8"?>`
	sstType, sstRel := `<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>`,
		`<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>`
	if inline {
		decl, sstType, sstRel = "", "", ""
	}
	add("[Content_Types].xml", decl+`<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">`+
		`<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>`+
		`<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>`+
		`<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>`+
		sstType+`<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/></Types>`)
	add("_rels/.rels", decl+`<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">`+
		`<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>`)
	add("xl/workbook.xml", decl+`<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">`+
		`<sheets><sheet name="Released products V2" sheetId="1" r:id="rId1"/></sheets></workbook>`)
	add("xl/_rels/workbook.xml.rels", decl+`<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">`+
		`<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>`+
		sstRel+`<Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/></Relationships>`)
	add("xl/styles.xml", decl+`<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">`+
		`<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs></styleSheet>`)

	sst := map[string]int{}
	var strs []string
	index := func(s string) int {
		if i, ok := sst[s]; ok {
			return i
		}
		sst[s] = len(strs)
		strs = append(strs, s)
		return len(strs) - 1
	}
	w, _ := z.Create("xl/worksheets/sheet1.xml")
	bw := bufio.NewWriterSize(w, 1<<20)
	bw.WriteString(decl + `<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>`)
	writeRow := func(rn int, vals []string) {
		if inline {
			fmt.Fprintf(bw, `<row outlineLevel="0" r="%d">`, rn)
		} else {
			fmt.Fprintf(bw, `<row r="%d">`, rn)
		}
		for c, v := range vals {
			switch {
			case v == "":
				continue // empty cells are left out
			case !inline:
				fmt.Fprintf(bw, `<c r="%s%d" t="s"><v>%d</v></c>`, colName(c), rn, index(v))
				continue
			}
			fmt.Fprintf(bw, `<c r="%s%d" s="0" t="inlineStr"><is><t`, colName(c), rn)
			if strings.TrimSpace(v) != v {
				bw.WriteString(` xml:space="preserve"`)
			}
			bw.WriteByte('>')
			xmlEscape(bw, v)
			bw.WriteString(`</t></is></c>`)
		}
		bw.WriteString(`</row>`)
	}
	writeRow(1, xlsxCols)
	r := rand.New(rand.NewPCG(seed, seed))
	var v []string
	for i := 0; i < n; i++ {
		v = narrowRow(i, r, v)
		for k := 0; k < 5; k++ {
			v = append(v, strconv.Itoa(i*k))
		}
		writeRow(i+2, v)
	}
	bw.WriteString(`</sheetData></worksheet>`)
	if err := bw.Flush(); err != nil {
		return err
	}
	if inline {
		if err := z.Close(); err != nil {
			return err
		}
		return f.Close()
	}
	w, _ = z.Create("xl/sharedStrings.xml")
	bw = bufio.NewWriterSize(w, 1<<20)
	fmt.Fprintf(bw, `<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" uniqueCount="%d">`, len(strs))
	for _, s := range strs {
		bw.WriteString("<si><t>")
		xmlEscape(bw, s)
		bw.WriteString("</t></si>")
	}
	bw.WriteString("</sst>")
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := z.Close(); err != nil {
		return err
	}
	return f.Close()
}

func xmlEscape(w *bufio.Writer, s string) {
	_, _ = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").WriteString(w, s)
}

func colName(c int) string {
	var b []byte
	for c++; c > 0; c = (c - 1) / 26 {
		b = append([]byte{byte('A' + (c-1)%26)}, b...)
	}
	return string(b)
}

// writePackage zips the entity files with a UTF-16 LE manifest, like a DMF
// data package.
func writePackage(path string, ents []entity) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	z := zip.NewWriter(f)
	var items strings.Builder
	for _, e := range ents {
		format := "CSV-Unicode"
		if e.format == "xlsx" {
			format = "Excel"
		}
		fmt.Fprintf(&items, "<DataManagementPackageEntityData><EntityName>%s</EntityName><InputFilePath>%s</InputFilePath><SourceFormat>%s</SourceFormat></DataManagementPackageEntityData>",
			e.name, filepath.Base(e.path), format)
	}
	man := `<?xml version="1.0" encoding="utf-16"?><DataManagementPackageManifest xmlns="http://schemas.microsoft.com/dynamics/2015/01/DataManagement">` +
		`<DefinitionGroupName>Bench</DefinitionGroupName><PackageEntityList>` + items.String() + `</PackageEntityList></DataManagementPackageManifest>`
	w, _ := z.Create("Manifest.xml")
	u := utf16.Encode([]rune(man))
	b := []byte{0xFF, 0xFE}
	for _, c := range u {
		b = append(b, byte(c), byte(c>>8))
	}
	_, _ = w.Write(b)
	for _, e := range ents {
		w, _ := z.Create(filepath.Base(e.path))
		in, err := os.Open(e.path)
		if err != nil {
			return err
		}
		_, err = io.Copy(w, in)
		_ = in.Close()
		if err != nil {
			return err
		}
	}
	if err := z.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
