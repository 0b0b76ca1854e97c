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
	"strings"
	"syscall"

	"github.com/dmfexport/dmfexport/jobs"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

// command is one subcommand: it parses its own flags and runs.
type command interface {
	Run(ctx context.Context, args []string) error
	Usage() string
}

// errUsage marks a command-line mistake: exit code 2 instead of 1.
var errUsage = errors.New("usage")

func commands() map[string]command {
	return map[string]command{
		"run":      &runCommand{},
		"trigger":  &triggerCommand{},
		"validate": &validateCommand{},
		"jobs":     &jobsCommand{},
		"status":   &statusCommand{},
		"replay":   &replayCommand{},
		"demo":     &demoCommand{},
		"version":  &versionCommand{},
	}
}

const mainUsage = `dmfexport exports Dynamics 365 Finance & Operations data packages and streams their rows to RabbitMQ.

Usage:
  dmfexport <command> [flags] [arguments]

Commands:
  run        run the scheduler: fire every enabled export on its schedule until stopped
  trigger    run the named exports now, in the foreground, and print a summary
  validate   check the configuration file and report every problem
  jobs       list the exports with their schedules and next run times
  status     show recent runs from the run records
  replay     publish a stored run's entities again
  demo       run the demo export against the built-in F&O simulator
  version    print the version

Run "dmfexport <command> --help" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, mainUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands()[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "dmfexport: unknown command %q\n\n%s", args[0], mainUsage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.Run(ctx, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "dmfexport %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "dmfexport %s: %v\n", args[0], err)
		return 1
	}
}

// globalFlags are the flags every command that reads the config shares.
type globalFlags struct {
	config    string
	logLevel  string
	logFormat string
}

func (g *globalFlags) register(fs *flag.FlagSet, defaultLevel string) {
	def := os.Getenv("DMFEXPORT_CONFIG")
	if def == "" {
		def = "dmfexport.yaml"
	}
	fs.StringVar(&g.config, "config", def, "configuration file (env DMFEXPORT_CONFIG)")
	fs.StringVar(&g.logLevel, "log-level", defaultLevel, "log level: debug, info, warn or error")
	fs.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
}

// logger builds the slog logger the flags ask for; logs go to stderr.
func (g *globalFlags) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(g.logFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	default:
		return nil, fmt.Errorf("%w: --log-format %q: want text or json", errUsage, g.logFormat)
	}
}

func (g *globalFlags) load() (*jobs.Config, error) {
	cfg, err := jobs.LoadConfig(g.config)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// parseFlags parses args with fs, printing usage on --help.
func parseFlags(fs *flag.FlagSet, usage string, args []string) error {
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}
