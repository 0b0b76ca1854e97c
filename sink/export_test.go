package sink

import "time"

// SetQueueSampleInterval sets how often consumers read their queue's
// depth, until the returned func restores it.
func SetQueueSampleInterval(d time.Duration) (restore func()) {
	old := queueSampleInterval
	queueSampleInterval = d
	return func() { queueSampleInterval = old }
}
