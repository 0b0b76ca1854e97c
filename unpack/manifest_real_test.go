package unpack

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"github.com/dmfexport/dmfexport/store/storetest"
	"reflect"
	"strings"
	"testing"
)

// realEntity is one entry of a manifest shaped like those real F&O
// environments write.
type realEntity struct {
	name, file, format, sheet, refresh string
	queryHex                           int  // bytes of QueryData hex (0: no QueryData element)
	emptySheet                         bool // <ExcelSheetName /> rather than absent
}

// realManifest writes a manifest as F&O does: elements in alphabetical
// order, the F&O and i: namespaces, optional elements left out, QueryData
// as hex with line breaks inside. pretty indents with tabs and CRLF;
// otherwise it is one line. The result is UTF-8; callers encode it.
func realManifest(group string, ents []realEntity, pretty bool) string {
	nl, in := "", func(int) string { return "" }
	if pretty {
		nl, in = "\r\n", func(n int) string { return strings.Repeat("\t", n) }
	}
	var b strings.Builder
	b.WriteString(`<DataManagementPackageManifest xmlns="` + nsFO + `" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">` + nl)
	b.WriteString(in(1) + "<DefinitionGroupName>" + group + "</DefinitionGroupName>" + nl)
	b.WriteString(in(1) + "<Description />" + nl)
	b.WriteString(in(1) + "<PackageEntityList>" + nl)
	for i, e := range ents {
		el := func(name, v string) {
			b.WriteString(in(3) + "<" + name + ">" + v + "</" + name + ">" + nl)
		}
		b.WriteString(in(2) + "<DataManagementPackageEntityData>" + nl)
		if e.refresh != "" {
			el("DefaultRefreshType", e.refresh)
		}
		b.WriteString(in(3) + "<EntityMapList>" + nl)
		for _, f := range []string{"ACCOUNTNUM", "NAME"} {
			b.WriteString(in(4) + "<DataManagementPackageEntityMap><EntityField>" + f + "</EntityField><XMLField>" + f + "</XMLField></DataManagementPackageEntityMap>" + nl)
		}
		b.WriteString(in(3) + "</EntityMapList>" + nl)
		el("EntityName", e.name)
		switch {
		case e.sheet != "":
			el("ExcelSheetName", e.sheet)
		case e.emptySheet:
			b.WriteString(in(3) + "<ExcelSheetName />" + nl)
		}
		el("InputFilePath", e.file)
		el("LevelInExecutionUnit", "1")
		if e.queryHex > 0 {
			// Hex blob with a line break every 76 characters, as seen in
			// real packages.
			var q strings.Builder
			for j := 0; j < e.queryHex; j++ {
				if j > 0 && j%76 == 0 {
					q.WriteString("\r\n")
				}
				q.WriteByte("0123456789ABCDEF"[(i+j)%16])
			}
			el("QueryData", q.String())
		}
		el("SequenceInLevel", fmt.Sprint(i+1))
		el("SourceFormat", e.format)
		b.WriteString(in(2) + "</DataManagementPackageEntityData>" + nl)
	}
	b.WriteString(in(1) + "</PackageEntityList>" + nl)
	b.WriteString("</DataManagementPackageManifest>")
	return b.String()
}

// configTemplateShape rewrites a realManifest into the shape of the
// manifests of Microsoft's configuration data templates exported from F&O
// (seen in NathanClouseAX/EnvironmentDataLoader, resources/010 - System
// Setup/Manifest.xml, and Microsoft/Dynamics-AX-Integration,
// FileBasedIntegrationSamples/ConsoleAppSamples/DataPackageHandler/SampleData):
// each field map is an <EntityMap> with nested elements, some of them
// i:nil; every entity carries Disable, TargetEntity, SampleFilePath and
// i:nil elements; QueryData is lower-case hex broken by LF; elements the
// reader does not know follow PackageEntityList.
func configTemplateShape(m string) string {
	r := strings.NewReplacer(
		"<DataManagementPackageEntityMap>", "<EntityMap><ArrayIndex>0</ArrayIndex>",
		"</EntityField>", `</EntityField><EntityFieldConversionList i:nil="true" /><IsAutoDefault>false</IsAutoDefault>`,
		"</DataManagementPackageEntityMap>", "</EntityMap>",
		"<DataManagementPackageEntityData>", "<DataManagementPackageEntityData><Disable>false</Disable>",
		"<InputFilePath>", `<EntityTransformList i:nil="true" /><InputFilePath>`,
		"<SequenceInLevel>", `<QueryFilter i:nil="true" /><SampleFilePath>{2608F674-963B-4846-9BD1-2B13B36E6896}</SampleFilePath><SequenceInLevel>`,
		"</DataManagementPackageEntityData>", "<TargetEntity>SomeEntity</TargetEntity><ValidationStatus>Yes</ValidationStatus></DataManagementPackageEntityData>",
		"</PackageEntityList>", `</PackageEntityList><ProjectCategory>1</ProjectCategory><RulesData i:nil="true" />`,
		"\r\n", "\n",
	)
	m = r.Replace(m)
	var b strings.Builder
	for rest := m; ; {
		i := strings.Index(rest, "<QueryData>")
		if i < 0 {
			b.WriteString(rest)
			return b.String()
		}
		j := strings.Index(rest, "</QueryData>")
		i += len("<QueryData>")
		b.WriteString(rest[:i])
		b.WriteString(strings.ToLower(rest[i:j]))
		rest = rest[j:]
	}
}

// realHeader is a PackageHeader.xml of the given version.
func realHeader(version string) string {
	return `<DataManagementPackageHeader xmlns="` + nsFO + `" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><Description>x</Description>` +
		`<ManifestType>Microsoft.Dynamics.AX.Framework.Tools.DataManagement.Serialization.DataManagementPackageManifest</ManifestType>` +
		`<PackageType>DefinitionGroup</PackageType><PackageVersion>` + version + `</PackageVersion></DataManagementPackageHeader>`
}

func TestParseManifestRealShapes(t *testing.T) {
	ents := []realEntity{
		{name: "Customers V3", file: "CUSTCUSTOMERV3ENTITY.CSV", format: "csv-unicode", refresh: "IncrementalPush", queryHex: 3000},
		{name: "Released products V2", file: "Released products V2.xlsx", format: "EXCEL", sheet: "Released_products_V2_EcoResRel$", refresh: "FullPush"},
		{name: "Country/regions", file: "Countryregions.xlsx", format: "Excel", emptySheet: true},
		{name: "Vendors", file: "VENDVENDORV2ENTITY.xml", format: "XML-Element"},
	}
	fields := []string{"ACCOUNTNUM", "NAME"} // each entity's field map, as realManifest writes it
	want := []ManifestEntity{
		{Name: "Customers V3", File: "CUSTCUSTOMERV3ENTITY.CSV", SourceFormat: "csv-unicode", RefreshType: "IncrementalPush", Fields: fields},
		{Name: "Released products V2", File: "Released products V2.xlsx", SourceFormat: "EXCEL", Sheet: "Released_products_V2_EcoResRel$", RefreshType: "FullPush", Fields: fields},
		{Name: "Country/regions", File: "Countryregions.xlsx", SourceFormat: "Excel", Fields: fields},
		{Name: "Vendors", File: "VENDVENDORV2ENTITY.xml", SourceFormat: "XML-Element", Fields: fields},
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"UTF-16 LE BOM, no declaration, one line", utf16Bytes(realManifest("G", ents, false), binary.LittleEndian, true)},
		{"UTF-16 LE BOM, no declaration, tabs and CRLF", utf16Bytes(realManifest("G", ents, true), binary.LittleEndian, true)},
		{"UTF-8 re-saved with a declaration", []byte(`<?xml version="1.0" encoding="utf-8"?>` + "\n" + realManifest("G", ents, true))},
		{"ExcelWorkSheetName spelling", utf16Bytes(strings.ReplaceAll(realManifest("G", ents, false), "ExcelSheetName", "ExcelWorkSheetName"), binary.LittleEndian, true)},
		{"configuration template shape", utf16Bytes(configTemplateShape(realManifest("G", ents, false)), binary.LittleEndian, true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest(bytes.NewReader(tt.in))
			if err != nil {
				t.Fatalf("ParseManifest: %v", err)
			}
			if m.DefinitionGroup != "G" || m.Description != "" {
				t.Errorf("group, description = %q, %q; want G and empty", m.DefinitionGroup, m.Description)
			}
			if !reflect.DeepEqual(m.Entities, want) {
				t.Errorf("entities =\n%+v\nwant\n%+v", m.Entities, want)
			}
		})
	}
}

// TestExplodeLargeRealManifest explodes a package whose manifest, as for a
// large data project, is about 1 MB for 100 entities, most of whose files
// are absent, under PackageVersion 1 and 2.
func TestExplodeLargeRealManifest(t *testing.T) {
	var ents []realEntity
	for i := range 100 {
		ents = append(ents, realEntity{name: fmt.Sprintf("Entity %03d", i), file: fmt.Sprintf("ENTITY%03d.CSV", i),
			format: []string{"CSV-Unicode", "csv", "CSV"}[i%3], refresh: []string{"FullPush", "IncrementalPush"}[i%2], queryHex: 4800})
	}
	manifest := utf16Bytes(realManifest("Big project", ents, false), binary.LittleEndian, true)
	if n := len(manifest); n < 900<<10 || n > 2<<20 {
		t.Fatalf("generated manifest is %d bytes, want about 1 MB", n)
	}
	for _, version := range []string{"1", "2"} {
		t.Run("PackageVersion "+version, func(t *testing.T) {
			zents := []zent{{name: "Manifest.xml", data: manifest}, {name: "PackageHeader.xml", data: utf16Bytes(realHeader(version), binary.LittleEndian, true)}}
			for i := 0; i < 100; i += 10 { // one file in ten is present
				zents = append(zents, zent{name: fmt.Sprintf("ENTITY%03d.CSV", i), data: []byte("ACCOUNTNUM,NAME\r\n1,x\r\n")})
			}
			res, err := Explode(context.Background(), writeZip(t, buildZip(t, zents)), storetest.Dir(t), ExplodeOptions{Prefix: "e"})
			if err != nil {
				t.Fatalf("Explode: %v", err)
			}
			if res.Header == nil || res.Header.PackageVersion != version {
				t.Errorf("Header = %+v, want PackageVersion %s", res.Header, version)
			}
			if len(res.Entities) != 100 {
				t.Fatalf("%d entities, want 100", len(res.Entities))
			}
			absent := 0
			for i, e := range res.Entities {
				if e.Err != nil {
					t.Errorf("entity %s: %v", e.Entity, e.Err)
				}
				if e.Absent != (i%10 != 0) {
					t.Errorf("entity %s: Absent = %v, want %v", e.Entity, e.Absent, i%10 != 0)
				}
				if e.Absent {
					absent++
				} else if e.Key == "" || e.Format != "csv" || e.RefreshType != ents[i].refresh {
					t.Errorf("entity %+v: want a key, format csv and refresh type %s", e, ents[i].refresh)
				}
			}
			if absent != 90 || len(res.Unlisted) != 0 {
				t.Errorf("%d absent, unlisted %q; want 90 absent, none unlisted", absent, res.Unlisted)
			}
		})
	}
}
