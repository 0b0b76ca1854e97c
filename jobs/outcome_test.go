package jobs

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

// TestRunOutcomes drives whole runs through the simulator's final statuses
// and faults and checks the run's end, its error, and that F&O saw exactly
// one export.
func TestRunOutcomes(t *testing.T) {
	tests := []struct {
		name          string
		opts          dmftest.Options
		partial       string
		wantState     State
		wantEntities  int
		wantErr       []string // substrings of the run error
		wantWarning   string
		wantDownloads int
		wantMetrics   []string
	}{
		{"succeeded", dmftest.Options{}, "fail", StateSucceeded, 2, nil, "", 1, nil},
		{"failed with F&O errors and summary link", dmftest.Options{FinalStatus: map[string]string{"G": "Failed"}}, "fail", StateFailed, 0,
			[]string{"ended Failed", "simulated failure", "execution summary: http"}, "", 0, nil},
		{"canceled", dmftest.Options{FinalStatus: map[string]string{"G": "Canceled"}}, "fail", StateFailed, 0, []string{"ended Canceled"}, "", 0, nil},
		{"partial fails by default", dmftest.Options{FinalStatus: map[string]string{"G": "PartiallySucceeded"}}, "fail", StateFailed, 0,
			[]string{"ended PartiallySucceeded"}, "", 0, nil},
		{"partial publishes when asked", dmftest.Options{FinalStatus: map[string]string{"G": "PartiallySucceeded"}}, "publish", StateSucceeded, 1,
			nil, "ended PartiallySucceeded", 1, nil},
		{"expired URL gets one fresh URL", dmftest.Options{Faults: dmftest.Faults{ExpiredURLs: 1}}, "fail", StateSucceeded, 2, nil, "", 1, nil},
		{"throttled and 503 then fine", dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{
			{Action: "GetExecutionSummaryStatus", First: 2, Status: 429, RetryAfter: 1},
			{Action: "ExportToPackage", First: 1, Status: 503},
		}}}, "fail", StateSucceeded, 2, nil, "", 1, []string{
			`dmfexport_fo_retries_total{action="GetExecutionSummaryStatus",export="files",reason="HTTP 429"} 2`,
			`dmfexport_fo_retries_total{action="ExportToPackage",export="files",reason="HTTP 503"} 1`,
			`dmfexport_runs_total{export="files",state="succeeded"} 1`,
		}},
		{"package not yet downloadable, asked again", dmftest.Options{PackageDelay: 1200 * time.Millisecond}, "fail", StateSucceeded, 2, nil, "", 1, nil},
		{"package cut short once, downloaded again", dmftest.Options{Faults: dmftest.Faults{ContentLengthDelta: -200, DownloadFaultsFirst: 1}}, "fail", StateSucceeded, 2, nil, "", 2, nil},
		{"package cut short every time fails after three downloads", dmftest.Options{Faults: dmftest.Faults{ContentLengthDelta: -200}}, "fail", StateFailed, 0,
			[]string{"download package of execution", "not a valid zip package (truncated download"}, "", 1 + maxBadPackages, nil},
		{"corrupt package fails clearly", dmftest.Options{Faults: dmftest.Faults{CorruptZip: true}}, "fail", StateFailed, 0, []string{"unpack package"}, "", 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			o.Projects = map[string][]dmftest.Entity{"G": {csvEntity("A", 30), csvEntity("B", 5)}}
			o.ExecutionTime = 50 * time.Millisecond
			sim := dmftest.NewServer(o)
			defer sim.Close()
			exp := fileExport(sim, t.TempDir())
			exp.Partial = tt.partial
			exp.FO.RetryBaseDelay, exp.FO.RetryMaxDelay = 10*time.Millisecond, 50*time.Millisecond
			metrics := NewMetrics()
			rec, err := (&Runner{Metrics: metrics}).Run(context.Background(), exp, RunOptions{Trigger: "manual"})
			if rec == nil {
				t.Fatalf("no record: %v", err)
			}
			if rec.State != tt.wantState {
				t.Errorf("state %s, want %s (error %v)", rec.State, tt.wantState, err)
			}
			if (err != nil) != (len(tt.wantErr) > 0) {
				t.Errorf("error %v, want one containing %q", err, tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) || !strings.Contains(rec.Error, w) {
					t.Errorf("error %v (record %q) lacks %q", err, rec.Error, w)
				}
			}
			if tt.wantWarning != "" && (len(rec.Warnings) != 1 || !strings.Contains(rec.Warnings[0], tt.wantWarning)) {
				t.Errorf("warnings %q, want one containing %q", rec.Warnings, tt.wantWarning)
			}
			if len(rec.Entities) != tt.wantEntities {
				t.Errorf("%d entities published, want %d", len(rec.Entities), tt.wantEntities)
			}
			if n := sim.Exports(); n != 1 {
				t.Errorf("F&O saw %d exports, want exactly 1", n)
			}
			if n := sim.Downloads(); n != tt.wantDownloads {
				t.Errorf("%d package downloads, want %d", n, tt.wantDownloads)
			}
			rr := httptest.NewRecorder()
			metrics.Handler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
			for _, series := range tt.wantMetrics {
				if !strings.Contains(rr.Body.String(), series) {
					t.Errorf("/metrics lacks %s", series)
				}
			}
			if strings.Contains(rec.PackageURL+rec.Error, "sig=") && !strings.Contains(rec.PackageURL+rec.Error, "REDACTED") {
				t.Errorf("record holds a SAS signature: %s %s", rec.PackageURL, rec.Error)
			}
		})
	}
}

// TestPackageNeverDownloadable: a package URL whose package keeps answering
// 404 (F&O deleted it, or never wrote it) is asked for again until
// poll.package_url_timeout, then the run fails with an error that says so.
func TestPackageNeverDownloadable(t *testing.T) {
	sim := dmftest.NewServer(dmftest.Options{
		Projects:      map[string][]dmftest.Entity{"G": {csvEntity("A", 3)}},
		ExecutionTime: 50 * time.Millisecond,
		PackageDelay:  time.Hour,
	})
	defer sim.Close()
	exp := fileExport(sim, t.TempDir())
	exp.Poll.PackageURLTimeout = 1500 * time.Millisecond
	start := time.Now()
	rec, err := (&Runner{}).Run(context.Background(), exp, RunOptions{Trigger: "manual"})
	if err == nil || rec == nil || rec.State != StateFailed {
		t.Fatalf("Run = %+v, %v; want a failed run", rec, err)
	}
	for _, want := range []string{"HTTP 404", "package blob not found", "poll.package_url_timeout", "dmfexport trigger --new files"} {
		if !strings.Contains(rec.Error, want) {
			t.Errorf("run error %q lacks %q", rec.Error, want)
		}
	}
	if d := time.Since(start); d < exp.Poll.PackageURLTimeout {
		t.Errorf("gave up after %s, before poll.package_url_timeout %s", d, exp.Poll.PackageURLTimeout)
	}
	if n := sim.Calls("download"); n < 2 {
		t.Errorf("%d download attempts, want the package asked for again", n)
	}
}
