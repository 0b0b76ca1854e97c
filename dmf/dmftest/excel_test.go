package dmftest

import (
	"testing"
	"time"
)

// TestExcelOneAtATime checks DMF2039: executions holding Excel entities
// take turns, the second waiting NotRun, while others run at once.
func TestExcelOneAtATime(t *testing.T) {
	projects := map[string][]Entity{
		"ExcelA":  {{Name: "Products", SourceFormat: "EXCEL", Data: FOWorkbook("Products", [][]string{{"ITEMID"}, {"A1"}})}},
		"ExcelB":  {{Name: "Customers", Data: []byte("A\r\n1\r\n")}, {Name: "Regions", SourceFormat: "Excel", Data: FOWorkbook("Regions", [][]string{{"ID"}, {"R"}})}},
		"CSVOnly": {{Name: "Vendors", Data: []byte("A\r\n1\r\n")}},
	}
	const exec = 10 * time.Second
	type step struct {
		at   time.Duration // since the exports, which register after 1 s
		want map[string]string
	}
	tests := []struct {
		name       string
		concurrent bool
		steps      []step
	}{
		{"second Excel export waits", false, []step{
			{2500 * time.Millisecond, map[string]string{"a": statusExecuting, "b": statusNotRun, "c": statusExecuting}},
			{10500 * time.Millisecond, map[string]string{"a": statusExecuting, "b": statusNotRun, "c": statusExecuting}},
			{11500 * time.Millisecond, map[string]string{"a": statusSucceeded, "b": statusNotRun, "c": statusSucceeded}},
			{12500 * time.Millisecond, map[string]string{"a": statusSucceeded, "b": statusExecuting, "c": statusSucceeded}},
			{20500 * time.Millisecond, map[string]string{"b": statusExecuting}},
			{21500 * time.Millisecond, map[string]string{"a": statusSucceeded, "b": statusSucceeded, "c": statusSucceeded}},
		}},
		{"ConcurrentExcel runs both", true, []step{
			{2500 * time.Millisecond, map[string]string{"a": statusExecuting, "b": statusExecuting, "c": statusExecuting}},
			{11500 * time.Millisecond, map[string]string{"a": statusSucceeded, "b": statusSucceeded, "c": statusSucceeded}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			start := clock.Now()
			s := newTestServer(t, Options{Projects: projects, ExecutionTime: exec, ConcurrentExcel: tt.concurrent}, clock)
			// In this order: a takes the Excel slot, b waits for it.
			for _, e := range []struct{ id, group string }{{"a", "ExcelA"}, {"b", "ExcelB"}, {"c", "CSVOnly"}} {
				id, group := e.id, e.group
				if got := value(t, s.URL, actionExport, exportBody(group, id, false)); got != id {
					t.Fatalf("export %s: want ID %q, got %q", group, id, got)
				}
			}
			for _, st := range tt.steps {
				clock.Advance(start.Add(st.at).Sub(clock.Now()))
				for id, want := range st.want {
					if got := value(t, s.URL, actionStatus, idBody(id)); got != want {
						t.Errorf("at %v: execution %s: want %s, got %s", st.at, id, want, got)
					}
				}
			}
			for _, id := range []string{"a", "b"} {
				if u := pkgURL(t, s.URL, id); get(t, u, nil).status != 200 {
					t.Errorf("execution %s: want its package downloadable", id)
				}
			}
		})
	}
}
