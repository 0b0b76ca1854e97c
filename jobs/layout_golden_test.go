package jobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/cryptotest"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/dmfexport/dmfexport/azauth"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/publish"
	"github.com/dmfexport/dmfexport/runs"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata from what the code writes now")

// goldenLayout is what TestStoreLayoutGolden compares the store with.
const goldenLayout = "testdata/store-layout.golden"

// TestStoreLayoutGolden drives runs through a representative life into a
// directory store — schedule claims, a run that succeeds, one that fails,
// one interrupted and adopted from a dead replica's lease, a run skipped
// for a data project another replica holds, a damaged record quarantined
// and rebuilt, then abandoned, and retention deleting the oldest run —
// and compares every key, folder and byte the store holds with a golden
// file written by the code before the run ledger had its own package.
// Keys and records are a contract with stores written by every earlier
// version: a change here must be on purpose (-update rewrites the file).
//
// Time is the bubble's (testing/synctest), randomness is seeded
// (testing/cryptotest), F&O is the simulator served in-process, so the
// life is the same at every run. The only value normalized is this
// process's replica ID (host, pid, random) in lease, claim and clock
// bodies.
func TestStoreLayoutGolden(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cryptotest.SetGlobalRandom(t, 23)
		got := storeLife(t)
		if *updateGolden {
			if err := os.WriteFile(goldenLayout, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		want, err := os.ReadFile(goldenLayout)
		if err != nil {
			t.Fatalf("%v (run with -update to write it)", err)
		}
		if got != string(want) {
			t.Errorf("the store differs from %s:\n%s", goldenLayout, lineDiff(string(want), got))
		}
	})
}

// storeLife runs the life of TestStoreLayoutGolden and returns the store's
// listing with every object's bytes.
func storeLife(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "store")
	t0 := time.Now().UTC() // the bubble's: 2000-01-01T00:00:00Z

	// The simulator's clock moves a second at every reading, so an
	// execution has ended when it is first asked about and no wait (whose
	// jitter is random) comes into the run.
	var simMu sync.Mutex
	simTick := 0
	sim := dmftest.New(dmftest.Options{
		Projects: map[string][]dmftest.Entity{
			"G":   {csvEntity("Customers V3", 5), csvEntity("Clients/Société", 3)},
			"BAD": {csvEntity("Vendors", 1)},
		},
		FinalStatus:   map[string]string{"BAD": "Failed"},
		ExecutionTime: time.Millisecond, RegisterDelay: -1, EmptyURLAsks: -1, PackageDelay: -1,
		Now: func() time.Time {
			simMu.Lock()
			defer simMu.Unlock()
			simTick++
			return time.Now().Add(time.Duration(simTick) * time.Second)
		},
	})
	sim.SetBaseURL("http://127.0.0.1:1")
	foURL, _ := url.Parse("http://127.0.0.1:1")
	export := func(name, group string) *Export {
		return &Export{
			Name: name, Schedule: "@hourly", Enabled: true, DefinitionGroup: group, PackageName: group, LegalEntity: "USMF",
			RoutingKey: "fo.golden", BatchSize: 2, ParallelEntities: 1,
			FO:        FOConfig{URL: foURL, Auth: AuthConfig{Options: azauth.Options{Method: "token", Token: Secret(dmftest.DefaultToken)}}},
			Store:     StoreConfig{Type: "dir", Path: root, Prefix: "fo"},
			Broker:    BrokerConfig{Type: "file", Path: filepath.Join(dir, "batches")},
			Poll:      PollConfig{Interval: 20 * time.Millisecond, MaxInterval: 50 * time.Millisecond, Deadline: time.Minute, PackageURLTimeout: 10 * time.Second, RegisterTimeout: 10 * time.Second},
			Retention: RetentionConfig{KeepRuns: 3},
		}
	}
	orders, failing, copyOf := export("Orders: EU/2", "G"), export("failing", "BAD"), export("Orders copy", "G")

	// A sink that stops the run (as a stop signal would) after its first
	// batch when interrupt is set.
	var interrupt func()
	r := &Runner{Logger: slog.New(slog.DiscardHandler), HTTPClient: &http.Client{Transport: handlerTransport{sim}},
		NewSink: func(ctx context.Context, exp *Export) (publish.Sink, error) {
			s, err := openSink(ctx, exp, slog.New(slog.DiscardHandler), 1, nil)
			if err != nil {
				return nil, err
			}
			return &stoppingSink{Sink: s, stop: interrupt}, nil
		}}
	defer func() { _ = r.Close() }()
	st := mustDirStore(t, root)
	later := func() { time.Sleep(time.Minute) } // the bubble's clock: no real wait, run IDs a minute apart
	mustRun := func(exp *Export, want runs.State) *runs.Record {
		t.Helper()
		rec, err := r.Run(ctx, exp, RunOptions{Trigger: "manual"})
		if rec == nil || rec.State != want {
			t.Fatalf("run of %s: %v (%+v), want state %s", exp.Name, err, rec, want)
		}
		return rec
	}
	interrupted := func(exp *Export) *runs.Record {
		t.Helper()
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		interrupt = cancel
		defer func() { interrupt = nil }()
		rec, err := r.Run(rctx, exp, RunOptions{Trigger: "manual"})
		if !errors.Is(err, context.Canceled) || rec == nil || rec.State != runs.StatePublishing {
			t.Fatalf("interrupted run of %s: %v (%+v), want an unfinished run in state publishing", exp.Name, err, rec)
		}
		return rec
	}
	// foreign writes an object of another replica, dated back by age on
	// the store's clock.
	foreign := func(key, body string, age time.Duration) {
		t.Helper()
		if _, err := st.Create(ctx, key, strings.NewReader(body), nil); err != nil {
			t.Fatal(err)
		}
		ageObject(t, root, key, age)
	}
	const elsewhere = `{"replica":"elsewhere/1/ffffffff","at":"2000-01-01T00:00:00Z"}`

	// Schedule claims: one of a slot two hours old, pruned after the first
	// finished run, and one of this hour's slot, kept.
	for _, slot := range []time.Time{t0.Add(-2 * time.Hour), t0} {
		if ok, err := r.ledger(st, orders).ClaimSlot(ctx, slot); !ok || err != nil {
			t.Fatalf("claim of slot %s: %v, %v", slot, ok, err)
		}
	}
	mustRun(orders, runs.StateSucceeded) // the run retention deletes at the end
	later()
	mustRun(failing, runs.StateFailed)
	later()
	adopted := interrupted(orders)
	// A replica took the interrupted run up (generation 2) and holds it:
	// a new run of the export is refused; once its lease is an hour old,
	// this replica adopts the run (generation 3) and finishes it.
	leaseKey := "fo/_leases/Orders%3A EU%2F2/" + adopted.RunID + "/00000002"
	foreign(leaseKey, elsewhere, 0)
	later()
	if _, err := r.Run(ctx, orders, RunOptions{Trigger: "manual"}); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("run while another replica owns a run: %v, want ErrAlreadyRunning", err)
	}
	ageObject(t, root, leaseKey, time.Hour)
	if rec, err := r.Resume(ctx, orders, adopted); err != nil || rec.State != runs.StateSucceeded || rec.OwnerGen != 3 {
		t.Fatalf("adoption of a dead replica's run: %v (%+v), want succeeded by generation 3", err, rec)
	}
	later()
	// Another replica exports the data project: a run of another export
	// of it is skipped. Its hold lapses then.
	sum := sha256.Sum256([]byte("http://127.0.0.1:1\ng"))
	holdKey := "fo/_groups/g-" + hex.EncodeToString(sum[:6]) + "/00000001"
	foreign(holdKey, `{"replica":"elsewhere/1/ffffffff","at":"2000-01-01T00:00:00Z","holder":"export other run 20000101T000000Z-00000000"}`, 0)
	mustRun(copyOf, runs.StateSkipped)
	ageObject(t, root, holdKey, time.Hour)
	later()
	// A run interrupted, its record then damaged by hand: the scan for
	// unfinished runs quarantines it and rebuilds the record from the
	// stored package; an operator abandons the run.
	damaged := interrupted(orders)
	if err := os.WriteFile(filepath.Join(root, filepath.FromSlash("fo/Orders%3A EU%2F2/"+damaged.RunID+"/run.json")), []byte(`{"export": "Orders: EU/2", "run_id": `), 0o644); err != nil {
		t.Fatal(err)
	}
	later()
	if recs, err := r.Unfinished(ctx, orders); err != nil || len(recs) != 1 || recs[0].Trigger != "rebuilt" {
		t.Fatalf("unfinished runs with a damaged record: %v, %+v; want the rebuilt run", err, recs)
	}
	later()
	if rec, err := r.Abandon(ctx, orders, damaged.RunID, "ops@golden", "the golden life ends it"); err != nil || rec.State != runs.StateAbandoned {
		t.Fatalf("abandon: %v (%+v)", err, rec)
	}
	later()
	// The fourth finished run of the export: retention (keep_runs: 3)
	// deletes the first.
	mustRun(orders, runs.StateSucceeded)
	return listStore(t, root, runs.ReplicaID())
}

// handlerTransport serves requests with a handler in-process, so a run
// inside a synctest bubble never waits on a socket.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	w := httptest.NewRecorder()
	t.h.ServeHTTP(w, req)
	return w.Result(), nil
}

// stoppingSink calls stop, when set, after its first message.
type stoppingSink struct {
	publish.Sink
	stop func()
	once sync.Once
}

func (s *stoppingSink) Publish(ctx context.Context, m publish.Message) error {
	err := s.Sink.Publish(ctx, m)
	if s.stop != nil {
		s.once.Do(s.stop)
	}
	return err
}

// listStore lists every folder and file under root, sorted, with each
// file's size and SHA-256 and, when it is text, its bytes; replica, this
// process's ID, is written as <replica>.
func listStore(t *testing.T, root, replica string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# The store TestStoreLayoutGolden writes: every folder, and every file with its size,\n" +
		"# SHA-256 and (text only) bytes. This process's replica ID reads <replica>.\n")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, root+string(filepath.Separator)))
		if d.IsDir() {
			fmt.Fprintf(&b, "%s/\n", rel)
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		data = bytes.ReplaceAll(data, []byte(replica), []byte("<replica>"))
		sum := sha256.Sum256(data)
		fmt.Fprintf(&b, "== %s (%d bytes, sha256 %s)\n", rel, len(data), hex.EncodeToString(sum[:]))
		if utf8.Valid(data) && !bytes.ContainsRune(data, 0) {
			b.Write(data)
			if len(data) > 0 && data[len(data)-1] != '\n' {
				b.WriteString("\n")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// lineDiff shows the first lines where want and got differ.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 20; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want %q\n  got  %q\n", i+1, wl, gl)
			shown++
		}
	}
	return b.String()
}
