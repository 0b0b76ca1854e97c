//go:build faults

package postgres

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The fault suite's builds (-tags faults) pause a sink inside a
// transaction so it can be killed there: DMFEXPORT_FAULTS_SINK_PAUSE is
// "apply@N" (the N-th batch this process applies) or "swap" (every
// snapshot swap). The pause prints "faults: paused in <point>" on stderr
// and lasts a minute.
func init() {
	spec := os.Getenv("DMFEXPORT_FAULTS_SINK_PAUSE")
	if spec == "" {
		return
	}
	point, nth, _ := strings.Cut(spec, "@")
	want, _ := strconv.Atoi(nth)
	var seen atomic.Int64
	faultPoint = func(p string) {
		if p != point || (want > 0 && seen.Add(1) != int64(want)) {
			return
		}
		fmt.Fprintf(os.Stderr, "faults: paused in %s\n", p)
		time.Sleep(time.Minute)
	}
}
