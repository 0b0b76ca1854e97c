package dmftest

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/xuri/excelize/v2"
)

// FuzzServeHTTP sends arbitrary requests and checks that every answer has an
// expected status and a well-formed body: JSON for the API, XML errors for
// package URLs.
func FuzzServeHTTP(f *testing.F) {
	clock := newFakeClock()
	sim := New(Options{Projects: map[string][]Entity{"G": twoEntities()}, Throttle: 7, Now: clock.Now})
	sim.SetBaseURL("http://fo.example")
	// One finished execution so that valid package URLs exist.
	rec := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, actionPrefix+actionExport, strings.NewReader(exportBody("G", "seed", false)))
	req.Header.Set("Authorization", "Bearer "+DefaultToken)
	sim.ServeHTTP(rec, req)
	clock.Advance(time.Hour)
	var blob, query string
	for blob == "" {
		rec = httptest.NewRecorder()
		req = httptest.NewRequestWithContext(context.Background(), http.MethodPost, actionPrefix+actionPackageURL, strings.NewReader(idBody("seed")))
		req.Header.Set("Authorization", "Bearer "+DefaultToken)
		sim.ServeHTTP(rec, req)
		var env struct{ Value string }
		_ = json.Unmarshal(rec.Body.Bytes(), &env)
		if env.Value != "" {
			u, _ := url.Parse(env.Value)
			blob, query = u.Path, u.RawQuery
		}
	}

	auth := "Bearer " + DefaultToken
	f.Add("POST", actionPrefix+actionExport, "", auth, exportBody("G", "", false), "")
	f.Add("POST", actionPrefix+actionExport, "", auth, exportBody("G", "seed", true), "")
	f.Add("POST", actionPrefix+actionExport, "", auth, `{"definitionGroupId":"G","executionId":null}`, "")
	f.Add("POST", actionPrefix+actionExport, "", auth, `null`, "")
	f.Add("POST", actionPrefix+actionStatus, "", auth, idBody("seed"), "")
	f.Add("POST", actionPrefix+actionPackageURL, "", auth, idBody("seed"), "")
	f.Add("POST", actionPrefix+actionErrors, "", auth, `{"executionId":"seed","x":1}`, "")
	f.Add("POST", actionPrefix+actionSummaryPage, "", auth, idBody("a/b c"), "")
	f.Add("POST", actionPrefix+actionStatus, "", "Bearer nope", `{`, "")
	f.Add("GET", actionPrefix+actionStatus, "", "", "", "")
	f.Add("GET", blob, query, "", "", "bytes=0-10")
	f.Add("HEAD", blob, query, "", "", "")
	f.Add("GET", blob, "se=x&sig=y", "", "", "")
	f.Add("GET", "/dmf/", "", "", "", "bytes=5-1")
	f.Add("DELETE", "/dmf/x", "", "", "", "")

	f.Fuzz(func(t *testing.T, method, path, rawQuery, authz, body, rng string) {
		if !validMethod(method) || !strings.HasPrefix(path, "/") {
			return // not something an HTTP server receives
		}
		req := &http.Request{
			Method:     method,
			URL:        &url.URL{Path: path, RawQuery: rawQuery},
			Header:     http.Header{},
			Body:       io.NopCloser(strings.NewReader(body)),
			Host:       "fo.example",
			Proto:      "HTTP/1.1",
			ProtoMajor: 1, ProtoMinor: 1,
		}
		req.Header.Set("Authorization", authz)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, req)
		res := rec.Result()
		b := rec.Body.Bytes()
		switch res.StatusCode {
		case 200, 206, 304, 400, 401, 403, 404, 405, 416, 429:
		default:
			t.Fatalf("%s %s?%s: unexpected status %d: %s", method, path, rawQuery, res.StatusCode, b)
		}
		if strings.HasPrefix(path, blobPrefix) {
			switch {
			case res.StatusCode == 200 || res.StatusCode == 206 || res.StatusCode == 304:
				if rawQuery != query && !strings.Contains(rawQuery, "sig=") {
					t.Fatalf("package served without a signature: %s?%s", path, rawQuery)
				}
			case res.StatusCode == 416:
				// http.ServeContent's plain-text answer.
			default:
				var e struct{ Code, Message string }
				if err := xml.Unmarshal(b, &e); err != nil || e.Code == "" {
					t.Fatalf("%s %s: want an XML error, got %d %q (%v)", method, path, res.StatusCode, b, err)
				}
			}
			return
		}
		if !json.Valid(b) {
			t.Fatalf("%s %s: answer is not JSON: %q", method, path, b)
		}
		if bytes.Contains(b, []byte(DefaultToken)) {
			t.Fatalf("answer reveals the token: %s", b)
		}
	})
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}

// FuzzPackage builds packages from arbitrary entities and checks that the
// zip opens, Manifest.xml decodes from UTF-16 and names every entity and
// file as given (after XML's replacement of characters it cannot carry), and
// that each file holds the entity's bytes.
func FuzzPackage(f *testing.F) {
	f.Add("DemoExport", "Customers V3", "Customers V3.csv", "CSV-Unicode", "", []byte("\ufeffA,B\r\n1,2\r\n"))
	f.Add("G <&>", "Odd \"name\" ]]>", "odd.xlsx", "Excel", "Sheet 1", []byte{0xFF, 0xFE, 'A', 0})
	f.Add("", "", "", "", "", []byte(nil))
	f.Add("tab\tcr\rlf\n", "\x00\x01", "a/b.csv", "CSV", "\uFFFE", []byte("x"))
	f.Add("g", "e", "dir/", "CSV", "", []byte("data"))
	f.Fuzz(func(t *testing.T, group, name, file, format, sheet string, data []byte) {
		e := withDefaults(Entity{Name: name, File: file, SourceFormat: format, Sheet: sheet, Data: data})
		b, err := buildPackage(group, []Entity{e, {Name: "second", File: "second.csv", SourceFormat: "CSV"}})
		if err != nil {
			if strings.HasSuffix(e.File, "/") {
				return // a directory name cannot hold data; reported, not a crash
			}
			t.Fatalf("build package: %v", err)
		}
		files, order := openZip(t, b)
		if order[0] != "Manifest.xml" || order[1] != "PackageHeader.xml" {
			t.Fatalf("want Manifest.xml and PackageHeader.xml first, got %q", order)
		}
		if e.File != "Manifest.xml" && e.File != "PackageHeader.xml" && e.File != "second.csv" && !bytes.Equal(files[e.File], data) {
			t.Fatalf("file %q: bytes differ", e.File)
		}
		var m manifest
		raw := files["Manifest.xml"]
		if e.File == "Manifest.xml" {
			return // the entity file shadows the manifest in the map
		}
		decodeXML(t, raw, &m)
		if len(m.Entities) != 2 {
			t.Fatalf("want 2 manifest entries, got %d", len(m.Entities))
		}
		checks := []struct{ field, want, got string }{
			{"DefinitionGroupName", group, m.Group},
			{"EntityName", name, m.Entities[0].EntityName},
			{"InputFilePath", e.File, m.Entities[0].InputFilePath},
			{"SourceFormat", e.SourceFormat, m.Entities[0].SourceFormat},
			{"ExcelSheetName", manifestSheet(e), m.Entities[0].ExcelSheetName},
		}
		for _, c := range checks {
			if want := xmlSafe(c.want); c.got != want {
				t.Errorf("%s: want %q, got %q", c.field, want, c.got)
			}
		}
	})
}

// xmlSafe is what a string reads as after xml.EscapeText and decoding:
// characters XML cannot carry become U+FFFD.
func xmlSafe(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		s = s[size:]
		if r == utf8.RuneError && size == 1 || !isXMLChar(r) {
			b.WriteRune('\uFFFD')
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD ||
		r >= 0x10000 && r <= 0x10FFFF
}

// FuzzFOWorkbook writes arbitrary values with FOWorkbook and checks that a
// spreadsheet reader gets them back in place (after XML's replacement of
// characters it cannot carry), empty cells left out included.
func FuzzFOWorkbook(f *testing.F) {
	f.Add("123.000000", "", "2011-01-31 00:00:00")
	f.Add(" lead", "trail ", "a <b> & \"c\"")
	f.Add("\r\n", "\t", "\x00\uFFFE")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		want := []string{xmlSafe(a), xmlSafe(b), xmlSafe(c)}
		wb, err := excelize.OpenReader(bytes.NewReader(FOWorkbook("S", [][]string{{"A", "B", "C"}, {a, b, c}})))
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer func() { _ = wb.Close() }()
		for i, col := range []string{"A2", "B2", "C2"} {
			got, err := wb.GetCellValue("S", col)
			if err != nil {
				t.Fatal(err)
			}
			if got != want[i] {
				t.Errorf("%s: want %q, got %q", col, want[i], got)
			}
		}
	})
}
