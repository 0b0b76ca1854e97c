package dmftest

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Tests of the behaviours the simulator shows by default because F&O does
// (the F&O export contract, dmf-api.md), each against the real HTTP server.

// xmlElement is one element of an XML text: its path from the root and
// the names of its child elements in document order.
type xmlElement struct {
	path     string
	children []string
}

// xmlElements lists every element of an XML text, innermost first.
func xmlElements(t *testing.T, text string) []xmlElement {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(text))
	dec.CharsetReader = func(_ string, r io.Reader) (io.Reader, error) { return r, nil }
	var out, stack []xmlElement
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("parse XML: %v", err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			path := el.Name.Local
			if n := len(stack); n > 0 {
				stack[n-1].children = append(stack[n-1].children, el.Name.Local)
				path = stack[n-1].path + "/" + path
			}
			stack = append(stack, xmlElement{path: path})
		case xml.EndElement:
			out = append(out, stack[len(stack)-1])
			stack = stack[:len(stack)-1]
		}
	}
}

func TestPackageXMLShape(t *testing.T) {
	long := "Released products variants attributes" // 38 characters
	clock := newFakeClock()
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": {
		{Name: "Customers V3"},
		{Name: "Products", SourceFormat: "EXCEL", Sheet: "Released_products_V2"},
		{Name: "Variants", SourceFormat: "Excel", Sheet: long[:31]},
		{Name: "Attributes", SourceFormat: "excel", Sheet: long[:30]},
		{Name: "No sheet", SourceFormat: "EXCEL"},
		{Name: "CSV with a sheet", SourceFormat: "CSV", Sheet: "ignored"},
		{Name: "Changes", RefreshType: IncrementalPush},
		{Name: "Unsaid", OmitRefreshType: true},
	}}}, clock)
	runToEnd(t, s, clock, "G", "x")
	files, _ := openZip(t, get(t, pkgURL(t, s.URL, "x"), nil).body)
	var m manifest
	decodeXML(t, files["Manifest.xml"], &m) // checks BOM, no declaration, one line
	var h packageHeader
	decodeXML(t, files["PackageHeader.xml"], &h)
	if h.PackageVersion != "2" || h.PackageType != "DefinitionGroup" || h.ManifestType != manifestType {
		t.Errorf("package header: want version 2, DefinitionGroup, %s; got %+v", manifestType, h)
	}

	tests := []struct {
		name, sheet, refresh string
	}{
		{"Customers V3", "", FullPush},
		{"Products", "Released_products_V2$", FullPush},
		{"Variants", long[:31], FullPush}, // the "$" is cut off
		{"Attributes", long[:30] + "$", FullPush},
		{"No sheet", "", FullPush},
		{"CSV with a sheet", "", FullPush},
		{"Changes", "", IncrementalPush},
		{"Unsaid", "", ""},
	}
	if len(m.Entities) != len(tests) {
		t.Fatalf("want %d manifest entries, got %d", len(tests), len(m.Entities))
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := m.Entities[i]
			if e.EntityName != tt.name || e.ExcelSheetName != tt.sheet || e.DefaultRefreshType != tt.refresh {
				t.Errorf("want name %q, ExcelSheetName %q, DefaultRefreshType %q; got %q, %q, %q",
					tt.name, tt.sheet, tt.refresh, e.EntityName, e.ExcelSheetName, e.DefaultRefreshType)
			}
		})
	}

	t.Run("QueryData is hex with line breaks", func(t *testing.T) {
		m := regexp.MustCompile(`<QueryData>([^<]*)</QueryData>`).FindStringSubmatch(decodeText(t, files["Manifest.xml"]))
		if m == nil || !strings.Contains(m[1], "\r\n") || strings.Trim(m[1], "0123456789ABCDEF\r\n") != "" {
			t.Errorf("want QueryData as upper-case hex broken into lines, got %q", m)
		}
	})
	for _, f := range []string{"Manifest.xml", "PackageHeader.xml"} {
		t.Run(f+" order", func(t *testing.T) {
			const entry = "DataManagementPackageManifest/PackageEntityList/DataManagementPackageEntityData"
			withQuery := map[bool]int{} // entries with and without QueryData
			defer func() {
				if f == "Manifest.xml" && (withQuery[true] == 0 || withQuery[false] == 0) {
					t.Errorf("want QueryData in some entries and left out of others, got %v", withQuery)
				}
			}()
			for _, el := range xmlElements(t, decodeText(t, files[f])) {
				if el.path == "DataManagementPackageManifest/PackageEntityList" {
					continue // one entry per entity, in sequence order
				}
				if !slices.IsSorted(el.children) {
					t.Errorf("%s: children of %s not in alphabetical order: %q", f, el.path, el.children)
				}
				if el.path == entry {
					withQuery[slices.Contains(el.children, "QueryData")]++
				}
				for _, absent := range []string{"Disable", "TargetEntity", "ExcelWorkSheetName"} {
					if slices.Contains(el.children, absent) {
						t.Errorf("%s: %s holds %s, which F&O leaves out", f, el.path, absent)
					}
				}
				if el.path == entry && !slices.Contains(el.children, "ExcelSheetName") {
					t.Errorf("want ExcelSheetName in every entry (empty when unused), got %q", el.children)
				}
			}
		})
	}
	if text := decodeText(t, files["Manifest.xml"]); !strings.Contains(text, "<ExcelSheetName />") {
		t.Errorf("want empty ExcelSheetName as <ExcelSheetName />, got %s", text)
	}
}

func TestEntityFiles(t *testing.T) {
	tests := []struct {
		entity   Entity
		wantFile string
		wantData bool // a file in the zip at all
	}{
		{Entity{Name: "Country/regions", SourceFormat: "EXCEL", Data: []byte("PK")}, "Countryregions.xlsx", true},
		{Entity{Name: `Odd <a>:"b"\c|d?e*`, Data: []byte("A\r\n")}, "Odd abcde.csv", true},
		{Entity{Name: "Customer groups", SourceFormat: "XML-Element", Data: []byte("<Document/>")}, "Customer groups.xml", true},
		{Entity{Name: "Vendor groups", SourceFormat: "xml-attribute", File: "VENDVENDORGROUPENTITY.xml", Data: []byte("<Document/>")}, "VENDVENDORGROUPENTITY.xml", true},
		{Entity{Name: "Payment terms"}, "Payment terms.csv", true}, // 0 bytes
		{Entity{Name: "Bank accounts", Absent: true, Data: []byte("ignored")}, "Bank accounts.csv", false},
	}
	var ents []Entity
	for _, tt := range tests {
		ents = append(ents, tt.entity)
	}
	clock := newFakeClock()
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": ents}}, clock)
	runToEnd(t, s, clock, "G", "x")
	files, order := openZip(t, get(t, pkgURL(t, s.URL, "x"), nil).body)
	var m manifest
	decodeXML(t, files["Manifest.xml"], &m)
	if len(order) != 2+len(tests)-1 {
		t.Errorf("want %d zip entries, got %q", 2+len(tests)-1, order)
	}
	for i, tt := range tests {
		t.Run(tt.entity.Name, func(t *testing.T) {
			if got := m.Entities[i].InputFilePath; got != tt.wantFile {
				t.Errorf("want InputFilePath %q, got %q", tt.wantFile, got)
			}
			data, ok := files[tt.wantFile]
			if ok != tt.wantData {
				t.Fatalf("want file %q in the zip: %v, got %v", tt.wantFile, tt.wantData, ok)
			}
			if ok && string(data) != string(tt.entity.Data) {
				t.Errorf("want the entity's %d bytes, got %q", len(tt.entity.Data), data)
			}
		})
	}
}

func TestExportBodyRequired(t *testing.T) {
	full := func() map[string]any {
		return map[string]any{"definitionGroupId": "G", "packageName": "p", "executionId": "", "reExecute": false, "legalEntityId": "USMF"}
	}
	tests := []struct {
		name    string
		edit    func(m map[string]any)
		wantMsg string // "" → accepted
	}{
		{"every field", func(map[string]any) {}, ""},
		{"keys in other case", func(m map[string]any) {
			m["DefinitionGroupID"] = m["definitionGroupId"]
			delete(m, "definitionGroupId")
		}, ""},
		{"extra key", func(m map[string]any) { m["@odata.type"] = "x" }, ""},
		{"no definitionGroupId", func(m map[string]any) { delete(m, "definitionGroupId") }, "definitionGroupId"},
		{"no packageName", func(m map[string]any) { delete(m, "packageName") }, "packageName"},
		{"no executionId", func(m map[string]any) { delete(m, "executionId") }, "executionId"},
		{"no reExecute", func(m map[string]any) { delete(m, "reExecute") }, "reExecute"},
		{"no legalEntityId", func(m map[string]any) { delete(m, "legalEntityId") }, "legalEntityId"},
		{"null executionId", func(m map[string]any) { m["executionId"] = nil }, "executionId"},
		{"two missing", func(m map[string]any) { delete(m, "packageName"); delete(m, "reExecute") }, "packageName, reExecute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}}, clock)
			body := full()
			tt.edit(body)
			r := call(t, s.URL, actionExport, DefaultToken, exportBodyOf(body))
			if tt.wantMsg == "" {
				if r.status != http.StatusOK || s.Exports() != 1 {
					t.Fatalf("want 200 and one export, got %d (%d exports): %s", r.status, s.Exports(), r.body)
				}
				return
			}
			if r.status != http.StatusBadRequest {
				t.Fatalf("want 400, got %d: %s", r.status, r.body)
			}
			if msg := odataErr(t, r); !strings.HasPrefix(msg, "Model state is invalid") || !strings.Contains(msg, "lacks "+tt.wantMsg+";") {
				t.Errorf("want \"Model state is invalid\" naming %s, got %q", tt.wantMsg, msg)
			}
			if s.Exports() != 0 {
				t.Errorf("a refused body started an export")
			}
		})
	}
}

func TestGeneratedExecutionID(t *testing.T) {
	tests := []struct {
		name string
		at   time.Time
		want string
	}{
		{"afternoon", time.Date(2018, 11, 15, 14, 57, 10, 0, time.UTC), "Customer export-11/15/2018 02:57:10 pm"},
		{"morning", time.Date(2025, 1, 2, 9, 5, 3, 0, time.UTC), "Customer export-01/02/2025 09:05:03 am"},
		{"midnight", time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC), "Customer export-06/01/2025 12:00:00 am"},
		{"noon, other zone", time.Date(2025, 6, 1, 14, 0, 0, 0, time.FixedZone("CEST", 2*3600)), "Customer export-06/01/2025 12:00:00 pm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			clock.t = tt.at
			s := newTestServer(t, Options{Projects: map[string][]Entity{"Customer export": twoEntities()}}, clock)
			if got := value(t, s.URL, actionExport, exportBody("Customer export", "", false)); got != tt.want {
				t.Errorf("want ID %q, got %q", tt.want, got)
			}
		})
	}

	// Two exports in the same second get the same ID: the second is refused.
	clock := newFakeClock()
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, RegisterDelay: -1, ExecutionTime: time.Millisecond}, clock)
	first := value(t, s.URL, actionExport, exportBody("G", "", false))
	clock.Advance(500 * time.Millisecond) // first is final, same second
	r := call(t, s.URL, actionExport, DefaultToken, exportBody("G", "", false))
	if msg := odataErr(t, r); r.status != http.StatusBadRequest || !strings.Contains(msg, "'"+first+"' already exists") {
		t.Errorf("same second: want 400 saying %q already exists, got %d %q", first, r.status, msg)
	}
	clock.Advance(500 * time.Millisecond)
	if second := value(t, s.URL, actionExport, exportBody("G", "", false)); second == first {
		t.Errorf("next second: want a new ID, got %q again", second)
	}
}

func TestConcurrentExportRefused(t *testing.T) {
	tests := []struct {
		name       string
		opts       Options
		advance    time.Duration // after the first export of G
		body       string
		wantStatus int
	}{
		{"same project, not registered yet", Options{}, 0, exportBody("G", "b", false), 400},
		{"same project, Unknown phase", Options{}, 700 * time.Millisecond, exportBody("G", "b", false), 400},
		{"same project, executing", Options{}, 1200 * time.Millisecond, exportBody("G", "b", false), 400},
		{"same project, generated ID", Options{}, 1200 * time.Millisecond, exportBody("G", "", false), 400},
		{"same project, re-execute running ID", Options{}, 1200 * time.Millisecond, exportBody("G", "a", true), 400},
		{"other project", Options{}, 0, exportBody("H", "b", false), 200},
		{"same project after the end", Options{}, time.Hour, exportBody("G", "b", false), 200},
		{"re-execute after the end", Options{}, time.Hour, exportBody("G", "a", true), 200},
		{"stuck execution blocks", Options{Faults: Faults{StuckExecution: true}}, 24 * time.Hour, exportBody("G", "b", false), 400},
		{"purged stuck execution no longer blocks", Options{Faults: Faults{StuckExecution: true}}, 8 * 24 * time.Hour, exportBody("G", "b", false), 200},
		{"allowed by ConcurrentExports", Options{ConcurrentExports: true}, 0, exportBody("G", "b", false), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			opts := tt.opts
			opts.Projects = map[string][]Entity{"G": twoEntities(), "H": twoEntities()}
			s := newTestServer(t, opts, clock)
			value(t, s.URL, actionExport, exportBody("G", "a", false))
			clock.Advance(tt.advance)
			r := call(t, s.URL, actionExport, DefaultToken, tt.body)
			if r.status != tt.wantStatus {
				t.Fatalf("want %d, got %d: %s", tt.wantStatus, r.status, r.body)
			}
			if tt.wantStatus == 200 {
				return
			}
			if msg := odataErr(t, r); !strings.Contains(msg, "Data project 'G' is being exported by execution 'a'") {
				t.Errorf("want a message naming the project and the running execution, got %q", msg)
			}
			if s.Exports() != 1 {
				t.Errorf("want the refused export not started, got %d exports", s.Exports())
			}
		})
	}
}

func TestNotRegisteredWindow(t *testing.T) {
	clock := newFakeClock()
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, FinalStatus: map[string]string{"G": "Failed"}}, clock)
	value(t, s.URL, actionExport, exportBody("G", "w", false))
	tests := []struct {
		name   string
		at     time.Duration // since the export
		status string
	}{
		{"start", 0, "400"},
		{"first half", DefaultRegisterDelay/2 - time.Millisecond, "400"},
		{"second half", DefaultRegisterDelay / 2, "Unknown"},
		{"end of window", DefaultRegisterDelay, "NotRun"},
	}
	start := clock.Now()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock.Advance(start.Add(tt.at).Sub(clock.Now()))
			if got := statusAnswer(t, s.URL, "w"); got != tt.status {
				t.Errorf("want status %s, got %s", tt.status, got)
			}
			// The other actions know nothing yet either.
			if u := value(t, s.URL, actionPackageURL, idBody("w")); u != "" {
				t.Errorf("want no package URL, got %q", u)
			}
			if e := value(t, s.URL, actionErrors, idBody("w")); e != "[]" {
				t.Errorf("want errors [], got %s", e)
			}
			// A re-post of the same chosen ID is refused as a duplicate.
			r := call(t, s.URL, actionExport, DefaultToken, exportBody("G", "w", false))
			if msg := odataErr(t, r); !strings.Contains(msg, "'w' already exists") {
				t.Errorf("re-post: want \"already exists\", got %q", msg)
			}
		})
	}
}

func TestODataErrors(t *testing.T) {
	clock := newFakeClock()
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()},
		Faults: Faults{API: []APIFault{{Action: actionSummaryPage, Status: 500}, {Action: actionErrors, First: 1, Status: 429, RetryAfter: 2 * time.Second}}}}, clock)
	value(t, s.URL, actionExport, exportBody("G", "busy", false))
	post := func(action, body string) func() reply {
		return func() reply { return call(t, s.URL, action, DefaultToken, body) }
	}
	tests := []struct {
		name       string
		send       func() reply
		wantStatus int
		wantMsg    string
	}{
		{"unknown project", post(actionExport, exportBody("Nope", "x", false)), 400, "Data project 'Nope' does not exist"},
		{"bad body", post(actionStatus, `{"executionId":1}`), 400, "The request body is invalid"},
		{"model state invalid", post(actionExport, `{"definitionGroupId":"G"}`), 400, "Model state is invalid"},
		{"not registered", post(actionStatus, idBody("busy")), 400, "Execution details were not found for execution id busy"},
		{"concurrent export", post(actionExport, exportBody("G", "other", false)), 400, "is being exported by execution 'busy'"},
		{"duplicate ID", post(actionExport, exportBody("G", "busy", false)), 400, "'busy' already exists"},
		{"injected 500", post(actionSummaryPage, idBody("busy")), 500, "An error has occurred (simulated)"},
		{"injected 429", post(actionErrors, idBody("busy")), 429, "Retry-After"},
		{"unknown path", func() reply { return get(t, s.URL+"/data/Nope", nil) }, 404, "No HTTP resource"},
		{"wrong method", func() reply { return get(t, s.URL+actionPrefix+actionStatus, nil) }, 405, "does not support http method 'GET'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.send()
			if r.status != tt.wantStatus {
				t.Fatalf("want %d, got %d: %s", tt.wantStatus, r.status, r.body)
			}
			if msg := odataErr(t, r); !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("want innererror.message containing %q, got %q", tt.wantMsg, msg)
			}
			if tt.wantStatus == 429 && r.header.Get("Retry-After") != "2" {
				t.Errorf("want Retry-After 2 (integer seconds), got %q", r.header.Get("Retry-After"))
			}
		})
	}
	t.Run("401 is not OData", func(t *testing.T) {
		r := call(t, s.URL, actionStatus, "wrong", idBody("busy"))
		var body map[string]any
		if err := json.Unmarshal(r.body, &body); err != nil || r.status != 401 || body["Message"] != "Authentication failed." || body["error"] != nil {
			t.Errorf(`want 401 {"Message":"Authentication failed."}, got %d %s`, r.status, r.body)
		}
	})
}

// errorRecord matches one {"RecordId","Field","ErrorMessage"} object of
// GetExecutionErrors, whose messages hold unescaped quotes.
var errorRecord = regexp.MustCompile(`\{"RecordId":"([^"]*)","Field":"([^"]*)","ErrorMessage":"(.*?)"\}`)

func TestExecutionErrors(t *testing.T) {
	tests := []struct {
		name        string
		final       string
		every       int
		runs        int
		wantEntity  []string // per run: the entity the errors name; "" → "[]"
		wantInvalid bool     // the text does not parse as JSON
	}{
		{"failed: every second one answers []", "Failed", 0, 4, []string{"Customers V3", "", "Customers V3", ""}, true},
		{"failed: every third", "Failed", 3, 3, []string{"Customers V3", "Customers V3", ""}, true},
		{"failed: never []", "Failed", -1, 3, []string{"Customers V3", "Customers V3", "Customers V3"}, true},
		{"partially succeeded names the left-out entity", "PartiallySucceeded", 0, 2, []string{"Vendors V2", "Vendors V2"}, true},
		{"succeeded", "Succeeded", 0, 1, []string{""}, false},
		{"canceled", "Canceled", 0, 1, []string{""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()},
				FinalStatus: map[string]string{"G": tt.final}, EmptyErrorsEvery: tt.every}, clock)
			for i := range tt.runs {
				id := fmt.Sprintf("run-%d", i+1)
				runToEnd(t, s, clock, "G", id)
				r := call(t, s.URL, actionErrors, DefaultToken, idBody(id))
				var raw string
				if err := json.Unmarshal(r.body, &struct{ Value *string }{&raw}); err != nil {
					t.Fatalf("%s: the answer's value is not a JSON string: %s", id, r.body)
				}
				if tt.wantEntity[i] == "" {
					if raw != "[]" {
						t.Errorf("%s: want [], got %s", id, raw)
					}
					continue
				}
				if json.Valid([]byte(raw)) == tt.wantInvalid {
					t.Errorf("%s: want valid JSON %v, got %s", id, !tt.wantInvalid, raw)
				}
				recs := errorRecord.FindAllStringSubmatch(raw, -1)
				if !strings.HasPrefix(raw, "[{") || !strings.HasSuffix(raw, "}]") || len(recs) != 2 {
					t.Fatalf("%s: want an array of 2 records, got %s", id, raw)
				}
				if !strings.Contains(recs[0][3], "Entity '"+tt.wantEntity[i]+"'") || !strings.Contains(recs[1][3], `"usmf"`) {
					t.Errorf("%s: want messages naming %s, one with unescaped quotes; got %s", id, tt.wantEntity[i], raw)
				}
			}
		})
	}
}

func TestHistoryPurged(t *testing.T) {
	tests := []struct {
		name       string
		history    time.Duration
		after      time.Duration
		wantPurged bool
	}{
		{"a day later", 0, 24 * time.Hour, false},
		{"just under 7 days", 0, 7*24*time.Hour - time.Minute, false},
		{"8 days later", 0, 8 * 24 * time.Hour, true},
		{"shorter history", time.Hour, 2 * time.Hour, true},
		{"kept forever", -1, 365 * 24 * time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, History: tt.history,
				FinalStatus: map[string]string{"G": "PartiallySucceeded"}, EmptyErrorsEvery: -1, URLTTL: 400 * 24 * time.Hour}, clock)
			value(t, s.URL, actionExport, exportBody("G", "old", false))
			clock.Advance(time.Minute)
			u := pkgURL(t, s.URL, "old")
			clock.Advance(tt.after - time.Minute)

			st := value(t, s.URL, actionStatus, idBody("old"))
			fresh := value(t, s.URL, actionPackageURL, idBody("old"))
			errs := value(t, s.URL, actionErrors, idBody("old"))
			dl := get(t, u, nil)
			if tt.wantPurged {
				if st != "Unknown" || fresh != "" || errs != "[]" || dl.status != http.StatusNotFound {
					t.Errorf("want Unknown, no URL, [] and download 404; got %s, %q, %s, %d", st, fresh, errs, dl.status)
				}
				if code, _ := blobErr(t, dl); code != "BlobNotFound" {
					t.Errorf("want BlobNotFound, got %s", code)
				}
				// The forgotten ID can be used again.
				if r := call(t, s.URL, actionExport, DefaultToken, exportBody("G", "old", false)); r.status != http.StatusOK {
					t.Errorf("reuse of a purged ID: want 200, got %d: %s", r.status, r.body)
				}
				return
			}
			if st != "PartiallySucceeded" || fresh == "" || errs == "[]" || dl.status != http.StatusOK {
				t.Errorf("want PartiallySucceeded, a URL, errors and download 200; got %s, %q, %s, %d", st, fresh, errs, dl.status)
			}
		})
	}
}

func TestZeroOptionsAreRealistic(t *testing.T) {
	s := New(Options{})
	checks := []struct {
		name      string
		got, want any
	}{
		{"RegisterDelay", s.opts.RegisterDelay, DefaultRegisterDelay},
		{"History", s.opts.History, DefaultHistory},
		{"EmptyURLAsks", s.opts.EmptyURLAsks, DefaultEmptyURLAsks},
		{"EmptyErrorsEvery", s.opts.EmptyErrorsEvery, DefaultEmptyErrorsEvery},
		{"ConcurrentExports", s.opts.ConcurrentExports, false},
		{"NestedValue", s.opts.NestedValue, false},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: want %v by default, got %v", c.name, c.want, c.got)
		}
	}
	off := New(Options{RegisterDelay: -1, History: -1, EmptyURLAsks: -1, EmptyErrorsEvery: -1})
	if off.opts.RegisterDelay != 0 || off.opts.History != 0 || off.opts.EmptyURLAsks != 0 || off.opts.EmptyErrorsEvery != 0 {
		t.Errorf("negative knobs: want every behaviour off (0), got %+v", off.opts)
	}
}

// TestPackageNotYetDownloadable: right after success the package URL can
// point at a package not yet downloadable (404 BlobNotFound) for
// Options.PackageDelay after the first URL is handed out; later asks do not
// restart that time.
func TestPackageNotYetDownloadable(t *testing.T) {
	tests := []struct {
		name  string
		delay time.Duration
		want  time.Duration // how long downloads answer 404
	}{
		{"default", 0, DefaultPackageDelay},
		{"longer", 5 * time.Second, 5 * time.Second},
		{"off", -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, PackageDelay: tt.delay}, clock)
			runToEnd(t, s, clock, "G", "p")
			var u string
			for range 3 {
				if u = value(t, s.URL, actionPackageURL, idBody("p")); u != "" {
					break
				}
			}
			if u == "" {
				t.Fatal("no package URL after success")
			}
			if tt.want > 0 {
				r := get(t, u, nil)
				if code, _ := blobErr(t, r); r.status != http.StatusNotFound || code != "BlobNotFound" {
					t.Fatalf("download right after the first URL: want 404 BlobNotFound, got %d %s", r.status, code)
				}
				clock.Advance(tt.want - time.Millisecond)
				if again := value(t, s.URL, actionPackageURL, idBody("p")); again != "" {
					u = again
				}
				if r := get(t, u, nil); r.status != http.StatusNotFound {
					t.Fatalf("download just before the delay ends: want 404, got %d", r.status)
				}
				clock.Advance(time.Millisecond)
			}
			if r := get(t, u, nil); r.status != http.StatusOK {
				t.Fatalf("download after the delay: want 200, got %d", r.status)
			}
		})
	}
}

// TestIncrementalPushDeltas: with change tracking, the first export of a
// data project holds every row of an IncrementalPush entity and later ones
// only what changed since (modelled as nothing: the header line), in the
// file's own encoding; FullPush entities always hold every row.
func TestIncrementalPushDeltas(t *testing.T) {
	csv := "ID,NAME\r\n1,A\r\n2,B\r\n"
	ents := []Entity{
		{Name: "Delta", SourceFormat: "CSV-Unicode", RefreshType: IncrementalPush, Data: []byte(csv)},
		{Name: "Delta16", SourceFormat: "CSV-Unicode", RefreshType: IncrementalPush, Data: utf16LE("\ufeff" + csv)},
		{Name: "Full", SourceFormat: "CSV-Unicode", Data: []byte(csv)},
	}
	tests := []struct {
		name string
		full bool
		want map[string][]byte // second export's files
	}{
		{"deltas by default", false, map[string][]byte{
			"Delta.csv": []byte("ID,NAME\r\n"), "Delta16.csv": utf16LE("\ufeffID,NAME\r\n"), "Full.csv": []byte(csv)}},
		{"FullIncremental", true, map[string][]byte{
			"Delta.csv": []byte(csv), "Delta16.csv": utf16LE("\ufeff" + csv), "Full.csv": []byte(csv)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			s := newTestServer(t, Options{Projects: map[string][]Entity{"G": ents}, FullIncremental: tt.full}, clock)
			runToEnd(t, s, clock, "G", "first")
			first, _ := openZip(t, get(t, pkgURL(t, s.URL, "first"), nil).body)
			if !bytes.Equal(first["Delta.csv"], []byte(csv)) || !bytes.Equal(first["Delta16.csv"], utf16LE("\ufeff"+csv)) {
				t.Errorf("first export: want every row of the IncrementalPush entities")
			}
			runToEnd(t, s, clock, "G", "second")
			second, _ := openZip(t, get(t, pkgURL(t, s.URL, "second"), nil).body)
			for name, want := range tt.want {
				if !bytes.Equal(second[name], want) {
					t.Errorf("second export, %s: want %q, got %q", name, want, second[name])
				}
			}
		})
	}
}
