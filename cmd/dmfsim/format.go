package main

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
	xunicode "golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

// fileFormat is one --format SPEC: how to re-write a CSV entity's file.
type fileFormat struct {
	text      dmftest.TextFormat
	composite bool // composite entity XML instead of a text file
	attr      bool // XML-Attribute rather than XML-Element
}

// formatFlags is the repeatable --format ENTITY=SPEC flag; problems
// collects what could not be parsed, reported with the other flags'.
type formatFlags struct {
	byEntity map[string]fileFormat // entity name or "*" → format
	order    []string
	problems []string
}

func (f *formatFlags) String() string { return strings.Join(f.order, " ") }

func (f *formatFlags) Set(v string) error {
	name, spec, ok := strings.Cut(v, "=")
	if !ok || name == "" || spec == "" {
		return fmt.Errorf("want ENTITY=SPEC, got %q", v)
	}
	ff, err := parseFormat(spec)
	if err != nil {
		f.problems = append(f.problems, fmt.Sprintf("--format %s: %v", v, err))
		return nil
	}
	if f.byEntity == nil {
		f.byEntity = map[string]fileFormat{}
	}
	if _, dup := f.byEntity[name]; dup {
		f.problems = append(f.problems, fmt.Sprintf("--format %s: entity %q given twice", v, name))
		return nil
	}
	f.byEntity[name] = ff
	f.order = append(f.order, v)
	return nil
}

// delimiters are the names --format accepts for F&O's five delimiters (a
// comma cannot be written as itself in a comma-separated SPEC).
var delimiters = map[string]byte{"comma": ',', "semicolon": ';', "tab": '\t', "pipe": '|', "colon": ':'}

// parseFormat reads a comma-separated SPEC: codepage=N, bom, delimiter=X,
// qualifier=X, noheader, undoubled, fixed=W1/W2/..., fixedheader,
// composite[=element|attribute].
func parseFormat(spec string) (fileFormat, error) {
	var ff fileFormat
	for _, item := range strings.Split(spec, ",") {
		key, val, hasVal := strings.Cut(strings.TrimSpace(item), "=")
		switch key {
		case "codepage":
			cp, err := strconv.Atoi(val)
			if err != nil {
				return ff, fmt.Errorf("codepage=%s: want a code page number such as 1252 or 65001", val)
			}
			ff.text.CodePage = cp
		case "delimiter", "qualifier":
			c, ok := delimiters[val]
			if !ok && len(val) == 1 {
				c, ok = val[0], true
			}
			if !ok || c >= utf8.RuneSelf {
				return ff, fmt.Errorf("%s=%s: want one ASCII character or comma, semicolon, tab, pipe, colon", key, val)
			}
			if key == "delimiter" {
				ff.text.Delimiter = c
			} else {
				ff.text.Qualifier = c
			}
		case "fixed":
			for _, w := range strings.Split(val, "/") {
				n, err := strconv.Atoi(w)
				if err != nil || n <= 0 {
					return ff, fmt.Errorf("fixed=%s: want column widths above zero separated by /, e.g. fixed=10/20/30", val)
				}
				ff.text.Widths = append(ff.text.Widths, n)
			}
		case "composite":
			ff.composite = true
			switch val {
			case "", "element":
			case "attribute":
				ff.attr = true
			default:
				return ff, fmt.Errorf("composite=%s: want composite, composite=element or composite=attribute", val)
			}
		case "bom", "noheader", "fixedheader", "undoubled":
			if hasVal {
				return ff, fmt.Errorf("%s takes no value", key)
			}
			switch key {
			case "bom":
				ff.text.BOM = true
			case "noheader":
				ff.text.NoHeader = true
			case "fixedheader":
				ff.text.FixedHeader = true
			case "undoubled":
				ff.text.UndoubledQuotes = true
			}
		default:
			return ff, fmt.Errorf("unknown item %q; want codepage=N, bom, delimiter=X, qualifier=X, noheader, undoubled, fixed=W1/W2/..., fixedheader or composite[=attribute]", item)
		}
	}
	check := ff.text
	check.Widths, check.NoHeader = nil, true
	if _, err := dmftest.TextFile(check, nil, nil); err != nil && !ff.composite {
		return ff, err // an unknown code page or a bad delimiter
	}
	return ff, nil
}

// isCSV reports whether an entity is a CSV file --format can re-write.
func isCSV(e dmftest.Entity) bool {
	return !e.Absent && len(e.Data) > 0 && strings.Contains(strings.ToUpper(e.SourceFormat), "CSV")
}

// applyFormats re-writes the CSV entities of every group that --format
// names (or all, with "*"; a named entity's own SPEC wins) and reports
// named entities that no group serves as CSV.
func applyFormats(projects map[string][]dmftest.Entity, f formatFlags) []string {
	var problems []string
	used := map[string]bool{}
	for group, ents := range projects {
		for i, e := range ents {
			ff, ok := f.byEntity[e.Name]
			if !ok {
				ff, ok = f.byEntity["*"]
			}
			if !ok || !isCSV(e) {
				continue
			}
			used[e.Name] = true
			ne, err := reformat(e, ff)
			if err != nil {
				problems = append(problems, fmt.Sprintf("--format: entity %q of %s: %v", e.Name, group, err))
				continue
			}
			ents[i] = ne
		}
	}
	for name := range f.byEntity {
		if name != "*" && !used[name] {
			problems = append(problems, fmt.Sprintf("--format %s: no CSV entity %q is served", name, name))
		}
	}
	return problems
}

// reformat returns e with its CSV file re-written in ff.
func reformat(e dmftest.Entity, ff fileFormat) (dmftest.Entity, error) {
	header, rows, err := csvTable(e.Data)
	if err != nil {
		return e, err
	}
	e.Fields = header
	if ff.composite {
		recs := make([]dmftest.Record, len(rows))
		for i, row := range rows {
			recs[i].Name = recordName(e.Name)
			for j, v := range row {
				if j < len(header) {
					recs[i].Fields = append(recs[i].Fields, [2]string{header[j], v})
				}
			}
		}
		e.Data = dmftest.CompositeXMLFile(ff.attr, recs)
		e.SourceFormat = "XML-Element"
		if ff.attr {
			e.SourceFormat = "XML-Attribute"
		}
		e.File = strings.TrimSuffix(e.File, filepath.Ext(e.File)) + ".xml"
		return e, nil
	}
	if e.Data, err = dmftest.TextFile(ff.text, header, rows); err != nil {
		return e, err
	}
	e.SourceFormat = ff.text.SourceFormat()
	return e, nil
}

// recordName is the XML element name of an entity's records: its name in
// upper case without spaces or punctuation, plus ENTITY, as F&O's entity
// names look (CUSTOMERSV3ENTITY).
func recordName(entity string) string {
	return strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return unicode.ToUpper(r)
		}
		return -1
	}, entity) + "ENTITY"
}

// csvTable reads a CSV file with a header row: UTF-8 or UTF-16 by BOM,
// otherwise UTF-8, or code page 1252 when it is not valid UTF-8 (as the
// demo's non-Unicode entity is written).
func csvTable(data []byte) (header []string, rows [][]string, err error) {
	var text []byte
	switch {
	case bytes.HasPrefix(data, []byte{0xFF, 0xFE}), bytes.HasPrefix(data, []byte{0xFE, 0xFF}), bytes.HasPrefix(data, []byte{0xEF, 0xBB, 0xBF}):
		text, _, err = transform.Bytes(xunicode.BOMOverride(xunicode.UTF8.NewDecoder()), data)
	case utf8.Valid(data):
		text = data
	default:
		text, err = charmap.Windows1252.NewDecoder().Bytes(data)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("decode CSV: %w", err)
	}
	r := csv.NewReader(bytes.NewReader(text))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return nil, nil, fmt.Errorf("read CSV: %w", err)
	}
	if len(recs) == 0 {
		return nil, nil, fmt.Errorf("read CSV: no header row")
	}
	return recs[0], recs[1:], nil
}
