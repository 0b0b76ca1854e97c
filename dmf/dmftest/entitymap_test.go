package dmftest

import (
	"encoding/xml"
	"slices"
	"strings"
	"testing"
)

func TestEntityMapList(t *testing.T) {
	tests := []struct {
		name string
		e    Entity
		want []string // EntityField values in order; nil: an empty EntityMapList
	}{
		{"no fields", Entity{Name: "A"}, nil},
		{"alphabetical", Entity{Name: "A", Fields: []string{"NAME", "ACCOUNT", "CITY"}}, []string{"ACCOUNT", "CITY", "NAME"}},
		{"last two left out", Entity{Name: "A", Fields: []string{"NAME", "ACCOUNT", "CITY", "ZIP"}, OmitFields: 2}, []string{"ACCOUNT", "CITY"}},
		{"all left out", Entity{Name: "A", Fields: []string{"NAME"}, OmitFields: 5}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := manifestXML("G", []Entity{withDefaults(tt.e)})
			var m struct {
				Maps []struct {
					ArrayIndex    string
					EntityField   string
					IsAutoDefault string
					XMLField      string
				} `xml:"PackageEntityList>DataManagementPackageEntityData>EntityMapList>EntityMap"`
			}
			if err := xml.Unmarshal([]byte(text), &m); err != nil {
				t.Fatalf("parse manifest: %v", err)
			}
			var got []string
			for _, em := range m.Maps {
				got = append(got, em.EntityField)
				if em.ArrayIndex != "0" || em.IsAutoDefault != "false" || em.XMLField != em.EntityField {
					t.Errorf("want ArrayIndex 0, IsAutoDefault false, XMLField = EntityField; got %+v", em)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("want fields %q, got %q", tt.want, got)
			}
			if tt.want == nil && !strings.Contains(text, "<EntityMapList />") {
				t.Errorf("want <EntityMapList />, got %s", text)
			}
			for _, el := range xmlElements(t, text) {
				if strings.HasSuffix(el.path, "EntityMap") && !slices.IsSorted(el.children) {
					t.Errorf("children of EntityMap not in alphabetical order: %q", el.children)
				}
			}
		})
	}
}
