package dmftest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/internal/testenv"
)

func twoEntities() []Entity {
	return []Entity{
		{Name: "Customers V3", Data: []byte("\ufeffCUSTOMERACCOUNT,NAME\r\n000001,\"A, B\"\r\n")},
		{Name: "Products", File: "Released products V2.xlsx", SourceFormat: "Excel", Sheet: "Sheet1", Data: []byte("PK\x03\x04not really")},
		{Name: "Vendors V2", Data: utf16LE("VENDORACCOUNTNUMBER\r\nV1\r\n")},
	}
}

func TestAuth(t *testing.T) {
	s := newTestServer(t, Options{Token: "secret-1", Projects: map[string][]Entity{"G": twoEntities()}}, nil)
	tests := []struct {
		name   string
		header string
		want   int
	}{
		{"missing", "", http.StatusUnauthorized},
		{"wrong token", "Bearer secret-2", http.StatusUnauthorized},
		{"token prefix", "Bearer secret-", http.StatusUnauthorized},
		{"basic scheme", "Basic c2VjcmV0LTE=", http.StatusUnauthorized},
		{"bearer without token", "Bearer ", http.StatusUnauthorized},
		{"right token", "Bearer secret-1", http.StatusOK},
		{"lower-case scheme", "bearer secret-1", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL+actionPrefix+actionStatus, strings.NewReader(idBody("x")))
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			r := do(t, req)
			if r.status != tt.want {
				t.Fatalf("want status %d, got %d: %s", tt.want, r.status, r.body)
			}
			if tt.want == http.StatusUnauthorized {
				if want := `{"Message":"Authentication failed."}`; string(r.body) != want {
					t.Errorf("want the non-OData body %s, got %s", want, r.body)
				}
			}
		})
	}
}

func TestRoutingErrors(t *testing.T) {
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}}, nil)
	tests := []struct {
		name     string
		method   string
		path     string
		body     string
		want     int
		wantCode string // a part of innererror.message
	}{
		{"unknown path", http.MethodPost, "/data/Customers", "{}", http.StatusNotFound, "No HTTP resource"},
		{"root", http.MethodGet, "/", "", http.StatusNotFound, "No HTTP resource"},
		{"unknown action", http.MethodPost, actionPrefix + "DeleteEverything", "{}", http.StatusNotFound, "No HTTP resource"},
		{"GET on an action", http.MethodGet, actionPrefix + actionStatus, "", http.StatusMethodNotAllowed, "does not support http method 'GET'"},
		{"PUT on an action", http.MethodPut, actionPrefix + actionExport, "{}", http.StatusMethodNotAllowed, "does not support http method 'PUT'"},
		{"malformed JSON", http.MethodPost, actionPrefix + actionStatus, `{"executionId":`, http.StatusBadRequest, "body is invalid"},
		{"empty body", http.MethodPost, actionPrefix + actionStatus, "", http.StatusBadRequest, "body is empty"},
		{"JSON array", http.MethodPost, actionPrefix + actionStatus, `["x"]`, http.StatusBadRequest, "body is invalid"},
		{"trailing data", http.MethodPost, actionPrefix + actionStatus, `{"executionId":"x"} {}`, http.StatusBadRequest, "unexpected data"},
		{"wrong type", http.MethodPost, actionPrefix + actionExport, `{"definitionGroupId":"G","reExecute":"no"}`, http.StatusBadRequest, "body is invalid"},
		{"missing executionId", http.MethodPost, actionPrefix + actionPackageURL, `{}`, http.StatusBadRequest, "'executionId' is required"},
		{"extra keys accepted", http.MethodPost, actionPrefix + actionStatus, `{"executionId":"x","foo":[1,2],"@odata.type":"y"}`, http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, s.URL+tt.path, strings.NewReader(tt.body))
			req.Header.Set("Authorization", "Bearer "+DefaultToken)
			r := do(t, req)
			if r.status != tt.want {
				t.Fatalf("want status %d, got %d: %s", tt.want, r.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != odataJSONType {
				t.Errorf("want Content-Type %q, got %q", odataJSONType, ct)
			}
			if tt.wantCode == "" {
				return
			}
			if msg := odataErr(t, r); !strings.Contains(msg, tt.wantCode) {
				t.Errorf("want innererror.message containing %q, got %q", tt.wantCode, msg)
			}
			if tt.want == http.StatusMethodNotAllowed && r.header.Get("Allow") != http.MethodPost {
				t.Errorf("want Allow: POST, got %q", r.header.Get("Allow"))
			}
		})
	}
}

func TestEnvelopes(t *testing.T) {
	clock := newFakeClock()
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, EmptyURLAsks: -1}, clock)
	runToEnd(t, s, clock, "G", "run 1")
	tests := []struct {
		action string
		body   string
		want   *regexp.Regexp
	}{
		{actionExport, exportBody("G", "run 2", false), regexp.MustCompile(`^run 2$`)},
		{actionStatus, idBody("run 1"), regexp.MustCompile(`^Succeeded$`)},
		{actionPackageURL, idBody("run 1"), regexp.MustCompile(`^` + regexp.QuoteMeta(s.URL) + `/dmf/[0-9a-f-]{36}-G\.zip\?sv=2024-08-04&sr=b&sp=r&se=[^&]+&sig=[A-Za-z0-9_-]{43}$`)},
		{actionErrors, idBody("run 1"), regexp.MustCompile(`^\[\]$`)},
		{actionSummaryPage, idBody("run 1"), regexp.MustCompile(`^` + regexp.QuoteMeta(s.URL) + `/\?mi=DMFExecutionSummary&executionId=run\+1$`)},
	}
	for _, tt := range tests {
		t.Run(tt.action, func(t *testing.T) {
			r := call(t, s.URL, tt.action, DefaultToken, tt.body)
			if r.status != http.StatusOK {
				t.Fatalf("want status 200, got %d: %s", r.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != odataJSONType {
				t.Errorf("want Content-Type %q, got %q", odataJSONType, ct)
			}
			var env map[string]any
			if err := json.Unmarshal(r.body, &env); err != nil {
				t.Fatalf("answer is not JSON: %v", err)
			}
			if want := s.URL + "/data/$metadata#Edm.String"; env["@odata.context"] != want {
				t.Errorf("want @odata.context %q, got %v", want, env["@odata.context"])
			}
			v, nested := envelopeValue(t, r.body)
			if nested {
				t.Errorf("want the flat value form, got nested: %s", r.body)
			}
			if !tt.want.MatchString(v) {
				t.Errorf("want value matching %s, got %q", tt.want, v)
			}
			wantCalls := 1
			if tt.action == actionExport {
				wantCalls = 2 // runToEnd exported once before
			}
			if s.Calls(tt.action) != wantCalls {
				t.Errorf("want Calls(%q) %d, got %d", tt.action, wantCalls, s.Calls(tt.action))
			}
		})
	}
}

func TestBaseFromHost(t *testing.T) {
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}}, nil)
	s.SetBaseURL("") // derive from Host
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL+actionPrefix+actionSummaryPage, strings.NewReader(idBody("a/b c")))
	req.Header.Set("Authorization", "Bearer "+DefaultToken)
	req.Host = "contoso.operations.example:8443"
	r := do(t, req)
	v, _ := envelopeValue(t, r.body)
	if want := "http://contoso.operations.example:8443/?mi=DMFExecutionSummary&executionId=a%2Fb+c"; v != want {
		t.Errorf("want %q, got %q", want, v)
	}
	if !strings.Contains(string(r.body), `"@odata.context":"http://contoso.operations.example:8443/data/$metadata#Edm.String"`) {
		t.Errorf("want @odata.context from Host, got %s", r.body)
	}
}

func TestStatusProgression(t *testing.T) {
	const nf = "400" // HTTP 400 "Execution details were not found"
	tests := []struct {
		name     string
		final    string
		register time.Duration
		after    []time.Duration // cumulative offsets from start
		want     []string
	}{
		{"default succeeds after the register window", "", 0,
			[]time.Duration{0, 499 * time.Millisecond, 500 * time.Millisecond, 999 * time.Millisecond, time.Second, 1099 * time.Millisecond,
				1100 * time.Millisecond, 1999 * time.Millisecond, 2 * time.Second, time.Hour},
			[]string{nf, nf, "Unknown", "Unknown", "NotRun", "NotRun", "Executing", "Executing", "Succeeded", "Succeeded"}},
		{"window off", "", -1, []time.Duration{0, 99 * time.Millisecond, 100 * time.Millisecond, time.Second},
			[]string{"NotRun", "NotRun", "Executing", "Succeeded"}},
		{"longer window", "", 10 * time.Second, []time.Duration{0, 4 * time.Second, 5 * time.Second, 10 * time.Second, 11 * time.Second},
			[]string{nf, nf, "Unknown", "NotRun", "Succeeded"}},
		{"fails", "Failed", -1, []time.Duration{0, 500 * time.Millisecond, time.Second}, []string{"NotRun", "Executing", "Failed"}},
		{"partial", "PartiallySucceeded", -1, []time.Duration{0, time.Second}, []string{"NotRun", "PartiallySucceeded"}},
		{"canceled", "Canceled", -1, []time.Duration{0, 2 * time.Second}, []string{"NotRun", "Canceled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			opts := Options{Projects: map[string][]Entity{"G": twoEntities()}, ExecutionTime: time.Second, RegisterDelay: tt.register}
			if tt.final != "" {
				opts.FinalStatus = map[string]string{"G": tt.final}
			}
			s := newTestServer(t, opts, clock)
			start := clock.Now()
			id := value(t, s.URL, actionExport, exportBody("G", "", false))
			for i, off := range tt.after {
				clock.Advance(start.Add(off).Sub(clock.Now()))
				if got := statusAnswer(t, s.URL, id); got != tt.want[i] {
					t.Errorf("at %v: want status %s, got %s", off, tt.want[i], got)
				}
			}
		})
	}
}

// statusAnswer asks GetExecutionSummaryStatus and returns the status, or
// "400" for the "not registered yet" error (checking its text).
func statusAnswer(t *testing.T, base, id string) string {
	t.Helper()
	r := call(t, base, actionStatus, DefaultToken, idBody(id))
	if r.status == http.StatusBadRequest {
		if msg, want := odataErr(t, r), "Execution details were not found for execution id "+id; msg != want {
			t.Fatalf("status 400: want innererror.message %q, got %q", want, msg)
		}
		return "400"
	}
	if r.status != http.StatusOK {
		t.Fatalf("status of %s: want 200 or 400, got %d: %s", id, r.status, r.body)
	}
	v, _ := envelopeValue(t, r.body)
	return v
}

func TestStatusRealClock(t *testing.T) {
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, ExecutionTime: 50 * time.Millisecond, RegisterDelay: -1}, nil)
	start := time.Now()
	id := value(t, s.URL, actionExport, exportBody("G", "", false))
	if got := value(t, s.URL, actionStatus, idBody(id)); got != "NotRun" && got != "Executing" {
		t.Errorf("right after export: want NotRun or Executing, got %s", got)
	}
	var got string
	if !testenv.Await(5*time.Second, func() bool { got = value(t, s.URL, actionStatus, idBody(id)); return got == "Succeeded" }) {
		t.Fatalf("5s after export: want Succeeded, got %s", got)
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Errorf("want Succeeded no sooner than ExecutionTime (50ms), got it after %s", took)
	}
}

func TestExportToPackage(t *testing.T) {
	// Only IDs here: no register window, concurrent exports allowed.
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities(), "H": twoEntities()}, RegisterDelay: -1, ConcurrentExports: true}, nil)
	if got := value(t, s.URL, actionExport, exportBody("G", "dup id", false)); got != "dup id" {
		t.Fatalf("want ID %q, got %q", "dup id", got)
	}
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantID     *regexp.Regexp
		wantMsg    string
	}{
		{"generated ID", exportBody("G", "", false), 200, regexp.MustCompile(`^G-\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2} [ap]m$`), ""},
		{"chosen ID with slash and colon", exportBody("H", "H/2025-01-01T00:00:00 #1", false), 200, regexp.MustCompile(`^H/2025-01-01T00:00:00 #1$`), ""},
		{"unknown group", exportBody("Nope", "x", false), 400, nil, "'Nope'"},
		{"empty group", exportBody("", "y", false), 400, nil, "''"},
		{"duplicate ID", exportBody("G", "dup id", false), 400, nil, "execution ID 'dup id' already exists"},
		{"re-execute", exportBody("G", "dup id", true), 200, regexp.MustCompile(`^dup id$`), ""},
		{"re-execute unknown ID starts it", exportBody("G", "fresh", true), 200, regexp.MustCompile(`^fresh$`), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.Exports()
			r := call(t, s.URL, actionExport, DefaultToken, tt.body)
			if r.status != tt.wantStatus {
				t.Fatalf("want status %d, got %d: %s", tt.wantStatus, r.status, r.body)
			}
			if tt.wantStatus != 200 {
				if msg := odataErr(t, r); !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("want message containing %q, got %q", tt.wantMsg, msg)
				}
				if s.Exports() != before {
					t.Errorf("a refused export counted: Exports %d → %d", before, s.Exports())
				}
				return
			}
			id, _ := envelopeValue(t, r.body)
			if !tt.wantID.MatchString(id) {
				t.Errorf("want ID matching %s, got %q", tt.wantID, id)
			}
			if s.Exports() != before+1 {
				t.Errorf("want Exports %d, got %d", before+1, s.Exports())
			}
			if st := value(t, s.URL, actionStatus, idBody(id)); st == "Unknown" {
				t.Errorf("status of new execution %q is Unknown", id)
			}
		})
	}
	if got := value(t, s.URL, actionStatus, idBody("never started")); got != "Unknown" {
		t.Errorf("unknown ID: want Unknown, got %s", got)
	}
}

func TestPackageURL(t *testing.T) {
	clock := newFakeClock()
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, ExecutionTime: time.Second, EmptyURLAsks: 2, URLTTL: 30 * time.Minute, RegisterDelay: -1}, clock)
	id := value(t, s.URL, actionExport, exportBody("G", "", false))
	steps := []struct {
		name    string
		advance time.Duration
		wantURL bool
	}{
		{"NotRun", 0, false},
		{"Executing", 500 * time.Millisecond, false},
		{"first ask after success", time.Second, false},
		{"second ask after success", 0, false},
		{"third ask", 0, true},
		{"later ask", 10 * time.Second, true},
	}
	var prev string
	for _, st := range steps {
		clock.Advance(st.advance)
		got := value(t, s.URL, actionPackageURL, idBody(id))
		if !st.wantURL {
			if got != "" {
				t.Errorf("%s: want empty URL, got %q", st.name, got)
			}
			continue
		}
		u, err := url.Parse(got)
		if err != nil || got == "" {
			t.Fatalf("%s: want a URL, got %q (%v)", st.name, got, err)
		}
		q := u.Query()
		se, err := time.Parse(time.RFC3339, q.Get("se"))
		if err != nil {
			t.Fatalf("%s: se %q is not RFC 3339: %v", st.name, q.Get("se"), err)
		}
		if want := clock.Now().Add(30 * time.Minute).Truncate(time.Second); !se.Equal(want) {
			t.Errorf("%s: want se %v, got %v", st.name, want, se)
		}
		if q.Get("sv") != sasVersion || q.Get("sr") != "b" || q.Get("sp") != "r" || q.Get("sig") == "" {
			t.Errorf("%s: want sv, sr=b, sp=r and sig, got %q", st.name, u.RawQuery)
		}
		if got == prev {
			t.Errorf("%s: want a fresh signature, got the previous URL again", st.name)
		}
		prev = got
	}
	if got := value(t, s.URL, actionPackageURL, idBody("nope")); got != "" {
		t.Errorf("unknown ID: want empty URL, got %q", got)
	}
}

func TestDownload(t *testing.T) {
	clock := newFakeClock()
	ents := twoEntities()
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": ents}}, clock)
	runToEnd(t, s, clock, "G", "e1")
	u := pkgURL(t, s.URL, "e1")
	r := get(t, u, nil)
	if r.status != http.StatusOK {
		t.Fatalf("download: want 200, got %d: %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/zip" {
		t.Errorf("want Content-Type application/zip, got %q", ct)
	}
	if cl := r.header.Get("Content-Length"); cl != fmt.Sprint(len(r.body)) {
		t.Errorf("want Content-Length %d, got %q", len(r.body), cl)
	}
	if s.Downloads() != 1 || s.Calls("download") != 1 {
		t.Errorf("want Downloads 1 and Calls(download) 1, got %d and %d", s.Downloads(), s.Calls("download"))
	}
	files, order := openZip(t, r.body)
	wantOrder := []string{"Manifest.xml", "PackageHeader.xml", "Customers V3.csv", "Released products V2.xlsx", "Vendors V2.csv"}
	if strings.Join(order, "|") != strings.Join(wantOrder, "|") {
		t.Errorf("want zip entries %q, got %q", wantOrder, order)
	}
	var m manifest
	decodeXML(t, files["Manifest.xml"], &m)
	if m.Group != "G" {
		t.Errorf("want DefinitionGroupName G, got %q", m.Group)
	}
	want := []struct{ name, file, format, sheet string }{
		{"Customers V3", "Customers V3.csv", "CSV-Unicode", ""},
		{"Products", "Released products V2.xlsx", "Excel", "Sheet1$"},
		{"Vendors V2", "Vendors V2.csv", "CSV-Unicode", ""},
	}
	if len(m.Entities) != len(want) {
		t.Fatalf("want %d manifest entries, got %d", len(want), len(m.Entities))
	}
	for i, w := range want {
		e := m.Entities[i]
		if e.EntityName != w.name || e.InputFilePath != w.file || e.SourceFormat != w.format || e.ExcelSheetName != w.sheet ||
			e.DefaultRefreshType != "FullPush" || e.SequenceInLevel != i+1 {
			t.Errorf("manifest entry %d: want %+v, FullPush, sequence %d; got %+v", i, w, i+1, e)
		}
		if !bytes.Equal(files[w.file], ents[i].Data) {
			t.Errorf("%s: package bytes differ from the entity's Data:\nwant %q\ngot  %q", w.file, ents[i].Data, files[w.file])
		}
	}
	var h packageHeader
	decodeXML(t, files["PackageHeader.xml"], &h)
	if h.ManifestType != manifestType || h.PackageType != "DefinitionGroup" || h.PackageVersion != "2" {
		t.Errorf("package header: want %s/DefinitionGroup/2, got %+v", manifestType, h)
	}

	// The same execution serves the same bytes; another execution of the
	// same group gets its own blob with identical content.
	if again := get(t, u, nil); !bytes.Equal(again.body, r.body) {
		t.Error("second download of the same URL returned different bytes")
	}
	runToEnd(t, s, clock, "G", "e2")
	u2 := pkgURL(t, s.URL, "e2")
	if strings.Split(u2, "?")[0] == strings.Split(u, "?")[0] {
		t.Errorf("two executions share a blob name: %s", u2)
	}
	if other := get(t, u2, nil); !bytes.Equal(other.body, r.body) {
		t.Error("package of the same entities is not byte-for-byte identical")
	}
}

func TestDownloadRefused(t *testing.T) {
	clock := newFakeClock()
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, URLTTL: time.Minute}, clock)
	runToEnd(t, s, clock, "G", "e1")
	good := pkgURL(t, s.URL, "e1")
	gu, _ := url.Parse(good)
	modify := func(f func(q url.Values, u *url.URL)) string {
		u := *gu
		q := u.Query()
		f(q, &u)
		u.RawQuery = q.Encode()
		return u.String()
	}
	se := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name     string
		url      string
		method   string
		advance  time.Duration
		want     int
		wantCode string
		wantMsg  string
	}{
		{"tampered sig", modify(func(q url.Values, _ *url.URL) { q.Set("sig", tamper(q.Get("sig"))) }), "", 0, 403, "AuthenticationFailed", "Signature did not match"},
		{"missing sig", modify(func(q url.Values, _ *url.URL) { q.Del("sig") }), "", 0, 403, "AuthenticationFailed", "no SAS signature"},
		{"no query", strings.Split(good, "?")[0], "", 0, 403, "AuthenticationFailed", ""},
		{"extended se", modify(func(q url.Values, _ *url.URL) { q.Set("se", "2999-01-01T00:00:00Z") }), "", 0, 403, "AuthenticationFailed", "Signature did not match"},
		{"other blob", modify(func(_ url.Values, u *url.URL) { u.Path = "/dmf/other.zip" }), "", 0, 403, "AuthenticationFailed", ""},
		{"unknown blob, valid signature", s.URL + "/dmf/gone.zip?se=" + url.QueryEscape(se) + "&sig=" + s.sign("/dmf/gone.zip", se), "", 0, 404, "BlobNotFound", ""},
		{"POST", good, http.MethodPost, 0, 405, "UnsupportedHttpVerb", ""},
		{"expired", good, "", time.Minute + time.Second, 403, "AuthenticationFailed", "Signed expiry time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock.Advance(tt.advance)
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			req, _ := http.NewRequestWithContext(t.Context(), method, tt.url, nil)
			before := s.Downloads()
			r := do(t, req)
			if r.status != tt.want {
				t.Fatalf("want status %d, got %d: %s", tt.want, r.status, r.body)
			}
			code, msg := blobErr(t, r)
			if code != tt.wantCode || !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("want code %s and message containing %q, got %s: %q", tt.wantCode, tt.wantMsg, code, msg)
			}
			if r.header.Get("x-ms-error-code") != tt.wantCode {
				t.Errorf("want x-ms-error-code %s, got %q", tt.wantCode, r.header.Get("x-ms-error-code"))
			}
			if s.Downloads() != before {
				t.Errorf("refused request counted as a download")
			}
		})
	}
	// A fresh URL works again after expiry.
	fresh := pkgURL(t, s.URL, "e1")
	if r := get(t, fresh, nil); r.status != http.StatusOK {
		t.Errorf("fresh URL after expiry: want 200, got %d: %s", r.status, r.body)
	}
}

func TestExpiredRealClock(t *testing.T) {
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, ExecutionTime: time.Millisecond, URLTTL: time.Nanosecond, RegisterDelay: -1, EmptyURLAsks: -1}, nil)
	id := value(t, s.URL, actionExport, exportBody("G", "", false))
	if !testenv.Await(5*time.Second, func() bool { return value(t, s.URL, actionStatus, idBody(id)) == "Succeeded" }) {
		t.Fatal("5s after export: not Succeeded")
	}
	// The signed expiry is truncated to the second: with a 1ns URLTTL the
	// URL has expired by the time it is used.
	u := value(t, s.URL, actionPackageURL, idBody(id))
	r := get(t, u, nil)
	if r.status != http.StatusForbidden {
		t.Fatalf("want 403 for an expired URL, got %d", r.status)
	}
	if code, msg := blobErr(t, r); code != "AuthenticationFailed" || !strings.Contains(msg, "expiry") {
		t.Errorf("want AuthenticationFailed about expiry, got %s: %s", code, msg)
	}
}

func TestRange(t *testing.T) {
	clock := newFakeClock()
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}}, clock)
	runToEnd(t, s, clock, "G", "e1")
	u := pkgURL(t, s.URL, "e1")
	full := get(t, u, nil).body
	tests := []struct {
		name      string
		rng       string
		want      int
		wantBytes []byte
	}{
		{"first 100 bytes", "bytes=0-99", http.StatusPartialContent, full[:100]},
		{"resume from 200", "bytes=200-", http.StatusPartialContent, full[200:]},
		{"last 10 bytes", "bytes=-10", http.StatusPartialContent, full[len(full)-10:]},
		{"beyond the end", fmt.Sprintf("bytes=%d-", len(full)+10), http.StatusRequestedRangeNotSatisfiable, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, u, map[string]string{"Range": tt.rng})
			if r.status != tt.want {
				t.Fatalf("want status %d, got %d", tt.want, r.status)
			}
			if tt.wantBytes != nil && !bytes.Equal(r.body, tt.wantBytes) {
				t.Errorf("want %d bytes of the package, got %d different bytes", len(tt.wantBytes), len(r.body))
			}
			if tt.want == http.StatusPartialContent && !strings.HasPrefix(r.header.Get("Content-Range"), "bytes ") {
				t.Errorf("want a Content-Range header, got %q", r.header.Get("Content-Range"))
			}
		})
	}
}

func TestThrottle(t *testing.T) {
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, Throttle: 3}, nil)
	var got []int
	for i := 0; i < 7; i++ {
		action := []string{actionStatus, actionErrors}[i%2]
		r := call(t, s.URL, action, DefaultToken, idBody("x"))
		got = append(got, r.status)
		if r.status == http.StatusTooManyRequests {
			if ra := r.header.Get("Retry-After"); ra != "1" {
				t.Errorf("call %d: want Retry-After 1, got %q", i+1, ra)
			}
			if msg := odataErr(t, r); !strings.Contains(msg, "Retry-After") {
				t.Errorf("call %d: want a message about Retry-After, got %q", i+1, msg)
			}
		}
	}
	want := []int{200, 200, 429, 200, 200, 429, 200}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("want statuses %v, got %v", want, got)
	}
	if n := s.Calls(actionStatus) + s.Calls(actionErrors); n != 5 {
		t.Errorf("want 5 counted calls (throttled ones excluded), got %d", n)
	}
	// Unauthorized calls do not advance the throttle counter.
	if r := call(t, s.URL, actionStatus, "wrong", idBody("x")); r.status != http.StatusUnauthorized {
		t.Errorf("want 401 for a wrong token, got %d", r.status)
	}
	if r := call(t, s.URL, actionStatus, DefaultToken, idBody("x")); r.status != http.StatusOK {
		t.Errorf("call 8: want 200, got %d", r.status)
	}
}

func TestNestedValue(t *testing.T) {
	clock := newFakeClock()
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, NestedValue: true, EmptyURLAsks: -1}, clock)
	tests := []struct {
		action     string
		body       string
		wantNested bool
	}{
		{actionExport, exportBody("G", "n1", false), true},
		{actionStatus, idBody("n1"), false},
		{actionPackageURL, idBody("n1"), true},
		{actionErrors, idBody("n1"), false},
		{actionSummaryPage, idBody("n1"), false},
	}
	for _, tt := range tests {
		t.Run(tt.action, func(t *testing.T) {
			clock.Advance(time.Hour)
			r := call(t, s.URL, tt.action, DefaultToken, tt.body)
			v, nested := envelopeValue(t, r.body)
			if nested != tt.wantNested {
				t.Errorf("want nested=%v, got %s", tt.wantNested, r.body)
			}
			if v == "" {
				t.Errorf("want a value, got %s", r.body)
			}
		})
	}
}

func TestFinalStatus(t *testing.T) {
	tests := []struct {
		final       string
		errorEntity string // entity the errors name; "" → "[]"
		wantURL     bool
		wantFiles   []string
	}{
		{"Succeeded", "", true, []string{"Customers V3.csv", "Released products V2.xlsx", "Vendors V2.csv"}},
		{"Failed", "Customers V3", false, nil},
		{"Canceled", "", false, nil},
		{"PartiallySucceeded", "Vendors V2", true, []string{"Customers V3.csv", "Released products V2.xlsx"}},
	}
	for _, tt := range tests {
		t.Run(tt.final, func(t *testing.T) {
			clock := newFakeClock()
			s := newTestServer(t, Options{Projects: map[string][]Entity{"G": twoEntities()}, FinalStatus: map[string]string{"G": tt.final}}, clock)
			if got := value(t, s.URL, actionErrors, idBody("x")); got != "[]" {
				t.Errorf("errors of an unknown ID: want [], got %s", got)
			}
			runToEnd(t, s, clock, "G", "x")
			raw := value(t, s.URL, actionErrors, idBody("x"))
			switch {
			case tt.errorEntity == "" && raw != "[]":
				t.Errorf("want errors [], got %s", raw)
			case tt.errorEntity != "" && !strings.Contains(raw, `"ErrorMessage":"Entity '`+tt.errorEntity+`'`):
				t.Errorf("want errors naming %s, got %s", tt.errorEntity, raw)
			}
			var u string
			for range 3 { // the first ask after success answers ""
				if u = value(t, s.URL, actionPackageURL, idBody("x")); u != "" {
					break
				}
			}
			if (u != "") != tt.wantURL {
				t.Fatalf("want URL=%v, got %q", tt.wantURL, u)
			}
			if !tt.wantURL {
				return
			}
			clock.Advance(DefaultPackageDelay) // until the package is downloadable
			files, _ := openZip(t, get(t, u, nil).body)
			var m manifest
			decodeXML(t, files["Manifest.xml"], &m)
			var listed []string
			for _, e := range m.Entities {
				listed = append(listed, e.InputFilePath)
			}
			if fmt.Sprint(listed) != fmt.Sprint(tt.wantFiles) {
				t.Errorf("want manifest files %q, got %q", tt.wantFiles, listed)
			}
			if len(files) != 2+len(tt.wantFiles) {
				t.Errorf("want %d zip entries, got %d", 2+len(tt.wantFiles), len(files))
			}
		})
	}
}

func TestEntityDefaults(t *testing.T) {
	clock := newFakeClock()
	s := newTestServer(t, Options{Projects: map[string][]Entity{"G": {
		{Name: "Plain"},
		{Name: "Sheet", SourceFormat: "Excel"},
		{Name: "Odd <&> \"name\"", File: "odd.csv", SourceFormat: "CSV"},
	}}}, clock)
	runToEnd(t, s, clock, "G", "d")
	files, _ := openZip(t, get(t, pkgURL(t, s.URL, "d"), nil).body)
	var m manifest
	decodeXML(t, files["Manifest.xml"], &m)
	want := [][3]string{{"Plain", "Plain.csv", "CSV-Unicode"}, {"Sheet", "Sheet.xlsx", "Excel"}, {"Odd <&> \"name\"", "odd.csv", "CSV"}}
	for i, w := range want {
		e := m.Entities[i]
		if got := [3]string{e.EntityName, e.InputFilePath, e.SourceFormat}; got != w {
			t.Errorf("entity %d: want %q, got %q", i, w, got)
		}
		if d, ok := files[w[1]]; !ok || len(d) != 0 {
			t.Errorf("entity %d: want an empty file %s, got %q (present %v)", i, w[1], d, ok)
		}
	}
}

func TestLogHasNoSecrets(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	clock := newFakeClock()
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil))
	s := newTestServer(t, Options{Token: "tok-XYZ", Projects: map[string][]Entity{"G": twoEntities()}, Logger: log, EmptyURLAsks: -1}, clock)
	call(t, s.URL, actionExport, "tok-XYZ", exportBody("G", "l", false))
	clock.Advance(time.Hour)
	r := call(t, s.URL, actionPackageURL, "tok-XYZ", idBody("l"))
	u, _ := envelopeValue(t, r.body)
	get(t, u, nil)
	get(t, u+"x", nil)
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	sig := u[strings.Index(u, "sig=")+4:]
	if strings.Contains(out, "tok-XYZ") || strings.Contains(out, sig) || strings.Contains(out, "sig=") {
		t.Errorf("log reveals a secret:\n%s", out)
	}
	if n := strings.Count(out, "dmftest request"); n != 4 {
		t.Errorf("want 4 request log lines, got %d:\n%s", n, out)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestConcurrentUse(t *testing.T) {
	s := NewServer(Options{Projects: map[string][]Entity{"G": twoEntities()}, ExecutionTime: 20 * time.Millisecond,
		RegisterDelay: 20 * time.Millisecond, ConcurrentExports: true})
	defer s.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- exportAndDownload(s.URL, "G", fmt.Sprintf("c%d", i))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if s.Exports() != 16 || s.Downloads() != 16 {
		t.Errorf("want 16 exports and 16 downloads, got %d and %d", s.Exports(), s.Downloads())
	}
}

// exportAndDownload runs one export to the end like a client would, without
// testing.T so that it can run in goroutines: it polls through the "not
// registered yet" window and asks again for an empty package URL.
func exportAndDownload(base, group, id string) error {
	post := func(action, body string) (string, int, error) {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, base+actionPrefix+action, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+DefaultToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", 0, err
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode == http.StatusBadRequest && action == actionStatus {
			return "", resp.StatusCode, nil // not registered yet
		}
		var env struct{ Value string }
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || resp.StatusCode != 200 {
			return "", resp.StatusCode, fmt.Errorf("%s %s: status %d, %w", action, id, resp.StatusCode, err)
		}
		return env.Value, resp.StatusCode, nil
	}
	if _, _, err := post(actionExport, exportBody(group, id, false)); err != nil {
		return err
	}
	// Status until Succeeded, then the package URL (empty at first).
	var u, st string
	var err error
	if !testenv.Await(5*time.Second, func() bool {
		if st, _, err = post(actionStatus, idBody(id)); err != nil || st != "Succeeded" {
			return err != nil
		}
		u, _, err = post(actionPackageURL, idBody(id))
		return err != nil || u != ""
	}) {
		return fmt.Errorf("%s: still %q, no package URL after 5s", id, st)
	}
	if err != nil {
		return err
	}
	// Right after success the package may not be downloadable yet (404):
	// ask again for a while, as a client does.
	status := 0
	testenv.Await(5*time.Second, func() bool {
		var req *http.Request
		if req, err = http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil); err != nil {
			return true
		}
		var resp *http.Response
		if resp, err = http.DefaultClient.Do(req); err != nil {
			return true
		}
		_ = resp.Body.Close()
		status = resp.StatusCode
		return status != http.StatusNotFound
	})
	switch {
	case err != nil:
		return err
	case status != http.StatusOK:
		return fmt.Errorf("%s: download status %d", id, status)
	}
	return nil
}

func TestNewServer(t *testing.T) {
	s := NewServer(Options{Projects: map[string][]Entity{DemoDefinitionGroup: DemoProject()}, ExecutionTime: 10 * time.Millisecond, RegisterDelay: 20 * time.Millisecond})
	defer s.Close()
	if !strings.HasPrefix(s.URL, "http://127.0.0.1:") {
		t.Errorf("want a loopback URL, got %s", s.URL)
	}
	if err := exportAndDownload(s.URL, DemoDefinitionGroup, "demo 1"); err != nil {
		t.Fatal(err)
	}
	if s.Exports() != 1 || s.Downloads() != 1 {
		t.Errorf("want 1 export and 1 download, got %d and %d", s.Exports(), s.Downloads())
	}
}

// tamper changes the first character of a signature: to "A", or to "B" when
// it is an "A" already (one signature in 64), so the signature always differs.
func tamper(sig string) string {
	if strings.HasPrefix(sig, "A") {
		return "B" + sig[1:]
	}
	return "A" + sig[1:]
}
