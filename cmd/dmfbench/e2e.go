package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/dmfexport/dmfexport/dmf/dmftest"
	amqp "github.com/rabbitmq/amqp091-go"
)

// The end-to-end mode (-e2e) runs the whole pipeline as a user would: the
// generated package is served by the F&O simulator (in this process), and
// `dmfexport trigger` exports, downloads, unpacks it into the store (a
// directory or Azurite) and publishes every entity to RabbitMQ. Each binary
// given (-bin, and -before for the build to compare with) runs in turn,
// -repeat times, interleaved, so before and after see the same machine.
// For each run it prints per step: wall time, CPU seconds and rows/s, and
// for the whole process: wall, CPU (getrusage of the child), peak RSS
// (VmHWM of the child, sampled) and rows/s.

var (
	e2eMode   = flag.Bool("e2e", false, "run the whole pipeline (simulator → dmfexport trigger → store → RabbitMQ) instead of the per-entity publish cases")
	binAfter  = flag.String("bin", "", "e2e: the dmfexport binary to measure (built from this tree when empty)")
	binBefore = flag.String("before", "", "e2e: a dmfexport binary to compare with, run interleaved (e.g. built from main)")
	stores    = flag.String("stores", "dir", "e2e: stores to run through, comma separated: dir, azblob (needs -azurite)")
	azurite   = flag.String("azurite", os.Getenv("DMFEXPORT_TEST_AZURITE"), "e2e: Azurite blob endpoint, e.g. http://127.0.0.1:10000/devstoreaccount1")
	repeat    = flag.Int("repeat", 2, "e2e: runs per binary and store")
	e2eComp   = flag.String("compression", "none", "e2e: compression of the export")
	storeLink = flag.String("store-link", "", "e2e: reach the azblob store through a link of its own, a bandwidth and the round trip it adds, e.g. 200Mbit,20ms (an in-process proxy), as a store across a network")
	e2eExtra  = flag.String("export-yaml", "", "e2e: extra lines for the export's YAML (for the binary under test only), e.g. 'parallel_entities: 1'")
	storeComp = flag.String("store-compress", "none", "e2e: store.compress of the config (none or gzip), for the binary under test only: with -before the same binary, the default against gzip, interleaved")
	storePkg  = flag.String("store-package", "keep", "e2e: store.package of the config (keep or skip), for the binary under test only, as -store-compress")
)

// azuriteKey is Azurite's well-known, public development account key.
const azuriteKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

// e2eResult is one run of dmfexport trigger.
type e2eResult struct {
	wall, cpu time.Duration
	rssKB     int64
	steps     []stepFigure
}

type stepFigure struct {
	name      string
	wall, cpu time.Duration
}

func runE2E(ents []entity) error {
	var rows int64
	for _, e := range ents {
		rows += int64(e.rows)
	}
	if *storeComp != "none" && *storeComp != "gzip" {
		return fmt.Errorf("-store-compress %q: want none or gzip", *storeComp)
	}
	if *storePkg != "keep" && *storePkg != "skip" {
		return fmt.Errorf("-store-package %q: want keep or skip", *storePkg)
	}
	zipPath := filepath.Join(*dir, packageName(ents))
	zipBytes, err := os.ReadFile(zipPath)
	if err != nil {
		return err
	}
	srv := dmftest.NewServer(dmftest.Options{
		Packages:      map[string][]byte{"BenchPkg": zipBytes},
		ExecutionTime: 50 * time.Millisecond, RegisterDelay: -1, EmptyURLAsks: -1, PackageDelay: -1,
		ConcurrentExports: true,
	})
	defer srv.Close()

	after := *binAfter
	if after == "" {
		after = filepath.Join(*dir, "dmfexport-tree")
		build := exec.CommandContext(context.Background(), "go", "build", "-o", after, "./cmd/dmfexport")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build dmfexport: %w", err)
		}
	}
	type bin struct{ label, path string }
	bins := []bin{{"after", after}}
	if *binBefore != "" {
		bins = []bin{{"before", *binBefore}, {"after", after}}
	}

	rate, err := parseRate(*link)
	if err != nil {
		return err
	}
	brokerURL, stopLink, err := linkedURL(*url, rate)
	if err != nil {
		return err
	}
	defer stopLink()

	blobEndpoint, stopStoreLink, err := linkedAzurite(*azurite, *storeLink)
	if err != nil {
		return err
	}
	defer stopStoreLink()

	exchange := fmt.Sprintf("dmfbench.e2e.%d", os.Getpid())
	cleanup, err := declareE2E(exchange)
	if err != nil {
		return fmt.Errorf("declare the bench exchange: %w", err)
	}
	defer cleanup()

	fi, _ := os.Stat(zipPath)
	through := ""
	if rate > 0 {
		through = fmt.Sprintf(", dmfexport-broker link %.0f Mbit/s", rate/1e6)
	}
	if *storeLink != "" {
		through += ", azblob store through a link of " + *storeLink
	}
	// The store settings of the binary under test, as YAML under store.
	var storeOpts string
	if *storeComp != "none" {
		through += ", store.compress " + *storeComp + " (binary under test)"
		storeOpts += "  compress: " + *storeComp + "\n"
	}
	if *storePkg != "keep" {
		through += ", store.package " + *storePkg + " (binary under test)"
		storeOpts += "  package: " + *storePkg + "\n"
	}
	fmt.Printf("dmfbench e2e: %d rows in %d entities, package %.1f MB, batch %d rows, compression %s%s, %s\n",
		rows, len(ents), float64(fi.Size())/1e6, *batch, *e2eComp, through, time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("%-6s %-7s %-3s %-10s %8s %8s %9s %9s\n", "binary", "store", "#", "step", "wall s", "CPU s", "rows/s", "RSS MiB")
	sums := map[string][]e2eResult{}
	for i := 0; i < *repeat; i++ {
		for _, st := range strings.Split(*stores, ",") {
			st = strings.TrimSpace(st)
			for _, b := range bins {
				extra, opts := "", ""
				if b.label == "after" {
					extra, opts = *e2eExtra, storeOpts
				}
				r, err := runTrigger(b.path, srv.URL, brokerURL, blobEndpoint, st, opts, exchange, extra)
				if err != nil {
					fmt.Printf("%-6s %-7s %-3d failed: %v\n", b.label, st, i+1, err)
					continue
				}
				for _, s := range r.steps {
					fmt.Printf("%-6s %-7s %-3d %-10s %8.2f %8.2f %9s %9s\n", b.label, st, i+1, s.name, s.wall.Seconds(), s.cpu.Seconds(), perSec(rows, s.wall, s.name), "")
				}
				fmt.Printf("%-6s %-7s %-3d %-10s %8.2f %8.2f %9.0f %9.1f\n", b.label, st, i+1, "total", r.wall.Seconds(), r.cpu.Seconds(),
					float64(rows)/r.wall.Seconds(), float64(r.rssKB)/1024)
				sums[b.label+" "+st] = append(sums[b.label+" "+st], *r)
			}
		}
	}
	fmt.Println("\nbest of the runs (lowest CPU, lowest wall, highest RSS seen):")
	bestWall := map[string]time.Duration{}
	for _, st := range strings.Split(*stores, ",") {
		st = strings.TrimSpace(st)
		var base *e2eResult
		for _, b := range bins {
			rs := sums[b.label+" "+st]
			if len(rs) == 0 {
				continue
			}
			best := rs[0]
			for _, r := range rs[1:] {
				best.cpu, best.wall, best.rssKB = min(best.cpu, r.cpu), min(best.wall, r.wall), max(best.rssKB, r.rssKB)
			}
			bestWall[b.label+" "+st] = best.wall
			line := fmt.Sprintf("%-6s %-7s CPU %.2f s, wall %.2f s, %.0f rows/s, peak RSS %.1f MiB", b.label, st,
				best.cpu.Seconds(), best.wall.Seconds(), float64(rows)/best.wall.Seconds(), float64(best.rssKB)/1024)
			if base != nil {
				line += fmt.Sprintf(" (CPU %.0f%%, wall %.0f%% of before)", 100*best.cpu.Seconds()/base.cpu.Seconds(), 100*best.wall.Seconds()/base.wall.Seconds())
			} else {
				b := best
				base = &b
			}
			fmt.Println(line)
		}
	}
	for _, b := range bins {
		if d, a := bestWall[b.label+" dir"], bestWall[b.label+" azblob"]; d > 0 && a > 0 {
			line := fmt.Sprintf("%-6s azblob wall / dir wall: %.2f", b.label, a.Seconds()/d.Seconds())
			if d0 := bestWall[bins[0].label+" dir"]; b.label != bins[0].label && d0 > 0 {
				line += fmt.Sprintf(" (/ %s dir wall: %.2f)", bins[0].label, a.Seconds()/d0.Seconds())
			}
			fmt.Println(line)
		}
	}
	fmt.Println("\nthe pandas approach on the same sizes (../shared/bench/README.md, same machine, other runs):")
	fmt.Println("  wide 6.8k–11.4k rows/s (511–523 MB RSS), narrow 28k–47k rows/s (1.3 GB), XLSX 1.55k–2.46k rows/s (436–446 MB)")
	return nil
}

func perSec(rows int64, d time.Duration, step string) string {
	if step != "publish" || d <= 0 {
		return ""
	}
	return fmt.Sprintf("%.0f", float64(rows)/d.Seconds())
}

// linkedAzurite returns the Azurite endpoint reached through a link
// (-store-link) and how to stop its proxy; with no link, endpoint itself.
// The container is created and deleted on the endpoint itself.
func linkedAzurite(endpoint, link string) (string, func(), error) {
	if link == "" || endpoint == "" {
		return endpoint, func() {}, nil
	}
	rate, rtt, err := parseLink(link)
	if err != nil {
		return "", nil, err
	}
	u, err := neturl.Parse(endpoint)
	if err != nil {
		return "", nil, fmt.Errorf("azurite endpoint %q: %w", endpoint, err)
	}
	addr, stop, err := startDelayLink(u.Host, rate, rtt)
	if err != nil {
		return "", nil, err
	}
	u.Host = addr
	return u.String(), stop, nil
}

// packageName is the generated package's file name: one per set of sizes.
func packageName(ents []entity) string {
	n := "package"
	for _, e := range ents {
		n += fmt.Sprintf("-%s%d", e.key, e.rows)
		if e.format == "xlsx" {
			n += "-" + *xlsxStr
		}
	}
	return n + ".zip"
}

// declareE2E declares the bench's exchange and one bounded queue bound to
// everything, so a long run cannot fill the broker, and returns how to
// delete both.
func declareE2E(exchange string) (func(), error) {
	conn, err := amqp.Dial(*url)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	q := exchange + ".q"
	err = ch.ExchangeDeclare(exchange, "topic", false, true, false, false, nil)
	if err == nil {
		_, err = ch.QueueDeclare(q, false, false, false, false, amqp.Table{
			amqp.QueueMaxLenBytesArg: int64(64 << 20), amqp.QueueOverflowArg: amqp.QueueOverflowDropHead,
		})
		if err == nil {
			err = ch.QueueBind(q, "#", exchange, false, nil)
		}
	}
	cleanup := func() {
		_, _ = ch.QueueDelete(q, false, false, false)
		_ = ch.ExchangeDelete(exchange, false, false)
		_ = conn.Close()
	}
	if err != nil {
		cleanup()
		return nil, err
	}
	return cleanup, nil
}

// runTrigger runs one `dmfexport trigger` against a fresh store and
// measures it. Steps are delimited by the state lines trigger prints.
func runTrigger(bin, foURL, brokerURL, blobEndpoint, store, storeOpts, exchange, extra string) (*e2eResult, error) {
	work, err := os.MkdirTemp(*dir, "e2e-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(work) }()
	env := os.Environ()
	storeYAML := "store:\n  type: dir\n  path: " + filepath.Join(work, "store") + "\n"
	container := ""
	if store == "azblob" {
		if blobEndpoint == "" {
			return nil, fmt.Errorf("no Azurite: pass -azurite or set DMFEXPORT_TEST_AZURITE")
		}
		container = fmt.Sprintf("bench%d%d", os.Getpid(), time.Now().UnixNano()%1e9)
		storeYAML = "store:\n  type: azblob\n  container: " + container + "\n  connection_string: ${BENCH_AZURE_CONN}\n"
		conn := "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + azuriteKey +
			";BlobEndpoint=" + strings.TrimRight(blobEndpoint, "/") + ";"
		env = append(env, "BENCH_AZURE_CONN="+conn)
		defer deleteContainer(conn, container)
	}
	storeYAML += storeOpts
	env = append(env, "BENCH_FO_TOKEN="+dmftest.DefaultToken)
	var ex strings.Builder
	for _, l := range strings.Split(extra, ";") {
		if l = strings.TrimSpace(l); l != "" {
			ex.WriteString("    " + l + "\n")
		}
	}
	cfg := "fo:\n  url: " + foURL + "\n  auth:\n    method: token\n    token: ${BENCH_FO_TOKEN}\n" + storeYAML +
		"broker:\n  type: amqp\n  url: " + brokerURL + "\n" +
		"poll:\n  interval: 50ms\n  max_interval: 100ms\n  deadline: 2m\n  package_url_timeout: 30s\n  register_timeout: 10s\n" +
		"exports:\n  - name: bench\n    schedule: \"0 0 1 1 *\"\n    definition_group: BenchPkg\n    package_name: BenchPkg\n    legal_entity: USMF\n" +
		"    exchange: " + exchange + "\n    routing_key: bench\n    batch_size: " + strconv.Itoa(*batch) + "\n" +
		"    compression: " + *e2eComp + "\n" + ex.String()
	cfgPath := filepath.Join(work, "bench.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}

	args := []string{"trigger", "--config", cfgPath}
	if knowsNew(bin) {
		args = append(args, "--new") // never resume an earlier run's leftovers
	}
	waitBrokerIdle()
	cmd := exec.CommandContext(context.Background(), bin, append(args, "bench")...)
	cmd.Env = env
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	var mu sync.Mutex
	var peak int64
	done := make(chan struct{})
	go func() { // VmHWM is monotonic: the last sample before exit is the peak, near enough
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if kb := procHWM(pid); kb > 0 {
				mu.Lock()
				peak = max(peak, kb)
				mu.Unlock()
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	r := &e2eResult{}
	cur, curStart, curCPU := "start", start, time.Duration(0)
	sc := bufio.NewScanner(out)
	var tail []string
	for sc.Scan() {
		line := sc.Text()
		tail = append(tail, line)
		if len(tail) > 20 {
			tail = tail[1:]
		}
		st := stateOf(line)
		if st == "" || st == cur {
			continue
		}
		now, cpu := time.Now(), procCPU(pid)
		r.steps = append(r.steps, stepFigure{cur, now.Sub(curStart), cpu - curCPU})
		cur, curStart, curCPU = st, now, cpu
	}
	_, _ = io.Copy(io.Discard, out)
	werr := cmd.Wait()
	r.wall = time.Since(start)
	close(done)
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		if cur != "" {
			r.steps = append(r.steps, stepFigure{cur, time.Since(curStart), r.cpu - curCPU})
		}
	}
	mu.Lock()
	r.rssKB = peak
	mu.Unlock()
	if werr != nil {
		return nil, fmt.Errorf("%w: %s\n%s", werr, strings.TrimSpace(stderr.String()), strings.Join(tail, "\n"))
	}
	// Keep the steps that matter; the last "step" is the summary printing.
	names := map[string]string{"exporting": "export", "downloading": "download", "unpacking": "unpack", "publishing": "publish"}
	var steps []stepFigure
	for _, s := range r.steps {
		if n, ok := names[s.name]; ok {
			s.name = n
			steps = append(steps, s)
		}
	}
	r.steps = steps
	return r, nil
}

// stateOf returns the run state a trigger progress line announces
// ("15:04:05 bench: unpacking: 44 bytes"), or "".
func stateOf(line string) string {
	_, rest, ok := strings.Cut(line, " bench: ")
	if !ok {
		return ""
	}
	s, _, _ := strings.Cut(rest, ":")
	switch s {
	case "pending", "exporting", "downloading", "unpacking", "publishing", "succeeded", "failed", "partially_succeeded":
		return s
	}
	return ""
}

// procCPU is the user+system CPU time of pid so far.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+2:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// procHWM is pid's peak resident set (VmHWM) in KiB, 0 if unknown.
func procHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb
		}
	}
	return 0
}

// deleteContainer removes a bench container from Azurite (best effort).
func deleteContainer(conn, container string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if c, err := azblob.NewClientFromConnectionString(conn, nil); err == nil {
		_, _ = c.DeleteContainer(ctx, container, nil)
	}
}

// knowsNew reports whether bin's trigger has --new: builds from before it
// existed (a -before binary) always start a new run.
func knowsNew(bin string) bool {
	out, _ := exec.CommandContext(context.Background(), bin, "trigger", "--help").CombinedOutput()
	return strings.Contains(string(out), "-new")
}
