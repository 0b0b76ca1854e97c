package jobs

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/cause"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
)

// TestRunOutcomes drives whole runs through the simulator's final statuses
// and faults and checks the run's end, its error, and that F&O saw exactly
// one export.
func TestRunOutcomes(t *testing.T) {
	tests := []struct {
		name          string
		opts          dmftest.Options
		partial       string
		wantState     runs.State
		wantEntities  int
		wantErr       []string // substrings of the run error
		wantWarning   string
		wantDownloads int
		wantMetrics   []string
	}{
		{"succeeded", dmftest.Options{}, "fail", runs.StateSucceeded, 2, nil, "", 1, nil},
		{"failed with F&O errors and summary link", dmftest.Options{FinalStatus: map[string]string{"G": "Failed"}}, "fail", runs.StateFailed, 0,
			[]string{"ended Failed", "simulated failure", "execution summary: http"}, "", 0, nil},
		{"canceled", dmftest.Options{FinalStatus: map[string]string{"G": "Canceled"}}, "fail", runs.StateFailed, 0, []string{"ended Canceled"}, "", 0, nil},
		{"partial fails by default", dmftest.Options{FinalStatus: map[string]string{"G": "PartiallySucceeded"}}, "fail", runs.StateFailed, 0,
			[]string{"ended PartiallySucceeded", "partial is fail (set partial: publish to publish what F&O did export): F&O execution"}, "", 0, nil},
		{"partial publishes when asked", dmftest.Options{FinalStatus: map[string]string{"G": "PartiallySucceeded"}}, "publish", runs.StateSucceeded, 1,
			nil, "ended PartiallySucceeded", 1, nil},
		{"expired URL gets one fresh URL", dmftest.Options{Faults: dmftest.Faults{ExpiredURLs: 1}}, "fail", runs.StateSucceeded, 2, nil, "", 1, nil},
		{"throttled and 503 then fine", dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{
			{Action: "GetExecutionSummaryStatus", First: 2, Status: 429, RetryAfter: 1},
			{Action: "ExportToPackage", First: 1, Status: 503},
		}}}, "fail", runs.StateSucceeded, 2, nil, "", 1, []string{
			`dmfexport_fo_retries_total{action="GetExecutionSummaryStatus",export="files",reason="HTTP 429"} 2`,
			`dmfexport_fo_retries_total{action="ExportToPackage",export="files",reason="HTTP 503"} 1`,
			`dmfexport_runs_total{export="files",state="succeeded"} 1`,
		}},
		{"package not yet downloadable, asked again", dmftest.Options{PackageDelay: 1200 * time.Millisecond}, "fail", runs.StateSucceeded, 2, nil, "", 1, nil},
		{"package cut short once, downloaded again", dmftest.Options{Faults: dmftest.Faults{ContentLengthDelta: -200, DownloadFaultsFirst: 1}}, "fail", runs.StateSucceeded, 2, nil, "", 2, nil},
		// F&O exported: what stops the package leaves the run waiting to
		// fetch it again, never failed (its next run would export again).
		{"package cut short every time waits after three downloads", dmftest.Options{Faults: dmftest.Faults{ContentLengthDelta: -200}}, "fail", runs.StateDownloading, 0,
			[]string{"waiting for the exported package to be fetched again", "download package of execution", "not a valid zip package (truncated download", "without exporting again"}, "", 1 + maxBadPackages, nil},
		{"corrupt package waits, named", dmftest.Options{Faults: dmftest.Faults{CorruptZip: true}}, "fail", runs.StateUnpacking, 0,
			[]string{"waiting for the exported package to be fetched again", "unpack package"}, "", 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				o := tt.opts
				o.Projects = map[string][]dmftest.Entity{"G": {csvEntity("A", 30), csvEntity("B", 5)}}
				o.ExecutionTime = 50 * time.Millisecond
				sim := newSim(o)
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
				metrics.Handler().ServeHTTP(rr, httptest.NewRequestWithContext(context.Background(), "GET", "/metrics", nil))
				for _, series := range tt.wantMetrics {
					if !strings.Contains(rr.Body.String(), series) {
						t.Errorf("/metrics lacks %s", series)
					}
				}
				if strings.Contains(rec.PackageURL+rec.Error, "sig=") && !strings.Contains(rec.PackageURL+rec.Error, "REDACTED") {
					t.Errorf("record holds a SAS signature: %s %s", rec.PackageURL, rec.Error)
				}
			})
		})
	}
}

// TestPackageNeverDownloadable: a package URL whose package keeps answering
// 404 is asked for again until poll.package_url_timeout, then the run is
// left waiting to fetch it again, with an error that says so: F&O keeps
// packages for days.
func TestPackageNeverDownloadable(t *testing.T) {
	bubble(t, func(t *testing.T) {
		sim := newSim(dmftest.Options{
			Projects:      map[string][]dmftest.Entity{"G": {csvEntity("A", 3)}},
			ExecutionTime: 50 * time.Millisecond,
			PackageDelay:  time.Hour,
		})
		defer sim.Close()
		exp := fileExport(sim, t.TempDir())
		exp.Poll.PackageURLTimeout = 1500 * time.Millisecond
		start := time.Now()
		rec, err := (&Runner{}).Run(context.Background(), exp, RunOptions{Trigger: "manual"})
		if err == nil || rec == nil || rec.State.Final() || rec.Waiting != WaitingForPackage {
			t.Fatalf("Run = %+v, %v; want a run waiting to fetch its package again", rec, err)
		}
		for _, want := range []string{"HTTP 404", "package blob not found", "poll.package_url_timeout", "waiting for the exported package to be fetched again"} {
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
	})
}

// TestExportedPackageFetchedAgain: a run whose package F&O exported but
// could not be fetched is left waiting; taken up again, it fetches the same
// execution's package (F&O sees one export) and delivers every row once.
func TestExportedPackageFetchedAgain(t *testing.T) {
	bubble(t, func(t *testing.T) {
		incremental := csvEntity("Headers", 30)
		incremental.RefreshType = dmftest.IncrementalPush
		sim := newSim(dmftest.Options{
			Projects:      map[string][]dmftest.Entity{"G": {incremental, csvEntity("B", 5)}},
			ExecutionTime: 50 * time.Millisecond,
			// Every download of the first attempt is cut short.
			Faults: dmftest.Faults{ContentLengthDelta: -200, DownloadFaultsFirst: 1 + maxBadPackages},
		})
		defer sim.Close()
		dir := t.TempDir()
		exp := fileExport(sim, dir)
		r := &Runner{}
		rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"})
		if err == nil || !errors.Is(err, ErrWaiting) || rec == nil || rec.Waiting != WaitingForPackage || rec.State.Final() {
			t.Fatalf("first attempt = %+v, %v; want a run waiting to fetch the package again", rec, err)
		}
		recs, err := r.Unfinished(context.Background(), exp)
		if err != nil || len(recs) != 1 {
			t.Fatalf("Unfinished = %v, %v; want the waiting run", recs, err)
		}
		rec, err = r.Resume(context.Background(), exp, recs[0])
		if err != nil || rec.State != runs.StateSucceeded {
			t.Fatalf("resume = %s, %v; want succeeded", rec.State, err)
		}
		if n := sim.Exports(); n != 1 {
			t.Errorf("F&O saw %d exports, want 1: the run must fetch the same execution's package", n)
		}
		wantEachBatchOnce(t, filepath.Join(dir, "batches", publish.FileName("fo.files")), map[string]int{"Headers": 30, "B": 5})
	})
}

// TestExportedPackageGone: a waiting run whose execution F&O no longer
// knows (it purges executions and packages after about 7 days) ends
// failed, saying the export must be repeated and naming the IncrementalPush
// entities whose changes are lost; the metric counts it.
func TestExportedPackageGone(t *testing.T) {
	bubble(t, func(t *testing.T) {
		incremental := csvEntity("Headers", 3)
		incremental.RefreshType = dmftest.IncrementalPush
		project := map[string][]dmftest.Entity{"G": {incremental, csvEntity("B", 2)}}
		sim := newSim(dmftest.Options{Projects: project, ExecutionTime: 50 * time.Millisecond})
		dir := t.TempDir()
		exp := fileExport(sim, dir)
		metrics := NewMetrics()
		r := &Runner{Metrics: metrics}
		// A run that published: the record lists the IncrementalPush entity.
		if rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"}); err != nil || rec.State != runs.StateSucceeded {
			t.Fatalf("first run = %v, %v", rec, err)
		}
		sim.Close()
		// The next run's package cannot be fetched; then F&O forgets it all.
		sim = newSim(dmftest.Options{Projects: project, ExecutionTime: 50 * time.Millisecond, PackageDelay: time.Hour})
		sim2 := newSim(dmftest.Options{Projects: project, ExecutionTime: 50 * time.Millisecond})
		defer sim2.Close()
		exp = fileExport(sim, dir)
		exp.Poll.PackageURLTimeout = 300 * time.Millisecond
		rec, err := r.Run(context.Background(), exp, RunOptions{Trigger: "manual"})
		sim.Close()
		if err == nil || rec.Waiting != WaitingForPackage {
			t.Fatalf("second run = %+v, %v; want it waiting to fetch its package", rec, err)
		}
		exp = fileExport(sim2, dir)
		exp.Poll.RegisterTimeout = 500 * time.Millisecond
		rec, err = r.Resume(context.Background(), exp, rec)
		if err == nil || rec.State != runs.StateFailed {
			t.Fatalf("resume = %s, %v; want failed: the package is gone", rec.State, err)
		}
		for _, want := range []string{"is gone from F&O", "the export must be repeated", "IncrementalPush entities Headers are lost downstream", "FullPush"} {
			if !strings.Contains(rec.Error, want) {
				t.Errorf("run error %q lacks %q", rec.Error, want)
			}
		}
		if n := sim2.Exports(); n != 0 {
			t.Errorf("F&O saw %d exports when the package was gone; the run must end, and the next run export", n)
		}
		rr := httptest.NewRecorder()
		metrics.Handler().ServeHTTP(rr, httptest.NewRequestWithContext(context.Background(), "GET", "/metrics", nil))
		if want := `dmfexport_packages_lost_total{export="files"} 1`; !strings.Contains(rr.Body.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	})
}

// TestRunCauseRecorded: a run's record keeps, beside its error, the cause
// the step that met it named — F&O's verdict without the execution ID and
// the summary link, F&O's refusal, the setting that made F&O's answer fail
// the run — and a run that has no record (its store cannot be opened)
// returns an error carrying the store's cause.
func TestRunCauseRecorded(t *testing.T) {
	tests := []struct {
		name      string
		opts      dmftest.Options
		wantCause string // the record's cause starts so
	}{
		{"F&O failed", dmftest.Options{FinalStatus: map[string]string{"G": "Failed"}}, "F&O execution ended Failed with 2 errors: "},
		{"partial is fail", dmftest.Options{FinalStatus: map[string]string{"G": "PartiallySucceeded"}},
			"partial is fail (set partial: publish to publish what F&O did export): F&O execution ended PartiallySucceeded"},
		{"F&O refuses the export", dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: "ExportToPackage", First: 1, Status: 400}}}},
			"F&O ExportToPackage: HTTP 400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bubble(t, func(t *testing.T) {
				o := tt.opts
				o.Projects = map[string][]dmftest.Entity{"G": {csvEntity("A", 3)}}
				o.ExecutionTime = 50 * time.Millisecond
				sim := newSim(o)
				defer sim.Close()
				exp := fileExport(sim, t.TempDir())
				exp.Partial = "fail"
				rec, err := (&Runner{}).Run(context.Background(), exp, RunOptions{Trigger: "manual"})
				if err == nil || rec == nil || rec.State != runs.StateFailed {
					t.Fatalf("want a failed run, got %+v (%v)", rec, err)
				}
				if !strings.HasPrefix(rec.Cause, tt.wantCause) || !strings.Contains(rec.Error, rec.Cause[len(tt.wantCause):]) {
					t.Errorf("record cause %q, want it to start with %q and to be part of the error %q", rec.Cause, tt.wantCause, rec.Error)
				}
				for _, bad := range []string{"execution summary", rec.ExecutionID} {
					if bad != "" && strings.Contains(rec.Cause, bad) {
						t.Errorf("record cause %q holds %q", rec.Cause, bad)
					}
				}
			})
		})
	}
	t.Run("store is a file", func(t *testing.T) {
		dir := t.TempDir()
		sim := newSim(quick(dmftest.Options{Projects: map[string][]dmftest.Entity{"G": {csvEntity("A", 3)}}}))
		defer sim.Close()
		exp := fileExport(sim, dir)
		if err := os.WriteFile(exp.Store.Path, []byte("not a directory\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		rec, err := (&Runner{}).Run(context.Background(), exp, RunOptions{Trigger: "manual"})
		if got := cause.Of(err); rec != nil || !strings.HasPrefix(got, "open directory store "+exp.Store.Path+": ") || !strings.HasSuffix(got, "not a directory") {
			t.Errorf("Run on a file as store: record %v, cause %q of %v; want no record and the store's failure", rec, got, err)
		}
	})
}
