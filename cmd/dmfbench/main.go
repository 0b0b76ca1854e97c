// Command dmfbench measures the publish step on generated entity files: a
// wide 60-column CSV, a narrow 15-column CSV and a 20-column XLSX (every cell
// an inline string as F&O writes it; -xlsx-strings shared for a workbook
// re-saved in Excel). For each
// entity it prints rows/s, MB/s read, MB/s of message bodies, messages/s and
// peak RSS for parse+encode alone and for a full publish to RabbitMQ with
// publisher confirms (uncompressed, gzip, zstd), and the broker ceiling: a
// bare publisher of messages of the same size and count. Every case runs in
// a child process (this binary again), so its peak RSS is its own.
//
//	go run ./cmd/dmfbench                              # small default sizes, about 2 minutes
//	go run ./cmd/dmfbench -wide 100000 -narrow 1000000 -xlsx 200000
//
//	go run ./cmd/dmfbench -entities wide -cases none,gzip,zstd -link 100Mbit
//
// -link caps the bandwidth between publisher and broker with an in-process
// proxy, to show what compression buys on a slow link.
//
// The benchmark queues are declared with x-max-length-bytes and drop-head,
// so a long run cannot fill the broker's memory or disk; they are deleted
// afterwards.
//
// -sink postgres measures the sink instead (sinkbench.go): the wide and
// narrow entities landed in PostgreSQL by snapshot and upsert, against a
// bare COPY of the same rows and a consumer doing one INSERT per row.
//
//	go run ./cmd/dmfbench -sink postgres -wide 100000 -narrow 1000000
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dmfexport/dmfexport/publish"
	amqp "github.com/rabbitmq/amqp091-go"
)

type entity struct {
	key, name, format, path string
	rows                    int
}

// result is what a child prints on stdout as one JSON line.
type result struct {
	Rows     int64   `json:"rows"`
	BytesIn  int64   `json:"bytes_in"`
	BytesOut int64   `json:"bytes_out"`
	Messages int64   `json:"messages"`
	Seconds  float64 `json:"seconds"`
	MaxRSSKB int64   `json:"max_rss_kb"`
	// CPUSeconds is the CPU time of the case's process (user and system),
	// from its resource usage: on a shared machine it moves less than
	// the wall time.
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	// Sink cases: time spent decoding batches, and in the snapshot swap.
	DecodeSeconds float64 `json:"decode_seconds,omitempty"`
	SwapSeconds   float64 `json:"swap_seconds,omitempty"`
	// DBCPUSeconds: sink cases, the CPU time of the database's processes
	// serving the case's connections.
	DBCPUSeconds float64 `json:"db_cpu_seconds,omitempty"`
}

var (
	dir     = flag.String("dir", filepath.Join(os.TempDir(), "dmfbench"), "directory for the generated files (reused when present)")
	wideN   = flag.Int("wide", 50000, "rows of the wide 60-column CSV")
	narrowN = flag.Int("narrow", 200000, "rows of the narrow 15-column CSV")
	xlsxN   = flag.Int("xlsx", 50000, "rows of the 20-column XLSX")
	xlsxStr = flag.String("xlsx-strings", "inline", "how the XLSX holds its text: inline (every cell an inline string, as F&O writes it) or shared (a shared strings table, as Excel re-saves it)")
	url     = flag.String("url", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL")
	batch   = flag.Int("batch", publish.DefaultBatchSize, "rows per message")
	// batchBytes is max_batch_bytes; NoBatchByteLimit (-1) closes batches
	// by rows only, as versions before it did.
	batchBytes = flag.Int("batch-bytes", publish.DefaultMaxBatchBytes, "bytes of encoded rows that close a batch before -batch rows (max_batch_bytes; -1: rows only)")
	cases      = flag.String("cases", "parse,none,gzip,zstd,ceiling,bare", "cases to run, comma separated: parse, none, gzip, zstd, ceiling (dmfexport's publisher, messages of the publish's size), bare (a bare amqp091 publisher of the publish's own messages, 16 in flight)")
	only       = flag.String("entities", "wide,narrow,xlsx", "entities to run, comma separated")
	child      = flag.String("child", "", "internal: run one case in this process")
	childEnt   = flag.String("child-entity", "", "internal: entity file (format:path)")
	ceilSize   = flag.Int("ceiling-size", 0, "internal: message size of the ceiling case")
	ceilN      = flag.Int("ceiling-count", 0, "internal: message count of the ceiling case")
	inFlight   = flag.Int("max-unconfirmed", 0, "body bytes in flight before the publisher waits for confirms (broker.max_unconfirmed_bytes; 0: the sink's default)")
	tries      = flag.Int("tries", 3, "runs of each broker case (publish and ceiling); the best is shown")
	link       = flag.String("link", "", "cap the bandwidth between publisher and broker, e.g. 100Mbit (an in-process proxy), to see what compression buys on a slow link")
)

func main() {
	flag.Parse()
	if *child != "" {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "dmfbench child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dmfbench:", err)
		os.Exit(1)
	}
}

func run() error {
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	all := []entity{
		{"wide", "Customers V3", "csv", filepath.Join(*dir, fmt.Sprintf("Customers V3-%d.csv", *wideN)), *wideN},
		{"narrow", "Sales order lines V2", "csv", filepath.Join(*dir, fmt.Sprintf("Sales order lines V2-%d.csv", *narrowN)), *narrowN},
		{"xlsx", "Released products V2", "xlsx", filepath.Join(*dir, fmt.Sprintf("Released products V2-%d-%s.xlsx", *xlsxN, *xlsxStr)), *xlsxN},
	}
	if *xlsxStr != "inline" && *xlsxStr != "shared" {
		return fmt.Errorf("-xlsx-strings %q: want inline or shared", *xlsxStr)
	}
	if *sinkMode != "" && !flagSet("entities") {
		*only = "wide,narrow" // the sink bench lands the two CSV entities
	}
	var ents []entity
	for _, e := range all {
		if !contains(*only, e.key) || *sinkMode != "" && e.format != "csv" {
			continue
		}
		if _, err := os.Stat(e.path); err != nil {
			start := time.Now()
			switch e.key {
			case "wide":
				err = writeCSV(e.path, wideCols(), e.rows, wideRow, 1)
			case "narrow":
				err = writeCSV(e.path, narrowCols, e.rows, narrowRow, 2)
			default:
				err = writeXLSX(e.path, e.rows, 3, *xlsxStr == "inline")
			}
			if err != nil {
				return fmt.Errorf("generate %s: %w", e.path, err)
			}
			fmt.Fprintf(os.Stderr, "generated %s in %.1fs\n", e.path, time.Since(start).Seconds())
		}
		if e.format == "xlsx" {
			kind := "inline strings, as F&O writes it"
			if *xlsxStr == "shared" {
				kind = "shared strings, as Excel re-saves it"
			}
			fmt.Printf("dmfbench: XLSX %s (-xlsx-strings %s)\n", kind, *xlsxStr)
		}
		ents = append(ents, e)
	}
	if *sinkMode != "" {
		return runSink(ents)
	}
	if zp := filepath.Join(*dir, packageName(ents)); !exists(zp) {
		start := time.Now()
		if err := writePackage(zp, ents); err != nil {
			return fmt.Errorf("write package: %w", err)
		}
		fmt.Fprintf(os.Stderr, "generated %s in %.1fs\n", zp, time.Since(start).Seconds())
	}
	if *e2eMode {
		return runE2E(ents)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	rate, err := parseRate(*link)
	if err != nil {
		return err
	}
	through := ""
	if rate > 0 {
		through = fmt.Sprintf(", publisher-broker link %.0f Mbit/s", rate/1e6)
	}
	fmt.Printf("dmfbench: batch %d rows%s, %s\n", *batch, through, time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("%-8s %-8s %9s %10s %9s %9s %8s %9s %8s\n", "entity", "case", "rows", "rows/s", "MB/s in", "MB/s out", "msg/s", "RSS MiB", "CPU s")
	for _, e := range ents {
		var plain, ceiling, bare *result
		byCase := map[string]*result{}
		for _, c := range strings.Split(*cases, ",") {
			args := []string{"-child", c, "-child-entity", e.format + ":" + e.path, "-url", *url, "-batch", fmt.Sprint(*batch), "-batch-bytes", fmt.Sprint(*batchBytes), "-link", *link, "-max-unconfirmed", fmt.Sprint(*inFlight)}
			var r *result
			var err error
			switch {
			case c == "ceiling" || c == "bare":
				if r = ceiling; c == "bare" {
					r = bare
				}
				if r == nil {
					continue // measured with the uncompressed publish, whose messages it takes
				}
			case c == "none" && (contains(*cases, "ceiling") || contains(*cases, "bare")):
				// The uncompressed publish and the ceilings are compared:
				// their tries alternate, so a machine that is slower for a
				// while (it is shared) weighs on all alike.
				r, ceiling, bare, err = publishAndCeiling(self, args)
			case c == "parse":
				r, err = spawn(self, args)
			default:
				r, err = bestOf(self, args)
			}
			if err != nil {
				fmt.Printf("%-8s %-8s failed: %v\n", e.key, c, err)
				continue
			}
			if c == "none" {
				plain = r
			}
			byCase[c] = r
			if c == "ceiling" {
				r.Rows, r.BytesIn = plain.Rows, 0
			}
			if c == "bare" {
				r.BytesIn = 0
			}
			mb := func(n int64) float64 { return float64(n) / 1e6 / r.Seconds }
			fmt.Printf("%-8s %-8s %9d %10.0f %9.1f %9.1f %8.1f %9.1f %8.2f\n", e.key, c, r.Rows, float64(r.Rows)/r.Seconds,
				mb(r.BytesIn), mb(r.BytesOut), float64(r.Messages)/r.Seconds, float64(r.MaxRSSKB)/1024, r.CPUSeconds)
			if c == "ceiling" && plain != nil {
				fmt.Printf("%-8s uncompressed publish at %.0f%% of the ceiling through dmfexport's publisher\n", e.key, 100*(float64(plain.BytesOut)/plain.Seconds)/(float64(r.BytesOut)/r.Seconds))
			}
			if c == "bare" && plain != nil {
				fmt.Printf("%-8s uncompressed publish at %.0f%% of the bare publisher (the same messages, %d in flight)\n", e.key, 100*(float64(plain.Rows)/plain.Seconds)/(float64(r.Rows)/r.Seconds), bareInFlight)
			}
		}
		if plain != nil && rate > 0 {
			for _, c := range []string{"gzip", "zstd"} {
				if r := byCase[c]; r != nil {
					fmt.Printf("%-8s %s through the link: %.1fx the uncompressed rows/s\n", e.key, c, plain.Seconds/r.Seconds)
				}
			}
		}
	}
	return nil
}

// try runs a broker case once a local broker is idle and keeps the run in
// *best if it is the fastest so far: the machine and the broker are shared,
// and the cases compared must be measured alike.
func try(self string, args []string, best **result) error {
	waitBrokerIdle()
	r, err := spawn(self, args)
	if err != nil {
		return err
	}
	if *best == nil || r.Seconds < (*best).Seconds {
		*best = r
	}
	return nil
}

// bestOf runs a broker case -tries times and returns the fastest run.
func bestOf(self string, args []string) (best *result, err error) {
	for i := 0; i < max(1, *tries); i++ {
		if e := try(self, args, &best); e != nil {
			err = e
		}
	}
	if best == nil {
		return nil, err
	}
	return best, nil
}

// publishAndCeiling runs the uncompressed publish and the ceilings -cases
// names (ceiling: dmfexport's publisher with messages of the publish's size
// and count; bare: a bare publisher of the publish's own messages)
// alternately, -tries times each, and returns the fastest run of each.
func publishAndCeiling(self string, args []string) (plain, ceiling, bare *result, err error) {
	for i := 0; i < max(1, *tries); i++ {
		if e := try(self, args, &plain); e != nil {
			err = e
			continue
		}
		if plain.Messages == 0 {
			continue
		}
		if contains(*cases, "ceiling") {
			if e := try(self, ceilingArgs(args, plain), &ceiling); e != nil {
				err = e
			}
		}
		if contains(*cases, "bare") {
			b := slices.Clone(args)
			b[slices.Index(b, "-child")+1] = "bare"
			if e := try(self, b, &bare); e != nil {
				err = e
			}
		}
	}
	if plain == nil {
		return nil, nil, nil, err
	}
	return plain, ceiling, bare, nil
}

// ceilingArgs turns the arguments of the uncompressed publish case into
// those of the ceiling case, for messages of plain's size and count.
func ceilingArgs(args []string, plain *result) []string {
	c := slices.Clone(args)
	c[slices.Index(c, "-child")+1] = "ceiling"
	return append(c, "-ceiling-size", fmt.Sprint(plain.BytesOut/plain.Messages), "-ceiling-count", fmt.Sprint(plain.Messages))
}

// flagSet reports whether the flag was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func contains(list, v string) bool {
	for _, s := range strings.Split(list, ",") {
		if strings.TrimSpace(s) == v {
			return true
		}
	}
	return false
}

// spawn runs one case in a child process and adds its peak RSS.
func spawn(self string, args []string) (*result, error) {
	cmd := exec.CommandContext(context.Background(), self, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(errb.String()))
	}
	var r result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return nil, fmt.Errorf("read child result %q: %w", out.String(), err)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && r.MaxRSSKB == 0 {
		r.MaxRSSKB = ru.Maxrss // kilobytes on Linux; an upper bound (see peakRSS)
	}
	r.CPUSeconds = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	return &r, nil
}

func runChild() error {
	ctx := context.Background()
	if path := os.Getenv("DMFBENCH_CPUPROFILE"); path != "" { // one case's CPU profile
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if path := os.Getenv("DMFBENCH_MEMPROFILE"); path != "" { // one case's heap at its largest
		stop := profileLargestHeap(path)
		defer stop()
	}
	format, path, _ := strings.Cut(*childEnt, ":")
	var r result
	switch *child {
	case "pg-ceiling", "pg-ceiling-meta", "pg-snapshot", "pg-amqp-snapshot", "pg-upsert", "pg-update", "pg-naive-insert", "pg-naive-upsert", "pg-naive-update":
		var err error
		if r, err = runSinkChild(ctx); err != nil {
			return err
		}
	case "parse", "none", "gzip", "zstd":
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		var sink publish.Sink = discard{}
		queue := ""
		if *child != "parse" {
			s, q, err := dialBench(ctx)
			if err != nil {
				return err
			}
			defer deleteQueue(s, q)
			sink, queue = s, q
		}
		comp := *child
		if comp == "parse" {
			comp = ""
		}
		start := time.Now()
		st, err := publish.PublishEntity(ctx, f, sink, publish.EntityOptions{
			Job: "bench", RunID: "run", ExecutionID: "exec", Entity: filepath.Base(path), RoutingKey: queue,
			BatchSize: *batch, MaxBatchBytes: *batchBytes, Format: format, Compression: comp,
		})
		if err != nil {
			return err
		}
		r = result{Rows: st.Rows, BytesIn: st.BytesIn, BytesOut: st.BytesOut, Messages: st.Batches, Seconds: time.Since(start).Seconds()}
	case "bare":
		var err error
		if r, err = runBare(ctx, format, path); err != nil {
			return err
		}
	case "ceiling":
		s, q, err := dialBench(ctx)
		if err != nil {
			return err
		}
		defer deleteQueue(s, q)
		body := bytes.Repeat([]byte("x"), *ceilSize)
		start := time.Now()
		for i := 0; i < *ceilN; i++ {
			if err := s.Publish(ctx, publish.Message{RoutingKey: q, MessageID: fmt.Sprint(i), ContentType: "application/json", Body: body}); err != nil {
				return err
			}
		}
		if err := s.Flush(ctx); err != nil {
			return err
		}
		r = result{BytesOut: int64(*ceilSize) * int64(*ceilN), Messages: int64(*ceilN), Seconds: time.Since(start).Seconds()}
	default:
		return fmt.Errorf("unknown case %q", *child)
	}
	r.MaxRSSKB = peakRSS()
	return json.NewEncoder(os.Stdout).Encode(r)
}

// peakRSS is this process's peak resident set (VmHWM) in KiB. The rusage
// of a child is not used: Linux carries the parent's peak RSS over the
// fork and exec into it.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			_, _ = fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kb)
			return kb
		}
	}
	return 0
}

// dialBench connects and declares a bounded queue of its own.
func dialBench(ctx context.Context) (*publish.AMQPSink, string, error) {
	rate, err := parseRate(*link)
	if err != nil {
		return nil, "", err
	}
	pubURL, _, err := linkedURL(*url, rate) // the proxy lives as long as this child
	if err != nil {
		return nil, "", err
	}
	s, err := publish.DialAMQP(ctx, publish.AMQPOptions{URL: pubURL, ConnectionName: "dmfbench", MaxUnconfirmedBytes: *inFlight})
	if err != nil {
		return nil, "", err
	}
	q, _, err := declareBenchQueue()
	return s, q, err
}

// declareBenchQueue declares this child's bounded queue and returns its
// name and how to delete it.
func declareBenchQueue() (string, func(), error) {
	q := fmt.Sprintf("dmfbench.%s.%d", *child, os.Getpid())
	conn, err := amqp.Dial(*url)
	if err != nil {
		return "", nil, err
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		return "", nil, err
	}
	_, err = ch.QueueDeclare(q, true, false, false, false, amqp.Table{
		amqp.QueueMaxLenBytesArg: int64(64 << 20), amqp.QueueOverflowArg: amqp.QueueOverflowDropHead,
	})
	return q, func() { dropQueue(q) }, err
}

func deleteQueue(s *publish.AMQPSink, q string) {
	_ = s.Close()
	dropQueue(q)
}

func dropQueue(q string) {
	if conn, err := amqp.Dial(*url); err == nil {
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = conn.Close()
	}
}

// discard is the sink of the parse+encode case.
type discard struct{}

func (discard) Publish(_ context.Context, m publish.Message) error {
	if m.OnStored != nil {
		m.OnStored() // discarded: stored as far as the publisher can tell
	}
	return nil
}
func (discard) Flush(context.Context) error { return nil }
func (discard) Close() error                { return nil }

// profileLargestHeap writes to path the heap profile of the moment the
// live heap (as of the last collection) was largest, sampled every 20 ms,
// until stop is called: where a case's memory goes at its peak.
func profileLargestHeap(path string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var most uint64
		var prof bytes.Buffer
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				if err := os.WriteFile(path, prof.Bytes(), 0o644); err != nil {
					fmt.Fprintln(os.Stderr, "dmfbench: heap profile:", err)
				}
				fmt.Fprintf(os.Stderr, "dmfbench: largest live heap %.1f MiB, its profile in %s\n", float64(most)/(1<<20), path)
				return
			case <-tick.C:
			}
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > most {
				most = v
				runtime.GC() // the profile is of the last collection: this one
				prof.Reset()
				_ = pprof.Lookup("heap").WriteTo(&prof, 0)
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
