package runs

import (
	"testing"
	"time"
)

// TestLayout spells out every key of the store layout (docs/store-layout.md) for an
// export and a data project whose names need escaping.
func TestLayout(t *testing.T) {
	l := Layout{Prefix: "fo", Export: "Orders: EU/2"}
	const run = "20261125T100000Z-1a2b3c4d"
	slot := time.Date(2026, 11, 25, 11, 0, 0, 0, time.FixedZone("CET", 3600))
	p := DataProject{Environment: "https://Contoso.operations.dynamics.com/", Group: "Customers V3"}
	tests := []struct{ name, got, want string }{
		{"run folder", l.Run(run), "fo/Orders%3A EU%2F2/" + run},
		{"record", l.Record(run), "fo/Orders%3A EU%2F2/" + run + "/run.json"},
		{"quarantined record", l.quarantined(run, slot.Add(1500*time.Millisecond)), "fo/Orders%3A EU%2F2/" + run + "/run.json.damaged-20261125T100001.500Z"},
		{"package", l.Package(run), "fo/Orders%3A EU%2F2/" + run + "/package.zip"},
		{"entities", l.Entities(run), "fo/Orders%3A EU%2F2/" + run + "/entities"},
		{"active marker", l.Active(run), "fo/_active/Orders%3A EU%2F2/" + run},
		{"leases", l.Leases(run), "fo/_leases/Orders%3A EU%2F2/" + run},
		{"lease generation", generation(l.Leases(run), 3), "fo/_leases/Orders%3A EU%2F2/" + run + "/00000003"},
		{"claim", l.Claim(slot), "fo/_claims/Orders%3A EU%2F2/20261125T100000Z"},
		{"data project leases", l.ProjectLeases(p), "fo/_groups/customers v3-feddb8bed8cc"},
		{"clock", l.Clock(), "fo/_clock"},
		{"no prefix", Layout{Export: "x"}.Record("r"), "x/r/run.json"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	// The same data project however its environment URL and group are
	// written: F&O compares them without case.
	if q := (DataProject{Environment: "https://contoso.operations.dynamics.com", Group: "CUSTOMERS v3"}); l.ProjectLeases(q) != l.ProjectLeases(p) {
		t.Errorf("data project %+v has leases %s, want those of %+v, %s", q, l.ProjectLeases(q), p, l.ProjectLeases(p))
	}
	for _, key := range []string{l.Record(run), l.Package(run), l.quarantined(run, slot)} {
		if id, _, ok := l.runKey(key); !ok || id != run {
			t.Errorf("runKey(%q) = %q, %v; want run %s", key, id, ok, run)
		}
	}
	if _, _, ok := l.runKey(l.Entities(run) + "/run.json"); ok {
		t.Error("an entity object named run.json is taken for a key of the run's folder")
	}
}
