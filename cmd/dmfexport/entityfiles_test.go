package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os/exec"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/encoding/unicode/utf32"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
)

// entityFile is one entity of TestTriggerEntityFiles: a file F&O writes,
// the reading settings it needs (YAML, "" for none) and how a reference
// reader, independent of dmfexport's, reads its rows.
type entityFile struct {
	name     string
	format   dmftest.TextFormat
	header   []string
	rows     [][]string
	settings string
	// ref decodes the file's bytes to text: x/text for code pages, iconv
	// for UTF-7.
	ref func(t *testing.T, b []byte) string
	// columns names the columns of a file without a header row.
	columns []string
	// wantErr, when set, is what the entity's failure must say; the
	// entity publishes nothing.
	wantErr string
	// composite, when set, makes the file a composite entity's XML file
	// (XML-Attribute with attr) instead of a text file.
	composite []dmftest.Record
	attr      bool
}

// compositeRow is the row a composite record becomes: its fields (a field
// without a value is left out of the file, so of the row), then one array
// per child element name, in order of first use.
func compositeRow(r dmftest.Record) map[string]any {
	row := map[string]any{}
	for _, f := range r.Fields {
		if f[1] != "" {
			row[f[0]] = f[1]
		}
	}
	for _, c := range r.Children {
		kids, _ := row[c.Name].([]any)
		row[c.Name] = append(kids, compositeRow(c))
	}
	return row
}

// salesOrders are composite records: headers holding lines holding
// charges, one header without lines.
var salesOrders = []dmftest.Record{
	{Name: "SALESORDERHEADERV2ENTITY", Fields: [][2]string{{"SALESORDERNUMBER", "SO-1"}, {"CUSTOMERACCOUNT", "DE-001"}, {"NOTE", "Müller & <Söhne>"}},
		Children: []dmftest.Record{
			{Name: "SALESORDERLINEV2ENTITY", Fields: [][2]string{{"LINENUMBER", "1"}, {"ITEMNUMBER", "A0001"}},
				Children: []dmftest.Record{{Name: "SALESORDERLINECHARGEENTITY", Fields: [][2]string{{"CHARGECODE", "FREIGHT"}, {"AMOUNT", "12.500000"}}}}},
			{Name: "SALESORDERLINEV2ENTITY", Fields: [][2]string{{"LINENUMBER", "2"}, {"ITEMNUMBER", "A0002"}, {"TEXT", ""}}},
		}},
	{Name: "SALESORDERHEADERV2ENTITY", Fields: [][2]string{{"SALESORDERNUMBER", "SO-2"}, {"CUSTOMERACCOUNT", "FR-002"}}},
	{Name: "SALESORDERHEADERV2ENTITY", Fields: [][2]string{{"SALESORDERNUMBER", "SO-3"}, {"CUSTOMERACCOUNT", "東京"}},
		Children: []dmftest.Record{{Name: "SALESORDERLINEV2ENTITY", Fields: [][2]string{{"LINENUMBER", "1"}, {"ITEMNUMBER", "😀"}}}}},
}

var (
	westernRows = [][]string{
		{"DE-001", "Müller & Söhne", "Königstraße 5", "München", "12,50 €"},
		{"FR-002", "Crème \"brûlée\" SARL", "Rue de l'Église", "Besançon", "œuvre"},
		{"ES-003", "Ñandú, S.A.", "Calle Mayor\r\n2º izq.", "A Coruña", "¿Qué?"},
		{"NL-004", "", "", "Zaandam", ""},
	}
	westernHeader = []string{"ACCOUNT", "NAME", "STREET", "CITY", "NOTE"}
	unicodeRows   = [][]string{
		{"JP-001", "東京商事", "😀 smile", "Ω"},
		{"PL-002", "Łódź Sp. z o.o.", "Příliš žluťoučký kůň", "ß"},
	}
	unicodeHeader = []string{"ACCOUNT", "NAME", "NOTE", "SIGN"}
)

// xtext is a reference decoder from golang.org/x/text.
func xtext(e encoding.Encoding) func(*testing.T, []byte) string {
	return func(t *testing.T, b []byte) string {
		out, err := e.NewDecoder().Bytes(b)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimPrefix(string(out), "\ufeff")
	}
}

// iconv decodes with the system's iconv, the reference for UTF-7.
func iconv(from string) func(*testing.T, []byte) string {
	return func(t *testing.T, b []byte) string {
		cmd := exec.CommandContext(t.Context(), "iconv", "-f", from, "-t", "UTF-8")
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.Output()
		if err != nil {
			t.Skipf("iconv -f %s: %v", from, err)
		}
		return string(out)
	}
}

// referenceRows reads a delimited file's text with encoding/csv (lazy
// quotes: a quote F&O did not double is data, as dmfexport reads it) or a
// fixed-width file by slicing each line at the widths.
func referenceRows(t *testing.T, f entityFile, text string) []map[string]string {
	var recs [][]string
	if w := f.format.Widths; w != nil {
		for _, line := range strings.Split(strings.TrimRight(text, "\r\n"), "\r\n") {
			r := []rune(line)
			var rec []string
			at := 0
			for i, n := range w {
				end := min(at+n, len(r))
				if i == len(w)-1 {
					end = len(r)
				}
				rec = append(rec, strings.Trim(string(r[at:end]), " "))
				at = end
			}
			recs = append(recs, rec)
		}
	} else {
		swap := strings.NewReplacer(`"`, `'`, `'`, `"`) // encoding/csv knows only the double quote
		if f.format.Qualifier == '\'' {
			text = swap.Replace(text)
		}
		cr := csv.NewReader(strings.NewReader(text))
		cr.Comma = rune(f.format.Delimiter)
		if cr.Comma == 0 {
			cr.Comma = ','
		}
		cr.LazyQuotes = true
		var err error
		if recs, err = cr.ReadAll(); err != nil {
			t.Fatalf("%s: reference reader: %v", f.name, err)
		}
		if f.format.Qualifier == '\'' {
			for _, rec := range recs {
				for i := range rec {
					rec[i] = swap.Replace(rec[i])
				}
			}
		}
	}
	cols := f.columns
	if cols == nil {
		cols, recs = recs[0], recs[1:]
	}
	out := make([]map[string]string, len(recs))
	for i, rec := range recs {
		out[i] = map[string]string{}
		for j, v := range rec {
			out[i][cols[j]] = v
		}
	}
	return out
}

// TestTriggerEntityFiles exports a data project holding an entity file of
// every format F&O writes (code pages, Unicode encodings with and without
// a byte order mark, no header row, five delimiters, other qualifiers,
// undoubled quotes, fixed width with and without a header line, composite
// entities in both XML shapes) END TO
// END: the simulator serves it, the dmfexport binary publishes it to
// RabbitMQ, and every value received must equal what a reference reader
// reads from the same file. A second project holds files that cannot be
// read right without a setting: each fails its entity with an error
// naming the setting, and the others still publish.
func TestTriggerEntityFiles(t *testing.T) {
	t.Parallel()
	widths := []int{8, 22, 24, 12, 10}
	good := []entityFile{
		{name: "Windows 1252, no setting", format: dmftest.TextFormat{CodePage: 1252}, header: westernHeader, rows: westernRows,
			ref: xtext(charmap.Windows1252)},
		{name: "Windows 1250 by setting", format: dmftest.TextFormat{CodePage: 1250}, header: unicodeHeader[:3],
			rows: [][]string{{"PL-002", "Łódź Sp. z o.o.", "Příliš žluťoučký kůň"}}, settings: `{encoding: "1250"}`,
			ref: xtext(charmap.Windows1250)},
		{name: "UTF-8 with BOM", format: dmftest.TextFormat{CodePage: 65001, BOM: true}, header: unicodeHeader, rows: unicodeRows,
			ref: xtext(unicode.UTF8BOM)},
		{name: "UTF-16 LE with BOM", format: dmftest.TextFormat{CodePage: 1200, BOM: true}, header: unicodeHeader, rows: unicodeRows,
			ref: xtext(unicode.UTF16(unicode.LittleEndian, unicode.ExpectBOM))},
		{name: "UTF-16 BE without BOM", format: dmftest.TextFormat{CodePage: 1201}, header: unicodeHeader, rows: unicodeRows,
			ref: xtext(unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM))},
		{name: "UTF-32 LE with BOM", format: dmftest.TextFormat{CodePage: 12000, BOM: true}, header: unicodeHeader, rows: unicodeRows,
			ref: xtext(utf32.UTF32(utf32.LittleEndian, utf32.ExpectBOM))},
		{name: "UTF-7 by setting", format: dmftest.TextFormat{CodePage: 65000}, header: unicodeHeader, rows: unicodeRows,
			settings: `{encoding: utf-7}`, ref: iconv("UTF-7")},
		{name: "No header row", format: dmftest.TextFormat{NoHeader: true}, header: westernHeader, rows: westernRows,
			settings: `{header: false, columns: [ACCOUNT, NAME, STREET, CITY, NOTE]}`, columns: westernHeader, ref: xtext(unicode.UTF8)},
		{name: "Colon delimited", format: dmftest.TextFormat{Delimiter: ':'}, header: westernHeader, rows: westernRows, ref: xtext(unicode.UTF8)},
		{name: "Semicolon delimited", format: dmftest.TextFormat{Delimiter: ';'}, header: westernHeader, rows: westernRows, ref: xtext(unicode.UTF8)},
		{name: "Tab delimited", format: dmftest.TextFormat{Delimiter: '\t'}, header: westernHeader, rows: westernRows, ref: xtext(unicode.UTF8)},
		{name: "Pipe delimited", format: dmftest.TextFormat{Delimiter: '|'}, header: westernHeader, rows: westernRows, ref: xtext(unicode.UTF8)},
		{name: "Apostrophe qualifier", format: dmftest.TextFormat{Delimiter: ';', Qualifier: '\''}, header: unicodeHeader,
			rows: [][]string{{"Q-1", "Contoso; Ltd", "it's", `"x"`}}, settings: `{text_qualifier: "'"}`, ref: xtext(unicode.UTF8)},
		{name: "Undoubled quotes", format: dmftest.TextFormat{UndoubledQuotes: true}, header: []string{"ITEM", "NAME"},
			rows: [][]string{{"M-27", `27" monitor`}, {"C-1", `cable 2" long`}, {"X", `say "hi" now, ok`}}, ref: xtext(unicode.UTF8)},
		{name: "Fixed width with header", format: dmftest.TextFormat{CodePage: 1252, Widths: widths, FixedHeader: true}, header: westernHeader,
			rows: [][]string{{"DE-001", "Müller & Söhne", "Königstraße 5", "München", "12,50 €"}, {"NL-004", "", "", "Zaandam", ""}},
			ref:  xtext(charmap.Windows1252)},
		{name: "Fixed width without header", format: dmftest.TextFormat{Widths: widths}, header: westernHeader,
			rows:     [][]string{{"DE-001", "Müller & Söhne", "Königstraße 5", "München", "12,50 €"}, {"NL-004", "", "", "Zaandam", ""}},
			settings: `{header: false, columns: [ACCOUNT, NAME, STREET, CITY, NOTE], widths: [8, 22, 24, 12, 10]}`, columns: westernHeader, ref: xtext(unicode.UTF8)},
		{name: "Sales orders composite, elements", composite: salesOrders},
		{name: "Sales orders composite, attributes", composite: salesOrders, attr: true},
	}
	bad := []entityFile{
		{name: "No header row, no setting", format: dmftest.TextFormat{NoHeader: true}, header: westernHeader, rows: westernRows,
			wantErr: "set header: false and columns:"},
		{name: "Not the Unicode it claims", format: dmftest.TextFormat{CodePage: 1252}, header: westernHeader, rows: westernRows,
			wantErr: "set encoding: windows-1252"},
		{name: "Fixed width, wrong widths", format: dmftest.TextFormat{Widths: widths}, header: westernHeader, rows: westernRows[:1],
			settings: `{header: false, columns: [A, B, C], widths: [4, 4, 4]}`, wantErr: "line 1: "},
		{name: "Readable", header: westernHeader, rows: westernRows, ref: xtext(unicode.UTF8)},
	}
	project := func(files []entityFile) []dmftest.Entity {
		var ents []dmftest.Entity
		for _, f := range files {
			if f.composite != nil {
				sf := "XML-Element"
				if f.attr {
					sf = "XML-Attribute"
				}
				ents = append(ents, dmftest.Entity{Name: f.name, SourceFormat: sf, Data: dmftest.CompositeXMLFile(f.attr, f.composite)})
				continue
			}
			data, err := dmftest.TextFile(f.format, f.header, f.rows)
			if err != nil {
				t.Fatalf("%s: %v", f.name, err)
			}
			sf := f.format.SourceFormat()
			if f.name == "Not the Unicode it claims" {
				sf = "CSV-Unicode"
			}
			ents = append(ents, dmftest.Entity{Name: f.name, SourceFormat: sf, Data: data, Fields: f.header})
		}
		return ents
	}
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"Formats": project(good), "BadFormats": project(bad)},
		ExecutionTime: 100 * time.Millisecond,
	})
	defer sim.Close()

	name, ch := testQueue(t, "entityfiles")
	var cfg strings.Builder
	cfg.WriteString(simBrokerConfig(name, "fo.files.#", false))
	for _, p := range []struct {
		export, group string
		files         []entityFile
	}{{"formats", "Formats", good}, {"badformats", "BadFormats", bad}} {
		fmt.Fprintf(&cfg, "  - name: %s\n    schedule: \"@yearly\"\n    definition_group: %s\n    legal_entity: USMF\n    exchange: %s\n    routing_key: fo.files.%s\n    batch_size: 2\n    entities:\n",
			p.export, p.group, name, p.export)
		for _, f := range p.files {
			if f.settings != "" {
				fmt.Fprintf(&cfg, "      %q: %s\n", f.name, f.settings)
			}
		}
	}
	dir := t.TempDir()
	conf := writeFile(t, dir, "dmfexport.yaml", cfg.String())
	env := []string{"DMFSIM_URL=" + sim.URL, "FO_TOKEN=" + dmftest.DefaultToken}
	stdout, stderr, code := runBinary(t, env, "trigger", "--config", conf, "formats")
	if code != 0 {
		t.Fatalf("trigger formats: exit %d, want 0\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "read as windows-1252") {
		t.Errorf("no warning that a file was read with the default code page:\n%s", stderr)
	}
	if !strings.Contains(stderr, "not doubled and are kept as data") {
		t.Errorf("no warning about the undoubled quotes:\n%s", stderr)
	}
	stdout, stderr, code = runBinary(t, env, "trigger", "--config", conf, "badformats")
	if code == 0 {
		t.Fatalf("trigger badformats: exit 0, want a failure\nstdout: %s\nstderr: %s", stdout, stderr)
	}
	for _, f := range bad {
		if f.wantErr != "" && !strings.Contains(stdout, f.wantErr) {
			t.Errorf("%s: the summary does not say %q:\n%s", f.name, f.wantErr, stdout)
		}
	}

	type batch struct {
		index int
		rows  []map[string]any
	}
	got := map[string][]batch{}
	for _, d := range testenv.Drain(t, ch, name) {
		var m struct {
			Data struct {
				Entity     string           `json:"entity"`
				BatchIndex int              `json:"batch_index"`
				Rows       []map[string]any `json:"rows"`
			} `json:"data"`
		}
		if err := json.Unmarshal(d.Body, &m); err != nil {
			t.Fatal(err)
		}
		got[m.Data.Entity] = append(got[m.Data.Entity], batch{m.Data.BatchIndex, m.Data.Rows})
	}
	for _, f := range slices.Concat(good, bad) {
		bs := got[f.name]
		sort.Slice(bs, func(i, j int) bool { return bs[i].index < bs[j].index })
		var nested []map[string]any
		for _, b := range bs {
			nested = append(nested, b.rows...)
		}
		if f.wantErr != "" {
			if len(nested) > 0 {
				t.Errorf("%s: %d rows published from a file that cannot be read right", f.name, len(nested))
			}
			continue
		}
		if f.composite != nil {
			var want []map[string]any
			for _, r := range f.composite {
				want = append(want, compositeRow(r))
			}
			if !reflect.DeepEqual(nested, want) {
				t.Errorf("%s: rows\n got %v\nwant %v", f.name, nested, want)
			}
			continue
		}
		var rows []map[string]string
		for _, r := range nested {
			flat := map[string]string{}
			for k, v := range r {
				s, ok := v.(string)
				if !ok {
					t.Errorf("%s: value %q is %T, want a string", f.name, k, v)
				}
				flat[k] = s
			}
			rows = append(rows, flat)
		}
		// The values written, keyed by column: what F&O meant.
		var written []map[string]string
		for _, r := range f.rows {
			m := map[string]string{}
			for j, v := range r {
				m[f.header[j]] = v
			}
			written = append(written, m)
		}
		if !reflect.DeepEqual(rows, written) {
			t.Errorf("%s: rows\n got %q\nwant %q (the values written)", f.name, rows, written)
		}
		// encoding/csv turns a CRLF inside quotes into LF; dmfexport keeps
		// the bytes.
		data, _ := dmftest.TextFile(f.format, f.header, f.rows)
		ref := referenceRows(t, f, f.ref(t, data))
		for _, r := range rows {
			for k, v := range r {
				r[k] = strings.ReplaceAll(v, "\r\n", "\n")
			}
		}
		if !reflect.DeepEqual(rows, ref) {
			t.Errorf("%s: rows\n got %q\nwant %q (the reference reader's)", f.name, rows, ref)
		}
	}
}
