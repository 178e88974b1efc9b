package client

import "time"

// SetAuthRetryDelay changes the wait after a watch refused with 401 or 403.
// Call it before t.Parallel: nothing else may run meanwhile.
func SetAuthRetryDelay(d time.Duration) { authRetryDelay = d }

// Failover is failover, for tests.
var Failover = failover

// PauseAfter returns the pauses a Registrar or Discovery with nodes nodes
// makes after each of errs in turn (a fresh backoff of 100 ms to 5 s).
func PauseAfter(nodes int, errs ...error) []time.Duration {
	p := pacer{bo: backoff{base: 100 * time.Millisecond, max: 5 * time.Second}, nodes: nodes}
	var out []time.Duration
	for _, err := range errs {
		out = append(out, p.next(err))
	}
	return out
}
