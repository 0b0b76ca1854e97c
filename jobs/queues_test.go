package jobs

import (
	"net/url"
	"reflect"
	"testing"
)

// TestQueues checks what the status page shows of the F&O queues: every
// environment of an enabled export, with its configured limit before any
// run, and the slots in use and the runs waiting once runs ask.
func TestQueues(t *testing.T) {
	a, _ := url.Parse("https://A.operations.dynamics.com/")
	b, _ := url.Parse("https://b.operations.dynamics.com")
	off, _ := url.Parse("https://disabled.operations.dynamics.com")
	cfg := &Config{Exports: []Export{
		{Name: "a1", Enabled: true, FO: FOConfig{URL: a, MaxConcurrentExports: 1}},
		{Name: "a2", Enabled: true, FO: FOConfig{URL: a, MaxConcurrentExports: 1}},
		{Name: "b", Enabled: true, FO: FOConfig{URL: b}},
		{Name: "off", FO: FOConfig{URL: off}},
	}}
	r := &Runner{}
	want := []EnvironmentQueue{
		{Environment: "https://a.operations.dynamics.com", Limit: 1},
		{Environment: "https://b.operations.dynamics.com", Limit: DefaultMaxConcurrentExports},
	}
	if got := r.Queues(cfg); !reflect.DeepEqual(got, want) {
		t.Errorf("before any run: %+v, want %+v", got, want)
	}
	env := r.environment(&cfg.Exports[0])
	if t1, _ := env.slots.join(); t1 != nil {
		t.Fatal("the first run waits for a slot of an idle environment")
	}
	if t2, ahead := env.slots.join(); t2 == nil || ahead != 0 {
		t.Fatalf("the second run of a 1-slot environment: ticket %v, %d ahead; want it first in the queue", t2, ahead)
	}
	want[0].InUse, want[0].Waiting = 1, 1
	if got := r.Queues(cfg); !reflect.DeepEqual(got, want) {
		t.Errorf("with a run going on and one waiting: %+v, want %+v", got, want)
	}
}
