package dmftest

import (
	"archive/zip"
	"bytes"
	"encoding/xml"
	"strconv"
	"strings"
)

// Entity files shaped as F&O writes them, for Entity.Data: the demo uses
// them, and so can tests of readers.

// FOWorkbook returns an XLSX workbook as F&O's EXCEL format writes it: one
// sheet named sheet holding rows (the first is the header row), every cell
// an inline string (t="inlineStr") with no sharedStrings part, empty values
// left out (cells are placed by reference), and no XML declaration in the
// sheet XML. Values are written as given: F&O's are all strings, e.g.
// "2011-01-31 00:00:00" and "123.000000".
func FOWorkbook(sheet string, rows [][]string) []byte {
	const (
		main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
		rels = "http://schemas.openxmlformats.org/package/2006/relationships"
		doc  = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
	)
	var ws strings.Builder
	ws.WriteString(`<worksheet xmlns="` + main + `"><sheetData>`)
	for i, row := range rows {
		r := strconv.Itoa(i + 1)
		ws.WriteString(`<row r="` + r + `">`)
		for j, v := range row {
			if v == "" {
				continue
			}
			ws.WriteString(`<c r="` + columnName(j) + r + `" t="inlineStr"><is><t`)
			if strings.TrimSpace(v) != v {
				ws.WriteString(` xml:space="preserve"`)
			}
			ws.WriteString(">" + escape(v) + "</t></is></c>")
		}
		ws.WriteString("</row>")
	}
	ws.WriteString("</sheetData></worksheet>")

	parts := []struct{ name, body string }{
		{"[Content_Types].xml", `<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">` +
			`<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>` +
			`<Default Extension="xml" ContentType="application/xml"/>` +
			`<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>` +
			`<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>` +
			`</Types>`},
		{"_rels/.rels", `<Relationships xmlns="` + rels + `">` +
			`<Relationship Id="rId1" Type="` + doc + `/officeDocument" Target="xl/workbook.xml"/></Relationships>`},
		{"xl/workbook.xml", `<workbook xmlns="` + main + `" xmlns:r="` + doc + `"><sheets>` +
			`<sheet name="` + escape(sheet) + `" sheetId="1" r:id="rId1"/></sheets></workbook>`},
		{"xl/_rels/workbook.xml.rels", `<Relationships xmlns="` + rels + `">` +
			`<Relationship Id="rId1" Type="` + doc + `/worksheet" Target="worksheets/sheet1.xml"/></Relationships>`},
		{"xl/worksheets/sheet1.xml", ws.String()},
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, p := range parts {
		w, _ := zw.CreateHeader(&zip.FileHeader{Name: p.name, Method: zip.Deflate, Modified: packageTime})
		_, _ = w.Write([]byte(p.body)) // writes to a bytes.Buffer do not fail
	}
	_ = zw.Close()
	return buf.Bytes()
}

// columnName is the spreadsheet column letters of a 0-based index: A, B,
// ..., Z, AA, ...
func columnName(i int) string {
	var b []byte
	for i++; i > 0; i = (i - 1) / 26 {
		b = append([]byte{byte('A' + (i-1)%26)}, b...)
	}
	return string(b)
}

// XMLElementFile returns an entity file in F&O's XML-Element format: UTF-8
// with a declaration, a root element Document holding one element per row
// named record (the entity's upper-case name, e.g. CUSTCUSTOMERGROUPENTITY),
// with one child element per field of header; empty values are left out.
func XMLElementFile(record string, header []string, rows [][]string) []byte {
	var b bytes.Buffer
	b.WriteString(xml.Header[:len(xml.Header)-1] + "\r\n<Document>\r\n")
	for _, row := range rows {
		b.WriteString("  <" + record + ">\r\n")
		for j, v := range row {
			if v != "" && j < len(header) {
				b.WriteString("    <" + header[j] + ">" + escape(v) + "</" + header[j] + ">\r\n")
			}
		}
		b.WriteString("  </" + record + ">\r\n")
	}
	b.WriteString("</Document>\r\n")
	return b.Bytes()
}

// XMLAttributeFile returns an entity file in F&O's XML-Attribute format:
// as XMLElementFile, with one attribute per field instead of child elements.
func XMLAttributeFile(record string, header []string, rows [][]string) []byte {
	var b bytes.Buffer
	b.WriteString(xml.Header[:len(xml.Header)-1] + "\r\n<Document>\r\n")
	for _, row := range rows {
		b.WriteString("  <" + record)
		for j, v := range row {
			if v != "" && j < len(header) {
				b.WriteString(" " + header[j] + `="` + escape(v) + `"`)
			}
		}
		b.WriteString(" />\r\n")
	}
	b.WriteString("</Document>\r\n")
	return b.Bytes()
}
