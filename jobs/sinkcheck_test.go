package jobs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/store"
)

// TestSinkWarnings checks the warnings of sinks landing entities that the
// run records of the exports they consume say F&O exports incrementally:
// without keys, or in mode snapshot, each at the line of the sink's entry
// for the entity (else the sink's own); none for entities exported in
// full, landed with keys or appended, or exported by an export the sink
// does not consume.
func TestSinkWarnings(t *testing.T) {
	const head = `fo:
  url: https://contoso.operations.dynamics.com
  auth: {method: token, token: "${FO_TOKEN}"}
store: {path: ./store}
broker: {url: "amqp://guest:guest@127.0.0.1:5672/"}
exports:
  - {name: groups, schedule: '@daily', definition_group: G, legal_entity: USMF, exchange: erp, routing_key: fo.groups}
  - {name: other, schedule: '@daily', definition_group: O, legal_entity: USMF, exchange: erp, routing_key: fo.other}
sinks:
  - name: dw
    queue: dw
    exchange: erp
    bindings: [fo.groups]
    database_url: postgres://127.0.0.1/dw
    entities:
`
	// Line 16 is the first entity's. Groups and Old are incremental in
	// their newest record; Flip was, but is exported in full now.
	noKeys := `export "groups" exports entity "%s" incrementally (IncrementalPush in its run %s: changed and new records only), but the sink has no keys for it`
	tests := []struct {
		name     string
		entities string
		want     []string // each warning, in order, containing it
	}{
		{"none listed", "", []string{
			`x.yaml:10:5: sinks[0](dw): ` + strings.Replace(strings.Replace(noKeys, "%s", "Groups", 1), "%s", "20261202T020000Z-bbbbbbbb", 1),
			`x.yaml:10:5: sinks[0](dw): ` + strings.Replace(strings.Replace(noKeys, "%s", "Old", 1), "%s", "20261201T020000Z-aaaaaaaa", 1),
		}},
		{"keys and append", "      Groups: {keys: [ID]}\n      Old: {mode: append}\n      Flip: {table: flip}\n", nil},
		{"listed without keys", "      Old: {keys: [ID]}\n      Groups: {table: g}\n", []string{
			`x.yaml:17:7: sinks[0](dw).entities."Groups": export "groups" exports entity "Groups" incrementally`,
		}},
		{"snapshot with keys", "      Groups: {mode: snapshot, keys: [ID]}\n      Old: {keys: [ID]}\n", []string{
			`x.yaml:16:7: sinks[0](dw).entities."Groups": export "groups" exports entity "Groups" incrementally (IncrementalPush in its run 20261202T020000Z-bbbbbbbb: changed and new records only), and the sink lands it in mode snapshot`,
		}},
		{"snapshot without keys", "      Groups: {mode: snapshot}\n      Old: {keys: [ID]}\n", []string{
			`and give its keys`,
		}},
	}
	dir := t.TempDir()
	st, err := store.NewDirStore(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range []*runs.Record{
		{Job: "groups", RunID: "20261201T020000Z-aaaaaaaa", State: runs.StateSucceeded, ExecutionID: "x", StartedAt: time.Now(), Entities: []runs.EntityRecord{
			{Entity: "Flip", RefreshType: "IncrementalPush"}, {Entity: "Old", RefreshType: "IncrementalPush"}}},
		{Job: "groups", RunID: "20261202T020000Z-bbbbbbbb", State: runs.StateSucceeded, ExecutionID: "x", StartedAt: time.Now(), Entities: []runs.EntityRecord{
			{Entity: "Groups", RefreshType: "IncrementalPush"}, {Entity: "Customers", RefreshType: "FullPush"}, {Entity: "Flip", RefreshType: "FullPush"}}},
		{Job: "other", RunID: "20261202T020000Z-cccccccc", State: runs.StateSucceeded, ExecutionID: "x", StartedAt: time.Now(), Entities: []runs.EntityRecord{
			{Entity: "Other", RefreshType: "IncrementalPush"}}},
	} {
		if err := saveRecord(context.Background(), st, "", rec); err != nil {
			t.Fatal(err)
		}
	}
	env := func(k string) (string, bool) { return "t", true }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig(filepath.Join(dir, "x.yaml"), []byte(head+tt.entities), env)
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			got, err := SinkWarnings(context.Background(), cfg)
			if err != nil {
				t.Fatalf("SinkWarnings: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d warnings %q, want %d", len(got), got, len(tt.want))
			}
			for i, w := range tt.want {
				if s := got[i].String(); !strings.Contains(s, w) || !strings.Contains(s, "hint: ") {
					t.Errorf("warning %q\ndoes not contain %q and a hint", s, w)
				}
			}
		})
	}

	t.Run("store not created", func(t *testing.T) {
		other := t.TempDir()
		cfg, err := ParseConfig(filepath.Join(other, "x.yaml"), []byte(head), env)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := SinkWarnings(context.Background(), cfg); len(got) != 0 || err != nil {
			t.Errorf("SinkWarnings = %q, %v; want none", got, err)
		}
		if _, err := os.Stat(filepath.Join(other, "store")); !os.IsNotExist(err) {
			t.Errorf("the store was created (stat: %v); SinkWarnings only reads", err)
		}
	})
}

func TestSinkConsumes(t *testing.T) {
	tests := []struct {
		name string
		sink SinkConfig
		exp  Export
		want bool
	}{
		{"binding matches", SinkConfig{Queue: "q", Exchange: "erp", Bindings: []string{"fo.*"}}, Export{Exchange: "erp", RoutingKey: "fo.groups"}, true},
		{"no bindings: every key", SinkConfig{Queue: "q", Exchange: "erp"}, Export{Exchange: "erp", RoutingKey: "a.b.c"}, true},
		{"binding differs", SinkConfig{Queue: "q", Exchange: "erp", Bindings: []string{"fo.customers"}}, Export{Exchange: "erp", RoutingKey: "fo.groups"}, false},
		{"other exchange", SinkConfig{Queue: "q", Exchange: "erp"}, Export{Exchange: "crm", RoutingKey: "fo.groups"}, false},
		{"default exchange, its queue", SinkConfig{Queue: "q"}, Export{RoutingKey: "q"}, true},
		{"default exchange, another queue", SinkConfig{Queue: "q"}, Export{RoutingKey: "r"}, false},
	}
	for _, tt := range tests {
		if got := tt.sink.Consumes(&tt.exp); got != tt.want {
			t.Errorf("%s: Consumes = %v, want %v", tt.name, got, tt.want)
		}
	}
}
