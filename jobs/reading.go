package jobs

import (
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v4"

	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
)

// maxWidth bounds one fixed-width column, in characters.
const maxWidth = 1 << 20

// readFields are the reading keys, at exports[] and under
// exports[].entities.<entity>.
var readFields = []field[runs.ReadSettings]{
	{key: "delimiter", kind: "character", doc: "CSV field separator, one ASCII character or tab; default: detected from the first line (comma, semicolon, tab, vertical bar, else colon)", decode: func(d *decoder, v *yaml.Node, p string, c *runs.ReadSettings) {
		if s, ok := d.str(v, p); ok {
			switch {
			case s == "tab" || s == "\t":
				c.Delimiter = "\t"
			case len(s) == 1 && s[0] > ' ' && s[0] < 0x7f && s[0] != '"':
				c.Delimiter = s
			default:
				d.problem(v, p, fmt.Sprintf("%q is not one ASCII character", s), `e.g. ";", "|", ":" or tab; leave it out to detect it from the header line`)
			}
		}
	}},
	{key: "text_qualifier", kind: "character or none", doc: `character that quotes CSV values (default "); none reads quotes as data`, decode: func(d *decoder, v *yaml.Node, p string, c *runs.ReadSettings) {
		if s, ok := d.str(v, p); ok {
			if s != "none" && (len(s) != 1 || s[0] <= ' ' || s[0] >= 0x7f) {
				d.problem(v, p, fmt.Sprintf("%q is not one ASCII character or none", s), `e.g. "'"; the default is "`)
				return
			}
			c.TextQualifier = s
		}
	}},
	boolField("strict_quotes", "fail an entity whose quoted values hold an undoubled qualifier (default: keep it as data and warn)", func(c *runs.ReadSettings) *bool { return &c.StrictQuotes }),
	{key: "encoding", kind: "character set", doc: "character set of files without a byte order mark: utf-8, utf-16le, windows-1252, a code page number such as 1252, ...; default: from the source format and the bytes", decode: func(d *decoder, v *yaml.Node, p string, c *runs.ReadSettings) {
		if s, ok := d.str(v, p); ok {
			name, err := publish.ParseEncoding(s)
			if err != nil {
				d.problem(v, p, err.Error(), "") // the error names valid examples
				return
			}
			c.Encoding = name
		}
	}},
	{key: "header", kind: "bool, default true", doc: "false: the first line of CSV and fixed-width files is data (F&O's First row header = No); set columns too", decode: func(d *decoder, v *yaml.Node, p string, c *runs.ReadSettings) {
		if b, ok := d.boolean(v, p); ok {
			c.NoHeader = !b
		}
	}},
	{key: "columns", kind: "list of names", doc: "with header: false, the column names in file order", decode: func(d *decoder, v *yaml.Node, p string, c *runs.ReadSettings) {
		c.Columns = d.names(v, p)
	}},
	{key: "widths", kind: "list of int", doc: "fixed-width column widths in characters; default: from the header line", decode: func(d *decoder, v *yaml.Node, p string, c *runs.ReadSettings) {
		c.Widths = d.widths(v, p)
	}},
}

// entitiesField is exports[].entities: reading settings per entity name,
// each starting from the export's own.
var entitiesField = field[Export]{key: "entities", kind: "mapping", doc: "reading settings per entity, by its name in Manifest.xml (EntityName), overriding the export's key by key", decode: func(d *decoder, v *yaml.Node, p string, e *Export) {
	v = resolve(v)
	if v.Kind != yaml.MappingNode {
		if v.Kind != yaml.ScalarNode || v.Tag != "!!null" {
			d.problem(v, p, "must be a mapping of entity names to settings", `"Customers V3": {encoding: windows-1252}`)
		}
		return
	}
	e.Entities = map[string]runs.ReadSettings{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, ev := v.Content[i], v.Content[i+1]
		ep := fmt.Sprintf("%s.%q", p, k.Value)
		if _, dup := e.Entities[k.Value]; dup {
			d.problem(k, ep, fmt.Sprintf("entity %q given twice", k.Value), "remove one of them")
			continue
		}
		m := d.mapping(ev, ep, keysOf(readFields))
		if m == nil {
			continue
		}
		rs := e.Read
		rs.Columns, rs.Widths = slices.Clone(rs.Columns), slices.Clone(rs.Widths)
		decodeFields(d, readFields, m, ev, ep, &rs, nil)
		d.checkRead(ev, ep, rs)
		e.Entities[k.Value] = rs
	}
}}

// exportReadFields are readFields at the export's level.
func exportReadFields() []field[Export] {
	out := make([]field[Export], len(readFields))
	for i, f := range readFields {
		out[i] = field[Export]{key: f.key, kind: f.kind, doc: f.doc, decode: func(d *decoder, v *yaml.Node, p string, e *Export) {
			f.decode(d, v, p, &e.Read)
		}}
	}
	return out
}

// checkRead reports settings that contradict each other.
func (d *decoder) checkRead(n *yaml.Node, p string, rs runs.ReadSettings) {
	switch {
	case len(rs.Columns) > 0 && !rs.NoHeader:
		d.problem(n, join(p, "columns"), "columns is set but header is not false",
			"columns names the columns of a file without a header row: add header: false, or remove columns (a header row names them)")
	case rs.Delimiter != "" && rs.Delimiter == rs.TextQualifier:
		d.problem(n, join(p, "text_qualifier"), fmt.Sprintf("text qualifier %q is also the delimiter", rs.TextQualifier), "choose another character, or none")
	case len(rs.Columns) > 0 && len(rs.Widths) > 0 && len(rs.Columns) != len(rs.Widths):
		d.problem(n, join(p, "widths"), fmt.Sprintf("%d widths for %d columns", len(rs.Widths), len(rs.Columns)), "give one width per column")
	}
}

// names reads a list of unique, non-empty column names.
func (d *decoder) names(n *yaml.Node, p string) []string {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.problem(n, p, "must be a list", "e.g. [DATAAREAID, CUSTOMERACCOUNT, NAME]")
		return nil
	}
	var out []string
	for i, c := range n.Content {
		s, ok := d.str(c, fmt.Sprintf("%s[%d]", p, i))
		switch {
		case !ok:
		case strings.TrimSpace(s) == "":
			d.problem(c, fmt.Sprintf("%s[%d]", p, i), "is empty", "every column needs a name")
		case slices.Contains(out, s):
			d.problem(c, fmt.Sprintf("%s[%d]", p, i), fmt.Sprintf("column %q given twice", s), "column names must be unique")
		default:
			out = append(out, s)
		}
	}
	return out
}

// widths reads a list of column widths.
func (d *decoder) widths(n *yaml.Node, p string) []int {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		d.problem(n, p, "must be a non-empty list of widths", "e.g. [10, 30, 12]: each column's width in characters")
		return nil
	}
	out := make([]int, 0, len(n.Content))
	for i, c := range n.Content {
		if w, ok := d.integer(c, fmt.Sprintf("%s[%d]", p, i), 1, maxWidth); ok {
			out = append(out, w)
		}
	}
	return out
}

// readSettings returns the reading settings of entity in exp.
func (exp *Export) readSettings(entity string) runs.ReadSettings {
	if rs, ok := exp.Entities[entity]; ok {
		return rs
	}
	return exp.Read
}

// readOptions sets o's reading options from rs and e.
func readOptions(rs *runs.ReadSettings, o *publish.EntityOptions, e *runs.EntityRecord) {
	if rs.Delimiter != "" {
		o.Delimiter = []rune(rs.Delimiter)[0]
	}
	o.TextQualifier, o.StrictQuotes, o.Encoding = rs.TextQualifier, rs.StrictQuotes, rs.Encoding
	o.NoHeader, o.Columns, o.Widths = rs.NoHeader, rs.Columns, rs.Widths
	o.SourceFormat, o.FieldNames = e.SourceFormat, e.Fields
}
