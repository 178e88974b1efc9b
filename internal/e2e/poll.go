package e2e

import (
	"testing"
	"time"
)

// Eventually polls f every 50 ms until it returns nil, and fails the test
// with what and f's last error when timeout passes first.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond) // polling pace, not synchronisation
	}
}
