package jobs

import (
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
)

// TestRunEntityFormats exports a package holding every entity file shape
// F&O writes through a whole run: each is published with its rows intact,
// and an unsupported format fails only its own entity.
func TestRunEntityFormats(t *testing.T) {
	utf16 := func(s string) []byte {
		b, err := unicode.UTF16(unicode.LittleEndian, unicode.UseBOM).NewEncoder().Bytes([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	xlsx := func() []byte {
		f := excelize.NewFile()
		defer f.Close()
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
		{Name: "As XML", File: "As XML.xml", SourceFormat: "XML-Element", Data: []byte("<Document/>")},
	}
	sim := dmftest.NewServer(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": ents}, ExecutionTime: 20 * time.Millisecond})
	defer sim.Close()
	dir := t.TempDir()
	exp := fileExport(sim, dir)
	rec, err := (&Runner{}).Run(context.Background(), exp, RunOptions{Trigger: "manual"})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if rec.State != StatePartiallySucceeded || !strings.Contains(rec.Error, "As XML") {
		t.Errorf("run %s %q, want partially_succeeded naming the XML entity", rec.State, rec.Error)
	}
	rows, _ := ndjsonRows(t, filepath.Join(dir, "batches", publish.FileName("fo.files")))
	want := map[string]int{"Semicolons": 2, "Unicode": 1, "Header only": 0, "Empty file": 0, "Released products V2": 20}
	for name, n := range want {
		if rows[name] != n {
			t.Errorf("entity %s: %d rows published, want %d", name, rows[name], n)
		}
	}
	for _, e := range rec.Entities {
		wantState := StateSucceeded
		if e.Entity == "As XML" {
			wantState = StateFailed
		}
		if e.State != wantState {
			t.Errorf("entity %s ended %s (%s), want %s", e.Entity, e.State, e.Error, wantState)
		}
	}
}
