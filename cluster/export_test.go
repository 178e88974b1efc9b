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
