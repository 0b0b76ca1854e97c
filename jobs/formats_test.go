package jobs

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"
	"golang.org/x/text/encoding/unicode"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
)

// TestRunEntityFormats exports a package holding every entity file shape
// F&O writes through a whole run: each is published with its rows intact,
// and a format dmfexport does not read fails only its own entity.
func TestRunEntityFormats(t *testing.T) {
	bubble(t, func(t *testing.T) {
		utf16 := func(s string) []byte {
			b, err := unicode.UTF16(unicode.LittleEndian, unicode.UseBOM).NewEncoder().Bytes([]byte(s))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		xlsx := func() []byte {
			f := excelize.NewFile()
			defer func() { _ = f.Close() }()
			if err := f.SetSheetName("Sheet1", "Data"); err != nil {
				t.Fatal(err)
			}
			_ = f.SetSheetRow("Data", "A1", &[]any{"ITEMID", "NAME", "QTY"})
			for i := 1; i <= 20; i++ {
				_ = f.SetSheetRow("Data", fmt.Sprintf("A%d", i+1), &[]any{fmt.Sprintf("%05d", i), fmt.Sprintf("item %d", i), i * 2})
			}
			var b bytes.Buffer
			if err := f.Write(&b); err != nil {
				t.Fatal(err)
			}
			return b.Bytes()
		}()
		ents := []dmftest.Entity{
			{Name: "Semicolons", SourceFormat: "CSV", Data: []byte("ID;NAME\r\n1;\"a;b\"\r\n2;c\r\n")},
			{Name: "Unicode", SourceFormat: "CSV-Unicode", Data: utf16("ID,NAME\r\n1,Müller & Søn\r\n")},
			{Name: "Header only", SourceFormat: "CSV-Unicode", Data: []byte("ID,NAME\r\n")},
			{Name: "Empty file", SourceFormat: "CSV-Unicode", Data: nil},
			{Name: "Released products V2", File: "Released products V2.xlsx", SourceFormat: "Excel", Sheet: "Data", Data: xlsx},
			{Name: "As XML", File: "As XML.xml", SourceFormat: "XML-Element", Data: []byte("<Document><R><ID>1</ID></R><R><ID>2</ID><NAME>x</NAME></R></Document>")},
			{Name: "As attributes", File: "As attributes.xml", SourceFormat: "xml-attribute", Data: []byte(`<Document><R ID="1"/></Document>`)},
			{Name: "Fixed", File: "Fixed.txt", SourceFormat: "Fixed width", Data: []byte("ID  NAME     \r\n0001Contoso  \r\n0002Fabrikam \r\n")},
			{Name: "Json", File: "Json.json", SourceFormat: "JSON", Data: []byte(`[{"ID":"1"}]`)},
		}
		sim := newSim(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": ents}, ExecutionTime: 20 * time.Millisecond})
		defer sim.Close()
		dir := t.TempDir()
		exp := fileExport(sim, dir)
		rec, err := (&Runner{}).Run(context.Background(), exp, RunOptions{Trigger: "manual"})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if rec.State != runs.StatePartiallySucceeded || !strings.Contains(rec.Error, "Json") {
			t.Errorf("run %s %q, want partially_succeeded naming the JSON entity", rec.State, rec.Error)
		}
		if want := "dmfexport replay --entity Json " + exp.Name + "/" + rec.RunID; !strings.Contains(rec.Error, want) {
			t.Errorf("run error %q does not name the replay of the failed entity: %s", rec.Error, want)
		}
		rows, _ := ndjsonRows(t, filepath.Join(dir, "batches", publish.FileName("fo.files")))
		want := map[string]int{"Semicolons": 2, "Unicode": 1, "Header only": 0, "Empty file": 0, "Released products V2": 20, "As XML": 2, "As attributes": 1, "Fixed": 2}
		for name, n := range want {
			if rows[name] != n {
				t.Errorf("entity %s: %d rows published, want %d", name, rows[name], n)
			}
		}
		for _, e := range rec.Entities {
			wantState := runs.StateSucceeded
			if e.Entity == "Json" {
				wantState = runs.StateFailed
				if !strings.Contains(e.Error, `entity Json (file Json.json, source format JSON): format "unknown" is not supported`) {
					t.Errorf("entity Json error %q, want one naming the entity, its file and format", e.Error)
				}
			}
			if e.State != wantState {
				t.Errorf("entity %s ended %s (%s), want %s", e.Entity, e.State, e.Error, wantState)
			}
		}
	})
}

// TestRunAbsentFiles exports a package whose manifest lists files it does
// not hold, as real F&O packages do for entities without rows: under
// absent_files: empty the run succeeds, each absent entity is recorded as
// absent and published as one batch without rows; under fail, those
// entities fail and the others are still published.
func TestRunAbsentFiles(t *testing.T) {
	manifest := `<DataManagementPackageManifest xmlns="http://schemas.microsoft.com/dynamics/2015/01/DataManagement"><DefinitionGroupName>G</DefinitionGroupName><PackageEntityList>` +
		`<DataManagementPackageEntityData><DefaultRefreshType>IncrementalPush</DefaultRefreshType><EntityName>Present</EntityName><InputFilePath>PRESENT.CSV</InputFilePath><SourceFormat>CSV-Unicode</SourceFormat></DataManagementPackageEntityData>` +
		`<DataManagementPackageEntityData><EntityName>Gone</EntityName><InputFilePath>Gone.csv</InputFilePath><SourceFormat>CSV-Unicode</SourceFormat></DataManagementPackageEntityData>` +
		`<DataManagementPackageEntityData><DefaultRefreshType>FullPush</DefaultRefreshType><EntityName>Gone sheet</EntityName><InputFilePath>Gone sheet.xlsx</InputFilePath><SourceFormat>EXCEL</SourceFormat></DataManagementPackageEntityData>` +
		`</PackageEntityList></DataManagementPackageManifest>`
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	for name, body := range map[string]string{"Manifest.xml": manifest, "PRESENT.CSV": "ID\r\n1\r\n2\r\n"} {
		w, _ := zw.Create(name)
		_, _ = w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		mode      string
		wantState runs.State
		gone      runs.State
	}{
		{"empty", runs.StateSucceeded, runs.StateSucceeded},
		{"fail", runs.StatePartiallySucceeded, runs.StateFailed},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				sim := newSim(dmftest.Options{Packages: map[string][]byte{"G": zb.Bytes()}, ExecutionTime: 20 * time.Millisecond})
				defer sim.Close()
				dir := t.TempDir()
				exp := fileExport(sim, dir)
				exp.AbsentFiles = tt.mode
				rec, err := (&Runner{}).Run(context.Background(), exp, RunOptions{Trigger: "manual"})
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				if rec.State != tt.wantState {
					t.Fatalf("run %s (%s), want %s", rec.State, rec.Error, tt.wantState)
				}
				rows, ids := ndjsonRows(t, filepath.Join(dir, "batches", publish.FileName("fo.files")))
				if rows["Present"] != 2 {
					t.Errorf("entity Present: %d rows, want 2", rows["Present"])
				}
				for _, e := range rec.Entities {
					absent := e.Entity != "Present"
					if e.Absent != absent || (absent && (e.Key != "" || e.State != tt.gone)) {
						t.Errorf("entity %+v: want absent %v, no key and %s when absent", e, absent, tt.gone)
					}
					if absent && tt.mode == "fail" && !strings.Contains(e.Error, "absent_files: fail") {
						t.Errorf("entity %s error %q, want one naming absent_files", e.Entity, e.Error)
					}
					_, published := ids[rec.ExecutionID+"/"+e.Entity+"/0"]
					if published != (e.State == runs.StateSucceeded) {
						t.Errorf("entity %s (%s): batch 0 published %v", e.Entity, e.State, published)
					}
				}
				if rt := rec.Entities[0].RefreshType + "," + rec.Entities[1].RefreshType + "," + rec.Entities[2].RefreshType; rt != "IncrementalPush,,FullPush" {
					t.Errorf("refresh types %q, want IncrementalPush,,FullPush", rt)
				}
			})
		})
	}
}
