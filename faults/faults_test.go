//go:build faults

package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
	"github.com/dmfexport/dmfexport/internal/testenv"
)

// rowsA is the size of entity A; B has 100 rows. 20 rows a batch.
const rowsA = 40000

// firstTimeout bounds a faulted first start, stop included: a process
// still running after it hangs.
const firstTimeout = 90 * time.Second

// env is one case's world: simulator, broker proxy, queue, config.
type env struct {
	t               *testing.T
	c               faultCase
	dir             string
	sim             *sim
	proxy           *testenv.Proxy
	exchange, queue string
	cfg             string
	vars            []string
	tmpfs           string   // mounted store, if the case asked for one
	az              *azurite // the Azure Blob store, if the case asked for one

	procs []*proc // every dmfexport started

	mu        sync.Mutex
	delivered *delivery
	stopCons  func()
}

// faultCase is one fault, injected into whole runs of the binaries.
type faultCase struct {
	name    string
	ci      bool // part of the CI subset
	private bool // needs the private broker node
	tmpfs   bool // the store on a tmpfs of its own (root only)
	azure   bool // the store in Azure Blob Storage: an Azurite of its own
	sim     []string
	broker  string // extra broker keys, YAML flow entries
	poll    string // poll keys
	declare bool   // let dmfexport declare (false: the case declares itself)
	queue   amqp.Table
	// schedule is the export's schedule; "" is @yearly (runs are triggered).
	schedule string
	// lateConsumer: nobody reads the queue until the case's after starts
	// the consumer (e.consume).
	lateConsumer bool
	// slowConsumer is how long the consumer takes over each message.
	slowConsumer time.Duration

	// first replaces the first start (dmfexport trigger f) and returns
	// its exit code.
	first func(e *env) int
	// inject runs while the first start runs; it may kill or signal it.
	inject func(e *env, p *proc)
	// after runs once the first start ended, before the next start.
	after func(e *env)
	// firstExit is the exit code wanted of the first start (-1: killed).
	firstExit int
	// secondExport: the fault leaves nothing that names the first
	// execution, so one second export is the expected outcome (its line
	// says so), not a failure.
	secondExport bool
	// next is the next start: "" runs dmfexport trigger (it resumes an
	// unfinished run, else starts a new one); a function for others.
	next func(e *env) (code int, detail string)
}

// sections group the report's lines: the first whose prefix a case's name
// starts with names its section (issue 21's defects each have their own);
// the rest are "general".
var sections = []struct{ prefix, title string }{
	{"TMPDIR full", "an exported package is never abandoned"},
	{"store full while unpacking", "an exported package is never abandoned"},
	{"paused owner", "a paused owner that lost its lease is fenced"},
	{"damaged record", "a damaged record never blocks its export"},
	{"reject-publish", "a full queue is back-pressure"},
	{"Azurite restarted empty", "a store that loses its objects"},
	{"F&O oversize", "oversize and unreadable F&O answers"},
	{"F&O gzip bomb", "oversize and unreadable F&O answers"},
	{"F&O HTML 200", "oversize and unreadable F&O answers"},
	{"endless package body", "bounded and watched downloads"},
	{"download trickles", "bounded and watched downloads"},
}

func sectionOf(name string) string {
	for _, s := range sections {
		if strings.HasPrefix(name, s.prefix) {
			return s.title
		}
	}
	return "general"
}

func TestFaults(t *testing.T) {
	sel := os.Getenv("DMFEXPORT_FAULTS")
	// Cases run grouped by section, in the order sections first appear.
	all := cases()
	var titles []string
	for _, c := range all {
		if s := sectionOf(c.name); !slices.Contains(titles, s) {
			titles = append(titles, s)
		}
	}
	var ordered []faultCase
	for _, title := range titles {
		for _, c := range all {
			if sectionOf(c.name) == title {
				ordered = append(ordered, c)
			}
		}
	}
	section := ""
	for _, c := range ordered {
		if s := sectionOf(c.name); s != section {
			section = s
			fmt.Printf("== %s\n", s)
		}
		t.Run(c.name, func(t *testing.T) {
			if sel == "ci" && !c.ci {
				t.Skip("not in the CI subset (DMFEXPORT_FAULTS=ci)")
			}
			if c.private && !broker.private {
				t.Skip("needs a private RabbitMQ node (run as root with rabbitmq-server installed)")
			}
			if c.tmpfs && os.Getuid() != 0 {
				t.Skip("needs root to mount a tmpfs")
			}
			runCase(t, c)
		})
	}
}

func stageOf(name string) []string {
	switch name {
	case "exporting":
		return []string{`"msg":"run exporting"`}
	case "polling":
		return []string{`"msg":"run exporting"`}
	case "downloading":
		return []string{`"msg":"run downloading"`}
	case "unpacking":
		return []string{`"msg":"run unpacking"`}
	case "publishing":
		return []string{`"msg":"publishing entity"`, `"entity":"A"`}
	}
	panic(name)
}

// atStage waits for the first start to reach stage (a little into it
// while publishing, so batches are confirmed and others in flight).
func atStage(e *env, p *proc, stage string) bool {
	ok := p.waitLine(60*time.Second, stageOf(stage)...)
	if stage == "polling" {
		// the poll itself shows in the simulator's log
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && e.sim.count("action=GetExecutionSummaryStatus") == 0; time.Sleep(20 * time.Millisecond) { // the dmfexport process polls the dmfsim process
		}
		ok = true
	}
	if stage == "publishing" {
		// A little into it: A's 2,000 batches take about a second on an
		// idle machine, so a later signal can come after the end.
		time.Sleep(time.Duration(50+rand.IntN(150)) * time.Millisecond) // the dmfexport process is a little into publishing
	}
	if !ok {
		e.t.Errorf("the run never reached stage %s:\n%s", stage, tail(p.log(), 20))
	}
	return ok
}

func cases() []faultCase {
	var cs []faultCase
	for _, stage := range []string{"exporting", "polling", "downloading", "unpacking", "publishing"} {
		cs = append(cs,
			faultCase{name: "kill-9 while " + stage, ci: stage == "publishing" || stage == "exporting", declare: true, firstExit: -1,
				inject: func(e *env, p *proc) {
					if atStage(e, p, stage) {
						p.signal(syscall.SIGKILL)
					}
				}},
			faultCase{name: "SIGTERM while " + stage, ci: stage == "publishing", declare: true, firstExit: 75,
				inject: func(e *env, p *proc) {
					if atStage(e, p, stage) {
						p.signal(syscall.SIGTERM)
					}
				}},
		)
	}
	cutShort := func(slow time.Duration, cuts int) func(e *env, p *proc) {
		return func(e *env, p *proc) {
			e.proxy.SetDelay(slow)
			if !atStage(e, p, "publishing") {
				return
			}
			for range cuts {
				e.proxy.SetDown(true)
				time.Sleep(time.Duration(300+rand.IntN(1200)) * time.Millisecond) // the dmfexport process meets the broker down for a while
				e.proxy.SetDown(false)
				time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond) // and up again for a while, before the next cut
			}
		}
	}
	brokerBack := func(e *env) { e.proxy.SetDown(false) }
	cs = append(cs,
		faultCase{name: "broker cut 3x shorter than reconnect_timeout", ci: true, declare: true, broker: "reconnect_timeout: 5s", firstExit: 0,
			inject: cutShort(time.Millisecond, 3)},
		faultCase{name: "broker cut 5x over a slow link", declare: true, broker: "reconnect_timeout: 5s", firstExit: 0,
			inject: cutShort(2*time.Millisecond, 5)},
		faultCase{name: "broker cut longer than reconnect_timeout", ci: true, declare: true, broker: "reconnect_timeout: 3s", firstExit: 75,
			inject: func(e *env, p *proc) {
				// Slow enough that publishing is still going when the
				// cut comes (at most 400 ms after it starts).
				e.proxy.SetDelay(5 * time.Millisecond)
				if atStage(e, p, "publishing") {
					e.proxy.SetDown(true)
				}
			},
			after: func(e *env) {
				if st := e.status(); len(st) == 0 || st[0].Waiting != "broker" {
					e.t.Errorf("status after the broker stayed away: want the run waiting for broker, got %+v", st)
				}
				brokerBack(e)
			}},
		faultCase{name: "broker cut longer, service retries", declare: true, broker: "reconnect_timeout: 2s", firstExit: 75,
			inject: func(e *env, p *proc) {
				// Slow enough that publishing is still going when the
				// cut comes (at most 400 ms after it starts).
				e.proxy.SetDelay(5 * time.Millisecond)
				if atStage(e, p, "publishing") {
					e.proxy.SetDown(true)
				}
			},
			next: func(e *env) (int, string) {
				// The service starts while the broker is still away, tries,
				// backs off, and finishes the run once it is back.
				svc := e.dmfexport("run", "--listen", "", "--stop-timeout", "20s")
				if !svc.waitLine(60*time.Second, "run still waiting for broker") {
					return 1, "service did not try the waiting run"
				}
				time.Sleep(2 * time.Second) // the service process retries the broker in vain a while
				e.proxy.SetDown(false)
				ok := svc.waitLine(60*time.Second, `"msg":"run finished"`, `"state":"succeeded"`)
				svc.signal(syscall.SIGTERM)
				code, exited := svc.wait(30 * time.Second)
				switch {
				case !exited:
					return -1, "service hung at stop"
				case !ok:
					return 1, "the service never finished the waiting run:\n" + tail(svc.log(), 15)
				}
				return code, "service retried with backoff"
			}},
		faultCase{name: "broker down before the export", ci: true, declare: true, firstExit: 75,
			inject: func(e *env, p *proc) { e.proxy.SetDown(true) },
			after: func(e *env) {
				if e.sim.exports() != 0 {
					e.t.Errorf("F&O exported %d times for a run whose broker was down", e.sim.exports())
				}
				e.wantWaiting("broker")
				brokerBack(e)
			}},
		faultCase{name: "unroutable batches", declare: false, firstExit: 75,
			inject: func(e *env, p *proc) {},
			after: func(e *env) {
				// The operator binds the queue; the waiting run publishes.
				e.wantWaiting("queue")
				e.bind("fo.faults")
			}},
		// A full queue nacks: back-pressure, republished with backoff;
		// the run succeeds, or waits for room in the queue, never fails.
		faultCase{name: "reject-publish queue (max-length 300)", private: true, declare: false, firstExit: -2,
			queue: amqp.Table{"x-max-length": int32(300), "x-overflow": "reject-publish"}, slowConsumer: 2 * time.Millisecond,
			inject: func(e *env, p *proc) {},
			after:  func(e *env) { e.wantBackpressure(false) }},
		faultCase{name: "reject-publish queue, no consumer for 5s+", private: true, declare: false, broker: "backpressure_timeout: 5s", firstExit: 75,
			queue: amqp.Table{"x-max-length": int32(300), "x-overflow": "reject-publish"}, lateConsumer: true,
			inject: func(e *env, p *proc) {},
			after: func(e *env) {
				e.wantWaiting("queue_space")
				e.wantBackpressure(true)
				e.consume() // the consumer comes: it drains the queue, the next start publishes the rest
			}},
		faultCase{name: "disk alarm mid-publish", private: true, declare: true, firstExit: 0,
			inject: func(e *env, p *proc) {
				if !atStage(e, p, "publishing") {
					return
				}
				if err := broker.ctl("set_disk_free_limit", "10000GB"); err != nil {
					e.t.Error(err)
				}
				time.Sleep(6 * time.Second) // the broker node holds its disk alarm a while
				if err := broker.ctl("set_disk_free_limit", "50MB"); err != nil {
					e.t.Error(err)
				}
			}},
		faultCase{name: "store full mid-publish", tmpfs: true, declare: true, firstExit: -2,
			inject: func(e *env, p *proc) {
				if atStage(e, p, "publishing") {
					fill(e.t, e.tmpfs)
				}
			},
			after: func(e *env) { _ = os.Remove(filepath.Join(e.tmpfs, "ballast")) }},
		faultCase{name: "store read-only mid-publish", tmpfs: true, declare: true, firstExit: -2,
			inject: func(e *env, p *proc) {
				if atStage(e, p, "publishing") {
					mustRun(e.t, "mount", "-o", "remount,ro", e.tmpfs)
				}
			},
			after: func(e *env) { mustRun(e.t, "mount", "-o", "remount,rw", e.tmpfs) }},
		faultCase{name: "store full while unpacking", tmpfs: true, declare: true, firstExit: -2,
			inject: func(e *env, p *proc) {
				if atStage(e, p, "downloading") {
					fill(e.t, e.tmpfs)
				}
			},
			after: func(e *env) { _ = os.Remove(filepath.Join(e.tmpfs, "ballast")) }},
		// The package of an execution F&O exported is never abandoned: with
		// B IncrementalPush, a second export would hold none of its rows.
		faultCase{name: "TMPDIR full while downloading, B IncrementalPush", ci: true, tmpfs: true, declare: true,
			sim: []string{"--incremental", "B"}, first: tmpdirFull},
		faultCase{name: "two replicas @every 10s for 2m, one killed", declare: true, schedule: "@every 10s", first: twoReplicas},
		faultCase{name: "replica clock +2m, @every 10s, one killed", declare: true, schedule: "@every 10s", first: skewedReplicas("+2m")},
		faultCase{name: "replica clock -2m, @every 10s, one killed", declare: true, schedule: "@every 10s", first: skewedReplicas("-2m")},
		faultCase{name: "paused owner past lease_ttl, @every 10s", declare: true, schedule: "@every 10s", first: pausedOwner},
		// Retry-After 1 s: F&O asks whole seconds; the storm is the point, not its length.
		faultCase{name: "F&O 429 storm", ci: true, declare: true, firstExit: 0,
			sim: []string{"--fault", "action=*,first=4,status=429,retry-after=1s"}},
		faultCase{name: "F&O 5xx every 3rd call", declare: true, firstExit: 0,
			sim: []string{"--fault", "action=*,every=3,status=503"}},
		faultCase{name: "F&O connection resets", declare: true, firstExit: 0,
			sim: []string{"--fault", "action=*,every=4,reset"}},
		faultCase{name: "F&O slow answers", declare: true, firstExit: 0,
			sim: []string{"--fault", "action=*,every=2,delay=2s"}},
		faultCase{name: "F&O execution past poll.deadline", declare: true, firstExit: 75, poll: "deadline: 5s",
			sim:   []string{"--execution-time", "8s"},
			after: func(e *env) { e.wantWaiting("execution") }}, // F&O ends it meanwhile
		faultCase{name: "expired package URL", declare: true, firstExit: 0,
			sim: []string{"--expired-urls", "1"}},
		faultCase{name: "truncated downloads", declare: true, firstExit: 0,
			sim: []string{"--truncate-after", "30000", "--download-faults-first", "2"}},
		faultCase{name: "short Content-Length", declare: true, firstExit: 0,
			sim: []string{"--content-length-delta", "-200", "--download-faults-first", "1"}},
		faultCase{name: "slow download stalls", declare: true, firstExit: 0,
			sim: []string{"--download-rate", "200000"}},
		// Bounded answers and downloads: bad 200 answers are retried like
		// a 5xx, an export behind one is found by its ID, a body is cut at
		// its bound and a stalled download resumed, all in the first start.
		faultCase{name: "F&O oversize status answer", declare: true, firstExit: 0,
			sim:    []string{"--fault", "action=GetExecutionSummaryStatus,every=3,answer=oversize"},
			inject: wantLine(`"msg":"F&O call failed, retrying"`, `"reason":"oversize answer"`, `more than 8388608 bytes`)},
		faultCase{name: "F&O gzip bomb answer", declare: true, firstExit: 0,
			sim:    []string{"--fault", "action=GetExportedPackageUrl,first=2,answer=gzip-bomb"},
			inject: wantLine(`"msg":"F&O call failed, retrying"`, `once gzip-decoded`)},
		faultCase{name: "F&O HTML 200 to ExportToPackage, export started", declare: true, firstExit: 0,
			sim:    []string{"--fault", "action=ExportToPackage,first=1,answer=html,apply"},
			inject: wantLine(`"msg":"F&O export may have started`, `Content-Type text/html`)},
		faultCase{name: "F&O HTML 200 to ExportToPackage, not started", declare: true, firstExit: 0,
			sim:    []string{"--fault", "action=ExportToPackage,first=1,answer=html"},
			inject: wantLine(`"msg":"F&O export may have started`, `Content-Type text/html`)},
		faultCase{name: "endless package body", declare: true, firstExit: 0, poll: "deadline: 2m, max_package_bytes: 16MiB",
			sim:    []string{"--endless-body", "--download-faults-first", "1"},
			inject: wantLine(`"msg":"package body larger than its bound; downloading it again"`)},
		faultCase{name: "download trickles then stalls", declare: true, firstExit: 0, poll: "deadline: 2m, download_stall_timeout: 2s",
			sim:    []string{"--download-rate", "50000", "--stall-after", "100000", "--download-faults-first", "1"},
			inject: wantLine(`"msg":"package download interrupted, resuming"`, `poll.download_stall_timeout`)},
	)
	// A run record damaged by hand after a kill (dmfexport's own writes
	// are atomic): quarantined at the next start and rebuilt from the
	// stored package or from the record's metadata, so no second export;
	// with the metadata gone too, before the package was stored, nothing
	// names the execution: the run is given up and, once F&O has ended
	// that execution, the next run exports again.
	for _, d := range []struct {
		shape    string
		stage    string
		bytes    []byte
		loseMeta bool
	}{
		{"truncated", "publishing", nil, false}, {"empty", "publishing", []byte{}, false}, {"{}", "publishing", []byte("{}"), false},
		{"{}", "exporting", []byte("{}"), false}, {"{}, no metadata,", "exporting", []byte("{}"), true},
	} {
		cs = append(cs, faultCase{name: "damaged record: " + d.shape + " while " + d.stage, declare: true, firstExit: -1,
			secondExport: d.loseMeta,
			inject: func(e *env, p *proc) {
				if d.stage == "exporting" {
					// Past the register window: F&O knows the execution.
					if p.waitLine(60*time.Second, stageOf(d.stage)...) {
						time.Sleep(1500 * time.Millisecond) // the dmfsim process has registered the execution
						p.signal(syscall.SIGKILL)
					}
				} else if atStage(e, p, d.stage) {
					p.signal(syscall.SIGKILL)
				}
			},
			after: func(e *env) {
				damageRecord(e, d.bytes, d.loseMeta)
				if d.loseMeta {
					time.Sleep(3 * time.Second) // F&O ends the orphaned execution
				}
			}})
	}
	// Azure Blob Storage away for a few seconds while the package and the
	// entity blobs upload and while records and checkpoints are written:
	// paused (SIGSTOP: requests hang) or stopped and started again (its
	// port refuses connections).
	for _, stage := range []string{"downloading", "unpacking", "publishing"} {
		for _, stop := range []bool{false, true} {
			how := "paused"
			if stop {
				how = "stopped"
			}
			cs = append(cs, faultCase{name: "Azurite " + how + " 5s while " + stage, azure: true, declare: true, firstExit: -2,
				inject: func(e *env, p *proc) {
					if stage == "publishing" {
						if !atStage(e, p, stage) {
							return
						}
					} else if !p.waitLine(60*time.Second, stageOf(stage)...) {
						e.t.Errorf("the run never reached stage %s:\n%s", stage, tail(p.log(), 20))
						return
					}
					if stop {
						e.az.stop()
						time.Sleep(5 * time.Second) // the Azurite process is down a while
						e.az.start()
					} else {
						e.az.p.signal(syscall.SIGSTOP)
						time.Sleep(5 * time.Second) // the Azurite process is frozen a while
						e.az.p.signal(syscall.SIGCONT)
					}
					select {
					case <-p.done:
						e.t.Errorf("the run had ended before the store came back: the fault missed it")
					default:
					}
				}})
		}
	}
	// Azurite killed while the package downloads and a fresh one started
	// on its port that keeps nothing: the container and every record,
	// marker and lease in it are gone. The run creates the container
	// again, writes its record, marker and lease again from memory and
	// finishes, under its one export.
	cs = append(cs, faultCase{name: "Azurite restarted empty while downloading", azure: true, declare: true, firstExit: 0,
		inject: func(e *env, p *proc) {
			if !p.waitLine(60*time.Second, stageOf("downloading")...) {
				e.t.Errorf("the run never reached stage downloading:\n%s", tail(p.log(), 20))
				return
			}
			e.az.restartEmpty()
			select {
			case <-p.done:
				e.t.Errorf("the run had ended before the store came back: the fault missed it")
			default:
			}
		},
		after: func(e *env) {
			log := e.procs[0].log()
			for _, want := range []string{"store container was gone and is created again", "writing the run's record, active marker and lease again"} {
				if !strings.Contains(log, want) {
					e.t.Errorf("the first start never said %q: the fault missed it\n%s", want, tail(log, 20))
				}
			}
		}})
	return cs
}

// wantLine is an inject that fails the case unless the first start logs a
// line holding every one of parts: the fault was met and said so.
func wantLine(parts ...string) func(e *env, p *proc) {
	return func(e *env, p *proc) {
		if !p.waitLine(60*time.Second, parts...) {
			e.t.Errorf("the first start never logged %q:\n%s", parts, tail(p.log(), 20))
		}
	}
}

// runCase runs one case and prints its line.
func runCase(t *testing.T, c faultCase) {
	e := newEnv(t, c)
	if c.first != nil {
		code := c.first(e)
		firstStatus := e.status()
		e.checkReasons(firstStatus)
		next := e.dmfexport("trigger", "f")
		nextCode, ok := next.wait(firstTimeout)
		if !ok || nextCode != 0 {
			t.Errorf("next start: exit %d (exited %v):\n%s", nextCode, ok, tail(next.log(), 10))
		}
		e.report(code, firstStatus, nextCode)
		return
	}
	first := e.dmfexport("trigger", "f")
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c.inject != nil {
			c.inject(e, first)
		}
	}()
	code, exited := first.wait(firstTimeout)
	if !exited {
		first.signal(syscall.SIGKILL)
		t.Errorf("first start still running after %s: a hang", firstTimeout)
	}
	<-done
	if c.firstExit != -2 && code != c.firstExit && !(c.firstExit == -1 && code != 0) {
		t.Errorf("first start: exit %d, want %d\n%s", code, c.firstExit, tail(first.log(), 15))
	}
	firstStatus := e.status()
	e.checkReasons(firstStatus)
	if c.after != nil {
		c.after(e)
	} else if len(c.sim) > 0 {
		// The fault was F&O's: it is over by the next start.
		e.restartSim()
	}
	var nextCode int
	var nextDetail string
	if c.next != nil {
		nextCode, nextDetail = c.next(e)
	} else {
		next := e.dmfexport("trigger", "f")
		var ok bool
		if nextCode, ok = next.wait(firstTimeout); !ok {
			nextCode, nextDetail = -1, "hung"
		} else if nextCode != 0 {
			nextDetail = tail(next.log(), 10)
		}
	}
	if nextCode != 0 {
		t.Errorf("next start: exit %d: %s", nextCode, nextDetail)
	}
	e.report(code, firstStatus, nextCode)
}

func newEnv(t *testing.T, c faultCase) *env {
	dir := t.TempDir()
	e := &env{t: t, c: c, dir: dir}
	id := fmt.Sprintf("faults.%d", time.Now().UnixNano())
	e.exchange, e.queue = id, id
	e.sim = startSim(t, dir, rowsA, c.sim...)
	target := strings.TrimSuffix(strings.TrimPrefix(broker.url, "amqp://guest:guest@"), "/")
	e.proxy = testenv.StartProxy(t, target)
	store := filepath.Join(dir, "store")
	if c.tmpfs {
		store = filepath.Join(dir, "tmpfs")
		if err := os.MkdirAll(store, 0o755); err != nil {
			t.Fatal(err)
		}
		mustRun(t, "mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", store)
		t.Cleanup(func() { _ = exec.CommandContext(context.Background(), "umount", "-l", store).Run() })
		e.tmpfs = store
	}
	storeKeys := fmt.Sprintf("{path: %q}", store)
	e.vars = append(os.Environ(), "DMFSIM_URL="+e.sim.url, "FO_TOKEN="+dmftest.DefaultToken)
	if c.azure {
		e.az = startAzurite(t, dir)
		storeKeys = "{type: azblob, container: faults, prefix: exports, connection_string: \"${FAULTS_AZURE_CONN}\"}"
		e.vars = append(e.vars, "FAULTS_AZURE_CONN="+e.az.connString())
	}
	e.declareTopology()
	brokerKeys := "{url: \"amqp://guest:guest@" + e.proxy.Addr() + "/\", declare: " + fmt.Sprint(c.declare)
	if c.declare {
		brokerKeys += ", queues: [{name: " + e.queue + ", binding_key: fo.faults}]"
	}
	if c.broker != "" {
		brokerKeys += ", " + c.broker
	}
	brokerKeys += "}"
	schedule := c.schedule
	if schedule == "" {
		schedule = "@yearly"
	}
	poll := "interval: 100ms, max_interval: 300ms, package_url_timeout: 20s, register_timeout: 10s, "
	if c.poll != "" {
		poll += c.poll
	} else {
		poll += "deadline: 2m"
	}
	cfg := fmt.Sprintf(`fo:
  url: ${DMFSIM_URL}
  auth: {method: token, token: "${FO_TOKEN}"}
store: %s
broker: %s
poll: {%s}
replicas: {lease_ttl: 3s}
exports:
  - {name: f, schedule: %q, definition_group: G, legal_entity: USMF, exchange: %q, routing_key: fo.faults, batch_size: 20}
`, storeKeys, brokerKeys, poll, schedule, e.exchange)
	e.cfg = filepath.Join(dir, "dmfexport.yaml")
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if !c.lateConsumer {
		e.consume()
	}
	return e
}

// declareTopology declares what dmfexport declares (or, for cases that
// declare nothing, the exchange and the queue, bound only where the case
// routes): a consumer reads the queue from the start, as in production.
func (e *env) declareTopology() {
	conn, err := amqp.Dial(broker.url)
	if err != nil {
		e.t.Fatalf("broker: %v", err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(e.exchange, "topic", true, false, false, false, nil); err != nil {
		e.t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(e.queue, true, false, false, false, e.c.queue); err != nil {
		e.t.Fatal(err)
	}
	key := "fo.faults"
	if !e.c.declare && e.c.queue == nil {
		key = "nothing.routes.here" // unroutable until the operator binds it
	}
	if err := ch.QueueBind(e.queue, key, e.exchange, false, nil); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if c, err := amqp.Dial(broker.url); err == nil {
			if ch, err := c.Channel(); err == nil {
				_, _ = ch.QueueDelete(e.queue, false, false, false)
				_ = ch.ExchangeDelete(e.exchange, false, false)
			}
			_ = c.Close()
		}
	})
}

// bind binds the queue with key, as an operator fixing routing would.
func (e *env) bind(key string) {
	conn, err := amqp.Dial(broker.url)
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := ch.QueueBind(e.queue, key, e.exchange, false, nil); err != nil {
		e.t.Fatal(err)
	}
}

// consume reads the queue as a downstream consumer would, from the start
// of the case to its end, tallying every delivery.
func (e *env) consume() {
	e.delivered = &delivery{rows: map[string]map[string]int{}, msgs: map[string]int{}, rowMsg: map[string]string{}}
	conn, err := amqp.Dial(broker.url)
	if err != nil {
		e.t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		e.t.Fatal(err)
	}
	_ = ch.Qos(200, 0, false)
	dels, err := ch.Consume(e.queue, "", false, false, false, false, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for m := range dels {
			e.mu.Lock()
			e.delivered.add(e.t, m)
			e.mu.Unlock()
			time.Sleep(e.c.slowConsumer) // a slow consumer: the broker node holds the rest
			_ = m.Ack(false)
		}
	}()
	e.stopCons = func() {
		// Wait until the queue is empty and nothing more arrives.
		last := -1
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) { // the broker node delivers what the dmfexport process published
			e.mu.Lock()
			n := len(e.delivered.msgs) + e.delivered.dupBatches
			e.mu.Unlock()
			q, err := ch.QueueDeclarePassive(e.queue, true, false, false, false, e.c.queue)
			if err == nil && q.Messages == 0 && n == last {
				break
			}
			last = n
		}
		_ = conn.Close()
		<-stopped
	}
	e.t.Cleanup(func() { _ = conn.Close() })
}

func (d *delivery) add(t *testing.T, m amqp.Delivery) {
	var b struct {
		Data struct {
			RunID  string              `json:"run_id"`
			Entity string              `json:"entity"`
			Rows   []map[string]string `json:"rows"`
		} `json:"data"`
	}
	if err := json.Unmarshal(m.Body, &b); err != nil {
		t.Errorf("message %s: %v", m.MessageId, err)
		return
	}
	d.msgs[m.MessageId]++
	if d.msgs[m.MessageId] > 1 {
		d.dupBatches++
	}
	run := b.Data.RunID
	if d.rows[run] == nil {
		d.rows[run] = map[string]int{}
	}
	for _, r := range b.Data.Rows {
		k := b.Data.Entity + "/" + r["ID"]
		d.rows[run][k]++
		if first, ok := d.rowMsg[run+"/"+k]; ok && first != m.MessageId {
			d.badDups++
		} else if !ok {
			d.rowMsg[run+"/"+k] = m.MessageId
		}
	}
}

// dmfexport starts the binary with the case's config and JSON logs.
func (e *env) dmfexport(args ...string) *proc { return e.dmfexportEnv(nil, args...) }

// dmfexportEnv is dmfexport with extra environment variables.
func (e *env) dmfexportEnv(extra []string, args ...string) *proc {
	full := append([]string{args[0], "--config", e.cfg, "--log-format", "json", "--log-level", "info"}, args[1:]...)
	p := startProc(e.t, append(append([]string(nil), e.vars...), extra...), e.dir, "dmfexport", full...)
	e.procs = append(e.procs, p)
	return p
}

// status returns the export's runs as dmfexport status --json shows them.
func (e *env) status() []runStatus {
	cmd := exec.CommandContext(context.Background(), filepath.Join(binDir, "dmfexport"), "status", "--config", e.cfg, "--json", "--limit", "0", "f")
	cmd.Env = e.vars
	out, err := cmd.Output()
	if err != nil {
		e.t.Errorf("dmfexport status: %v", err)
		return nil
	}
	var rs []runStatus
	if err := json.Unmarshal(out, &rs); err != nil {
		e.t.Errorf("dmfexport status --json: %v", err)
	}
	return rs
}

// checkReasons fails the case for an unfinished run whose line in the
// status table gives no reason (interrupted, waiting for the broker, or
// its error).
func (e *env) checkReasons(runs []runStatus) {
	var table string
	for _, r := range runs {
		if r.final() {
			continue
		}
		if table == "" {
			cmd := exec.CommandContext(context.Background(), filepath.Join(binDir, "dmfexport"), "status", "--config", e.cfg, "--limit", "0", "f")
			cmd.Env = e.vars
			out, _ := cmd.Output()
			table = string(out)
		}
		ok := false
		for _, line := range strings.Split(table, "\n") {
			if strings.Contains(line, r.RunID) && (strings.Contains(line, "interrupted") || strings.Contains(line, "waiting for") || r.Error != "" && strings.Contains(line, "running")) {
				ok = true
			}
		}
		if !ok {
			e.t.Errorf("run %s is left %s without a reason in status:\n%s", r.RunID, r.State, table)
		}
	}
}

// wantWaiting fails the case unless status shows the first run unfinished
// and waiting for what.
func (e *env) wantWaiting(what string) {
	if st := e.status(); len(st) == 0 || st[0].final() || st[0].Waiting != what {
		e.t.Errorf("status after the first start: want the run waiting for %s, got %+v", what, st)
	}
}

// wantBackpressure checks the first start's account of a full queue: no
// entity failed, the first run succeeded or waits for room in the queue
// (waiting: must wait), and each back-pressure logged at WARN when it
// started ended logged at INFO, or in giving up.
func (e *env) wantBackpressure(waiting bool) {
	st := e.status()
	switch {
	case len(st) == 0:
		e.t.Errorf("status after the first start: no run")
		return
	case waiting && (st[0].final() || st[0].Waiting != "queue_space"):
		e.t.Errorf("status after the first start: want the run waiting for room in the queue, got %+v", st[0])
	case !waiting && st[0].State != "succeeded" && st[0].Waiting != "queue_space":
		e.t.Errorf("status after the first start: want succeeded or waiting for room in the queue, got %+v", st[0])
	}
	p := e.procs[0]
	starts := p.count(`"level":"WARN"`, `"msg":"broker refuses messages (nack): queue full`)
	ends := p.count(`"level":"INFO"`, `"msg":"broker stores messages again: back-pressure over"`)
	gaveUp := p.count(`"level":"WARN"`, `"msg":"broker still refuses messages; giving up on them for now"`)
	if n := p.count(`"msg":"entity failed"`); n > 0 {
		e.t.Errorf("%d entities failed on a full queue:\n%s", n, tail(p.log(), 15))
	}
	if starts == 0 || starts != ends+gaveUp || waiting != (gaveUp > 0) {
		e.t.Errorf("back-pressure: %d started (WARN), %d ended (INFO), %d given up; want each start ended once, and given up only when the run waits", starts, ends, gaveUp)
	}
	fmt.Printf("      back-pressure in the first start: %d started (WARN), %d ended (INFO), %d given up at broker.backpressure_timeout\n", starts, ends, gaveUp)
}

// restartSim replaces the simulator with one without the case's faults,
// on the same address.
func (e *env) restartSim() {
	e.sim.signal(syscall.SIGTERM)
	e.sim.wait(10 * time.Second)
	addr := strings.TrimPrefix(e.sim.url, "http://")
	p := startProc(e.t, os.Environ(), e.dir, "dmfsim", "--addr", addr, "--project", "G="+filepath.Join(e.dir, "project"), "--execution-time", "1500ms")
	old := e.sim.exports()
	e.sim = &sim{proc: p, url: e.sim.url}
	e.sim.base = old
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) { // the restarted dmfsim process starts listening
		if c, err := (&net.Dialer{}).DialContext(e.t.Context(), "tcp", addr); err == nil {
			_ = c.Close()
			break
		}
	}
}

// report prints the case's line and fails it if a row was lost, a row
// came twice under different message IDs, or a run was exported twice.
func (e *env) report(firstExit int, firstStatus []runStatus, nextExit int) {
	e.stopCons()
	final := e.status()
	d := e.delivered
	want := int64(rowsA + 100)
	var expected, received int64
	exported := 0
	succeeded := 0
	var states []string
	for _, r := range final {
		states = append(states, r.State)
		if r.State == "succeeded" {
			succeeded++
			expected += want
			received += int64(len(d.rows[r.RunID]))
		}
		if r.State != "skipped" && !strings.Contains(r.Error, "nothing was exported") {
			exported++
		}
	}
	e.checkReasons(final)
	exports := e.sim.exports() + e.sim.base
	second := max(0, exports-exported)
	first := "-"
	if len(firstStatus) > 0 {
		f := firstStatus[0]
		first = f.State
		if f.Waiting != "" {
			first += " (waiting for " + f.Waiting + ")"
		} else if !f.final() {
			first += " (resumable)"
		}
	}
	nextOK := "ok"
	if nextExit != 0 {
		nextOK = fmt.Sprintf("FAILED (exit %d)", nextExit)
	}
	fmt.Printf("FAULT %-48s rows %6d/%-6d lost %d  dup batches %3d (bad %d)  exports %d (second %d)  exit %2d  first run %-32s next start %s  runs %v\n",
		e.c.name, expected, received, expected-received, d.dupBatches, d.badDups, exports, second, firstExit, first, nextOK, states)
	if received < expected {
		e.t.Errorf("%d rows lost", expected-received)
	}
	if d.badDups > 0 {
		e.t.Errorf("%d rows delivered twice under different message IDs", d.badDups)
	}
	if second > 0 && !(e.c.secondExport && second == 1) {
		e.t.Errorf("%d second exports", second)
	}
	if succeeded == 0 {
		e.t.Errorf("no run succeeded: %v", states)
	}
	for _, r := range firstStatus {
		if r.State == "failed" {
			e.t.Errorf("run %s ended failed after the first start: every run must succeed or be left resumable (%s)", r.RunID, r.Error)
		}
	}
	for _, r := range final {
		if r.State != "succeeded" {
			fmt.Printf("      run %s %s: %s\n", r.RunID, r.State, r.Error)
		}
	}
	// A run given up for a damaged record has no record, only its
	// quarantined copy.
	quarantined, _ := filepath.Glob(filepath.Join(e.dir, "store", "f", "*", "run.json.damaged-*"))
	for _, q := range quarantined {
		if _, err := os.Stat(filepath.Join(filepath.Dir(q), "run.json")); err != nil && !strings.HasSuffix(q, ".meta.json") {
			fmt.Printf("      run %s given up: its damaged record is quarantined as %s\n", filepath.Base(filepath.Dir(q)), filepath.Base(q))
		}
	}
	for _, p := range e.procs {
		if strings.Contains(p.log(), "panic:") || strings.Contains(p.log(), "goroutine ") {
			e.t.Errorf("dmfexport panicked:\n%s", tail(p.log(), 30))
		}
		if strings.Contains(p.log(), dmftest.DefaultToken) {
			e.t.Error("a dmfexport log line holds the F&O token")
		}
	}
}

// tmpdirFull runs the first start with its TMPDIR on a 64 KiB tmpfs, too
// small for the package: F&O exports, the download fails, and the run must
// be left waiting to fetch the same execution's package again (exit 75),
// which the next start, with room, does.
func tmpdirFull(e *env) int {
	tmp := filepath.Join(e.dir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		e.t.Fatal(err)
	}
	mustRun(e.t, "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", tmp)
	e.t.Cleanup(func() { _ = exec.CommandContext(context.Background(), "umount", "-l", tmp).Run() })
	p := e.dmfexportEnv([]string{"TMPDIR=" + tmp}, "trigger", "f")
	code, ok := p.wait(firstTimeout)
	if !ok {
		p.signal(syscall.SIGKILL)
		e.t.Errorf("first start still running after %s: a hang", firstTimeout)
	}
	if code != 75 {
		e.t.Errorf("first start: exit %d, want 75 (run waiting)\n%s", code, tail(p.log(), 15))
	}
	e.wantWaiting("package")
	return code
}

// damageRecord overwrites the record of the case's one run in the dir
// store, as a hand edit would: with b, or, when b is nil, with its first
// half (truncated); loseMeta removes its metadata sidecar too.
func damageRecord(e *env, b []byte, loseMeta bool) {
	recs, _ := filepath.Glob(filepath.Join(e.dir, "store", "f", "*", "run.json"))
	if len(recs) != 1 {
		e.t.Errorf("want the record of one run to damage, found %v", recs)
		return
	}
	if b == nil {
		orig, err := os.ReadFile(recs[0])
		if err != nil {
			e.t.Error(err)
			return
		}
		b = orig[:len(orig)/2]
	}
	if err := os.WriteFile(recs[0], b, 0o644); err != nil {
		e.t.Error(err)
	}
	if loseMeta {
		if err := os.Remove(recs[0] + ".meta.json"); err != nil {
			e.t.Error(err)
		}
	}
	fmt.Printf("      damaged %s (%d bytes)\n", strings.TrimPrefix(recs[0], e.dir+"/"), len(b))
}

// fill writes a ballast file until the file system is full.
func fill(t *testing.T, dir string) {
	f, err := os.Create(filepath.Join(dir, "ballast"))
	if err != nil {
		return // already full
	}
	defer func() { _ = f.Close() }()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			return
		}
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	if out, err := exec.CommandContext(t.Context(), name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// replicaStopCode reads the exit code of a replica stopped with SIGTERM:
// 75 says it left runs for the next start (a run of the last slot cut off
// by the stop), which is a clean stop here — the case checks every run's
// record itself — so it counts as 0.
func replicaStopCode(code int) int {
	if code == 75 {
		return 0
	}
	return code
}

// twoReplicas runs two services on one store for two minutes with an
// export every 10 seconds, kills one with SIGKILL in the middle of a run
// of its own, and stops the other: every slot is run once, the killed
// replica's run is taken over, nothing is exported twice.
func twoReplicas(e *env) int {
	a := e.dmfexport("run", "--listen", "", "--stop-timeout", "30s")
	b := e.dmfexport("run", "--listen", "", "--stop-timeout", "30s")
	start := time.Now()
	time.Sleep(50 * time.Second) // the replica processes run several slots first
	// Kill whichever replica publishes next, mid-entity.
	pub := []string{`"msg":"publishing entity"`, `"entity":"A"`}
	na, nb := a.count(pub...), b.count(pub...)
	victim := -1
	for deadline := time.Now().Add(30 * time.Second); victim < 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) { // a replica process starts publishing
		switch {
		case a.count(pub...) > na:
			victim = 0
		case b.count(pub...) > nb:
			victim = 1
		}
	}
	time.Sleep(300 * time.Millisecond) // the replica process is mid-entity when killed
	survivor := b
	if victim == 1 {
		survivor = a
		b.signal(syscall.SIGKILL)
	} else {
		a.signal(syscall.SIGKILL)
	}
	time.Sleep(time.Until(start.Add(2 * time.Minute))) // the surviving replica process runs to two minutes
	survivor.signal(syscall.SIGTERM)
	code, ok := survivor.wait(40 * time.Second)
	code = replicaStopCode(code)
	if !ok {
		e.t.Error("surviving replica did not stop within its stop timeout")
	}
	if n := survivor.count(`"msg":"resuming unfinished run"`) + survivor.count(`"msg":"run finished"`); n == 0 {
		e.t.Error("the surviving replica finished no run")
	}
	return code
}

// skewedReplicas runs two services on one store for two minutes with an
// export every 10 seconds, the second with its clock skewed by skew
// (DMFEXPORT_FAULTS_CLOCK_SKEW, which the suite's builds honour), kills
// whichever publishes next with SIGKILL mid-entity, and stops the other:
// no schedule slot runs twice, no live run is taken over (lease ages are
// measured on the store's clock), and the killed replica's run is resumed
// by the survivor.
func skewedReplicas(skew string) func(e *env) int {
	return func(e *env) int {
		// Slow enough that a run is still publishing when its replica is
		// killed, 300 ms into it: on a fast machine a run published its
		// rows in less, and was over before the kill.
		e.proxy.SetDelay(5 * time.Millisecond)
		a := e.dmfexport("run", "--listen", "", "--stop-timeout", "30s")
		b := e.dmfexportEnv([]string{"DMFEXPORT_FAULTS_CLOCK_SKEW=" + skew}, "run", "--listen", "", "--stop-timeout", "30s")
		reps := []*proc{a, b}
		start := time.Now()
		time.Sleep(50 * time.Second) // the replica processes run several slots first
		pub := []string{`"msg":"publishing entity"`, `"entity":"A"`}
		seen := []int{a.count(pub...), b.count(pub...)}
		victim := -1
		for deadline := time.Now().Add(40 * time.Second); victim < 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) { // a replica process starts publishing
			for i, p := range reps {
				if p.count(pub...) > seen[i] {
					victim = i
					break
				}
			}
		}
		if victim < 0 {
			e.t.Errorf("neither replica published within 90s:\n%s\n%s", tail(a.log(), 10), tail(b.log(), 10))
			victim = 0
		}
		time.Sleep(300 * time.Millisecond) // the replica process is mid-entity when killed
		reps[victim].signal(syscall.SIGKILL)
		runID := lastRunID(reps[victim], pub...)
		survivor := reps[1-victim]
		time.Sleep(time.Until(start.Add(2 * time.Minute))) // the surviving replica process runs to two minutes
		survivor.signal(syscall.SIGTERM)
		code, ok := survivor.wait(40 * time.Second)
		code = replicaStopCode(code)
		if !ok {
			e.t.Error("surviving replica did not stop within its stop timeout")
		}
		names := []string{"replica with the true clock", "replica with its clock " + skew}
		fmt.Printf("      killed the %s mid-publish of run %s\n", names[victim], runID)
		if runID == "" || survivor.count(`"msg":"resuming unfinished run"`, `"run":"`+runID+`"`) == 0 {
			e.t.Errorf("the %s never took over run %q of the killed replica:\n%s", names[1-victim], runID, tail(survivor.log(), 20))
		}
		for i, p := range reps {
			for _, taken := range []string{"run taken over by another replica", "data project lease taken over"} {
				if n := p.count(taken); n > 0 {
					e.t.Errorf("the %s had a live run taken over %d times (%q)", names[i], n, taken)
				}
			}
		}
		slots := map[string]int{}
		for _, r := range e.status() {
			if r.Trigger == "schedule" && r.State != "skipped" {
				if slots[r.ScheduledAt]++; slots[r.ScheduledAt] == 2 {
					e.t.Errorf("schedule slot %s ran more than once", r.ScheduledAt)
				}
			}
		}
		return code
	}
}

// lastRunID returns the run of p's last log line that holds every one of
// parts.
func lastRunID(p *proc, parts ...string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.lines) - 1; i >= 0; i-- {
		if containsAll(p.lines[i], parts) {
			if m := runIDRE.FindStringSubmatch(p.lines[i]); m != nil {
				return m[1]
			}
		}
	}
	return ""
}

var runIDRE = regexp.MustCompile(`"run":"([^"]+)"`)

// pausedOwner runs two services on one store with an export every 10
// seconds and SIGSTOPs whichever publishes first, mid-entity, until the
// other has taken its run over and finished it (lease_ttl is 3s), then
// SIGCONTs it. The paused owner must say "lease lost" and publish no batch
// after it goes on (only batches it sent before the pause may come twice:
// the adopter republishes from the last checkpoint), the run's final
// record is the adopter's, and every slot after the takeover runs once,
// none skipped.
func pausedOwner(e *env) int {
	a := e.dmfexport("run", "--listen", "", "--stop-timeout", "30s")
	b := e.dmfexport("run", "--listen", "", "--stop-timeout", "30s")
	reps := []*proc{a, b}
	pub := []string{`"msg":"publishing entity"`, `"entity":"A"`}
	// Pause whichever replica starts publishing entity A next, a little
	// into it; if its run had already finished (a fast machine), let it go
	// and wait for the next run.
	var own, adopter *proc
	var runID string
	var paused time.Time
	inLock := 0 // pauses that fell while the owner held a folder's lock
	seen := []int{0, 0}
	for attempt := 0; own == nil && attempt < 3; attempt++ {
		owner := -1
		for deadline := time.Now().Add(60 * time.Second); owner < 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) { // a replica process starts publishing
			for i, p := range reps {
				if n := p.count(pub...); n > seen[i] {
					owner = i
					break
				}
			}
		}
		if owner < 0 {
			break
		}
		time.Sleep(time.Duration(20+rand.IntN(80)) * time.Millisecond) // the owner process is into publishing when paused
		inLock = reps[owner].pauseUnlocked()
		paused = time.Now()
		seen = []int{a.count(pub...), b.count(pub...)}
		id := lastRunID(reps[owner], pub...)
		if reps[owner].count(`"msg":"run finished"`, `"run":"`+id+`"`) > 0 {
			reps[owner].signal(syscall.SIGCONT)
			continue
		}
		own, adopter, runID = reps[owner], reps[1-owner], id
	}
	if own == nil {
		e.t.Errorf("no replica was caught mid-publish in 3 runs:\n%s\n%s", tail(a.log(), 10), tail(b.log(), 10))
		return -1
	}
	// What the owner handed the broker before the pause has arrived a
	// second later; the adopter may publish those batches again.
	time.Sleep(time.Second) // the broker node delivers what the owner process handed it
	before := map[string]bool{}
	e.mu.Lock()
	for id := range e.delivered.msgs {
		before[id] = true
	}
	e.mu.Unlock()
	finished := adopter.waitLine(90*time.Second, `"msg":"run finished"`, `"run":"`+runID+`"`)
	adoptedAt := time.Now()
	if !finished {
		log := tail(adopter.log(), 20)
		e.t.Errorf("the other replica did not take over and finish run %s within 90s of the pause:\n%s\nits goroutines:\n%s", runID, log, adopter.goroutines())
	}
	time.Sleep(time.Until(paused.Add(10 * time.Second))) // paused past lease_ttl (3s) in any case
	recPath := filepath.Join(e.dir, "store", "f", runID, "run.json")
	adopted, err := os.ReadFile(recPath)
	if err != nil {
		e.t.Errorf("record of run %s: %v", runID, err)
	}
	cont := time.Now()
	own.signal(syscall.SIGCONT)
	if !own.waitLine(15*time.Second, "lease lost", `"run":"`+runID+`"`) {
		e.t.Errorf("the paused owner never said \"lease lost\" after SIGCONT:\n%s", tail(own.log(), 20))
	}
	time.Sleep(35 * time.Second) // three slots after the owner went on
	stop := time.Now()
	for _, p := range reps {
		p.signal(syscall.SIGTERM)
	}
	code := 0
	for i, p := range reps {
		c, ok := p.wait(40 * time.Second)
		if !ok {
			e.t.Errorf("replica %d did not stop within its stop timeout", i)
		}
		code = max(code, replicaStopCode(c))
	}
	if now, err := os.ReadFile(recPath); err != nil || !bytes.Equal(now, adopted) {
		e.t.Errorf("the record of run %s changed after the paused owner went on (err %v):\nadopter's:\n%s\nnow:\n%s", runID, err, adopted, now)
	}
	var rec struct {
		State    string `json:"state"`
		OwnerGen int    `json:"owner_gen"`
	}
	if err := json.Unmarshal(adopted, &rec); err != nil || rec.State != "succeeded" || rec.OwnerGen < 2 {
		e.t.Errorf("run %s's final record: state %q, owner_gen %d (%v); want succeeded, written by the adopter (generation 2 or more)", runID, rec.State, rec.OwnerGen, err)
	}
	// Duplicates: of batches the owner sent before the pause (the adopter
	// resumes from the last checkpoint), and of any sent after it.
	// A batch the owner was writing to its socket when it was paused (past
	// the lease check, not yet all sent) reaches the broker only once it
	// goes on: no check can take back bytes half written. That is at most
	// one per entity, the batch after the last one delivered before the
	// pause; any other is a batch published after losing the lease.
	last := map[string]int{} // execution/entity → highest batch delivered before the pause
	for id := range before {
		if prefix, n, ok := batchOf(id); ok {
			last[prefix] = max(last[prefix], n)
		}
	}
	dupBefore, dupAfter, midWrite := 0, 0, 0
	e.mu.Lock()
	for id, n := range e.delivered.msgs {
		prefix, b, ok := batchOf(id)
		switch {
		case n <= 1:
		case before[id]:
			dupBefore += n - 1
		case ok && n == 2 && b == last[prefix]+1:
			midWrite++
		default:
			dupAfter += n - 1
		}
	}
	e.mu.Unlock()
	fmt.Printf("      paused the owner of run %s for %s (%d pauses fell inside a record write's lock, let go): %d duplicate batches it had sent before the pause, %d it was writing at the pause, %d after it went on\n",
		runID, cont.Sub(paused).Round(time.Second), inLock, dupBefore, midWrite, dupAfter)
	if dupAfter > 0 {
		e.t.Errorf("%d batches published again after the paused owner went on: it published after losing its lease", dupAfter)
	}
	// Every slot from the end of the takeover to the stop ran once, none
	// skipped: the adopter's next slot included.
	ran := map[int64]string{}
	for _, r := range e.status() {
		if r.Trigger != "schedule" {
			continue
		}
		at, err := time.Parse(time.RFC3339, r.ScheduledAt)
		if err != nil {
			continue
		}
		if prev, dup := ran[at.Unix()]; dup {
			e.t.Errorf("schedule slot %s ran twice (%s, %s)", r.ScheduledAt, prev, r.State)
		}
		ran[at.Unix()] = r.State
	}
	for slot := adoptedAt.Truncate(10 * time.Second).Add(10 * time.Second); slot.Before(stop.Add(-12 * time.Second)); slot = slot.Add(10 * time.Second) {
		if st, ok := ran[slot.Unix()]; !ok || st == "skipped" {
			e.t.Errorf("schedule slot %s after the takeover: %q, want a run (slots run: %v)", slot.UTC().Format(time.RFC3339), st, ran)
		}
	}
	return code
}

// batchOf splits a batch's message ID, execution/entity/index, into the
// execution and entity, and the index.
func batchOf(id string) (string, int, bool) {
	i := strings.LastIndexByte(id, '/')
	if i < 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(id[i+1:])
	return id[:i], n, err == nil
}
