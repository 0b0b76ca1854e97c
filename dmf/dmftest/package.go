package dmftest

import (
	"archive/zip"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
)

// XML namespaces of DMF package files.
const (
	dmNamespace  = "http://schemas.microsoft.com/dynamics/2015/01/DataManagement"
	xsiNamespace = "http://www.w3.org/2001/XMLSchema-instance"
	manifestType = "Microsoft.Dynamics.AX.Framework.Tools.DataManagement.Serialization.DataManagementPackageManifest"
)

// packageTime is the modification time of every zip entry, so that a package
// is byte-for-byte the same whenever it is built from the same entities.
var packageTime = time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)

// serveBlob answers GET/HEAD of a package URL, checking its SAS signature.
func (s *Simulator) serveBlob(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	s.mu.Lock()
	s.calls[actionDownload]++
	s.mu.Unlock()
	if f := s.faultOf(actionDownload); f != nil {
		if !delay(r.Context(), f.Delay) {
			return
		}
		if f.failsAnswer(true) {
			s.writeFault(w, r, f, true)
			return
		}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		blobError(w, http.StatusMethodNotAllowed, "UnsupportedHttpVerb",
			fmt.Sprintf("The resource doesn't support specified Http Verb %s.", r.Method))
		return
	}
	name := strings.TrimPrefix(r.URL.Path, blobPrefix)
	q := r.URL.Query()
	se, sig := q.Get("se"), q.Get("sig")
	if sig == "" || se == "" {
		blobError(w, http.StatusForbidden, "AuthenticationFailed",
			"Server failed to authenticate the request. The package URL carries no SAS signature (se and sig); ask GetExportedPackageUrl for a URL.")
		return
	}
	if !hmac.Equal([]byte(sig), []byte(s.sign(blobPrefix+name, se))) {
		blobError(w, http.StatusForbidden, "AuthenticationFailed",
			"Server failed to authenticate the request. Signature did not match: the package URL was altered; use it exactly as GetExportedPackageUrl returned it.")
		return
	}
	expiry, err := time.Parse(time.RFC3339, se)
	if err != nil || !now.Before(expiry) {
		blobError(w, http.StatusForbidden, "AuthenticationFailed",
			fmt.Sprintf("Server failed to authenticate the request. Signature not valid in the specified time frame: Signed expiry time [%s] has to be after the current time [%s]; ask GetExportedPackageUrl for a fresh URL.",
				se, now.UTC().Format(time.RFC3339)))
		return
	}
	s.mu.Lock()
	ex, ok := s.blobs[name]
	gone := ok && s.purged(ex, now)
	notYet := ok && s.opts.PackageDelay > 0 && now.Before(ex.firstURL.Add(s.opts.PackageDelay))
	s.mu.Unlock()
	if !ok || gone || notYet {
		blobError(w, http.StatusNotFound, "BlobNotFound", "The specified blob does not exist.")
		return
	}
	zipBytes, err := s.packageOf(ex)
	if err != nil {
		blobError(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/zip")
	h.Set("x-ms-blob-type", "BlockBlob")
	h.Set("x-ms-version", sasVersion)
	h.Set("ETag", `"0x`+strconv.FormatUint(fnv64(zipBytes), 16)+`"`)
	cw := &countingWriter{ResponseWriter: w, count: func(status int) {
		// Counted as the header goes out, so a client that has read the
		// body always sees its download in Downloads.
		if r.Method == http.MethodGet && (status == http.StatusOK || status == http.StatusPartialContent) {
			s.mu.Lock()
			s.downloads++
			s.mu.Unlock()
		}
	}}
	if r.Method == http.MethodGet && s.downloadFaulty() {
		s.serveFaultyPackage(cw, r, zipBytes)
		return
	}
	http.ServeContent(cw, r, name, packageTime, bytes.NewReader(zipBytes))
}

// countingWriter calls count once with the status, before the header is sent.
type countingWriter struct {
	http.ResponseWriter
	count   func(status int)
	counted bool
}

func (w *countingWriter) WriteHeader(code int) {
	if !w.counted {
		w.counted = true
		w.count(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if !w.counted {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// packageOf returns the execution's zip, building it on first use.
func (s *Simulator) packageOf(ex *execution) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ex.zip == nil {
		ents := ex.entities
		if ex.final == statusPartiallySucceeded && len(ents) > 0 {
			ents = ents[:len(ents)-1]
		}
		b, err := buildPackage(ex.group, ents)
		if err != nil {
			return nil, err
		}
		ex.zip = b
	}
	return ex.zip, nil
}

// fnv64 is FNV-1a, enough for a strong-looking ETag.
func fnv64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// blobError writes an Azure Storage style XML error.
func blobError(w http.ResponseWriter, status int, code, msg string) {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?><Error><Code>`)
	_ = xml.EscapeText(&b, []byte(code))
	b.WriteString(`</Code><Message>`)
	_ = xml.EscapeText(&b, []byte(msg))
	b.WriteString(`</Message></Error>`)
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("x-ms-error-code", code)
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// buildPackage returns a DMF data package: Manifest.xml, PackageHeader.xml
// and one Deflate-compressed file per entity that is not Absent, in that
// order.
func buildPackage(group string, ents []Entity) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, data []byte) error {
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: packageTime})
		if err == nil {
			_, err = fw.Write(data)
		}
		if err != nil {
			return fmt.Errorf("build package of %s: add %q: %w (entity file names must be plain file names)", group, name, err)
		}
		return nil
	}
	if err := add("Manifest.xml", utf16LE(manifestXML(group, ents))); err != nil {
		return nil, err
	}
	if err := add("PackageHeader.xml", utf16LE(packageHeaderXML(group))); err != nil {
		return nil, err
	}
	for _, e := range ents {
		if e.Absent {
			continue
		}
		if err := add(e.File, e.Data); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("build package of %s: %w", group, err)
	}
	return buf.Bytes(), nil
}

func escape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// element writes <name>value</name>, or <name /> for an empty value.
func element(b *strings.Builder, name, value string) {
	if value == "" {
		fmt.Fprintf(b, "<%s />", name)
		return
	}
	fmt.Fprintf(b, "<%s>%s</%s>", name, escape(value), name)
}

// manifestXML renders Manifest.xml as F&O's serializer writes it: one line,
// no XML declaration, elements in alphabetical order, optional ones (Disable,
// TargetEntity, QueryData) left out.
func manifestXML(group string, ents []Entity) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<DataManagementPackageManifest xmlns:i="%s" xmlns="%s">`, xsiNamespace, dmNamespace)
	element(&b, "DefinitionGroupName", group)
	element(&b, "Description", group)
	b.WriteString("<PackageEntityList>")
	for i, e := range ents {
		b.WriteString("<DataManagementPackageEntityData>")
		if !e.OmitRefreshType {
			element(&b, "DefaultRefreshType", e.RefreshType)
		}
		entityMapList(&b, e)
		element(&b, "EntityName", e.Name)
		element(&b, "ExcelSheetName", manifestSheet(e))
		element(&b, "InputFilePath", e.File)
		element(&b, "LevelInExecutionUnit", "1")
		if i%2 == 1 { // present for some entities, absent for others
			// Hex and line breaks need no escaping: written as they are.
			b.WriteString("<QueryData>" + queryData(e.Name) + "</QueryData>")
		}
		element(&b, "SequenceInLevel", strconv.Itoa(i+1))
		element(&b, "SkipStaging", "true")
		element(&b, "SourceFormat", e.SourceFormat)
		b.WriteString("</DataManagementPackageEntityData>")
	}
	b.WriteString("</PackageEntityList></DataManagementPackageManifest>")
	return b.String()
}

// entityMapList writes the entity's field map: one EntityMap per field in
// alphabetical order, the last Entity.OmitFields left out. Public packages
// show the element but not its entries, so the entry shape (ArrayIndex,
// EntityField, IsAutoDefault, XMLField, alphabetical as F&O's serializer
// orders elements) is the simulator's choice.
func entityMapList(b *strings.Builder, e Entity) {
	fields := slices.Clone(e.Fields)
	slices.Sort(fields)
	fields = fields[:max(0, len(fields)-max(0, e.OmitFields))]
	if len(fields) == 0 {
		element(b, "EntityMapList", "")
		return
	}
	b.WriteString("<EntityMapList>")
	for _, f := range fields {
		b.WriteString("<EntityMap>")
		element(b, "ArrayIndex", "0")
		element(b, "EntityField", f)
		element(b, "IsAutoDefault", "false")
		element(b, "XMLField", f)
		b.WriteString("</EntityMap>")
	}
	b.WriteString("</EntityMapList>")
}

// maxSheetName is how many characters of a sheet name F&O records.
const maxSheetName = 31

// manifestSheet is the ExcelSheetName F&O records for an entity: for Excel
// formats the workbook's sheet name with a trailing "$", cut to 31
// characters; empty otherwise.
func manifestSheet(e Entity) string {
	if e.Sheet == "" || !strings.HasPrefix(strings.ToUpper(e.SourceFormat), "EXCEL") {
		return ""
	}
	r := []rune(e.Sheet + "$")
	return string(r[:min(len(r), maxSheetName)])
}

func packageHeaderXML(group string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<DataManagementPackageHeader xmlns:i="%s" xmlns="%s">`, xsiNamespace, dmNamespace)
	element(&b, "Description", group)
	element(&b, "ManifestType", manifestType)
	element(&b, "PackageType", "DefinitionGroup")
	element(&b, "PackageVersion", "2")
	b.WriteString("</DataManagementPackageHeader>")
	return b.String()
}

// utf16LE encodes s as UTF-16 little endian with a byte order mark.
func utf16LE(s string) []byte {
	units := utf16.Encode([]rune(s))
	out := make([]byte, 2+2*len(units))
	out[0], out[1] = 0xFF, 0xFE
	for i, u := range units {
		out[2+2*i] = byte(u)
		out[3+2*i] = byte(u >> 8)
	}
	return out
}

// queryData returns what F&O writes into a manifest's QueryData: a long hex
// blob (here derived from the entity name) broken into lines.
func queryData(name string) string {
	var raw []byte
	sum := sha256.Sum256([]byte(name))
	for len(raw) < 600 {
		raw = append(raw, sum[:]...)
		sum = sha256.Sum256(sum[:])
	}
	h := strings.ToUpper(hex.EncodeToString(raw))
	var b strings.Builder
	for len(h) > 128 {
		b.WriteString(h[:128])
		b.WriteString("\r\n")
		h = h[128:]
	}
	b.WriteString(h)
	return b.String()
}
