//go:build unix

package publish

import (
	"syscall"
	"time"
)

// processCPU is the CPU time the process has used (user and system): on a
// machine shared with other work, rows per CPU-second say more than rows
// per second of wall time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
