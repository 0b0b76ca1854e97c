// Package process answers questions about the processes of this machine.
package process

import (
	"errors"
	"os"
	"syscall"
)

// Alive reports whether a process with this pid exists here (one owned by
// another user counts).
func Alive(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
