package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"
)

type versionCommand struct{ g globalFlags }

func (c *versionCommand) Usage() string {
	return "Usage: dmfexport version\n\nPrints the version of dmfexport and of the Go runtime it was built with.\n"
}

func (c *versionCommand) Run(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	c.g.registerLog(fs, "warn")
	pos, err := c.g.parse(fs, c.Usage(), args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return &flagError{msg: fmt.Sprintf("unexpected argument %q: version takes no arguments", pos[0]), usage: usageText(fs, c.Usage())}
	}
	fmt.Printf("dmfexport %s (%s, %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
