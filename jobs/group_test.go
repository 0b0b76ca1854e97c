package jobs

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/runs"
)

func TestConfigWarnsOfSharedDataProject(t *testing.T) {
	const head = `fo:
  url: https://contoso.operations.dynamics.com
  auth: {method: token, token: "${FO_TOKEN}"}
store: {path: ./data}
broker: {type: file, path: ./batches}
exports:
`
	tests := []struct {
		name    string
		exports string
		want    []string // one warning per entry, containing it
	}{
		{name: "own projects", exports: "  - {name: a, schedule: '@daily', definition_group: A, legal_entity: USMF}\n" +
			"  - {name: b, schedule: '@daily', definition_group: B, legal_entity: USMF}\n"},
		{name: "shared project", exports: "  - {name: a, schedule: '@daily', definition_group: Customers, legal_entity: USMF}\n" +
			"  - {name: b, schedule: '@hourly', definition_group: Customers, legal_entity: DEMF}\n",
			want: []string{`x.yaml:8:5: exports[1](b).definition_group: data project "Customers" is also exported by "a" (line 7)`}},
		{name: "same project in another case, three exports", exports: "  - {name: a, schedule: '@daily', definition_group: Customers, legal_entity: USMF}\n" +
			"  - {name: b, schedule: '@daily', definition_group: CUSTOMERS, legal_entity: USMF}\n" +
			"  - {name: c, schedule: '@daily', definition_group: customers, legal_entity: USMF}\n",
			want: []string{`exports[1](b)`, `exports[2](c).definition_group: data project "customers" is also exported by "a"`}},
		{name: "same name in another environment", exports: "  - {name: a, schedule: '@daily', definition_group: Customers, legal_entity: USMF}\n" +
			"  - {name: b, schedule: '@daily', definition_group: Customers, legal_entity: USMF, fo: {url: 'https://contoso-uat.sandbox.operations.dynamics.com'}}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig("conf/x.yaml", []byte(head+tt.exports), env)
			if err != nil {
				t.Fatalf("ParseConfig: %v; a warning must not make the file invalid", err)
			}
			if len(cfg.Warnings) != len(tt.want) {
				t.Fatalf("%d warnings %q, want %d", len(cfg.Warnings), cfg.Warnings, len(tt.want))
			}
			for i, w := range tt.want {
				if got := cfg.Warnings[i].String(); !strings.Contains(got, w) || !strings.Contains(got, "skipped") {
					t.Errorf("warning %q does not contain %q and say runs are skipped", got, w)
				}
			}
		})
	}
}

// twoExportsOfOneProject returns exports a and b of data project G on the
// same F&O, sharing one store; F&O answers Failed after release is closed.
func twoExportsOfOneProject(t *testing.T) (a, b *Export, f *foFake, release chan struct{}) {
	release = make(chan struct{})
	f = newFOFake(t, map[string]func(int) (int, string){
		"ExportToPackage": fixed(200, foValue("")),
		"GetExecutionSummaryStatus": func(int) (int, string) {
			<-release
			return 200, foValue("Failed")
		},
		"GetExecutionErrors":         fixed(200, foValue("[]")),
		"GetExecutionSummaryPageUrl": fixed(200, foValue("")),
	})
	dir := t.TempDir()
	a, b = foExport(f, dir), foExport(f, dir)
	a.Name, b.Name = "a", "b"
	b.DefinitionGroup = "g" // the same project, in another case
	return a, b, f, release
}

// TestDataProjectOneRunAtATime: while a run of export a exports data
// project G, a run of export b (same project) is skipped with a record
// that says why; once a's run ended, b runs.
func TestDataProjectOneRunAtATime(t *testing.T) {
	bubble(t, func(t *testing.T) {
		a, b, f, release := twoExportsOfOneProject(t)
		ctx := context.Background()
		r := &Runner{}
		done := make(chan error, 1)
		go func() {
			_, err := r.Run(ctx, a, RunOptions{Trigger: "manual"})
			done <- err
		}()
		for f.count("GetExecutionSummaryStatus") == 0 { // a's run is polling F&O
			select {
			case err := <-done:
				t.Fatalf("run of a ended early: %v", err)
			case <-time.After(time.Millisecond):
			}
		}
		rec, err := r.Run(ctx, b, RunOptions{Trigger: "schedule"})
		if !errors.Is(err, ErrGroupBusy) || rec == nil || rec.State != runs.StateSkipped {
			t.Fatalf("run of b while a runs = %+v, %v; want a skipped record and ErrGroupBusy", rec, err)
		}
		recs, err := Records(ctx, b, 0)
		if err != nil || len(recs) != 1 {
			t.Fatalf("records of b: %d, %v; want the skipped one", len(recs), err)
		}
		for _, want := range []string{"skipped", `data project "g"`, "export a run ", "next trigger"} {
			if !strings.Contains(recs[0].Error, want) {
				t.Errorf("skipped record error %q lacks %q", recs[0].Error, want)
			}
		}
		if n := f.count("ExportToPackage"); n != 1 {
			t.Errorf("%d ExportToPackage calls while a ran, want 1", n)
		}
		close(release)
		if err := <-done; err == nil { // F&O says Failed for every execution here
			t.Error("run of a ended without an error, want F&O's Failed")
		}
		rec, err = r.Run(ctx, b, RunOptions{Trigger: "manual"})
		if errors.Is(err, ErrGroupBusy) || rec == nil || rec.State != runs.StateFailed {
			t.Errorf("run of b after a ended = %+v, %v; want it to run (and end Failed as F&O says)", rec, err)
		}
		if n := f.count("ExportToPackage"); n != 2 {
			t.Errorf("%d ExportToPackage calls, want 2", n)
		}
	})
}

// TestDataProjectHeldByAnotherReplica: a live lease of another replica on
// the data project keeps runs and resumes out, naming the holder; once it
// lapsed, the run goes ahead.
func TestDataProjectHeldByAnotherReplica(t *testing.T) {
	bubble(t, func(t *testing.T) {
		a, b, f, release := twoExportsOfOneProject(t)
		close(release)
		ctx := context.Background()
		st, err := openStore(context.Background(), b.Store, nil)
		if err != nil {
			t.Fatal(err)
		}
		other := `{"replica":"elsewhere/1/ffffffff","at":"2026-11-25T10:00:00Z","holder":"export a run 20261125T100000Z-aaaaaaaa"}`
		holds := ledgerOf(st, a).ProjectLeases(dataProject(a))
		if _, err := st.Create(ctx, leaseKey(holds, 1), strings.NewReader(other), nil); err != nil {
			t.Fatal(err)
		}
		r := &Runner{LeaseTTL: 500 * time.Millisecond}
		rec, err := r.Run(ctx, b, RunOptions{})
		if !errors.Is(err, ErrGroupBusy) || rec == nil || rec.State != runs.StateSkipped ||
			!strings.Contains(rec.Error, "export a run 20261125T100000Z-aaaaaaaa on elsewhere/1/ffffffff") {
			t.Fatalf("Run while another replica holds the project = %+v, %v; want skipped naming the holder", rec, err)
		}
		unfinished := &runs.Record{Job: b.Name, RunID: "20261125T100000Z-cccccccc", State: runs.StatePending, StartedAt: time.Now().UTC(),
			DefinitionGroup: "g", LegalEntity: "USMF", Durations: map[string]string{}}
		if err := saveRecord(ctx, st, "", unfinished); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Resume(ctx, b, unfinished); !errors.Is(err, ErrGroupBusy) {
			t.Errorf("Resume while another replica holds the project: %v, want ErrGroupBusy", err)
		}
		if n := f.count("ExportToPackage"); n != 0 {
			t.Errorf("%d ExportToPackage calls while the project was held, want 0", n)
		}
		ageObject(t, b.Store.Path, leaseKey(holds, 1), time.Second) // the other replica's lease lapses on the store's clock
		rec, err = r.Run(ctx, b, RunOptions{})
		if errors.Is(err, ErrGroupBusy) || rec == nil || rec.State != runs.StateFailed {
			t.Errorf("Run after the lease lapsed = %+v, %v; want it to run", rec, err)
		}
		if left, err := st.List(ctx, holds+"/"); err != nil || len(left) != 0 {
			t.Errorf("data project leases left after the run: %v (%v), want none", left, err)
		}
	})
}
