// Package poll is how regd's tests wait: call a function until it returns
// nil, or give up when a deadline passes. It is the one place a test sleeps
// between looks at a condition (the project's rule: no sleep as
// synchronisation where a condition can be polled with a deadline).
//
// It imports nothing of regd, so that the in-process helpers
// (internal/regdtest) and the real-process ones (internal/e2e, which must
// not pull in the embedded etcd) share it.
package poll

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// The pace between calls: the first retry comes soon, because most
// conditions hold within milliseconds in-process; later ones back off to
// maxPace so that a long wait (an election, a lease running out) does not
// keep two cores busy reading ledgers. Measure keeps to measurePace: its
// answer is a time, which a back-off would blur.
const (
	firstPace   = 10 * time.Millisecond
	maxPace     = 100 * time.Millisecond
	measurePace = 5 * time.Millisecond
)

// Until calls f until it returns nil. When timeout passes first, it fails t
// (Fatal) with what and f's last error; when f returns an error made by
// Stop, it fails t at once with that error, without calling f again. It
// must be called from the test's goroutine, as t.Fatal must; f may call
// t.Fatal too.
func Until(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	if err := Wait(timeout, f); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Wait is Until for callers that decide themselves what a failure means: it
// returns nil once f does; f's error as is when it was made by Stop (or
// wraps one that was); otherwise, once timeout has passed, an error that
// names timeout and wraps f's last error.
func Wait(timeout time.Duration, f func() error) error {
	return wait(timeout, firstPace, maxPace, f)
}

// Measure is Until for a test that reports how soon a condition holds (a
// drained instance gone from DNS, a deregistered one from a resolver): it
// calls f every 5 ms, never backing off, and returns the time from the
// call until f returned nil, to within that pace.
func Measure(t testing.TB, timeout time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	if err := wait(timeout, measurePace, measurePace, f); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return time.Since(start)
}

// wait calls f until it returns nil, a Stop error, or timeout passes; the
// pace between calls starts at pace and doubles up to most.
func wait(timeout, pace, most time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if errors.As(err, new(stopError)) {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("not within %v: %w", timeout, err)
		}
		// The polling pace; what is waited for is f's condition.
		time.Sleep(min(pace, left))
		pace = min(2*pace, most)
	}
}

// Throughout is the opposite wait: f must hold at every look for d, where
// the time span itself is the scenario (an instance outlives several TTLs
// on heartbeats alone). It calls f at once, then every maxPace, and a last
// time once d has passed; the first error fails t with what. It must not
// stand in for a positive marker: "nothing happened" is shown by a later
// event that must come after it, not by looking for a while.
func Throughout(t testing.TB, d time.Duration, what string, f func() error) {
	t.Helper()
	end := time.Now().Add(d)
	for {
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		left := time.Until(end)
		if left <= 0 {
			return
		}
		time.Sleep(min(maxPace, left)) // the pace of the looks; d is the scenario
	}
}

// Stop marks err as final: Until and Wait end at once with it, because
// waiting longer cannot change the answer (the process under test exited,
// a ledger reported something twice). Stop(nil) is nil.
func Stop(err error) error {
	if err == nil {
		return nil
	}
	return stopError{err}
}

type stopError struct{ error }

func (s stopError) Unwrap() error { return s.error }
