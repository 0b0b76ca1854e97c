package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// command is one subcommand, in a file of its own as litestream's are: its
// usage text, what its command line takes, and what it does. parseAndRun
// parses every command's line the same way, so each refuses a mistake
// alike: one line naming it, then the command's usage and flags, exit 2.
type command interface {
	// Usage is the command's usage, printed above its flags.
	Usage() string
	// Line declares on cl the command's flags, the global ones with them,
	// and the arguments it takes.
	Line(cl *commandLine)
	// Run does the command's work. args are its positional arguments, as
	// many as Line allows; its flags are set. A *flagError it returns
	// without a usage gets the command's.
	Run(ctx context.Context, args []string) error
}

// subcommands is a command with subcommands of its own ("sink
// replay-dead"): the first argument, when it names one, runs that one.
type subcommands interface {
	subcommand(name string) (command, bool)
}

// parseAndRun parses args as cmd declares (name is the command as typed)
// and runs it. --help prints the usage and flags on helpOut and returns
// flag.ErrHelp; a mistake on the command line returns a *flagError.
func parseAndRun(ctx context.Context, name string, cmd command, args []string) error {
	if sc, ok := cmd.(subcommands); ok && len(args) > 0 {
		if sub, ok := sc.subcommand(args[0]); ok {
			return parseAndRun(ctx, name+" "+args[0], sub, args[1:])
		}
	}
	cl := &commandLine{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), name: name, usage: cmd.Usage()}
	cmd.Line(cl)
	pos, err := cl.parse(args)
	if err != nil {
		return err
	}
	err = cmd.Run(ctx, pos)
	var fe *flagError
	if errors.As(err, &fe) && fe.usage == "" {
		fe.usage = cl.usageText()
	}
	return err
}

// commandLine is what one command's line takes: its flags, the global
// flags among them, and how many positional arguments.
type commandLine struct {
	*flag.FlagSet
	name  string // as typed: "sink replay-dead"
	usage string
	g     *globalFlags
	// args says what is wrong with the positional arguments, or "".
	args func(pos []string) string
}

// Config adds --config and the log flags (see globalFlags.register) to
// the command's flags, set into g.
func (cl *commandLine) Config(g *globalFlags, defaultLevel string) {
	g.register(cl.FlagSet, defaultLevel)
	cl.g = g
}

// Log adds only the log flags, for a command without a configuration.
func (cl *commandLine) Log(g *globalFlags, defaultLevel string) {
	g.registerLog(cl.FlagSet, defaultLevel)
	cl.g = g
}

// NoArgs says the command takes no positional argument.
func (cl *commandLine) NoArgs() {
	cl.args = func(pos []string) string {
		if len(pos) > 0 {
			return fmt.Sprintf("unexpected argument %q: %s takes no arguments", pos[0], cl.name)
		}
		return ""
	}
}

// Args says the command takes from min to max positional arguments (max
// < 0: any number above min); mistake is what a wrong count is told.
func (cl *commandLine) Args(min, max int, mistake string) {
	cl.args = func(pos []string) string {
		if len(pos) < min || max >= 0 && len(pos) > max {
			return mistake
		}
		return ""
	}
}

// parse parses args (see parseFlags), checks the log flags, so every
// command refuses a bad --log-level or --log-format whether it logs or
// not, and checks the count of positional arguments, which it returns.
func (cl *commandLine) parse(args []string) ([]string, error) {
	pos, err := parseFlags(cl.FlagSet, cl.usage, args)
	if err != nil {
		return nil, err
	}
	if cl.g != nil {
		log, err := cl.g.logger()
		if err != nil {
			return nil, &flagError{msg: err.Error(), usage: cl.usageText()}
		}
		cl.g.log = log
	}
	if cl.args != nil {
		if msg := cl.args(pos); msg != "" {
			return nil, &flagError{msg: msg, usage: cl.usageText()}
		}
	}
	return pos, nil
}

// usageText is the command's usage followed by its flags.
func (cl *commandLine) usageText() string {
	return usageText(cl.FlagSet, cl.usage)
}

// flagError is a mistake in a command's flags or arguments: the command's
// usage is printed after it, once.
type flagError struct {
	msg   string
	usage string // the command's usage with its flags
}

func (e *flagError) Error() string        { return e.msg }
func (e *flagError) Is(target error) bool { return target == errUsage }

// usageMistake is a mistake in the arguments a command finds itself:
// parseAndRun adds the command's usage.
func usageMistake(format string, a ...any) error {
	return &flagError{msg: fmt.Sprintf(format, a...)}
}

// helpOut receives what --help prints: stdout, except while help and
// completion ask a command for its usage.
var helpOut io.Writer = os.Stdout

// parseFlags parses args with fs and returns the positional arguments.
// Flags may come before, between or after positional arguments
// ("status demo --json" is "status --json demo"); "--" ends the flags, so
// every argument after it is positional. --help prints the usage on stdout
// and returns flag.ErrHelp. A mistake returns a *flagError naming it.
func parseFlags(fs *flag.FlagSet, usage string, args []string) ([]string, error) {
	fs.SetOutput(io.Discard) // errors and usage are printed once, by run
	fs.Usage = func() {}
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "h" || name == "help" {
			fmt.Fprint(helpOut, usageText(fs, usage))
			return nil, flag.ErrHelp
		}
		f := fs.Lookup(name)
		if f == nil {
			return nil, &flagError{msg: "unknown flag " + strings.SplitN(a, "=", 2)[0], usage: usageText(fs, usage)}
		}
		flags = append(flags, a)
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); hasValue || ok && bf.IsBoolFlag() {
			continue
		}
		if i+1 == len(args) {
			return nil, &flagError{msg: fmt.Sprintf("flag --%s needs a value", name), usage: usageText(fs, usage)}
		}
		i++
		flags = append(flags, args[i])
	}
	if err := fs.Parse(flags); err != nil {
		// The flag package names flags with one dash; the usage shows two.
		msg := strings.ReplaceAll(err.Error(), "flag -", "flag --")
		return nil, &flagError{msg: msg, usage: usageText(fs, usage)}
	}
	return pos, nil
}

// usageText is a command's usage followed by its flags, written with two
// dashes as the usage lines and docs/commands.md write them.
func usageText(fs *flag.FlagSet, usage string) string {
	var b strings.Builder
	b.WriteString(usage)
	b.WriteString("\nFlags:\n")
	fs.VisitAll(func(f *flag.Flag) {
		typ, text := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  --%s", f.Name)
		if typ != "" {
			b.WriteString(" " + typ)
		}
		b.WriteString("\n      " + text)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
			fmt.Fprintf(&b, " (default %q)", f.DefValue)
		}
		b.WriteString("\n")
	})
	return b.String()
}
