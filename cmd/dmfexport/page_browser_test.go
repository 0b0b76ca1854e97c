package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/jobs"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/statuspage"
)

// statusPagePNG, when set, is where TestStatusPageBrowser saves a
// screenshot of the page during the run (make status-page.png).
var statusPagePNG = flag.String("status-page-png", "", "save a screenshot of the status page during a run to this PNG file")

// chromium returns the headless browser to drive, skipping the test when
// none is installed, or failing it when DMFEXPORT_REQUIRE_BROWSER=1 (as
// .ci/test.sh sets after installing Debian's chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("DMFEXPORT_REQUIRE_BROWSER") == "1" {
		t.Fatal("no chromium on PATH and DMFEXPORT_REQUIRE_BROWSER=1: install it (apt-get install -y --no-install-recommends chromium)")
	}
	t.Skip("no chromium on PATH (apt-get install chromium); DMFEXPORT_REQUIRE_BROWSER=1 makes this a failure")
	return ""
}

// TestStatusPageBrowser loads the status page in a real browser while a
// run against the simulator publishes (held after a few batches of each
// entity), finds the export, its step and each entity's progress, checks
// the page fits a phone's width, then lets the run finish and waits for
// the page's own refresh to show the outcome.
func TestStatusPageBrowser(t *testing.T) {
	browser := chromium(t)
	sim := dmftest.NewServer(dmftest.Options{
		Projects: map[string][]dmftest.Entity{"SalesExport": {
			{Name: "CustCustomerV3Entity", Data: csvRows("CUSTOMERACCOUNT,NAME,STREET,CITY", 60000)},
			{Name: "VendVendorV2Entity", Data: csvRows("VENDORACCOUNT,NAME,STREET,CITY", 8000)},
		}},
		ExecutionTime: 100 * time.Millisecond,
	})
	defer sim.Close()
	t.Setenv("DMFSIM_URL", sim.URL)
	t.Setenv("FO_TOKEN", dmftest.DefaultToken)
	dir := t.TempDir()
	cfg, err := jobs.LoadConfig(writeFile(t, dir, "dmfexport.yaml", simConfig+`  - {name: sales-daily, schedule: "30 2 * * *", definition_group: SalesExport, legal_entity: USMF, batch_size: 500, parallel_entities: 2}
  - {name: ledger-hourly, schedule: "0 * * * *", definition_group: LedgerExport, legal_entity: USMF}
  - {name: inventory-weekly, schedule: "0 4 * * 1", definition_group: SalesExport, legal_entity: USMF, enabled: false}
`))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	live := statuspage.NewLive(nil)
	sink := newHeldSink(3) // once armed, each entity: 3 batches of 500 rows, then held
	runner := &jobs.Runner{Logger: log, OnEvent: live.Observe, NewSink: func(context.Context, *jobs.Export) (publish.Sink, error) { return sink, nil }}
	defer func() { _ = runner.Close() }()
	sch, err := jobs.NewScheduler(cfg, runner, log, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sch.Start()
	defer func() { _ = sch.Stop() }()
	page := newStatusPage(func() *jobs.Config { return cfg }, sch, runner, live)
	srv := httptest.NewServer(page.Handler(log))
	defer srv.Close()

	// Earlier runs: one that failed (F&O knows no such data project), one
	// that succeeded.
	if _, err := runner.Run(t.Context(), &cfg.Exports[1], jobs.RunOptions{Trigger: "manual"}); err == nil {
		t.Fatal("the run of an unknown data project succeeded")
	}
	if _, err := runner.Run(t.Context(), &cfg.Exports[0], jobs.RunOptions{Trigger: "manual"}); err != nil {
		t.Fatal(err)
	}
	sink.arm()
	ran := make(chan error, 1)
	go func() {
		_, err := runner.Run(t.Context(), &cfg.Exports[0], jobs.RunOptions{Trigger: "manual"})
		ran <- err
	}()
	select {
	case <-sink.heldAll(2):
	case err := <-ran:
		t.Fatalf("the run ended before publishing was held: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the run did not reach its held batches within 30 s")
	}

	actx, cancel := chromedp.NewExecAllocator(t.Context(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.WindowSize(1100, 900))...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	bctx, cancel = context.WithTimeout(bctx, 90*time.Second)
	defer cancel()

	// During the run: the export, its step and each entity's confirmed
	// rows (3 batches of 500) with a progress bar; the earlier runs.
	if err := chromedp.Do(bctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatalf("load the status page: %v", err)
	}
	text := bodyText(t, bctx)
	bars, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("progress").length`))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sales-daily", "publishing", "CustCustomerV3Entity", "VendVendorV2Entity", "succeeded\t68,000",
		"ledger-hourly", "failed\t0", "LedgerExport", "inventory-weekly", "disabled", "No runs yet."} {
		if !strings.Contains(text, want) {
			t.Errorf("during the run the page does not show %q; it shows:\n%s", want, text)
		}
	}
	for _, entity := range []string{"CustCustomerV3Entity", "VendVendorV2Entity"} {
		if row := lineWith(text, entity); !strings.HasSuffix(row, "\t1,500") {
			t.Errorf("during the run the page shows %q for %s, want its 1,500 confirmed rows last", row, entity)
		}
	}
	if bars != 2 {
		t.Errorf("during the run the page shows %d progress bars, want one per entity (2)", bars)
	}
	if *statusPagePNG != "" {
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(*statusPagePNG, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", *statusPagePNG, len(png))
	}

	// A phone's width: nothing wider than the screen (each table row
	// becomes a block).
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	overflow, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth - window.innerWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if overflow > 0 {
		t.Errorf("at 390 px the page is %d px wider than the screen", overflow)
	}
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1100, 900), chromedp.Reload()); err != nil {
		t.Fatal(err)
	}

	// After the run: the page refreshes itself and shows the outcome.
	sink.release()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the run did not finish within 30 s of the release")
	}
	deadline := time.Now().Add(3 * statuspage.Refresh)
	for {
		// The browser reloads the page by itself (meta refresh); read it
		// until it does. A read that meets the reload fails: read again.
		if t, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("body"))); err == nil {
			text = t
		}
		if strings.Count(text, "succeeded\t68,000") == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // the browser's refresh timer must fire
	}
	if n := strings.Count(text, "succeeded\t68,000"); n != 2 {
		t.Errorf("after the run the page shows %d runs of sales-daily that succeeded with 68,000 rows, want 2; it shows:\n%s", n, text)
	}
	if strings.Contains(text, "publishing") {
		t.Errorf("after the run the page still shows it publishing:\n%s", text)
	}
	if strings.Contains(text, "CustCustomerV3Entity") {
		t.Errorf("after the run the page still shows the entities' progress:\n%s", text)
	}
}

// bodyText is the page's text as the browser renders it: innerText, with
// a tab between table cells and a line per row.
func bodyText(t *testing.T, ctx context.Context) string {
	t.Helper()
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		t.Fatalf("read the page: %v", err)
	}
	return text
}

// lineWith returns the first line of text that contains s.
func lineWith(text, s string) string {
	for l := range strings.SplitSeq(text, "\n") {
		if strings.Contains(l, s) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// csvRows is a CSV file of a header and n rows.
func csvRows(header string, n int) []byte {
	var b strings.Builder
	b.WriteString(header + "\r\n")
	for i := range n {
		fmt.Fprintf(&b, "A%06d,Name %d,%d Main Street,Seattle\r\n", i, i, i)
	}
	return []byte(b.String())
}

// heldSink stores every message at once; once armed, it holds each
// entity's publishing after its first pass messages until release.
type heldSink struct {
	pass     int
	mu       sync.Mutex
	armed    bool
	sent     map[string]int
	waiting  int
	changed  chan struct{} // signalled when one more entity is held
	released chan struct{}
	once     sync.Once
}

func newHeldSink(pass int) *heldSink {
	return &heldSink{pass: pass, sent: map[string]int{}, changed: make(chan struct{}, 16), released: make(chan struct{})}
}

func (s *heldSink) Publish(ctx context.Context, m publish.Message) error {
	entity, _ := m.Headers["entity"].(string)
	s.mu.Lock()
	s.sent[entity]++
	hold := s.armed && s.sent[entity] == s.pass+1
	if hold {
		s.waiting++
		s.changed <- struct{}{}
	}
	s.mu.Unlock()
	if hold {
		select {
		case <-s.released:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if m.OnStored != nil {
		m.OnStored()
	}
	return nil
}

func (s *heldSink) Flush(context.Context) error { return nil }
func (s *heldSink) Close() error                { return nil }

// heldAll returns a channel closed once n entities are held.
func (s *heldSink) heldAll(n int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		for range s.changed {
			s.mu.Lock()
			w := s.waiting
			s.mu.Unlock()
			if w >= n {
				close(done)
				return
			}
		}
	}()
	return done
}

// arm starts counting each entity's messages anew, to hold them.
func (s *heldSink) arm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed, s.sent = true, map[string]int{}
}

func (s *heldSink) release() { s.once.Do(func() { close(s.released) }) }
