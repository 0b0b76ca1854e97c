// Command dmfsim runs the Dynamics 365 F&O Data management package API
// simulator of package dmftest as a standalone HTTP server, for trying
// dmfexport or any other client without an F&O environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/dmfexport/dmfexport/dmf/dmftest"
)

const usage = `Usage: dmfsim [flags]

Serves the F&O Data management package REST API (ExportToPackage,
GetExecutionSummaryStatus, GetExportedPackageUrl, GetExecutionErrors,
GetExecutionSummaryPageUrl) and the exported packages, until SIGINT or SIGTERM.

Without --project it serves the demo project as definition group %q.
With --project NAME=DIR every regular file in DIR becomes an entity of NAME:
the entity name is the file name without extension, the source format
"EXCEL" for .xlsx files, "XML-Element" for .xml files and "CSV-Unicode"
otherwise. The header row of each .csv file (UTF-8, or UTF-16 with a BOM)
becomes the entity's field map in the manifest.

--format ENTITY=SPEC re-writes a CSV entity of the demo or of a --project
(read as CSV with a header row) in another F&O file format; ENTITY "*"
means every CSV entity, and an entity's own --format wins over "*". SPEC is
comma-separated items:
  codepage=N       Windows code page: 65001 UTF-8 (the default), 1200/1201
                   UTF-16 LE/BE, 12000/12001 UTF-32 LE/BE, 65000 UTF-7, or a
                   single-byte one such as 1252 (source format "CSV"; a value
                   it cannot hold is refused, as F&O's DMF1957)
  bom              write the byte order mark (UTF-8, UTF-16, UTF-32)
  delimiter=X      comma (default), semicolon, tab, pipe, colon, or one character
  qualifier=X      text qualifier, '"' by default
  noheader         no header row ("First row header" = No)
  undoubled        write a qualifier inside a quoted value as it is
  fixed=W1/W2/...  fixed width, one width per column (source format "FixedWidth")
  fixedheader      a header line in a fixed-width file
  composite[=attribute]  composite entity XML (XML-Element, or XML-Attribute)
e.g. --format '*=codepage=1200,bom' --format 'Customer addresses=codepage=1252,delimiter=tab'.

By default it behaves as F&O does: a new execution is "not registered yet"
for a while (--register-delay), one data project is exported by one execution
at a time, one execution holding an Excel entity runs at a time (others wait
NotRun; --concurrent-excel), the package URL is empty on the first ask after success and its
package not yet downloadable for a moment (--package-delay), every
second failed execution reports no errors, IncrementalPush entities hold
every row only in the first export of their data project (--full-incremental), and executions and packages are
purged after 7 days (--history). The flags below turn these off or tune them.

Flags:
`

// names is a repeatable flag of names.
type names []string

func (n *names) String() string { return strings.Join(*n, ",") }

func (n *names) Set(v string) error {
	if v == "" {
		return errors.New("want a name")
	}
	*n = append(*n, v)
	return nil
}

// pairs is a repeatable NAME=VALUE flag.
type pairs []string

func (p *pairs) String() string { return strings.Join(*p, ",") }

func (p *pairs) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" || val == "" {
		return fmt.Errorf("want NAME=VALUE, got %q", v)
	}
	*p = append(*p, v)
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// config is what the flags say, already checked.
type config struct {
	addr string
	opts dmftest.Options
}

// run parses args, serves until ctx ends and returns the exit code:
// 0 after a clean stop or --help, 2 for bad flags, 1 for other failures.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "dmfsim: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg.opts.Logger = log
	if err := serve(ctx, cfg, stdout, log); err != nil {
		fmt.Fprintf(stderr, "dmfsim: %v\n", err)
		return 1
	}
	return 0
}

func parseArgs(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("dmfsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), usage, dmftest.DemoDefinitionGroup)
		fs.PrintDefaults()
	}
	var (
		cfg          config
		projects     pairs
		packages     pairs
		finals       pairs
		demo         bool
		execTime     time.Duration
		urlTTL       time.Duration
		emptyURLAsks int
		throttle     int
		nested       bool
		faults       faultFlags
		register     time.Duration
		history      time.Duration
		pkgDelay     time.Duration
		emptyErrors  int
		concurrent   int
		budget       int
		execBudget   time.Duration
		formats      formatFlags
		incremental  names
	)
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8089", "`host:port` to listen on")
	fs.StringVar(&cfg.opts.Token, "token", "", "bearer `token` every API call must carry (default $DMFSIM_TOKEN, else "+dmftest.DefaultToken+")")
	fs.Var(&projects, "project", "serve every regular file in `NAME=DIR` as an entity of definition group NAME (repeatable)")
	fs.Var(&packages, "package", "serve the data package `NAME=PATH` as it is for definition group NAME: a zip file, or a folder zipped as it is (repeatable)")
	fs.BoolVar(&demo, "demo", false, "serve the demo project as "+dmftest.DemoDefinitionGroup+" (the default without --project)")
	fs.DurationVar(&execTime, "execution-time", 2*time.Second, "how long an execution takes to reach its final status")
	fs.DurationVar(&urlTTL, "url-ttl", time.Hour, "lifetime of a package URL signature")
	fs.IntVar(&emptyURLAsks, "empty-url-asks", dmftest.DefaultEmptyURLAsks, "answer GetExportedPackageUrl with \"\" this many times after success (0: never)")
	fs.DurationVar(&register, "register-delay", dmftest.DefaultRegisterDelay,
		"\"not registered yet\" window after each export: status 400 \"Execution details were not found\", then Unknown (0: none)")
	fs.DurationVar(&pkgDelay, "package-delay", dmftest.DefaultPackageDelay,
		"after the first package URL of an execution, its package answers 404 for this long: not yet downloadable (0: never)")
	fs.DurationVar(&history, "history", dmftest.DefaultHistory, "purge executions and packages after this long (0: keep forever)")
	fs.BoolVar(&cfg.opts.FullIncremental, "full-incremental", false, "every export holds all rows of IncrementalPush entities (F&O: only the first; later ones only changes, here none)")
	fs.BoolVar(&cfg.opts.ConcurrentExports, "allow-concurrent-exports", false, "let a data project be exported while an execution of it still runs (F&O refuses)")
	fs.BoolVar(&cfg.opts.ConcurrentExcel, "concurrent-excel", false, "let executions holding Excel entities run at once (F&O runs one at a time, DMF2039; the simulator queues the others NotRun)")
	fs.Var(&incremental, "incremental", "serve entity `NAME` of the --project or demo entities as IncrementalPush (change tracking: only the first export holds its rows; repeatable)")
	fs.Var(&formats, "format", "re-write a CSV entity in another file format, `ENTITY=SPEC` (\"*\" for all; SPEC above; repeatable)")
	fs.IntVar(&emptyErrors, "empty-errors-every", dmftest.DefaultEmptyErrorsEvery, "every `N`th failed execution answers GetExecutionErrors with \"[]\" (0: never)")
	fs.IntVar(&concurrent, "max-concurrent-requests", dmftest.DefaultMaxConcurrentRequests, "answer 429 to API calls beyond `N` in progress at once, as F&O does per user (0: no limit)")
	fs.IntVar(&budget, "request-budget", dmftest.DefaultRequestBudget, "answer 429 with Retry-After to API calls beyond `N` in any --budget-window, as F&O does per user (0: no limit)")
	fs.DurationVar(&execBudget, "execution-budget", dmftest.DefaultExecutionBudget, "answer 429 once the time spent answering API calls in any --budget-window passes this (0: no limit)")
	fs.DurationVar(&cfg.opts.BudgetWindow, "budget-window", dmftest.DefaultBudgetWindow, "sliding window of --request-budget and --execution-budget")
	fs.IntVar(&throttle, "throttle", 0, "answer every `N`th API call with 429 Too Many Requests (0: never)")
	fs.Var(&finals, "final-status", "end executions of a group in `GROUP=STATUS` (Succeeded, PartiallySucceeded, Failed, Canceled; repeatable)")
	fs.BoolVar(&nested, "nested-value", false, "answer ExportToPackage and GetExportedPackageUrl in the nested {\"value\":{\"value\":...}} form")
	fs.Var(&faults, "fault", "inject API failures, `SPEC` = comma-separated action=NAME|download, first=N, every=N, status=CODE, "+
		"answer=oversize|gzip-bomb|html|garbage (a 200 the client cannot use: 9 MiB of JSON, a gzip bomb, an HTML page, bytes that are not JSON), "+
		"retry-after=DURATION, retry-after-date, delay=DURATION, reset, apply (repeatable; see the dmftest package doc)")
	fs.BoolVar(&cfg.opts.Faults.StuckExecution, "stuck", false, "keep every execution Executing forever")
	fs.IntVar(&cfg.opts.Faults.ExpiredURLs, "expired-urls", 0, "hand out the first `N` package URLs already expired")
	fs.BoolVar(&cfg.opts.Faults.CorruptZip, "corrupt-zip", false, "invert 8 bytes in the middle of served packages")
	fs.Int64Var(&cfg.opts.Faults.TruncateAfter, "truncate-after", 0, "send only `N` bytes of a package, then close the connection")
	fs.Int64Var(&cfg.opts.Faults.ContentLengthDelta, "content-length-delta", 0, "add `N` (may be negative) to the Content-Length of packages")
	fs.IntVar(&cfg.opts.Faults.DownloadRate, "download-rate", 0, "serve packages at `N` bytes per second (0: full speed)")
	fs.Int64Var(&cfg.opts.Faults.StallAfter, "stall-after", 0, "send only `N` bytes of a package, then nothing, keeping the connection open")
	fs.BoolVar(&cfg.opts.Faults.EndlessBody, "endless-body", false, "serve packages without Content-Length, followed by zero bytes that never end")
	fs.IntVar(&cfg.opts.Faults.DownloadFaultsFirst, "download-faults-first", 0, "apply the download faults to the first `N` downloads only (0: all)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return cfg, fmt.Errorf("unexpected arguments %q; see --help", fs.Args())
	}

	var problems []string
	cfg.opts.Projects = map[string][]dmftest.Entity{}
	if demo || len(projects)+len(packages) == 0 {
		cfg.opts.Projects[dmftest.DemoDefinitionGroup] = dmftest.DemoProject()
	}
	for _, p := range projects {
		name, dir, _ := strings.Cut(p, "=")
		if _, dup := cfg.opts.Projects[name]; dup {
			problems = append(problems, fmt.Sprintf("--project %s: definition group given twice", name))
			continue
		}
		ents, err := loadProject(dir)
		if err != nil {
			problems = append(problems, fmt.Sprintf("--project %s: %v", p, err))
			continue
		}
		cfg.opts.Projects[name] = ents
	}
	for _, name := range incremental {
		found := false
		for _, ents := range cfg.opts.Projects {
			for i := range ents {
				if ents[i].Name == name {
					ents[i].RefreshType, ents[i].OmitRefreshType, found = dmftest.IncrementalPush, false, true
				}
			}
		}
		if !found {
			problems = append(problems, fmt.Sprintf("--incremental %s: no entity of that name is served", name))
		}
	}
	problems = append(problems, formats.problems...)
	if len(formats.problems) == 0 {
		problems = append(problems, applyFormats(cfg.opts.Projects, formats)...)
	}
	cfg.opts.Packages = map[string][]byte{}
	for _, p := range packages {
		name, path, _ := strings.Cut(p, "=")
		if _, dup := cfg.opts.Projects[name]; dup {
			problems = append(problems, fmt.Sprintf("--package %s: definition group given twice", name))
			continue
		}
		if _, dup := cfg.opts.Packages[name]; dup {
			problems = append(problems, fmt.Sprintf("--package %s: definition group given twice", name))
			continue
		}
		zb, err := dmftest.LoadPackage(path)
		if err != nil {
			problems = append(problems, fmt.Sprintf("--package %s: %v", p, err))
			continue
		}
		cfg.opts.Packages[name] = zb
	}
	cfg.opts.FinalStatus = map[string]string{}
	for _, f := range finals {
		group, st, _ := strings.Cut(f, "=")
		switch st {
		case "Succeeded", "PartiallySucceeded", "Failed", "Canceled":
		default:
			problems = append(problems, fmt.Sprintf("--final-status %s: status must be Succeeded, PartiallySucceeded, Failed or Canceled", f))
			continue
		}
		_, prebuilt := cfg.opts.Packages[group]
		if _, ok := cfg.opts.Projects[group]; !ok && !prebuilt {
			problems = append(problems, fmt.Sprintf("--final-status %s: no definition group %q is served", f, group))
			continue
		}
		cfg.opts.FinalStatus[group] = st
	}
	if execTime <= 0 {
		problems = append(problems, "--execution-time must be above zero")
	}
	if urlTTL <= 0 {
		problems = append(problems, "--url-ttl must be above zero")
	}
	for name, v := range map[string]int64{"--empty-url-asks": int64(emptyURLAsks), "--register-delay": int64(register),
		"--history": int64(history), "--empty-errors-every": int64(emptyErrors), "--package-delay": int64(pkgDelay)} {
		if v < 0 {
			problems = append(problems, name+" must not be negative")
		}
	}
	if throttle < 0 {
		problems = append(problems, "--throttle must not be negative")
	}
	problems = append(problems, faults.problems...)
	for name, v := range map[string]int64{"--expired-urls": int64(cfg.opts.Faults.ExpiredURLs),
		"--truncate-after": cfg.opts.Faults.TruncateAfter, "--download-rate": int64(cfg.opts.Faults.DownloadRate),
		"--download-faults-first": int64(cfg.opts.Faults.DownloadFaultsFirst), "--stall-after": cfg.opts.Faults.StallAfter} {
		if v < 0 {
			problems = append(problems, name+" must not be negative")
		}
	}
	sort.Strings(problems)
	if cfg.opts.Token == "" {
		cfg.opts.Token = os.Getenv("DMFSIM_TOKEN")
	}
	if cfg.opts.Token == "" {
		cfg.opts.Token = dmftest.DefaultToken
	}
	if len(problems) > 0 {
		return cfg, errors.New(strings.Join(problems, "; "))
	}
	cfg.opts.ExecutionTime = execTime
	cfg.opts.URLTTL = urlTTL
	cfg.opts.EmptyURLAsks = offIfZero(emptyURLAsks)
	cfg.opts.RegisterDelay = offIfZero(register)
	cfg.opts.History = offIfZero(history)
	cfg.opts.PackageDelay = offIfZero(pkgDelay)
	cfg.opts.EmptyErrorsEvery = offIfZero(emptyErrors)
	cfg.opts.Throttle = throttle
	cfg.opts.MaxConcurrentRequests = offIfZero(concurrent)
	cfg.opts.RequestBudget = offIfZero(budget)
	cfg.opts.ExecutionBudget = offIfZero(execBudget)
	cfg.opts.NestedValue = nested
	cfg.opts.Faults.API = faults.rules
	return cfg, nil
}

// offIfZero maps a flag's 0 ("off") to the negative value that turns the
// behaviour off in dmftest.Options, where 0 means F&O's default.
func offIfZero[T int | time.Duration](v T) T {
	if v == 0 {
		return -1
	}
	return v
}

// loadProject turns every regular file in dir into an entity, in file name
// order.
func loadProject(dir string) ([]dmftest.Entity, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read project directory: %w", err)
	}
	var ents []dmftest.Entity
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			return nil, fmt.Errorf("read entity file: %w", err)
		}
		ext := filepath.Ext(de.Name())
		format := "CSV-Unicode"
		switch {
		case strings.EqualFold(ext, ".xlsx"):
			format = "EXCEL"
		case strings.EqualFold(ext, ".xml"):
			format = "XML-Element"
		}
		e := dmftest.Entity{
			Name:         strings.TrimSuffix(de.Name(), ext),
			File:         de.Name(),
			SourceFormat: format,
			Data:         data,
		}
		if strings.EqualFold(ext, ".csv") {
			if header, _, err := csvTable(data); err == nil {
				e.Fields = header // the manifest's field map; a file that does not parse is served as it is
			}
		}
		ents = append(ents, e)
	}
	if len(ents) == 0 {
		return nil, fmt.Errorf("directory %s holds no regular files; put one file per entity in it", dir)
	}
	return ents, nil
}

// serve listens on cfg.addr and serves the simulator until ctx ends, then
// shuts down gracefully.
func serve(ctx context.Context, cfg config, stdout io.Writer, log *slog.Logger) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (choose another --addr)", cfg.addr, err)
	}
	sim := dmftest.New(cfg.opts)
	base := "http://" + ln.Addr().String()
	if host, _, err := net.SplitHostPort(ln.Addr().String()); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			sim.SetBaseURL(base) // otherwise answers derive the base from each request's Host
		}
	}
	groups := make([]string, 0, len(cfg.opts.Projects))
	for g := range cfg.opts.Projects {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	fmt.Fprintf(stdout, "dmfsim listening on %s\ntoken: %s\ndefinition groups: %s\n", base, cfg.opts.Token, strings.Join(groups, ", "))

	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("dmfsim stopping")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("dmfsim stopped")
	return nil
}
