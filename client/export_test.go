package client

import "time"

// SetAuthRetryDelay changes the wait after a watch refused with 401 or 403.
// Call it before t.Parallel: nothing else may run meanwhile.
func SetAuthRetryDelay(d time.Duration) { authRetryDelay = d }
