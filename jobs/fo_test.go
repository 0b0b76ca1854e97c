package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/runs"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// foFake answers the F&O actions as real environments do (dmf-api.md),
// one handler per action, counting calls.
type foFake struct {
	srv      *httptest.Server
	mu       sync.Mutex
	calls    map[string]int
	handlers map[string]func(n int) (int, string)
}

func newFOFake(t *testing.T, handlers map[string]func(n int) (int, string)) *foFake {
	f := &foFake{calls: map[string]int{}, handlers: handlers}
	f.srv = serveInMemory(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		action := r.URL.Path[strings.LastIndexByte(r.URL.Path, '.')+1:]
		_, _ = io.Copy(io.Discard, r.Body)
		f.mu.Lock()
		f.calls[action]++
		n := f.calls[action]
		h := f.handlers[action]
		f.mu.Unlock()
		status, body := 400, foError("no handler for "+action)
		if h != nil {
			status, body = h(n)
		}
		w.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *foFake) count(action string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[action]
}

func foValue(v string) string {
	b, _ := json.Marshal(map[string]any{"@odata.context": "https://env/data/$metadata#Edm.String", "value": v})
	return string(b)
}

// foError is F&O's error body: a generic message, the cause in innererror.
func foError(inner string) string {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": "", "message": "An error has occurred.",
		"innererror": map[string]any{"message": inner, "type": "System.Exception", "stacktrace": "   at Dynamics.AX..."}}})
	return string(b)
}

func foExport(f *foFake, dir string) *Export {
	u, _ := url.Parse(f.srv.URL)
	return &Export{
		Name: "fo", Schedule: "@daily", Enabled: true, DefinitionGroup: "G", PackageName: "G", LegalEntity: "USMF",
		RoutingKey: "fo.fo", BatchSize: 100,
		FO: FOConfig{URL: u, Auth: AuthConfig{Options: azauth.Options{Method: "token", Token: Secret("tok")}}, MaxRetries: 1,
			RetryBaseDelay: time.Millisecond, RetryMaxDelay: 2 * time.Millisecond},
		Store:  StoreConfig{Type: "dir", Path: filepath.Join(dir, "store")},
		Broker: BrokerConfig{Type: "file", Path: filepath.Join(dir, "batches")},
		Poll: PollConfig{Interval: 5 * time.Millisecond, MaxInterval: 10 * time.Millisecond, Deadline: time.Minute,
			PackageURLTimeout: time.Second, RegisterTimeout: 200 * time.Millisecond},
	}
}

// fixed answers the same every time.
func fixed(status int, body string) func(int) (int, string) {
	return func(int) (int, string) { return status, body }
}

// errorList is GetExecutionErrors' answer for n errors, as F&O encodes it.
func errorList(n int) string {
	type item struct{ RecordId, Field, ErrorMessage string }
	items := make([]item, n)
	for i := range items {
		items[i] = item{fmt.Sprint(5637144570 + i), "CUSTGROUP", fmt.Sprintf("Customer group 'G%d' does not exist", i)}
	}
	b, _ := json.Marshal(items)
	return foValue(string(b))
}

// TestRunShowsFOWords: what F&O says about a failure reaches the returned
// error, the run record and the log, never only "An error has occurred.".
func TestRunShowsFOWords(t *testing.T) {
	const page = "https://env/?mi=DMFExecutionSummary&executionId=x"
	tests := []struct {
		name       string
		handlers   map[string]func(int) (int, string)
		want       []string // in the error, the record and the log
		wantErrs   int      // execution errors recorded
		wantCount  int
		wantFirst  string // first recorded error message
		wantLogged bool
		// waiting: the execution exists and F&O gave no verdict, so the run
		// is left waiting to poll it again rather than failed.
		waiting bool
	}{
		{name: "export refused", handlers: map[string]func(int) (int, string){
			"ExportToPackage": fixed(400, foError("Data project 'G' does not exist in company USMF")),
		}, want: []string{"ExportToPackage", "HTTP 400", "Data project 'G' does not exist in company USMF"}},
		{name: "status fails", handlers: map[string]func(int) (int, string){
			"ExportToPackage":           fixed(200, foValue("x")),
			"GetExecutionSummaryStatus": fixed(500, foError("Timeout expired while reading DMFEXECUTION")),
		}, want: []string{"GetExecutionSummaryStatus", "HTTP 500", "Timeout expired while reading DMFEXECUTION", "waiting for F&O to end the execution"}, waiting: true},
		{name: "failed with F&O's errors", handlers: map[string]func(int) (int, string){
			"ExportToPackage":            fixed(200, foValue("x")),
			"GetExecutionSummaryStatus":  fixed(200, foValue("Failed")),
			"GetExecutionErrors":         fixed(200, errorList(3)),
			"GetExecutionSummaryPageUrl": fixed(200, foValue(page)),
		}, want: []string{"ended Failed with 3 errors", "record 5637144570, field CUSTGROUP: Customer group 'G0' does not exist", page},
			wantErrs: 3, wantCount: 3, wantFirst: "Customer group 'G0' does not exist"},
		{name: "failed with many errors: first 100 kept", handlers: map[string]func(int) (int, string){
			"ExportToPackage":            fixed(200, foValue("x")),
			"GetExecutionSummaryStatus":  fixed(200, foValue("Failed")),
			"GetExecutionErrors":         fixed(200, errorList(150)),
			"GetExecutionSummaryPageUrl": fixed(200, foValue(page)),
		}, want: []string{"with 150 errors", "(and 145 more)"}, wantErrs: 100, wantCount: 150, wantFirst: "Customer group 'G0' does not exist"},
		{name: "failed without details", handlers: map[string]func(int) (int, string){
			"ExportToPackage":            fixed(200, foValue("x")),
			"GetExecutionSummaryStatus":  fixed(200, foValue("Canceled")),
			"GetExecutionErrors":         fixed(200, foValue("[]")),
			"GetExecutionSummaryPageUrl": fixed(200, foValue(page)),
		}, want: []string{"ended Canceled", "F&O gave no error details", "execution summary: " + page}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				f := newFOFake(t, tt.handlers)
				exp := foExport(f, t.TempDir())
				var logs bytes.Buffer
				var mu sync.Mutex
				r := &Runner{Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))}
				rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"})
				switch {
				case err == nil || rec == nil:
					t.Fatalf("Run = %+v, %v; want a record and an error", rec, err)
				case tt.waiting && (rec.State.Final() || rec.Waiting != WaitingForExecution):
					t.Fatalf("Run = %+v; want it left waiting for the execution", rec)
				case !tt.waiting && rec.State != runs.StateFailed:
					t.Fatalf("Run = %+v, %v; want a failed record", rec, err)
				}
				stored, rerr := Records(context.Background(), exp, 1)
				if rerr != nil || len(stored) != 1 {
					t.Fatalf("Records: %v, %d records", rerr, len(stored))
				}
				mu.Lock()
				logged := logs.String()
				mu.Unlock()
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
					if !strings.Contains(stored[0].Error, w) {
						t.Errorf("stored record error %q lacks %q", stored[0].Error, w)
					}
					// slog's text handler quotes values: compare unquoted.
					if !strings.Contains(strings.ReplaceAll(logged, `\"`, `"`), w) {
						t.Errorf("log lacks %q:\n%s", w, logged)
					}
				}
				if got := stored[0]; len(got.ExecutionErrors) != tt.wantErrs || got.ExecutionErrorCount != tt.wantCount {
					t.Errorf("record keeps %d execution errors of %d, want %d of %d", len(got.ExecutionErrors), got.ExecutionErrorCount, tt.wantErrs, tt.wantCount)
				} else if tt.wantErrs > 0 && (got.ExecutionErrors[0].Message != tt.wantFirst || got.ExecutionErrors[0].Field != "CUSTGROUP" || got.ExecutionErrors[0].RecordID != "5637144570") {
					t.Errorf("first execution error %+v, want record 5637144570, field CUSTGROUP, %q", got.ExecutionErrors[0], tt.wantFirst)
				}
				if strings.Contains(err.Error(), "An error has occurred") {
					t.Errorf("error %q shows F&O's generic message", err)
				}
			})
		})
	}
}

// lockedWriter serializes writes to a buffer shared with the test.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestResumeWaitsForRegistration: a run cut off after choosing its
// execution ID is resumed; F&O answers "not found" for a while. The export
// started before is polled, never posted again; one F&O never registers is
// posted once, after the whole window.
func TestResumeWaitsForRegistration(t *testing.T) {
	tests := []struct {
		name      string
		notFound  int // status asks answered 400 "not found" (then Failed)
		wantPosts int
		minWait   time.Duration
	}{
		{name: "registered after a few asks", notFound: 5, wantPosts: 0},
		{name: "never registered", notFound: 1 << 30, wantPosts: 1, minWait: 200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				f := newFOFake(t, map[string]func(int) (int, string){
					"ExportToPackage": fixed(400, foError("Data project 'G' does not exist")),
					"GetExecutionSummaryStatus": func(n int) (int, string) {
						if n <= tt.notFound {
							return 400, foError("Execution details were not found for execution id G-1")
						}
						return 200, foValue("Failed")
					},
					"GetExecutionErrors":         fixed(200, foValue("[]")),
					"GetExecutionSummaryPageUrl": fixed(200, foValue("")),
				})
				exp := foExport(f, t.TempDir())
				ctx := context.Background()
				st, err := openStore(context.Background(), exp.Store, nil)
				if err != nil {
					t.Fatal(err)
				}
				rec := &runs.Record{Job: exp.Name, RunID: "20261125T100000Z-bbbbbbbb", State: runs.StateExporting, StartedAt: time.Now().UTC(),
					DefinitionGroup: "G", LegalEntity: "USMF", ExecutionID: "G-1", Durations: map[string]string{}}
				if err := saveRecord(ctx, st, "", rec); err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				got, err := (&Runner{}).Resume(ctx, exp, rec)
				if err == nil || got == nil || got.State != runs.StateFailed {
					t.Fatalf("Resume = %+v, %v; want a failed run", got, err)
				}
				if n := f.count("ExportToPackage"); n != tt.wantPosts {
					t.Errorf("%d ExportToPackage calls, want %d", n, tt.wantPosts)
				}
				if d := time.Since(start); d < tt.minWait {
					t.Errorf("resume decided after %s, want at least the window %s", d, tt.minWait)
				}
				wantText := "ended Failed"
				if tt.wantPosts > 0 {
					wantText = "Data project 'G' does not exist"
				}
				if !strings.Contains(got.Error, wantText) {
					t.Errorf("record error %q lacks %q", got.Error, wantText)
				}
			})
		})
	}
}
