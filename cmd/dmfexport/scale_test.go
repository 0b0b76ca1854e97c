package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

// scaleCase is one size of TestScale.
type scaleCase struct {
	exports       int
	slots         int           // fo.max_concurrent_exports
	perMinute     int           // fo.max_requests_per_minute
	executionTime time.Duration // the simulator's, after its register window
	poll          string        // poll section
	slack         float64       // most allowed time ÷ ideal time
}

// TestScale fires many exports in the same second against the simulator
// with F&O's per-user limits (52 concurrent calls, 6,000 calls and 1,200 s
// per 5 minutes, 429 with Retry-After beyond): every run must succeed with
// every row published, dmfexport's peak RSS stay under 200 MiB, and the
// whole take at most 1.5× the ideal time the limits allow (printed beside
// it). The default suite runs 20 exports; make scale (DMFEXPORT_SCALE=1)
// runs 200.
func TestScale(t *testing.T) {
	// The default suite shares its machine with other tests: it holds the
	// run to 5× the ideal (catching a queue that serializes or stalls),
	// make scale to the 1.5× promised.
	c := scaleCase{exports: 20, slots: 10, perMinute: 600, executionTime: 2 * time.Second, slack: 5,
		poll: "{interval: 500ms, max_interval: 1s, deadline: 10m, package_url_interval: 250ms, package_url_timeout: 1m, register_timeout: 1m}"}
	if os.Getenv("DMFEXPORT_SCALE") != "" {
		c = scaleCase{exports: 200, slots: 40, perMinute: 1000, executionTime: 8 * time.Second, slack: 1.5,
			poll: "{interval: 2s, max_interval: 3s, deadline: 10m, package_url_interval: 250ms, package_url_timeout: 1m, register_timeout: 1m}"}
	}
	const rowsPerEntity = 50
	projects := map[string][]dmftest.Entity{}
	for i := range c.exports {
		var b strings.Builder
		b.WriteString("ID,NAME\r\n")
		for r := range rowsPerEntity {
			fmt.Fprintf(&b, "%d,row %d of G%03d\r\n", r, r, i)
		}
		projects[fmt.Sprintf("G%03d", i)] = []dmftest.Entity{{Name: "Things", Data: []byte(b.String())}}
	}
	sim := dmftest.NewServer(dmftest.Options{Projects: projects, ExecutionTime: c.executionTime})
	defer sim.Close()

	// Every export fires at the same second, a few seconds from now.
	fire := time.Now().UTC().Truncate(time.Second).Add(4 * time.Second)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `fo:
  url: ${DMFSIM_URL}
  auth: {method: token, token: "${FO_TOKEN}"}
  max_concurrent_exports: %d
  max_requests_per_minute: %d
store: {path: ./store}
broker: {type: file, path: ./batches}
poll: %s
exports:
`, c.slots, c.perMinute, c.poll)
	schedule := fmt.Sprintf("CRON_TZ=UTC %d %d %d * * *", fire.Second(), fire.Minute(), fire.Hour())
	for i := range c.exports {
		fmt.Fprintf(&cfg, "  - {name: e%03d, schedule: %q, definition_group: G%03d, legal_entity: USMF}\n", i, schedule, i)
	}
	dir := t.TempDir()
	cfgPath := writeFile(t, dir, "dmfexport.yaml", cfg.String())
	cmd, logs := startRun(t, cfgPath, sim.URL)
	addr := logs.wait(t, "with the listener address", 20*time.Second, msgIs("operations listener"))["addr"].(string)
	logs.wait(t, "saying the scheduler runs", 10*time.Second, msgIs("scheduler running"))
	if time.Now().After(fire) {
		t.Fatalf("dmfexport started after the fire time %s: raise the margin", fire)
	}

	// Ideal: the executions go c.slots at a time, each taking the register
	// window and the execution time; the calls (at least 4 per export:
	// ExportToPackage, one status, two package URL asks as the first is
	// empty) fit F&O's budget and the pace's minute of burst, or add the
	// time the budgets need.
	perExecution := dmftest.DefaultRegisterDelay + c.executionTime
	waves := int(math.Ceil(float64(c.exports) / float64(c.slots)))
	ideal := time.Duration(waves) * perExecution
	minCalls := 4 * c.exports
	if over := minCalls - c.perMinute; over > 0 {
		ideal = max(ideal, time.Duration(float64(over)/float64(c.perMinute)*float64(time.Minute)))
	}
	if over := minCalls - dmftest.DefaultRequestBudget; over > 0 {
		ideal = max(ideal, time.Duration(float64(over)/dmftest.DefaultRequestBudget*float64(dmftest.DefaultBudgetWindow)))
	}

	// While the first wave runs, the others wait in the queue: the gauge
	// must read exports-slots at some point before the first wave ends (on
	// a loaded machine the fires may take a moment to all reach the queue).
	queueRE := regexp.MustCompile(`(?m)^dmfexport_fo_queue_length\{environment="[^"]+"\} (\d+)`)
	wantQueued := strconv.Itoa(c.exports - c.slots)
	var seen []string
	found := false
	for time.Now().Before(fire.Add(perExecution)) {
		_, metrics := httpGet(t, "http://"+addr+"/metrics")
		m := queueRE.FindStringSubmatch(metrics)
		if m != nil && m[1] == wantQueued {
			found = true
			break
		}
		if m != nil && (len(seen) == 0 || seen[len(seen)-1] != m[1]) {
			seen = append(seen, m[1])
		}
		time.Sleep(100 * time.Millisecond) // the dmfexport child process moves on between two reads
	}
	if !found {
		t.Errorf("during the first wave: want dmfexport_fo_queue_length %s, saw only %v", wantQueued, seen)
	}

	// Wait for every run's record to be final.
	limit := 3*ideal + 30*time.Second
	var last time.Time
	for {
		done, finished, failures := finalRecords(t, filepath.Join(dir, "store"), rowsPerEntity)
		if len(failures) > 0 {
			t.Fatalf("runs failed:\n%s", strings.Join(failures, "\n"))
		}
		if done == c.exports {
			last = finished
			break
		}
		if time.Since(fire) > limit {
			t.Fatalf("%d of %d runs finished after %s", done, c.exports, time.Since(fire))
		}
		time.Sleep(200 * time.Millisecond) // the dmfexport process works through the exports; reading every record is costly and would slow it
	}
	_, metrics := httpGet(t, "http://"+addr+"/metrics")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("dmfexport run after SIGTERM: %v", err)
	}
	took := last.Sub(fire)
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss * 1024 // KiB on Linux
	throttled := regexp.MustCompile(`(?m)^dmfexport_fo_throttled_total\{[^}]*\} (\d+)`).FindStringSubmatch(metrics)
	t.Logf("%d exports, %d slots, %d calls/min: took %s, ideal %s (%d waves × %s, %d calls at least) = %.2f×; "+
		"peak RSS %.1f MiB; F&O calls %d (status %d, package URL %d), 429s %d, peak concurrent calls %d",
		c.exports, c.slots, c.perMinute, took.Round(100*time.Millisecond), ideal, waves, perExecution, minCalls,
		float64(took)/float64(ideal), float64(rss)/(1<<20),
		sim.Calls("ExportToPackage")+sim.Calls("GetExecutionSummaryStatus")+sim.Calls("GetExportedPackageUrl")+sim.Calls("GetExecutionErrors"),
		sim.Calls("GetExecutionSummaryStatus"), sim.Calls("GetExportedPackageUrl"), sim.ThrottledCalls(""), sim.PeakConcurrency())
	if n := sim.Exports(); n != c.exports {
		t.Errorf("want %d exports started in F&O, got %d", c.exports, n)
	}
	if float64(took) > c.slack*float64(ideal) {
		t.Errorf("took %s, more than %.1f× the ideal %s", took, c.slack, ideal)
	}
	if rss >= 200<<20 {
		t.Errorf("peak RSS of dmfexport %.1f MiB, want under 200 MiB", float64(rss)/(1<<20))
	}
	if n := sim.PeakExecutions(); n > c.slots {
		t.Errorf("want at most %d executions running at once in F&O, got %d", c.slots, n)
	}
	if throttled != nil && throttled[1] != "0" {
		t.Logf("note: dmfexport met %s 429s and recovered from them", throttled[1])
	}
}

// finalRecords reads every run record under store: how many are final and
// succeeded with every row confirmed, the latest finish time, and a line
// per run that failed or lacks rows.
func finalRecords(t *testing.T, store string, rows int64) (done int, last time.Time, failures []string) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(store, "*", "*", "run.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // being written
		}
		var rec struct {
			Job        string    `json:"job"`
			State      string    `json:"state"`
			Error      string    `json:"error"`
			FinishedAt time.Time `json:"finished_at"`
			Entities   []struct {
				Rows int64 `json:"rows"`
			} `json:"entities"`
		}
		if json.Unmarshal(b, &rec) != nil {
			continue // being written
		}
		switch rec.State {
		case "succeeded":
			if len(rec.Entities) != 1 || rec.Entities[0].Rows != rows {
				failures = append(failures, fmt.Sprintf("%s: succeeded without its %d rows: %+v", rec.Job, rows, rec.Entities))
			}
			done++
			if rec.FinishedAt.After(last) {
				last = rec.FinishedAt
			}
		case "failed", "partially_succeeded", "skipped":
			failures = append(failures, fmt.Sprintf("%s: %s: %s", rec.Job, rec.State, rec.Error))
		}
	}
	return done, last, failures
}
