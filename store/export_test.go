package store

import "time"

// TmpPrefix lets the external tests recognise a DirStore's files in the
// middle of being written.
const TmpPrefix = tmpPrefix

// SetLockWait sets how long a DirStore's guarded write waits for its
// folder's lock, until the test ends.
func SetLockWait(t interface{ Cleanup(func()) }, d time.Duration) {
	old := lockWait
	lockWait = d
	t.Cleanup(func() { lockWait = old })
}
