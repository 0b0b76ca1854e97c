package dmf_test

import (
	"archive/zip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"encoding/json"
	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/dmf"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/redact"
	"github.com/dmfexport/dmfexport/internal/testenv"
	"github.com/dmfexport/dmfexport/unpack"
)

// Action names as the simulator counts them.
const (
	aExport   = "ExportToPackage"
	aStatus   = "GetExecutionSummaryStatus"
	aURL      = "GetExportedPackageUrl"
	aErrors   = "GetExecutionErrors"
	aSummary  = "GetExecutionSummaryPageUrl"
	aDownload = "download"
)

// logSink is the client's log, read by the test while the client writes.
type logSink struct{ testenv.SyncBuffer }

// retries counts the retry log lines.
func (s *logSink) retries() int { return strings.Count(s.String(), "F&O call failed, retrying") }

// entities is a small two-entity project.
func entities() []dmftest.Entity {
	return []dmftest.Entity{
		{Name: "Customers V3", Data: []byte("CUSTOMERACCOUNT,NAME\r\nC1,Contoso\r\nC2,Fabrikam\r\n")},
		{Name: "Vendors V2", Data: []byte("VENDORACCOUNT,NAME\r\nV1,Litware\r\n")},
	}
}

// simRegisterDelay is the simulator's register window in simClient.
const simRegisterDelay = 100 * time.Millisecond

// simClient starts a simulator with opts (group "G" unless opts has
// projects) and returns it with a client whose retry delays are tiny.
func simClient(t *testing.T, opts dmftest.Options, co dmf.ClientOptions) (*dmftest.Server, *dmf.Client, *logSink) {
	t.Helper()
	if opts.Projects == nil {
		opts.Projects = map[string][]dmftest.Entity{"G": entities()}
	}
	if opts.ExecutionTime == 0 {
		opts.ExecutionTime = 30 * time.Millisecond
	}
	if opts.RegisterDelay == 0 {
		// F&O's "not registered yet" window, short: every export still
		// meets it, without a second of real time per test case.
		opts.RegisterDelay = simRegisterDelay
	}
	sim := dmftest.NewServer(opts)
	t.Cleanup(sim.Close)
	logs := &logSink{}
	co.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if co.RetryBaseDelay == 0 {
		co.RetryBaseDelay = 2 * time.Millisecond
	}
	if co.RetryMaxDelay == 0 {
		co.RetryMaxDelay = 10 * time.Millisecond
	}
	if co.PackageURLDelay == 0 {
		co.PackageURLDelay = 2 * time.Millisecond
	}
	if co.MaxThrottleWait == 0 {
		co.MaxThrottleWait = 20 * time.Millisecond
	}
	if co.RegisterTimeout == 0 {
		co.RegisterTimeout = 10 * simRegisterDelay // well above the simulator's window
	}
	if co.RegisterInterval == 0 {
		co.RegisterInterval = 5 * time.Millisecond
	}
	c, err := dmf.NewClient(sim.URL, azauth.StaticToken(dmftest.DefaultToken), &co)
	if err != nil {
		t.Fatalf("NewClient(%s): %v", sim.URL, err)
	}
	return sim, c, logs
}

var fastPoll = dmf.PollOptions{Interval: 5 * time.Millisecond, MaxInterval: 20 * time.Millisecond, Deadline: 5 * time.Second}

// exportAndPoll starts an export of group with a chosen execution ID and
// polls it to the end.
func exportAndPoll(ctx context.Context, c *dmf.Client, group string, poll dmf.PollOptions) (string, dmf.Status, error) {
	id, err := c.ExportToPackage(ctx, dmf.ExportRequest{DefinitionGroupID: group, PackageName: group, ExecutionID: group + "-run-1", LegalEntityID: "USMF"})
	if err != nil {
		return "", "", err
	}
	st, err := c.PollStatus(ctx, id, poll)
	return id, st, err
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestStatusValuesAgainstSimulator drives the real client through every
// status value the simulator can end in.
func TestStatusValuesAgainstSimulator(t *testing.T) {
	tests := []struct {
		name       string
		final      string // FinalStatus of group G; "" leaves the default
		poll       dmf.PollOptions
		wantStatus dmf.Status
		wantErr    error // wrapped error PollStatus must return, nil for none
		wantErrs   []string
		wantURL    bool // a package URL is handed out
	}{
		{name: "Succeeded", wantStatus: dmf.StatusSucceeded, wantErrs: []string{}, wantURL: true},
		{name: "PartiallySucceeded", final: "PartiallySucceeded", wantStatus: dmf.StatusPartiallySucceeded,
			wantErrs: []string{"record 5637144576: Entity 'Vendors V2': simulated failure in the export step",
				`record 5637144577, field DATAAREAID: Value "usmf" of field DATAAREAID in entity 'Vendors V2' is not valid (simulated)`}, wantURL: true},
		{name: "Failed", final: "Failed", wantStatus: dmf.StatusFailed,
			wantErrs: []string{"record 5637144576: Entity 'Customers V3': simulated failure in the export step",
				`record 5637144577, field DATAAREAID: Value "usmf" of field DATAAREAID in entity 'Customers V3' is not valid (simulated)`}},
		{name: "Canceled", final: "Canceled", wantStatus: dmf.StatusCanceled, wantErrs: []string{}},
		{name: "unexpected name", final: "Archived", wantStatus: "Archived", wantErr: dmf.ErrUnexpectedStatus, wantErrs: []string{}},
		{name: "NotRun and Executing until the deadline", final: "Executing", wantStatus: dmf.StatusExecuting,
			// Past the simulator's 1 s "not registered yet" window.
			poll:    dmf.PollOptions{Interval: 5 * time.Millisecond, MaxInterval: 10 * time.Millisecond, Deadline: 1500 * time.Millisecond},
			wantErr: dmf.ErrDeadline, wantErrs: []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Long enough that the first ask sees the execution still running.
			opts := dmftest.Options{ExecutionTime: 300 * time.Millisecond}
			if tt.final != "" {
				opts.FinalStatus = map[string]string{"G": tt.final}
			}
			sim, c, _ := simClient(t, opts, dmf.ClientOptions{})
			ctx := ctxT(t)
			poll := tt.poll
			if poll.Interval == 0 {
				poll = fastPoll
			}
			var seen []dmf.Status
			poll.OnStatus = func(s dmf.Status, _ time.Duration) { seen = append(seen, s) }
			id, st, err := exportAndPoll(ctx, c, "G", poll)
			if st != tt.wantStatus {
				t.Errorf("status: want %s, got %s (err %v)", tt.wantStatus, st, err)
			}
			switch {
			case tt.wantErr == nil && err != nil:
				t.Errorf("PollStatus: want no error, got %v", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("PollStatus: want error wrapping %v, got %v", tt.wantErr, err)
			}
			if n := sim.Exports(); n != 1 {
				t.Errorf("exports started: want 1, got %d", n)
			}
			if n := sim.Calls(aExport); n != 1 {
				t.Errorf("ExportToPackage calls: want 1, got %d", n)
			}
			if n := sim.Calls(aStatus); n != len(seen) || n < 2 {
				t.Errorf("status calls: want one per answer seen (%d) and at least 2 (running first), got %d", len(seen), n)
			}
			// F&O may not know the execution at first (Unknown); the first
			// state it reports must be a running one.
			if known := slices.DeleteFunc(slices.Clone(seen), func(s dmf.Status) bool { return s == dmf.StatusUnknown }); len(known) > 0 &&
				known[0] != dmf.StatusNotRun && known[0] != dmf.StatusExecuting {
				t.Errorf("first known status: want NotRun or Executing, got %s", known[0])
			}
			errs, err := c.ExecutionErrors(ctx, id)
			if err != nil {
				t.Fatalf("ExecutionErrors: %v", err)
			}
			if strings.Join(messages(errs), "|") != strings.Join(tt.wantErrs, "|") || errs == nil {
				t.Errorf("execution errors: want %q, got %q", tt.wantErrs, errs)
			}
			// F&O may answer the first ask after success with an empty URL.
			u, err := c.PackageURL(ctx, id)
			if err != nil {
				t.Fatalf("PackageURL: %v", err)
			}
			if u == "" && tt.wantURL {
				if u, err = c.PackageURL(ctx, id); err != nil {
					t.Fatalf("PackageURL: %v", err)
				}
			}
			if (u != "") != tt.wantURL {
				t.Errorf("package URL given: want %v, got %q", tt.wantURL, redact.URL(u))
			}
			page, err := c.SummaryPageURL(ctx, id)
			if err != nil || !strings.Contains(page, "DMFExecutionSummary") {
				t.Errorf("SummaryPageURL: want a DMFExecutionSummary link, got %q, %v", page, err)
			}
			rep := c.Report(ctx, id, st)
			if rep.Status != st || rep.ExecutionID != id || rep.SummaryURL != page {
				t.Errorf("Report: want status %s, id %s, summary %q; got %+v", st, id, page, rep)
			}
			if strings.Join(messages(rep.Errors), "|") != strings.Join(tt.wantErrs, "|") {
				t.Errorf("Report errors: want %q, got %q", tt.wantErrs, rep.Errors)
			}
		})
	}
}

// messages returns each execution error as shown, record and field first.
func messages(errs []dmf.ExecutionError) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.String()
	}
	return out
}

// TestUnknownExecution polls an execution ID F&O never saw: Unknown (or
// "not found") is waited through for the register window, then an error
// that names the action, the ID and what to check.
func TestUnknownExecution(t *testing.T) {
	const window = 80 * time.Millisecond
	sim, c, _ := simClient(t, dmftest.Options{}, dmf.ClientOptions{RegisterTimeout: window})
	start := time.Now()
	st, err := c.PollStatus(ctxT(t), "never-started", fastPoll)
	if st != dmf.StatusUnknown || !errors.Is(err, dmf.ErrNotRegistered) {
		t.Fatalf("want Unknown and an error wrapping ErrNotRegistered, got %s, %v", st, err)
	}
	for _, want := range []string{aStatus, `"never-started"`, "data project exists", "data management workspace"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if d := time.Since(start); d < window {
		t.Errorf("gave up after %s, want the whole window %s", d, window)
	}
	if n := sim.Calls(aStatus); n < 2 {
		t.Errorf("status calls: want several within the window, got %d", n)
	}
	if n := sim.Exports(); n != 0 {
		t.Errorf("exports: want 0, got %d", n)
	}
}

// TestAPIFaultsAgainstSimulator drives the client through each injected API
// fault and checks the outcome, the calls made and that no second export
// was ever started.
func TestAPIFaultsAgainstSimulator(t *testing.T) {
	tests := []struct {
		name       string
		opts       dmftest.Options
		co         dmf.ClientOptions
		emptyID    bool   // let F&O choose the execution ID
		wantErr    string // substring of the error, "" for success
		wantCalls  map[string]int
		minRetries int // retry log lines at least
		minElapsed time.Duration
	}{
		{
			name:       "429 burst on export, Retry-After seconds",
			opts:       dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aExport, First: 3, Status: 429, RetryAfter: time.Second}}}},
			wantCalls:  map[string]int{aExport: 4},
			minRetries: 3,
		},
		{
			name: "429 honoured: Retry-After 1 s is waited",
			opts: dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aStatus, First: 1, Status: 429, RetryAfter: time.Second}}}},
			co:   dmf.ClientOptions{MaxThrottleWait: 5 * time.Second},
			// The status call is retried once after the full second.
			minRetries: 1,
			minElapsed: 900 * time.Millisecond,
		},
		{
			name:       "429 with Retry-After as HTTP date",
			opts:       dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aStatus, First: 2, Status: 429, RetryAfter: time.Second, RetryAfterDate: true}}}},
			minRetries: 2,
		},
		{
			name:       "429 without Retry-After",
			opts:       dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{First: 2, Status: 429}}}},
			wantCalls:  map[string]int{aExport: 3},
			minRetries: 2,
		},
		{
			name:      "500 on the first export, not applied: status asked, posted again",
			opts:      dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aExport, First: 1, Status: 500}}}},
			wantCalls: map[string]int{aExport: 2},
		},
		{
			name:      "502 twice on export",
			opts:      dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aExport, First: 2, Status: 502}}}},
			wantCalls: map[string]int{aExport: 3},
		},
		{
			name:      "503 on export after it started (lost answer): recovered by ID",
			opts:      dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aExport, First: 1, Status: 503, Apply: true}}}},
			wantCalls: map[string]int{aExport: 1},
		},
		{
			name:      "504 on every export attempt after it started: one export",
			opts:      dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aExport, Status: 504, Apply: true}}}},
			wantCalls: map[string]int{aExport: 1},
		},
		{
			name:      "connection reset on export after it started",
			opts:      dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aExport, First: 1, Reset: true, Apply: true}}}},
			wantCalls: map[string]int{aExport: 1},
		},
		{
			name:      "connection reset on export before it started",
			opts:      dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aExport, First: 1, Reset: true}}}},
			wantCalls: map[string]int{aExport: 2},
		},
		{
			name:      "503 on export without a chosen ID is not retried",
			opts:      dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aExport, First: 1, Status: 503, Apply: true}}}},
			emptyID:   true,
			wantErr:   "was not retried",
			wantCalls: map[string]int{aExport: 1},
		},
		{
			name:       "5xx on every 3rd call of every action",
			opts:       dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Every: 3, Status: 503}}}},
			minRetries: 1,
		},
		{
			name:       "connection resets on every 2nd status ask",
			opts:       dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aStatus, Every: 2, Reset: true}}}},
			minRetries: 1,
		},
		{
			name:      "status keeps failing: retries exhausted",
			opts:      dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aStatus, Status: 503}}}},
			co:        dmf.ClientOptions{MaxRetries: 2},
			wantErr:   "gave up after 2 retries",
			wantCalls: map[string]int{aExport: 1, aStatus: 3},
		},
		{
			name:      "retries disabled",
			opts:      dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aStatus, First: 1, Status: 500}}}},
			co:        dmf.ClientOptions{MaxRetries: -1},
			wantErr:   "HTTP 500",
			wantCalls: map[string]int{aExport: 1, aStatus: 1},
		},
		{
			name:       "slow answer beyond the HTTP timeout is retried",
			opts:       dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aStatus, First: 1, Delay: 2 * time.Second}}}},
			co:         dmf.ClientOptions{HTTPClient: &http.Client{Timeout: 150 * time.Millisecond}},
			minRetries: 1,
		},
		{
			name:       "slow answers within the timeout",
			opts:       dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Delay: 20 * time.Millisecond}}}},
			minElapsed: 60 * time.Millisecond, // export, status ×n, URL
		},
		{
			name:      "slow execution",
			opts:      dmftest.Options{ExecutionTime: 400 * time.Millisecond},
			wantCalls: map[string]int{aExport: 1},
			// Polling backs off to 20 ms: at least 400/20/2 asks.
			minElapsed: 400 * time.Millisecond,
		},
		{
			name:      "stuck execution hits the deadline",
			opts:      dmftest.Options{Faults: dmftest.Faults{StuckExecution: true}},
			wantErr:   "did not finish before the deadline: still Executing",
			wantCalls: map[string]int{aExport: 1},
		},
		{
			name:      "empty package URL for the first asks",
			opts:      dmftest.Options{EmptyURLAsks: 2},
			wantCalls: map[string]int{aExport: 1, aURL: 3},
		},
		{
			name: "503 on the package URL ask",
			opts: dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aURL, First: 1, Status: 503}}}},
			// The 503, F&O's empty answer right after success, then the URL.
			wantCalls: map[string]int{aExport: 1, aURL: 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, c, logs := simClient(t, tt.opts, tt.co)
			ctx := ctxT(t)
			poll := fastPoll
			if tt.opts.Faults.StuckExecution {
				// Past the simulator's "not registered yet" window.
				poll.Deadline = 5 * simRegisterDelay
			}
			start := time.Now()
			err := func() error {
				req := dmf.ExportRequest{DefinitionGroupID: "G", ExecutionID: "G-run-1"}
				if tt.emptyID {
					req.ExecutionID = ""
				}
				id, err := c.ExportToPackage(ctx, req)
				if err != nil {
					return err
				}
				st, err := c.PollStatus(ctx, id, poll)
				if err != nil {
					return err
				}
				if st != dmf.StatusSucceeded {
					return errors.New("status " + string(st))
				}
				u, err := c.WaitPackageURL(ctx, id, 10*time.Second)
				if err != nil {
					return err
				}
				if _, err := fetchZip(ctx, u); err != nil {
					return err
				}
				return nil
			}()
			elapsed := time.Since(start)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("want success, got %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("want an error containing %q, got %v", tt.wantErr, err)
			}
			if n := sim.Exports(); n != 1 {
				t.Errorf("exports started: want exactly 1, got %d", n)
			}
			for action, want := range tt.wantCalls {
				if got := sim.Calls(action); got != want {
					t.Errorf("calls of %s: want %d, got %d", action, want, got)
				}
			}
			if got := logs.retries(); got < tt.minRetries {
				t.Errorf("retry log lines: want at least %d, got %d\n%s", tt.minRetries, got, logs)
			}
			if tt.minRetries > 0 && (!strings.Contains(logs.String(), "reason=") || !strings.Contains(logs.String(), "delay=")) {
				t.Errorf("retry log lines lack reason or delay:\n%s", logs)
			}
			if elapsed < tt.minElapsed {
				t.Errorf("elapsed: want at least %s, got %s", tt.minElapsed, elapsed)
			}
			if strings.Contains(logs.String(), dmftest.DefaultToken) || strings.Contains(logs.String(), "sig=") && !strings.Contains(logs.String(), "sig=REDACTED") {
				t.Errorf("logs leak the token or a signature:\n%s", logs)
			}
		})
	}
}

// fetchZip downloads a package with unpack.Download into a temporary file
// and reads every file of the zip.
func fetchZip(ctx context.Context, u string) (*zip.Reader, error) {
	f, err := os.CreateTemp("", "dmf-test-*.zip")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.Remove(f.Name()) }()
	defer func() { _ = f.Close() }()
	// Right after success the package can be not yet downloadable (404):
	// ask again for a while, as dmfexport does.
	var n int64
	testenv.Await(5*time.Second, func() bool {
		n, _, err = unpack.Download(ctx, nil, u, f)
		return !errors.Is(err, unpack.ErrPackageNotFound)
	})
	if err != nil {
		return nil, err
	}
	zr, err := zip.NewReader(f, n)
	if err != nil {
		return nil, fmt.Errorf("open zip: %w", err)
	}
	for _, zf := range zr.File {
		rc, err := zf.Open()
		if err != nil {
			return nil, fmt.Errorf("open %s in zip: %w", zf.Name, err)
		}
		_, err = io.Copy(io.Discard, rc)
		_ = rc.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s in zip: %w", zf.Name, err)
		}
	}
	return zr, nil
}

// TestDownloadFaultsAgainstSimulator exports through the client and
// downloads the package with unpack.Download under each download fault.
func TestDownloadFaultsAgainstSimulator(t *testing.T) {
	tests := []struct {
		name         string
		faults       dmftest.Faults
		wantErr      string // substring of the download or zip error, "" for none
		wantExpired  bool   // the first download is refused as expired
		minDownloads int    // requests to package URLs, at least
		maxDownloads int    // and at most
		wantURLAsks  int
		minElapsed   time.Duration
	}{
		{name: "no fault", minDownloads: 1, maxDownloads: 1, wantURLAsks: 1},
		{name: "expired URL, fresh one asked once", faults: dmftest.Faults{ExpiredURLs: 1}, wantExpired: true, minDownloads: 2, maxDownloads: 2, wantURLAsks: 2},
		{name: "corrupt zip", faults: dmftest.Faults{CorruptZip: true}, wantErr: "zip", minDownloads: 1, maxDownloads: 1, wantURLAsks: 1},
		{name: "Content-Length too small: body cut silently", faults: dmftest.Faults{ContentLengthDelta: -50}, wantErr: "zip", minDownloads: 1, maxDownloads: 1, wantURLAsks: 1},
		{name: "truncated once, resumed", faults: dmftest.Faults{TruncateAfter: 100, DownloadFaultsFirst: 1}, minDownloads: 2, maxDownloads: 2, wantURLAsks: 1},
		{name: "truncated every time, resumed piecewise", faults: dmftest.Faults{TruncateAfter: 400}, minDownloads: 2, maxDownloads: 50, wantURLAsks: 1},
		{name: "Content-Length too large once", faults: dmftest.Faults{ContentLengthDelta: 50, DownloadFaultsFirst: 1}, minDownloads: 2, maxDownloads: 5, wantURLAsks: 1},
		{name: "slow download", faults: dmftest.Faults{DownloadRate: 4000}, minDownloads: 1, maxDownloads: 1, wantURLAsks: 1, minElapsed: 200 * time.Millisecond},
		{name: "503 from storage twice", faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aDownload, First: 2, Status: 503, RetryAfter: time.Second}}}, minDownloads: 3, maxDownloads: 3, wantURLAsks: 1},
		{name: "reset by storage once", faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aDownload, First: 1, Reset: true}}}, minDownloads: 2, maxDownloads: 2, wantURLAsks: 1},
		{name: "slow storage answer", faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aDownload, Delay: 100 * time.Millisecond}}}, minDownloads: 1, maxDownloads: 1, wantURLAsks: 1, minElapsed: 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Downloads are counted per fault: the package is downloadable at
			// once (the not-yet-downloadable 404s are tested in jobs).
			sim, c, _ := simClient(t, dmftest.Options{Faults: tt.faults, PackageDelay: -1}, dmf.ClientOptions{})
			ctx := ctxT(t)
			id, st, err := exportAndPoll(ctx, c, "G", fastPoll)
			if err != nil || st != dmf.StatusSucceeded {
				t.Fatalf("export: want Succeeded, got %s, %v", st, err)
			}
			u, err := c.WaitPackageURL(ctx, id, 5*time.Second)
			if err != nil {
				t.Fatalf("WaitPackageURL: %v", err)
			}
			start := time.Now()
			_, err = fetchZip(ctx, u)
			if errors.Is(err, unpack.ErrURLExpired) {
				if !tt.wantExpired {
					t.Fatalf("download refused as expired, unexpected: %v", err)
				}
				if strings.Contains(err.Error(), "sig=") {
					t.Errorf("error shows the signature: %v", err)
				}
				// One fresh GetExportedPackageUrl, as the contract says.
				if u, err = c.PackageURL(ctx, id); err != nil {
					t.Fatalf("PackageURL after expiry: %v", err)
				}
				_, err = fetchZip(ctx, u)
			} else if tt.wantExpired {
				t.Fatalf("want the first download refused as expired, got %v", err)
			}
			elapsed := time.Since(start)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("download: want success, got %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("download: want an error containing %q, got %v", tt.wantErr, err)
			}
			if err != nil && strings.Contains(err.Error(), "sig=") {
				t.Errorf("error shows the signature: %v", err)
			}
			if n := sim.Calls(aDownload); n < tt.minDownloads || n > tt.maxDownloads {
				t.Errorf("download requests: want %d to %d, got %d", tt.minDownloads, tt.maxDownloads, n)
			}
			// Plus F&O's empty answer to the first ask right after success.
			if n := sim.Calls(aURL); n != tt.wantURLAsks+1 {
				t.Errorf("GetExportedPackageUrl calls: want %d, got %d", tt.wantURLAsks+1, n)
			}
			if n := sim.Exports(); n != 1 {
				t.Errorf("exports: want 1, got %d", n)
			}
			if elapsed < tt.minElapsed {
				t.Errorf("download took %s, want at least %s", elapsed, tt.minElapsed)
			}
		})
	}
}

// TestRefusedTokenNamesIdentity checks the 401/403 error names the identity
// and the application to register, from the options or the token.
func TestRefusedTokenNamesIdentity(t *testing.T) {
	tokenWithApp := jwtLike(map[string]string{"appid": "44444444-4444-4444-4444-444444444444", "tid": "55555555"})
	tests := []struct {
		name    string
		token   string
		co      dmf.ClientOptions
		want    []string
		notWant string
	}{
		{name: "from client options", token: "opaque-token", co: dmf.ClientOptions{Identity: "client_secret app A in tenant T", ApplicationID: "A"},
			want: []string{"token for client_secret app A in tenant T was refused", "check that application A is registered in F&O", "Microsoft Entra applications", "data management roles"}},
		{name: "from the token's claims", token: tokenWithApp,
			want: []string{"token for app 44444444-4444-4444-4444-444444444444 in tenant 55555555 was refused", "application 44444444-4444-4444-4444-444444444444 is registered"}},
		{name: "nothing known", token: "opaque-token",
			want: []string{"the token was refused: check that the application is registered in F&O"}},
		{name: "static token", token: tokenWithApp, co: dmf.ClientOptions{Identity: "static bearer token"},
			want: []string{"the static token was refused", "get a new one"}, notWant: "Microsoft Entra applications"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := dmftest.NewServer(dmftest.Options{Token: "the-only-good-token"})
			defer sim.Close()
			c, err := dmf.NewClient(sim.URL, azauth.StaticToken(tt.token), &tt.co)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.ExecutionStatus(context.Background(), "x")
			var apiErr *dmf.APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 {
				t.Fatalf("want an APIError with HTTP 401, got %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tt.notWant != "" && strings.Contains(err.Error(), tt.notWant) {
				t.Errorf("error %q holds %q, a hint that does not apply", err, tt.notWant)
			}
			if strings.Contains(err.Error(), tt.token) {
				t.Errorf("error shows the token: %v", err)
			}
			if n := sim.Calls(aStatus); n != 0 {
				t.Errorf("unauthorized calls counted: want 0, got %d", n)
			}
		})
	}
}

// jwtLike returns an unsigned JWT-shaped token carrying claims.
func jwtLike(claims map[string]string) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(b) + ".c2ln"
}

// TestPacerSharedRetryAfter runs two clients of one environment through one
// Pacer against the simulator's request budget: the 429 one of them gets
// holds back the other too, for the whole Retry-After, so the simulator
// refuses one call only, and both calls then succeed.
func TestPacerSharedRetryAfter(t *testing.T) {
	throttled := make(chan struct{}, 1)
	pacer := dmf.NewPacer(dmf.PacerOptions{RequestsPerMinute: 6000, OnThrottled: func() {
		select {
		case throttled <- struct{}{}:
		default:
		}
	}})
	co := dmf.ClientOptions{Pacer: pacer, MaxThrottleWait: 5 * time.Second}
	sim, a, _ := simClient(t, dmftest.Options{RequestBudget: 2, BudgetWindow: 1500 * time.Millisecond}, co)
	co.Logger = slog.New(slog.DiscardHandler)
	b, err := dmf.NewClient(sim.URL, azauth.StaticToken(dmftest.DefaultToken), &co)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 2 {
		if _, err := a.ExecutionStatus(ctx, "x"); err != nil {
			t.Fatalf("call %d within the budget: %v", i+1, err)
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := a.ExecutionStatus(ctx, "x"); err != nil {
			t.Errorf("client a after the 429: %v", err)
		}
	})
	<-throttled
	if _, err := b.ExecutionStatus(ctx, "x"); err != nil {
		t.Errorf("client b: %v", err)
	}
	waited := time.Since(start)
	wg.Wait()
	if n := sim.ThrottledCalls(""); n != 1 {
		t.Errorf("want 1 call refused (client b held back by a's Retry-After), got %d", n)
	}
	if waited < time.Second {
		t.Errorf("want client b to wait out the Retry-After (2 s), it went after %s", waited)
	}
	if got := pacer.RequestsPerMinute(); got != 3000 {
		t.Errorf("want the pace halved to 3000/min after the 429, got %v", got)
	}
}

// TestPacerPollsOnTicks checks that a client with a Pacer polls on the
// environment's ticker: a poll interval shorter than the tick still asks
// once per tick.
func TestPacerPollsOnTicks(t *testing.T) {
	pacer := dmf.NewPacer(dmf.PacerOptions{PollTick: 200 * time.Millisecond})
	sim, c, _ := simClient(t, dmftest.Options{RegisterDelay: -1, ExecutionTime: time.Second}, dmf.ClientOptions{Pacer: pacer})
	start := time.Now()
	_, st, err := exportAndPoll(context.Background(), c, "G", dmf.PollOptions{Interval: time.Millisecond, MaxInterval: time.Millisecond, Deadline: 10 * time.Second})
	if err != nil || st != dmf.StatusSucceeded {
		t.Fatalf("want Succeeded, got %s, %v", st, err)
	}
	took := time.Since(start)
	// One ask per 200 ms tick over about a second, not one per millisecond.
	if n := sim.Calls(aStatus); n > int(took/(200*time.Millisecond))+2 {
		t.Errorf("want about one status ask per tick in %s, got %d", took, n)
	}
}
