package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// waitBrokerIdle waits, when RabbitMQ runs on this machine, until its
// Erlang VM is idle: after a case, the broker goes on for up to half a
// minute deleting the persistent messages of the queue the case dropped,
// and a case started meanwhile measures that cleanup as much as itself.
// It gives up after a minute and does nothing when no broker runs here.
func waitBrokerIdle() {
	pid := beamPID()
	if pid == "" {
		return
	}
	const sample = 500 * time.Millisecond
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		before, ok := cpuTicks(pid)
		time.Sleep(sample)
		after, ok2 := cpuTicks(pid)
		if !ok || !ok2 {
			return
		}
		// Clock ticks are 10 ms: under 5 in half a second is under 10% of a core.
		if after-before < 5 {
			return
		}
	}
}

// beamPID returns the process ID of a local Erlang VM (beam.smp), or "".
func beamPID() string {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		if comm, err := os.ReadFile(filepath.Join(d, "comm")); err == nil && string(bytes.TrimSpace(comm)) == "beam.smp" {
			return filepath.Base(d)
		}
	}
	return ""
}

// cpuTicks returns the user and system CPU time of process pid, in clock
// ticks.
func cpuTicks(pid string) (int64, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	return u + s, err1 == nil && err2 == nil
}
