package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/runs"
)

// statusAnswers records how the simulator answered GetExecutionSummaryStatus:
// how many "not registered yet" 400s and how many Unknown statuses.
type statusAnswers struct {
	next http.Handler

	mu       sync.Mutex
	notFound int
	unknown  int
}

func (a *statusAnswers) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, ".GetExecutionSummaryStatus") {
		a.next.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	a.next.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	a.mu.Lock()
	switch {
	case rec.Code == http.StatusBadRequest && bytes.Contains(body, []byte("Execution details were not found")):
		a.notFound++
	case rec.Code == http.StatusOK:
		var v struct{ Value string }
		if json.Unmarshal(body, &v) == nil && v.Value == "Unknown" {
			a.unknown++
		}
	}
	a.mu.Unlock()
	for k, vs := range rec.Header() {
		w.Header()[k] = vs
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(body)
}

func (a *statusAnswers) counts() (notFound, unknown int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.notFound, a.unknown
}

// TestRegisterWindowAgainstSimulator runs whole runs against the simulator
// with its defaults, where a new execution is first answered with HTTP 400
// "Execution details were not found", then Unknown, before F&O registers
// it. Polling, the check after a lost ExportToPackage answer and a resume
// all wait that window through, and F&O gets exactly one ExportToPackage.
func TestRegisterWindowAgainstSimulator(t *testing.T) {
	tests := []struct {
		name   string
		faults dmftest.Faults
		resume bool // the run was stopped right after posting ExportToPackage
	}{
		{name: "polling after ExportToPackage"},
		{name: "lost ExportToPackage answer", faults: dmftest.Faults{API: []dmftest.APIFault{
			{Action: "ExportToPackage", First: 1, Reset: true, Apply: true}}}},
		{name: "resume after a stop right after posting", resume: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				sim := dmftest.New(dmftest.Options{
					Projects: map[string][]dmftest.Entity{"G": {{Name: "Customers V3", Data: []byte("ACCOUNT,NAME\r\n1,A\r\n2,B\r\n")}}},
					Faults:   tt.faults,
				})
				answers := &statusAnswers{next: sim}
				srv := serveInMemory(answers)
				defer srv.Close()
				sim.SetBaseURL(srv.URL)

				u, _ := url.Parse(srv.URL)
				dir := t.TempDir()
				exp := &Export{
					Name: "reg", Schedule: "@daily", Enabled: true, DefinitionGroup: "G", PackageName: "G", LegalEntity: "USMF",
					RoutingKey: "fo.reg", BatchSize: 100,
					FO:     FOConfig{URL: u, Auth: AuthConfig{Options: azauth.Options{Method: "token", Token: Secret(dmftest.DefaultToken)}}, RetryBaseDelay: 10 * time.Millisecond},
					Store:  StoreConfig{Type: "dir", Path: filepath.Join(dir, "store")},
					Broker: BrokerConfig{Type: "file", Path: filepath.Join(dir, "batches")},
					Poll: PollConfig{Interval: 20 * time.Millisecond, MaxInterval: 50 * time.Millisecond, Deadline: time.Minute,
						PackageURLTimeout: 10 * time.Second, RegisterTimeout: 20 * time.Second},
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()

				var rec *runs.Record
				var err error
				if tt.resume {
					// What a run leaves when it is killed just after F&O took its
					// ExportToPackage: a record in state exporting with the ID.
					const id = "G-2026-11-29_10-00-00-00000000"
					body := `{"definitionGroupId":"G","packageName":"G","executionId":"` + id + `","reExecute":false,"legalEntityId":"USMF"}`
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.ExportToPackage", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+dmftest.DefaultToken)
					req.Header.Set("Content-Type", "application/json")
					resp, postErr := http.DefaultClient.Do(req)
					if postErr != nil || resp.StatusCode != http.StatusOK {
						t.Fatalf("post ExportToPackage: %v %v", resp, postErr)
					}
					_ = resp.Body.Close()
					st, openErr := openStore(context.Background(), exp.Store, nil)
					if openErr != nil {
						t.Fatal(openErr)
					}
					stopped := &runs.Record{Job: exp.Name, RunID: "20261129T100000Z-cccccccc", State: runs.StateExporting, StartedAt: time.Now().UTC(),
						DefinitionGroup: "G", LegalEntity: "USMF", ExecutionID: id, Durations: map[string]string{}}
					if err := saveRecord(ctx, st, "", stopped); err != nil {
						t.Fatal(err)
					}
					rec, err = (&Runner{}).Resume(ctx, exp, stopped)
				} else {
					rec, err = (&Runner{}).Run(ctx, exp, RunOptions{Trigger: "manual"})
				}
				if err != nil || rec.State != runs.StateSucceeded {
					t.Fatalf("run: state %v, error %v; want succeeded", rec, err)
				}
				if n := sim.Calls("ExportToPackage"); n != 1 {
					t.Errorf("ExportToPackage calls: %d, want exactly 1", n)
				}
				if n := sim.Exports(); n != 1 {
					t.Errorf("exports started in F&O: %d, want exactly 1", n)
				}
				notFound, unknown := answers.counts()
				if notFound == 0 || unknown == 0 {
					t.Errorf("status answers: %d \"not found\" 400s and %d Unknown; want both met and waited through", notFound, unknown)
				}
				if rec.Entities[0].Rows != 2 {
					t.Errorf("rows published: %d, want 2", rec.Entities[0].Rows)
				}
			})
		})
	}
}
