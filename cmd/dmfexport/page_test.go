package main

import (
	"bytes"
	"encoding/json"
	"html"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/runs"
	"github.com/dmfexport/dmfexport/statuspage"
	"github.com/dmfexport/dmfexport/store"
)

// TestStatusPageHandler renders the page over run records in each state a
// person looks for: what it shows is what status tells of the same
// records, with the live progress of the run going on in this process, and
// every text from a record is escaped.
func TestStatusPageHandler(t *testing.T) {
	t.Setenv("DMFSIM_URL", "https://fo.example.com")
	t.Setenv("FO_TOKEN", "t")
	now := time.Date(2026, 12, 7, 16, 30, 0, 0, time.UTC)
	started := now.Add(-10 * time.Minute)
	runID := func(tag string) string { return started.Format("20060102T150405Z") + "-" + tag }
	execID := "DemoExport-2026-12-07_16-20-00-2f97df662298bdbe"
	next := now.Add(90 * time.Minute)
	nextText := "next " + next.Local().Format("2006-01-02 15:04:05 MST") + " (in 1h30m)"
	cases := []struct {
		name    string
		records []runs.Record
		lease   string       // run whose lease another live process holds
		events  []jobs.Event // of the run going on here
		want    []string     // in the page's text, as a person reads it
		notWant []string     // in the page's HTML as served
	}{
		{
			name: "no runs",
			want: []string{"demo", "0 * * * *", nextText, "No runs yet."},
		},
		{
			name: "running",
			records: []runs.Record{{Job: "demo", RunID: runID("00001ive"), State: runs.StatePublishing, StartedAt: started, ExecutionID: execID,
				Entities: []runs.EntityRecord{
					{Entity: "CustCustomerV3Entity", State: runs.StatePublishing, Rows: 100, Bytes: 4096},
					{Entity: "VendVendorV2Entity", State: runs.StatePending, Bytes: 1024},
				}}},
			events: []jobs.Event{
				{State: runs.StatePublishing, Detail: "publishing 2 entities"},
				{State: runs.StatePublishing, Entity: "CustCustomerV3Entity", Rows: 2500, Sent: 3000, Done: 2048, Total: 4096},
			},
			want: []string{"Run " + runID("00001ive") + ": publishing · started", "publishing 2 entities",
				"CustCustomerV3Entity 50% of 4.0 KiB 2,500", "VendVendorV2Entity pending 0", nextText},
			notWant: []string{"No runs yet", "another process"},
		},
		{
			name: "running in another process",
			records: []runs.Record{{Job: "demo", RunID: runID("0000e15e"), State: runs.StatePublishing, StartedAt: started, ExecutionID: execID,
				Entities: []runs.EntityRecord{{Entity: "CustCustomerV3Entity", State: runs.StatePublishing, Rows: 700}}}},
			lease: runID("0000e15e"),
			want:  []string{"Run " + runID("0000e15e") + ": publishing · started", "in another process; progress as of its last checkpoint", "CustCustomerV3Entity publishing 700"},
		},
		{
			name: "succeeded",
			records: []runs.Record{{Job: "demo", RunID: runID("0000900d"), State: runs.StateSucceeded, StartedAt: started, FinishedAt: started.Add(83 * time.Second),
				ExecutionID: execID, Entities: []runs.EntityRecord{{Entity: "A", State: runs.StateSucceeded, Rows: 1234567}, {Entity: "B", State: runs.StateSucceeded, Rows: 3}}}},
			want:    []string{"succeeded 1,234,570 1m23s"},
			notWant: []string{"No runs yet", `class="badge running"`},
		},
		{
			name: "just ended, before its final event",
			records: []runs.Record{{Job: "demo", RunID: runID("0000e2d5"), State: runs.StateSucceeded, StartedAt: started, FinishedAt: started.Add(5 * time.Second),
				ExecutionID: execID, Entities: []runs.EntityRecord{{Entity: "A", State: runs.StateSucceeded, Rows: 40}}}},
			events:  []jobs.Event{{State: runs.StatePublishing, Entity: "A", Rows: 40, Confirmed: true}},
			want:    []string{"succeeded 40 5s"},
			notWant: []string{`class="badge running"`, "Rows confirmed"},
		},
		{
			name: "failed with cause",
			records: []runs.Record{{Job: "demo", RunID: runID("0000fa11"), State: runs.StateFailed, StartedAt: started, FinishedAt: started.Add(2 * time.Second),
				ExecutionID: execID, Error: "export demo run " + runID("0000fa11") + `: execution "` + execID + `": F&O answered <b>DMF1234</b> "no rights" (grant the user the Data management role)`,
				Cause: `F&O answered <b>DMF1234</b> "no rights" (grant the user the Data management role)`}},
			want:    []string{`failed 0 2s F&O answered <b>DMF1234</b> "no rights" (grant the user the Data management role)`},
			notWant: []string{"<b>DMF1234</b>", "export demo run"},
		},
		{
			name: "partially succeeded",
			records: []runs.Record{{Job: "demo", RunID: runID("0000ha1f"), State: runs.StatePartiallySucceeded, StartedAt: started, FinishedAt: started.Add(time.Minute),
				ExecutionID: execID, Warnings: []string{"F&O: entity VendVendorV2Entity had 3 errors"},
				Entities: []runs.EntityRecord{{Entity: "CustCustomerV3Entity", State: runs.StateSucceeded, Rows: 10}}}},
			want: []string{"partially_succeeded 10 1m0s F&O: entity VendVendorV2Entity had 3 errors"},
		},
		{
			name:    "interrupted",
			records: []runs.Record{{Job: "demo", RunID: runID("0000dead"), State: runs.StateDownloading, StartedAt: started, ExecutionID: execID}},
			want:    []string{"interrupted (resumes on next start) 0 stopped while downloading"},
			notWant: []string{`class="badge running"`},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, err := jobs.LoadConfig(writeFile(t, dir, "dmfexport.yaml", fileSinkConfig))
			if err != nil {
				t.Fatal(err)
			}
			cfg.Exports = cfg.Exports[:1]
			cfg.Exports[0].Schedule = "0 * * * *"
			if len(c.records) > 0 {
				st, err := store.NewDirStore(filepath.Join(dir, "store"))
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range c.records {
					putRecord(t, st, r)
				}
				if c.lease != "" {
					host, _ := os.Hostname()
					lease, _ := json.Marshal(map[string]any{"replica": host + "/" + strconv.Itoa(os.Getpid()) + "/abcd", "at": now})
					key := "_leases/demo/" + c.lease + "/00000001"
					if _, err := st.Put(t.Context(), key, bytes.NewReader(lease), nil); err != nil {
						t.Fatal(err)
					}
					// Refreshed just now on the page's clock.
					if err := os.Chtimes(filepath.Join(dir, "store", filepath.FromSlash(key)), now, now); err != nil {
						t.Fatal(err)
					}
				}
			}
			live := statuspage.NewLive(nil)
			for _, e := range c.events {
				e.Job, e.RunID = "demo", c.records[0].RunID
				live.Observe(e)
			}
			p := pageSource(func() *jobs.Config { return cfg }, live)
			p.Next = func() map[string]time.Time { return map[string]time.Time{"demo": next} }
			p.Clock = clockwork.NewFakeClockAt(now)
			srv := httptest.NewServer(p.Handler(slog.New(slog.DiscardHandler)))
			defer srv.Close()

			code, body := httpGet(t, srv.URL+"/")
			if code != http.StatusOK {
				t.Fatalf("GET / = %d\n%s", code, body)
			}
			text := pageText(body)
			for _, w := range c.want {
				if !strings.Contains(text, w) {
					t.Errorf("the page does not read %q; it reads:\n%s", w, text)
				}
			}
			for _, nw := range c.notWant {
				if strings.Contains(body, nw) {
					t.Errorf("the page shows %q; it should not:\n%s", nw, body)
				}
			}
			if !strings.Contains(body, `<meta http-equiv="refresh" content="5">`) {
				t.Errorf("the page does not refresh itself every 5 s:\n%s", body)
			}
			if strings.Contains(body, "<script") {
				t.Errorf("the page has a script; it needs none:\n%s", body)
			}
		})
	}
}

// TestStatusPageReadOnly checks that the page takes no writes and tells
// browsers to run nothing and cache nothing.
func TestStatusPageReadOnly(t *testing.T) {
	p := pageSource(func() *jobs.Config { return &jobs.Config{} }, statuspage.NewLive(nil))
	srv := httptest.NewServer(p.Handler(slog.New(slog.DiscardHandler)))
	defer srv.Close()
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		req, _ := http.NewRequestWithContext(t.Context(), m, srv.URL+"/", strings.NewReader("x"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s / = %d, want 405", m, resp.StatusCode)
		}
	}
	resp, err := http.Get(srv.URL + "/") //nolint:noctx // a test's one request
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	for h, want := range map[string]string{
		"Content-Type":            "text/html; charset=utf-8",
		"Cache-Control":           "no-store",
		"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
	} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
}

// pageText is the text of an HTML page as a person reads it: the head
// and tags gone (a block tag parts words, an inline one does not),
// entities decoded, white space folded.
func pageText(page string) string {
	if _, body, ok := strings.Cut(page, "</head>"); ok {
		page = body
	}
	var b strings.Builder
	for {
		text, rest, ok := strings.Cut(page, "<")
		b.WriteString(text)
		if !ok {
			break
		}
		tag, after, _ := strings.Cut(rest, ">")
		name, _, _ := strings.Cut(strings.TrimPrefix(tag, "/"), " ")
		switch name {
		case "strong", "span", "code", "a", "b", "em":
		default:
			b.WriteByte(' ')
		}
		page = after
	}
	return strings.Join(strings.Fields(html.UnescapeString(b.String())), " ")
}
