package main

import (
	"context"
	"flag"
	"fmt"
)

type validateCommand struct{ g globalFlags }

func (c *validateCommand) Usage() string {
	return `Usage: dmfexport validate [--config FILE]

Loads the configuration, expands ${VAR} references and checks every key, schedule, URL and
secret. Every problem is reported at once with file:line:column and a hint. Warnings (such as
two exports of one data project) are printed too but do not make the file invalid. Exit code 0
means the file is valid.
`
}

func (c *validateCommand) Run(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	c.g.register(fs, "warn")
	if err := parseFlags(fs, c.Usage(), args); err != nil {
		return err
	}
	cfg, err := c.g.load()
	if err != nil {
		return err
	}
	enabled := 0
	for _, e := range cfg.Exports {
		if e.Enabled {
			enabled++
		}
	}
	for _, w := range cfg.Warnings {
		fmt.Printf("warning: %s\n", w)
	}
	fmt.Printf("%s: valid, %d exports (%d enabled)\n", cfg.Path, len(cfg.Exports), enabled)
	return nil
}
