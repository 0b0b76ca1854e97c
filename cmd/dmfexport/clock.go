//go:build !faults

package main

import "github.com/jonboulle/clockwork"

// newClock is the clock a command's runs read every time from (see
// jobs.Runner.Clock): the machine's. The fault suite's builds skew it
// (clock_faults.go).
func newClock() clockwork.Clock { return clockwork.NewRealClock() }
