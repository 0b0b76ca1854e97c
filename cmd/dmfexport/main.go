// Command dmfexport exports Dynamics 365 Finance & Operations data packages
// on a schedule and streams their rows to RabbitMQ.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"

	"github.com/dmfexport/dmfexport/jobs"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

// errUsage marks a command-line mistake: exit code 2 instead of 1.
var errUsage = errors.New("usage")

func commands() map[string]command {
	return map[string]command{
		"run":        &runCommand{},
		"trigger":    &triggerCommand{},
		"validate":   &validateCommand{},
		"exports":    &exportsCommand{},
		"jobs":       &exportsCommand{name: "jobs"}, // the command's former name, kept for scripts
		"status":     &statusCommand{},
		"replay":     &replayCommand{},
		"sink":       &sinkCommand{},
		"reconcile":  &reconcileCommand{},
		"abandon":    &abandonCommand{},
		"demo":       &demoCommand{},
		"version":    &versionCommand{},
		"completion": &completionCommand{},
	}
}

const mainUsage = `dmfexport exports Dynamics 365 Finance & Operations data packages and streams their rows to RabbitMQ.

Usage:
  dmfexport <command> [flags] [arguments]

Commands:
  run        run the scheduler: fire every enabled export on its schedule until stopped
  trigger    run the named exports now, in the foreground, and print a summary
  validate   check the configuration file and report every problem
  exports    list the exports with their schedules and next run times (also: jobs)
  status     show recent runs from the run records
  replay     publish a stored run's entities again
  sink       land the batches of the configured sinks' queues in their databases
  abandon    end an unfinished run on purpose: it is never resumed
  reconcile  compare what the exports published with what the sinks applied
  demo       run the demo export against the built-in F&O simulator
  version    print the version (also: --version)
  completion print a shell completion script: bash, zsh or fish
  help       print a command's usage and flags

Run "dmfexport help <command>" or "dmfexport <command> --help" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stdout, mainUsage)
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, mainUsage)
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" {
		args[0] = "version"
	}
	if args[0] == "help" {
		return help(args[1:], stdout, stderr)
	}
	cmd, ok := commands()[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "dmfexport: unknown command %q\n\n%s", args[0], mainUsage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer cpuProfile(stderr)()
	err := parseAndRun(ctx, args[0], cmd, args[1:])
	var fe *flagError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &fe):
		fmt.Fprintf(stderr, "dmfexport %s: %s\n%s", args[0], fe.msg, fe.usage)
		return exitUsage
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "dmfexport %s: %v\n", args[0], err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "dmfexport %s: %v\n", args[0], err)
		return exitCode(err)
	}
}

// help prints the usage of the command args names, with its flags, as
// "dmfexport CMD --help" does; without a name, the general usage. An unknown
// name is a usage mistake: exit 2 with the names of the known commands.
func help(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" {
		fmt.Fprint(stdout, mainUsage)
		return 0
	}
	if len(args) > 1 {
		fmt.Fprintf(stderr, "dmfexport help: name one command, got %d: %s\n", len(args), strings.Join(args, " "))
		return 2
	}
	cmd, ok := commands()[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "dmfexport help: unknown command %q; known commands: %s\n", args[0], strings.Join(sortedCommandNames(), ", "))
		return 2
	}
	old := helpOut
	helpOut = stdout
	defer func() { helpOut = old }()
	if err := parseAndRun(context.Background(), args[0], cmd, []string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stderr, "dmfexport help %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// sortedCommandNames lists every command, and help, sorted.
func sortedCommandNames() []string {
	names := []string{"help"}
	for name := range commands() {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// cpuProfile writes a CPU profile of the whole command to the file
// DMFEXPORT_CPUPROFILE names, if any (undocumented: for `make bench` and
// whoever profiles a run), and returns what stops it.
func cpuProfile(stderr io.Writer) func() {
	path := os.Getenv("DMFEXPORT_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
		if err != nil {
			_ = f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "dmfexport: CPU profile: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintf(stderr, "dmfexport: CPU profile: %v\n", err)
		}
	}
}

// globalFlags are the flags every command shares: --log-level and
// --log-format, and --config for the commands that read a configuration.
type globalFlags struct {
	config    string
	logLevel  string
	logFormat string
	log       *slog.Logger // built from the flags by parse
}

// register adds --config and the log flags. Without --config the
// configuration is searched for (see configPath).
func (g *globalFlags) register(fs *flag.FlagSet, defaultLevel string) {
	fs.StringVar(&g.config, "config", "", "the configuration `FILE` (default: $DMFEXPORT_CONFIG, else ./dmfexport.yaml, else /etc/dmfexport/dmfexport.yaml)")
	g.registerLog(fs, defaultLevel)
}

// configSearch is where a configuration is looked for, in order, when
// neither --config nor $DMFEXPORT_CONFIG names one.
var configSearch = []string{"dmfexport.yaml", "/etc/dmfexport/dmfexport.yaml"}

// configPath is the configuration file: --config, else
// $DMFEXPORT_CONFIG, else the first file of search that exists. When none
// does, the error says where it looked.
func configPath(flagValue string, search []string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if env := os.Getenv("DMFEXPORT_CONFIG"); env != "" {
		return env, nil
	}
	for _, p := range search {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	looked := make([]string, len(search))
	for i, p := range search {
		if !filepath.IsAbs(p) {
			p = "." + string(filepath.Separator) + p
		}
		looked[i] = p
	}
	return "", fmt.Errorf("no configuration file: looked for --config FILE, $DMFEXPORT_CONFIG (not set), %s: none exists (give one with --config FILE)",
		strings.Join(looked, ", "))
}

// registerLog adds only the log flags, for commands without a configuration.
func (g *globalFlags) registerLog(fs *flag.FlagSet, defaultLevel string) {
	fs.StringVar(&g.logLevel, "log-level", defaultLevel, "log level: debug, info, warn or error")
	fs.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
}

// logger builds the slog logger the flags ask for; logs go to stderr,
// through the console so they never mix with a live status line. Each line
// carries each key once; JSON gives durations in seconds.
func (g *globalFlags) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(g.logFormat) {
	case "text":
		return slog.New(uniqueKeys(slog.NewTextHandler(stdio.Logs(), opts))), nil
	case "json":
		opts.ReplaceAttr = durationSeconds
		return slog.New(uniqueKeys(slog.NewJSONHandler(stdio.Logs(), opts))), nil
	default:
		return nil, fmt.Errorf("invalid --log-format %q: want text or json", g.logFormat)
	}
}

// load loads the configuration and, unless GOMEMLIMIT is set, gives the
// process the soft memory limit its exports need (jobs.MemoryLimit), so its
// peak resident set stays near what it holds rather than twice that.
func (g *globalFlags) load() (*jobs.Config, error) {
	path, err := configPath(g.config, configSearch)
	if err != nil {
		return nil, err
	}
	g.config = path
	cfg, err := jobs.LoadConfig(path)
	if err == nil && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(jobs.MemoryLimit(cfg))
	}
	return cfg, err
}

// start begins a command that runs exports or consumes batches: it starts
// tracing (see startTracing) and loads the configuration. The caller
// defers the returned func, which flushes the spans; on an error there is
// nothing to flush.
func (g *globalFlags) start(ctx context.Context) (*jobs.Config, func(), error) {
	stopTracing, err := startTracing(ctx, g.log)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := g.load()
	if err != nil {
		stopTracing()
		return nil, nil, err
	}
	return cfg, stopTracing, nil
}
