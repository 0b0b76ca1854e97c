package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/dmfexport/dmfexport/jobs"
)

type validateCommand struct {
	g     globalFlags
	noEnv bool
	flags *flag.FlagSet // to tell --config given from its default
}

func (c *validateCommand) Usage() string {
	return `Usage: dmfexport validate [--config FILE] [FILE]

Loads the configuration (FILE, else --config), expands ${VAR} references and checks every key,
schedule, URL and secret. Every problem is reported at once with file:line:column and a hint.
Warnings (such as two exports of one data project) are printed too but do not make the file
invalid. Exit code 0 means the file is valid.

--no-env checks the structure only, without the environment: ${VAR:-default} takes its default,
and a value holding a ${VAR} without one (a secret, a URL) is neither expanded nor checked, nor is
what depends on it; the sinks' check below is left out. For CI, where the secrets are not set.

With sinks configured, the newest run records of the exports they consume are read (only read)
to learn which entities F&O exports incrementally (IncrementalPush): a sink landing one without
keys (its batches would be dead-lettered) or in mode snapshot (each run's changes would replace
the table) gets a warning at its line.
`
}

// sinkCheckTimeout bounds the reading of run records for the sinks' check,
// so a store that cannot be reached delays validate only so long.
const sinkCheckTimeout = 30 * time.Second

func (c *validateCommand) Line(cl *commandLine) {
	cl.Config(&c.g, "warn")
	cl.BoolVar(&c.noEnv, "no-env", false, "check the structure only: values from ${VAR} without a default are not needed nor checked")
	cl.Args(0, 1, "name at most one configuration file")
	c.flags = cl.FlagSet
}

func (c *validateCommand) Run(ctx context.Context, pos []string) error {
	switch {
	case len(pos) == 1 && flagSet(c.flags, "config") && c.g.config != pos[0]:
		return usageMistake("two configuration files given (--config %s and %s): name one", c.g.config, pos[0])
	case len(pos) == 1:
		c.g.config = pos[0]
	}
	load := c.g.load
	if c.noEnv {
		load = c.loadStructure
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	enabled := 0
	for _, e := range cfg.Exports {
		if e.Enabled {
			enabled++
		}
	}
	warnings := cfg.Warnings
	if len(cfg.Sinks) > 0 && !c.noEnv {
		ctx, cancel := context.WithTimeout(ctx, sinkCheckTimeout)
		more, err := jobs.SinkWarnings(ctx, cfg)
		cancel()
		warnings = append(warnings, more...)
		if err != nil {
			fmt.Fprintf(os.Stderr, "dmfexport validate: %v\n", err)
		}
	}
	for _, w := range warnings {
		fmt.Printf("warning: %s\n", w)
	}
	what := "valid"
	if c.noEnv {
		what = "structure valid (--no-env: values from the environment not checked)"
	}
	fmt.Printf("%s: %s, %d exports (%d enabled)\n", cfg.Path, what, len(cfg.Exports), enabled)
	return nil
}

// loadStructure loads the configuration for --no-env.
func (c *validateCommand) loadStructure() (*jobs.Config, error) {
	path, err := configPath(c.g.config, configSearch)
	if err != nil {
		return nil, err
	}
	c.g.config = path
	return jobs.LoadConfigStructure(path)
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
