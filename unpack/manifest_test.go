package unpack

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf16"
)

const nsFO = "http://schemas.microsoft.com/dynamics/2015/01/DataManagement"

// manifestXML builds a manifest; decl is the XML declaration ("" for none).
func manifestXML(decl, rootAttrs, prefix, entities string) string {
	p := prefix
	if p != "" {
		p += ":"
	}
	return decl + "<" + p + "DataManagementPackageManifest" + rootAttrs + ">\r\n" +
		"  <" + p + "DefinitionGroupName> Group 1 </" + p + "DefinitionGroupName>\r\n" +
		"  <" + p + "Description>Desc</" + p + "Description>\r\n" +
		"  <" + p + "PackageEntityList>" + strings.ReplaceAll(entities, "P:", p) + "</" + p + "PackageEntityList>\r\n" +
		"</" + p + "DataManagementPackageManifest>\r\n"
}

const oneEntity = `
    <P:DataManagementPackageEntityData>
      <P:SourceFormat>CSV-Unicode</P:SourceFormat>
      <P:InputFilePath>Customers V3.csv</P:InputFilePath>
      <P:EntityName>Customers V3</P:EntityName>
      <P:ExcelWorkSheetName i:nil="true" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"/>
      <P:DefaultRefreshType>FullPush</P:DefaultRefreshType>
      <P:EntityMapList><P:Unknown><P:EntityName>not me</P:EntityName></P:Unknown></P:EntityMapList>
      <P:Disable>false</P:Disable>
    </P:DataManagementPackageEntityData>`

var wantOne = []ManifestEntity{{Name: "Customers V3", File: "Customers V3.csv", SourceFormat: "CSV-Unicode", RefreshType: "FullPush"}}

func utf16Bytes(s string, order binary.ByteOrder, bom bool) []byte {
	var b bytes.Buffer
	u := utf16.Encode([]rune(s))
	if bom {
		u = append([]uint16{0xFEFF}, u...)
	}
	for _, c := range u {
		_ = binary.Write(&b, order, c)
	}
	return b.Bytes()
}

func TestParseManifest(t *testing.T) {
	declU16 := `<?xml version="1.0" encoding="utf-16"?>` + "\r\n"
	declU8 := `<?xml version="1.0" encoding="utf-8"?>` + "\r\n"
	ns := ` xmlns="` + nsFO + `"`
	std := manifestXML(declU16, ns, "", oneEntity)
	tests := []struct {
		name string
		in   []byte
		want []ManifestEntity
	}{
		{"UTF-16 LE with BOM", utf16Bytes(std, binary.LittleEndian, true), wantOne},
		{"UTF-16 BE with BOM", utf16Bytes(std, binary.BigEndian, true), wantOne},
		{"UTF-16 LE without BOM", utf16Bytes(std, binary.LittleEndian, false), wantOne},
		{"UTF-16 BE without BOM", utf16Bytes(std, binary.BigEndian, false), wantOne},
		{"UTF-8 with BOM", append([]byte("\xEF\xBB\xBF"), manifestXML(declU8, ns, "", oneEntity)...), wantOne},
		{"UTF-8 without BOM or declaration", []byte(manifestXML("", ns, "", oneEntity)), wantOne},
		{"UTF-8 bytes declaring utf-16", []byte(std), wantOne},
		{"UTF-16 bytes declaring utf-8", utf16Bytes(manifestXML(declU8, ns, "", oneEntity), binary.LittleEndian, true), wantOne},
		{"declaring windows-1252", []byte(manifestXML(`<?xml version="1.0" encoding="windows-1252"?>`, ns, "", oneEntity)), wantOne},
		{"no namespace", []byte(manifestXML(declU8, "", "", oneEntity)), wantOne},
		{"prefixed namespace", []byte(manifestXML(declU8, ` xmlns:dm="`+nsFO+`"`, "dm", oneEntity)), wantOne},
		{"backslash path and disabled entity", []byte(manifestXML(declU8, ns, "", `
			<DataManagementPackageEntityData><EntityName>Vendors V2</EntityName>
			<InputFilePath>C:\Temp\Export\Vendors V2.xlsx</InputFilePath><SourceFormat>Excel</SourceFormat>
			<ExcelWorkSheetName>Sheet1</ExcelWorkSheetName><Disable>Yes</Disable></DataManagementPackageEntityData>
			<DataManagementPackageEntityData><EntityName>A</EntityName><Disable>1</Disable></DataManagementPackageEntityData>
			<DataManagementPackageEntityData><EntityName>B</EntityName><Disable>no</Disable></DataManagementPackageEntityData>`)),
			[]ManifestEntity{
				{Name: "Vendors V2", File: `C:\Temp\Export\Vendors V2.xlsx`, SourceFormat: "Excel", Sheet: "Sheet1", Disabled: true},
				{Name: "A", Disabled: true},
				{Name: "B"},
			}},
		{"empty entity list", []byte(manifestXML(declU8, ns, "", "")), []ManifestEntity{}},
		{"no entity list", []byte(`<DataManagementPackageManifest><DefinitionGroupName>Group 1</DefinitionGroupName><Description>Desc</Description></DataManagementPackageManifest>`), []ManifestEntity{}},
		{"entry without fields", []byte(manifestXML("", "", "", "<DataManagementPackageEntityData/>")), []ManifestEntity{{}}},
		{"field map", []byte(manifestXML("", ns, "", `<DataManagementPackageEntityData><EntityMapList>
			<EntityMap><ArrayIndex>0</ArrayIndex><EntityField>ACCOUNTNUM</EntityField><IsAutoDefault>false</IsAutoDefault><XMLField>ACCOUNTNUM</XMLField></EntityMap>
			<EntityMap><EntityField>NAME</EntityField><XMLField>CUSTNAME</XMLField></EntityMap>
			<EntityMap><EntityField i:nil="true" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"/><XMLField> PHONE </XMLField></EntityMap>
			</EntityMapList><EntityName>Customers V3</EntityName></DataManagementPackageEntityData>`)),
			[]ManifestEntity{{Name: "Customers V3", Fields: []string{"ACCOUNTNUM", "NAME", "CUSTNAME", "PHONE"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest(bytes.NewReader(tt.in))
			if err != nil {
				t.Fatalf("ParseManifest: %v", err)
			}
			if m.DefinitionGroup != "Group 1" || m.Description != "Desc" {
				t.Errorf("group, description = %q, %q; want %q, %q", m.DefinitionGroup, m.Description, "Group 1", "Desc")
			}
			if !reflect.DeepEqual(m.Entities, tt.want) {
				t.Errorf("entities = %+v\nwant %+v", m.Entities, tt.want)
			}
		})
	}
}

func TestParseManifestErrors(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"empty", "", "no DataManagementPackageManifest"},
		{"not XML", "CUSTOMERACCOUNT,NAME\r\nUS-001,x", "no DataManagementPackageManifest"},
		{"binary", "PK\x03\x04\x00\x00", "not a valid XML document"},
		{"wrong root", `<DataManagementPackageHeader/>`, `root element is "DataManagementPackageHeader"`},
		{"truncated", `<DataManagementPackageManifest><PackageEntityList>`, "unexpected EOF"},
		{"bad Disable", manifestXML("", "", "", `<DataManagementPackageEntityData><EntityName>X</EntityName><Disable>maybe</Disable></DataManagementPackageEntityData>`), `entity "X": Disable`},
		{"mismatched tags", `<DataManagementPackageManifest><a></b></DataManagementPackageManifest>`, "not a valid XML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseManifest = %+v, %v; want error containing %q", m, err, tt.wantErr)
			}
		})
	}
}

func TestParseManifestSizeLimit(t *testing.T) {
	defer func(old int64) { manifestLimit = old }(manifestLimit)
	manifestLimit = 1 << 10
	exact := manifestXML("", "", "", "")
	exact = strings.Repeat(" ", int(manifestLimit)-len(exact)) + exact
	if _, err := ParseManifest(strings.NewReader(exact)); err != nil {
		t.Errorf("ParseManifest of exactly the limit: %v, want success", err)
	}
	big := manifestXML("", "", "", "<!--"+strings.Repeat("x", int(manifestLimit))+"-->")
	if _, err := ParseManifest(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than 64 MiB") {
		t.Errorf("ParseManifest of %d bytes: error = %v, want one saying larger than 64 MiB", len(big), err)
	}
}

func TestParsePackageHeader(t *testing.T) {
	const mt = "Microsoft.Dynamics.AX.Framework.Tools.DataManagement.Serialization.DataManagementPackageManifest"
	want := &PackageHeader{Description: "Tiny export", ManifestType: mt, PackageType: "DefinitionGroup", PackageVersion: "2"}
	fixture, err := os.ReadFile(filepath.Join("..", "testdata", "packages", "tiny", "PackageHeader.xml"))
	if err != nil {
		t.Fatal(err)
	}
	doc := `<?xml version="1.0" encoding="utf-16"?><h:DataManagementPackageHeader xmlns:h="` + nsFO + `">
		<h:PackageVersion>2</h:PackageVersion><h:PackageType>DefinitionGroup</h:PackageType>
		<h:ManifestType>` + mt + `</h:ManifestType><h:Description> Tiny export </h:Description><h:Other/></h:DataManagementPackageHeader>`
	tests := []struct {
		name string
		in   []byte
	}{
		{"fixture", fixture},
		{"UTF-16 LE prefixed, any order", utf16Bytes(doc, binary.LittleEndian, true)},
		{"UTF-8 declaring utf-16", []byte(doc)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParsePackageHeader(bytes.NewReader(tt.in))
			if err != nil || !reflect.DeepEqual(h, want) {
				t.Errorf("ParsePackageHeader = %+v, %v; want %+v", h, err, want)
			}
		})
	}
	if _, err := ParsePackageHeader(strings.NewReader(manifestXML("", "", "", ""))); err == nil {
		t.Errorf("ParsePackageHeader(a manifest) succeeded, want a wrong-root error")
	}
}

func TestParseManifestFixture(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "testdata", "packages", "tiny", "Manifest.xml"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	m, err := ParseManifest(f)
	if err != nil {
		t.Fatalf("ParseManifest(tiny): %v", err)
	}
	want := &Manifest{DefinitionGroup: "Tiny export", Description: "Customers and vendors for tests", Entities: []ManifestEntity{
		{Name: "Customers V3", File: "Customers V3.csv", SourceFormat: "CSV-Unicode", RefreshType: "FullPush"},
		{Name: "Vendors V2", File: "Vendors V2.csv", SourceFormat: "CSV-Unicode", RefreshType: "IncrementalPush"},
	}}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("ParseManifest(tiny) = %+v\nwant %+v", m, want)
	}
}
