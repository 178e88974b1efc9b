package cluster

import "time"

// SetTrimEvery shortens how often a reporter trims the ledger. It affects
// reporters that start afterwards; call it before starting a cluster and
// restore after the cluster has stopped (the variable is read without a
// lock, so no test that starts clusters may run in parallel with it).
func SetTrimEvery(d time.Duration) (restore func()) {
	old := trimEvery
	trimEvery = d
	return func() { trimEvery = old }
}

// Deadlines is the deadline tracker, for its own tests.
type Deadlines = deadlines

// NewDeadlines returns a tracker over clock.
func NewDeadlines(clock LeaseClock) *Deadlines { return newDeadlines(clock) }

// Track, Step and Deadline expose the tracker's methods.
func (d *Deadlines) Track(lease int64, now time.Time) { d.track(lease, now) }
func (d *Deadlines) Step(now time.Time)               { d.step(now) }
func (d *Deadlines) Deadline(lease int64) (time.Time, time.Duration, bool) {
	return d.deadline(lease)
}
