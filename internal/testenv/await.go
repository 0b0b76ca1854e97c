package testenv

import "time"

// AwaitTick is how often Await asks its condition.
const AwaitTick = 10 * time.Millisecond

// Await asks cond every AwaitTick until it holds, and reports whether it
// held before timeout passed. It is how a test waits for something another
// goroutine, a real service or a child process brings about, without a
// fixed sleep: the wait ends as soon as the condition holds, and the
// timeout only bounds a failing test. cond is asked once more at the end,
// so a condition that comes true on the last tick still counts.
func Await(timeout time.Duration, cond func() bool) bool {
	if cond() {
		return true
	}
	tick := time.NewTicker(AwaitTick)
	defer tick.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case <-tick.C:
			if cond() {
				return true
			}
		case <-deadline.C:
			return cond()
		}
	}
}
