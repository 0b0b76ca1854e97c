package dmf_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dmfexport/dmfexport/dmf"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

// badAnswerSays is what the error and the WARN line say about each bad
// answer of the simulator: its size or kind and Content-Type, never its body.
var badAnswerSays = map[string]string{
	dmftest.AnswerOversize: "more than 8388608 bytes",
	dmftest.AnswerGzipBomb: "more than 8388608 bytes once gzip-decoded",
	dmftest.AnswerHTML:     "Content-Type text/html",
	dmftest.AnswerGarbage:  "Content-Type application/json, 23 bytes",
}

// badAnswerBodies are pieces of the bad answers' bodies that no log line
// or error may quote.
var badAnswerBodies = []string{"maintenance", "xxxxxxxx", "garbled", "simulated oversize"}

// TestBadAnswersAgainstSimulator: an oversize, gzip-bomb, HTML or garbled
// 200 answer to a status, package URL or export call is retried like a
// 5xx and the run goes on to its package, with one export; the WARN line
// says what was wrong with the answer (size, Content-Type), not its body.
func TestBadAnswersAgainstSimulator(t *testing.T) {
	type call struct {
		name     string
		fault    dmftest.APIFault
		register time.Duration // ClientOptions.RegisterTimeout, 0: simClient's
		want     map[string]int
	}
	for _, kind := range dmftest.AnswerFaults {
		calls := []call{
			{name: "status, first 2", fault: dmftest.APIFault{Action: aStatus, First: 2}},
			{name: "package URL, first 2", fault: dmftest.APIFault{Action: aURL, First: 2}, want: map[string]int{aURL: 4}},
			{name: "export started behind it", fault: dmftest.APIFault{Action: aExport, First: 1, Apply: true}, want: map[string]int{aExport: 1}},
			// Not started: the ID is polled for the whole window, then posted again.
			{name: "export not started", fault: dmftest.APIFault{Action: aExport, First: 1}, register: 5 * simRegisterDelay,
				want: map[string]int{aExport: 2}},
		}
		for _, cl := range calls {
			t.Run(kind+", "+cl.name, func(t *testing.T) {
				t.Parallel()
				f := cl.fault
				f.Answer = kind
				sim, c, logs := simClient(t, dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{f}}},
					dmf.ClientOptions{RegisterTimeout: cl.register})
				ctx := ctxT(t)
				id, st, err := exportAndPoll(ctx, c, "G", fastPoll)
				if err != nil || st != dmf.StatusSucceeded {
					t.Fatalf("export and poll: %s, %v; want Succeeded after retries\n%s", st, err, logs)
				}
				u, err := c.WaitPackageURL(ctx, id, 10*time.Second)
				if err != nil {
					t.Fatalf("WaitPackageURL: %v", err)
				}
				if _, err := fetchZip(ctx, u); err != nil {
					t.Fatalf("download: %v", err)
				}
				if n := sim.Exports(); n != 1 {
					t.Errorf("exports started: want 1, got %d", n)
				}
				for action, want := range cl.want {
					if got := sim.Calls(action); got != want {
						t.Errorf("calls of %s: want %d, got %d", action, want, got)
					}
				}
				log := logs.String()
				if !strings.Contains(log, "level=WARN") || !strings.Contains(log, badAnswerSays[kind]) {
					t.Errorf("no WARN line saying %q about the answer:\n%s", badAnswerSays[kind], log)
				}
				for _, body := range badAnswerBodies {
					if strings.Contains(log, body) {
						t.Errorf("the log quotes the answer's body (%q):\n%s", body, log)
					}
				}
			})
		}
	}
}

// TestPersistentBadAnswerFails: a bad answer that never goes away ends,
// after the retry budget, in an error naming the action and what was
// wrong with the answer.
func TestPersistentBadAnswerFails(t *testing.T) {
	for _, kind := range dmftest.AnswerFaults {
		for _, action := range []string{aStatus, aURL} {
			t.Run(kind+", "+action, func(t *testing.T) {
				t.Parallel()
				sim, c, logs := simClient(t, dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: action, Answer: kind}}}},
					dmf.ClientOptions{MaxRetries: 2})
				ctx := ctxT(t)
				var err error
				if action == aStatus {
					_, err = c.ExecutionStatus(ctx, "G-run-1")
				} else {
					_, err = c.PackageURL(ctx, "G-run-1")
				}
				if err == nil {
					t.Fatalf("want an error after 3 bad answers, got none")
				}
				msg := err.Error()
				for _, want := range []string{"F&O " + action, badAnswerSays[kind], "gave up after 2 retries"} {
					if !strings.Contains(msg, want) {
						t.Errorf("error %q does not say %q", msg, want)
					}
				}
				for _, body := range badAnswerBodies {
					if strings.Contains(msg, body) || strings.Contains(logs.String(), body) {
						t.Errorf("error or log quotes the answer's body (%q): %s", body, msg)
					}
				}
				if got := sim.Calls(action); got != 3 {
					t.Errorf("calls of %s: want 3 (1 + 2 retries), got %d", action, got)
				}
			})
		}
	}
	t.Run("export never answered readably", func(t *testing.T) {
		sim, c, _ := simClient(t, dmftest.Options{Faults: dmftest.Faults{API: []dmftest.APIFault{{Action: aExport, Answer: dmftest.AnswerHTML}}}},
			dmf.ClientOptions{MaxRetries: 1, RegisterTimeout: 200 * time.Millisecond})
		_, err := c.ExportToPackage(ctxT(t), dmf.ExportRequest{DefinitionGroupID: "G", PackageName: "G", ExecutionID: "G-run-1", LegalEntityID: "USMF"})
		if err == nil || !errors.Is(err, dmf.ErrNotRegistered) {
			t.Fatalf("want an error wrapping ErrNotRegistered, got %v", err)
		}
		for _, want := range []string{"F&O ExportToPackage", "Content-Type text/html", "gave up after 1 retries"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		if got, exports := sim.Calls(aExport), sim.Exports(); got != 2 || exports != 0 {
			t.Errorf("export posts %d and exports %d; want 2 posts (one per register window), none started", got, exports)
		}
	})
}
