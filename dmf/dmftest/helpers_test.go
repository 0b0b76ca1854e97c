package dmftest

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"

	"github.com/dmfexport/dmfexport/internal/testenv"
)

// fakeClock is a settable clock for status and expiry tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// clocks maps the URL of each test server to its fake clock (nil: real
// time), so pkgURL can let the package become downloadable.
var (
	clocksMu sync.Mutex
	clocks   = map[string]*fakeClock{}
)

// testServer is a simulator on a loopback port; with a clock, status and
// expiry follow that clock instead of real time.
type testServer struct {
	*Simulator
	URL string
}

func newTestServer(t *testing.T, opts Options, clock *fakeClock) *testServer {
	t.Helper()
	if clock != nil {
		opts.Now = clock.Now
	}
	sim := New(opts)
	srv := httptest.NewServer(sim)
	sim.SetBaseURL(srv.URL)
	t.Cleanup(srv.Close)
	clocksMu.Lock()
	clocks[srv.URL] = clock
	clocksMu.Unlock()
	t.Cleanup(func() {
		clocksMu.Lock()
		delete(clocks, srv.URL)
		clocksMu.Unlock()
	})
	return &testServer{Simulator: sim, URL: srv.URL}
}

// reply is an HTTP answer read completely.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer of %s %s: %v", req.Method, req.URL.Path, err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

// call posts body (a JSON string) to an action with the given bearer token.
func call(t *testing.T, base, action, token, body string) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+actionPrefix+action, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(t, req)
}

func get(t *testing.T, u string, hdr map[string]string) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

// value calls an action with the default token, requires 200 and returns
// the answer's value, accepting the flat and the nested form.
func value(t *testing.T, base, action, body string) string {
	t.Helper()
	r := call(t, base, action, DefaultToken, body)
	if r.status != http.StatusOK {
		t.Fatalf("%s %s: want status 200, got %d: %s", action, body, r.status, r.body)
	}
	v, _ := envelopeValue(t, r.body)
	return v
}

// envelopeValue decodes an OData Edm.String envelope and reports whether the
// value was nested.
func envelopeValue(t *testing.T, body []byte) (string, bool) {
	t.Helper()
	var env struct {
		Context string          `json:"@odata.context"`
		Value   json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("answer is not a JSON envelope: %v: %s", err, body)
	}
	var s string
	if err := json.Unmarshal(env.Value, &s); err == nil {
		return s, false
	}
	var nested struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(env.Value, &nested); err != nil {
		t.Fatalf("value is neither a string nor {\"value\":string}: %s", env.Value)
	}
	return nested.Value, true
}

// odataErr decodes an OData error body shaped as F&O sends it (empty code,
// the generic message, the cause in innererror) and returns the cause.
func odataErr(t *testing.T, r reply) string {
	t.Helper()
	var e struct {
		Error *struct {
			Code       *string `json:"code"`
			Message    string  `json:"message"`
			InnerError struct {
				Message    string `json:"message"`
				Type       string `json:"type"`
				StackTrace string `json:"stacktrace"`
			} `json:"innererror"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == nil {
		t.Fatalf("want an OData error body, got %q (%v)", r.body, err)
	}
	in := e.Error.InnerError
	if e.Error.Code == nil || *e.Error.Code != "" || e.Error.Message != "An error has occurred." ||
		in.Message == "" || in.Type != "System.Exception" || in.StackTrace == "" {
		t.Fatalf(`want {"error":{"code":"","message":"An error has occurred.","innererror":{"message":...,"type":"System.Exception","stacktrace":...}}}, got %s`, r.body)
	}
	return in.Message
}

// blobErr decodes an Azure Storage XML error body.
func blobErr(t *testing.T, r reply) (code, msg string) {
	t.Helper()
	var e struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	if err := xml.Unmarshal(r.body, &e); err != nil || e.Code == "" {
		t.Fatalf("want an XML <Error> body, got %q (%v)", r.body, err)
	}
	return e.Code, e.Message
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// exportBody is an ExportToPackage body.
func exportBody(group, id string, reExecute bool) string {
	b, _ := json.Marshal(map[string]any{
		"definitionGroupId": group, "packageName": group, "executionId": id,
		"reExecute": reExecute, "legalEntityId": "USMF",
	})
	return string(b)
}

func idBody(id string) string { return `{"executionId":` + jsonString(id) + `}` }

// decodeText decodes BOM-marked UTF-16/UTF-8 (or plain UTF-8) to a string.
func decodeText(t *testing.T, b []byte) string {
	t.Helper()
	out, _, err := transform.Bytes(unicode.BOMOverride(unicode.UTF8.NewDecoder()), b)
	if err != nil {
		t.Fatalf("decode text: %v", err)
	}
	return string(out)
}

// manifest is Manifest.xml as tests read it.
type manifest struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/dynamics/2015/01/DataManagement DataManagementPackageManifest"`
	Group    string   `xml:"DefinitionGroupName"`
	Entities []struct {
		EntityName         string
		InputFilePath      string
		SourceFormat       string
		ExcelSheetName     string
		DefaultRefreshType string
		SequenceInLevel    int
	} `xml:"PackageEntityList>DataManagementPackageEntityData"`
}

type packageHeader struct {
	XMLName        xml.Name `xml:"http://schemas.microsoft.com/dynamics/2015/01/DataManagement DataManagementPackageHeader"`
	ManifestType   string
	PackageType    string
	PackageVersion string
}

// queryDataText matches the text of QueryData elements.
var queryDataText = regexp.MustCompile(`<QueryData>[^<]*</QueryData>`)

// decodeXML decodes UTF-16 LE (BOM) XML without a declaration, on one
// line, into v, as F&O writes package XML files.
func decodeXML(t *testing.T, raw []byte, v any) {
	t.Helper()
	if !bytes.HasPrefix(raw, []byte{0xFF, 0xFE}) {
		t.Fatalf("want UTF-16 LE BOM FF FE, got % x", raw[:min(len(raw), 4)])
	}
	text := decodeText(t, raw)
	if strings.HasPrefix(text, `<?xml`) {
		t.Fatalf("want no XML declaration, got %q", text[:min(len(text), 60)])
	}
	// One line, but for the line breaks inside QueryData's hex.
	if strings.ContainsAny(queryDataText.ReplaceAllString(text, ""), "\r\n") {
		t.Fatalf("want the XML on one line, got %q", text)
	}
	dec := xml.NewDecoder(strings.NewReader(text))
	dec.CharsetReader = func(_ string, r io.Reader) (io.Reader, error) { return r, nil } // already decoded
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode XML: %v\n%s", err, text)
	}
}

// openZip reads a package and returns its files by name, in zip order.
func openZip(t *testing.T, b []byte) (map[string][]byte, []string) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("package is not a zip: %v", err)
	}
	files := map[string][]byte{}
	var order []string
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatalf("open %s in package: %v", f.Name, err)
		}
		data, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil {
			t.Fatalf("read %s in package: %v", f.Name, err)
		}
		files[f.Name] = data
		order = append(order, f.Name)
	}
	return files, order
}

// exportBodyOf is an ExportToPackage body of exactly the given fields.
func exportBodyOf(fields map[string]any) string {
	b, _ := json.Marshal(fields)
	return string(b)
}

// pkgURL asks GetExportedPackageUrl until it answers a URL (F&O answers ""
// right after success), at most 5 times.
func pkgURL(t *testing.T, base, id string) string {
	t.Helper()
	for range 5 {
		if u := value(t, base, actionPackageURL, idBody(id)); u != "" {
			// Wait until the package is downloadable, as a client does.
			clocksMu.Lock()
			clock, fake := clocks[base]
			clocksMu.Unlock()
			if fake && clock != nil {
				clock.Advance(DefaultPackageDelay)
			} else if !testenv.Await(5*time.Second, func() bool {
				// HEAD: not counted as a download.
				req, err := http.NewRequestWithContext(t.Context(), http.MethodHead, u, nil)
				if err != nil {
					t.Fatal(err)
				}
				return do(t, req).status != http.StatusNotFound
			}) {
				t.Fatalf("package of %s: still not downloadable after 5s", id)
			}
			return u
		}
	}
	t.Fatalf("GetExportedPackageUrl %s: still empty after 5 asks", id)
	return ""
}

// runToEnd starts an export of group and advances clock past its end.
func runToEnd(t *testing.T, s *testServer, clock *fakeClock, group, id string) {
	t.Helper()
	if got := value(t, s.URL, actionExport, exportBody(group, id, false)); got != id {
		t.Fatalf("ExportToPackage: want ID %q, got %q", id, got)
	}
	clock.Advance(time.Hour)
}
