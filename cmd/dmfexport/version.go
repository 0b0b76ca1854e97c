package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"
)

type versionCommand struct{}

func (c *versionCommand) Usage() string {
	return "Usage: dmfexport version\n\nPrints the version of dmfexport and of the Go runtime it was built with.\n"
}

func (c *versionCommand) Run(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if err := parseFlags(fs, c.Usage(), args); err != nil {
		return err
	}
	fmt.Printf("dmfexport %s (%s, %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
