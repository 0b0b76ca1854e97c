package main

import (
	"context"
	"fmt"
	"runtime"
)

type versionCommand struct{ g globalFlags }

func (c *versionCommand) Usage() string {
	return "Usage: dmfexport version\n\nPrints the version of dmfexport and of the Go runtime it was built with.\n"
}

func (c *versionCommand) Line(cl *commandLine) {
	cl.Log(&c.g, "warn")
	cl.NoArgs()
}

func (c *versionCommand) Run(context.Context, []string) error {
	fmt.Printf("dmfexport %s (%s, %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
