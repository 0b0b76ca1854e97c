package jobs

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"
)

// commentedKey matches a key that configs/example.yaml documents commented
// out ("  # container: dmf-exports"), not prose ("# dir: a local directory").
var commentedKey = regexp.MustCompile(`^(\s*)# ( {0,4}[a-z_]+:)(\s+\S+)?(\s+#.*)?$`)

// exampleTree reads configs/example.yaml with its commented-out keys
// restored, so that every key it documents is in the tree.
func exampleTree(t *testing.T) *yaml.Node {
	t.Helper()
	data, err := os.ReadFile("../configs/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	for i, l := range lines {
		lines[i] = commentedKey.ReplaceAllString(l, "$1$2$3$4")
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(strings.Join(lines, "\n")), &doc); err != nil {
		t.Fatalf("example.yaml with its commented keys restored: %v", err)
	}
	return doc.Content[0]
}

// examplePaths lists the keys under n by documented path: an export's
// sections and store.auth are documented by the shared sections and
// fo.auth.
func examplePaths(n *yaml.Node, prefix string, out map[string]*yaml.Node) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := prefix + n.Content[i].Value
			for _, s := range []string{"fo", "store", "broker", "poll", "retention"} {
				if rest, ok := strings.CutPrefix(p, "exports[]."+s+"."); ok {
					p = s + "." + rest
				}
			}
			if rest, ok := strings.CutPrefix(p, "store.auth."); ok {
				p = "fo.auth." + rest
			}
			for _, list := range []string{"exports[]", "sinks[]"} {
				if rest, ok := strings.CutPrefix(p, list+".entities."); ok {
					_, key, _ := strings.Cut(rest, ".") // the entity's name is any name
					p = strings.TrimSuffix(list+".entities.*."+key, ".")
				}
			}
			if _, seen := out[p]; !seen {
				out[p] = n.Content[i+1]
			}
			examplePaths(n.Content[i+1], p+".", out)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			examplePaths(c, strings.TrimSuffix(prefix, ".")+"[].", out)
		}
	}
}

// TestConfigKeysMatchExample proves that the key table and
// configs/example.yaml agree: every key the decoder accepts is documented
// there, with a doc line in the table, and every key there is accepted.
func TestConfigKeysMatchExample(t *testing.T) {
	example := map[string]*yaml.Node{}
	examplePaths(exampleTree(t), "", example)
	table := map[string]bool{}
	for _, k := range configKeys() {
		if table[k.path] {
			t.Errorf("key %s is in the table twice", k.path)
		}
		table[k.path] = true
		if k.doc == "" || k.kind == "" {
			t.Errorf("key %s has no doc line or kind in the table", k.path)
		}
		if example[k.path] == nil {
			t.Errorf("key %s is in the table but not in configs/example.yaml", k.path)
		}
	}
	for p := range example {
		if !table[p] {
			t.Errorf("key %s is in configs/example.yaml but not in the table", p)
		}
	}
	if len(table) < 80 {
		t.Errorf("the table has %d keys; the file has more than 80", len(table))
	}
}

// TestConfigKeysInDocs checks that the configuration tables
// (docs/configuration.md) name every key that holds a value.
func TestConfigKeysInDocs(t *testing.T) {
	data, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, k := range configKeys() {
		if k.kind == "mapping" || k.kind == "list" {
			continue
		}
		documented := strings.Contains(doc, "`"+k.path+"`")
		// A family of keys may share a row: `fo.retry_*`, and the items of
		// broker.queues are listed in its row as {name, binding_key, quorum}.
		for i := range len(k.path) {
			if k.path[i] == '_' || k.path[i] == '.' {
				documented = documented || strings.Contains(doc, "`"+k.path[:i+1]+"*`")
			}
		}
		if item, ok := strings.CutPrefix(k.path, "broker.queues[]."); ok {
			documented = regexp.MustCompile("`broker.queues` \\|[^\n]*\\b" + item + "\\b").MatchString(doc)
		}
		if !documented {
			t.Errorf("key %s is not in the configuration tables of docs/configuration.md", k.path)
		}
	}
}

// TestConfigKeysFillTheStructs proves that the table and the Config
// structs agree: each key with a parser, given its value from
// configs/example.yaml, is accepted and sets a field of its section, and
// every field of a section is set by a key or by the section's own rules.
func TestConfigKeysFillTheStructs(t *testing.T) {
	example := map[string]*yaml.Node{}
	examplePaths(exampleTree(t), "", example)
	checkFields(t, "", topFields, example, "Path", "Exports", "Warnings")
	checkFields(t, "exports[].", exportFields, example, "FO", "Store", "Broker", "Poll", "Retention")
	checkFields(t, "exports[].entities.*.", readFields, example)
	checkFields(t, "sinks[].", sinkFields, example)
	checkFields(t, "sinks[].entities.*.", sinkEntityFields, example)
	checkFields(t, "fo.", foFields, example, "Auth")
	checkFields(t, "fo.auth.", authFields, example)
	checkFields(t, "store.", storeFields, example, "Auth")
	checkFields(t, "broker.", brokerFields, example, "URL")
	checkFields(t, "broker.queues[].", queueFields, example)
	checkFields(t, "poll.", pollFields, example)
	checkFields(t, "retention.", retentionFields, example)
}

// checkFields decodes each key of fields into its own zero C; bySection
// names the fields of C that the section's own rules set.
func checkFields[C any](t *testing.T, prefix string, fields []field[C], example map[string]*yaml.Node, bySection ...string) {
	t.Helper()
	set := map[string]bool{}
	for _, f := range fields {
		if f.decode == nil {
			continue
		}
		v := example[prefix+f.key]
		if v == nil {
			continue // TestConfigKeysMatchExample reports it
		}
		if f.kind == "bool" { // false, the usual example, is the zero value
			v = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "true"}
		}
		d := &decoder{file: "example.yaml", dir: "/etc/dmfexport", lookupEnv: func(string) (string, bool) { return "x", true }}
		var c C
		f.decode(d, v, prefix+f.key, &c)
		if len(d.problems) > 0 {
			t.Errorf("%s%s: the example's value is refused: %v", prefix, f.key, d.problems)
		}
		changed := changedFields(reflect.ValueOf(c), reflect.ValueOf(*new(C)))
		if len(changed) == 0 {
			t.Errorf("%s%s: the example's value sets no field of %T", prefix, f.key, c)
		}
		for _, name := range changed {
			set[name] = true
		}
	}
	for _, name := range changedFields(reflect.ValueOf(*new(C)), reflect.Value{}) {
		if !set[name] && !slices.Contains(bySection, name) {
			t.Errorf("%T.%s is set by no key of the table %s*", *new(C), name, prefix)
		}
	}
}

// changedFields names the fields of v (embedded structs flattened) that
// differ from those of zero; an invalid zero names every field.
func changedFields(v, zero reflect.Value) []string {
	var out []string
	for i := range v.NumField() {
		sf := v.Type().Field(i)
		if !sf.IsExported() {
			continue
		}
		if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
			z := reflect.Value{}
			if zero.IsValid() {
				z = zero.Field(i)
			}
			out = append(out, changedFields(v.Field(i), z)...)
			continue
		}
		if !zero.IsValid() || !reflect.DeepEqual(v.Field(i).Interface(), zero.Field(i).Interface()) {
			out = append(out, sf.Name)
		}
	}
	return out
}
