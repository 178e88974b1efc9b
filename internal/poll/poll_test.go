package poll_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/regd/regd/internal/poll"
)

func TestWaitReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	err := poll.Wait(5*time.Second, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Wait = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestWaitTimesOutWithTheLastError(t *testing.T) {
	calls := 0
	start := time.Now()
	err := poll.Wait(150*time.Millisecond, func() error {
		calls++
		return errors.New("still " + strings.Repeat("x", calls))
	})
	took := time.Since(start)
	if err == nil {
		t.Fatal("Wait = nil for a condition that never holds")
	}
	if took < 150*time.Millisecond {
		t.Errorf("gave up after %v, before the timeout", took)
	}
	if want := "still " + strings.Repeat("x", calls); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "150ms") {
		t.Errorf("error %q does not name the timeout and the last error %q", err, want)
	}
	if calls < 3 {
		t.Errorf("%d calls in 150ms: the pace is too slow", calls)
	}
}

func TestStopEndsTheWaitAtOnce(t *testing.T) {
	final := errors.New("the process exited")
	calls := 0
	err := poll.Wait(time.Minute, func() error {
		calls++
		return poll.Stop(final)
	})
	if !errors.Is(err, final) || err.Error() != final.Error() || calls != 1 {
		t.Fatalf("Wait = %v after %d calls, want the stopped error as is after 1", err, calls)
	}
	if poll.Stop(nil) != nil {
		t.Error("Stop(nil) is not nil")
	}
}

func TestStopIsFoundWhenWrapped(t *testing.T) {
	final := errors.New("reported twice")
	err := poll.Wait(time.Minute, func() error {
		return errors.Join(errors.New("ledger on m1"), poll.Stop(final))
	})
	if !errors.Is(err, final) || !strings.Contains(err.Error(), "ledger on m1") {
		t.Fatalf("Wait = %v, want the whole error that wraps the stopped one", err)
	}
}

func TestMeasureKeepsAFinePace(t *testing.T) {
	calls := 0
	start := time.Now()
	took := poll.Measure(t, 5*time.Second, "a condition that holds at 300ms", func() error {
		calls++
		if time.Since(start) < 300*time.Millisecond {
			return errors.New("not yet")
		}
		return nil
	})
	if took < 300*time.Millisecond || took > time.Since(start) {
		t.Errorf("Measure = %v, want the time until the condition held (300ms) at most the call's", took)
	}
	// Wait would have backed off to 100ms: about 7 calls in 300ms. At
	// 5ms, Measure makes many more, even on a loaded machine.
	if calls < 15 {
		t.Errorf("%d calls in 300ms: Measure backed off", calls)
	}
}

func TestThroughoutLooksForTheWholeSpan(t *testing.T) {
	calls := 0
	start := time.Now()
	poll.Throughout(t, 300*time.Millisecond, "a condition that holds", func() error {
		calls++
		return nil
	})
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("returned after %v, before the span ended", took)
	}
	if calls < 3 {
		t.Errorf("%d looks in 300ms", calls)
	}
}

func TestThroughoutFailsAtTheFirstBreak(t *testing.T) {
	ft := &fatalRecorder{T: t}
	calls := 0
	done := make(chan struct{})
	go func() { // Fatal ends the goroutine, as it ends a test's
		defer close(done)
		poll.Throughout(ft, time.Minute, "a condition that breaks", func() error {
			calls++
			if calls == 2 {
				return errors.New("broken")
			}
			return nil
		})
	}()
	<-done
	if calls != 2 || !strings.Contains(ft.msg, "a condition that breaks: broken") {
		t.Fatalf("after %d calls: Fatal(%q), want a failure at the second look naming it", calls, ft.msg)
	}
}

func TestUntilFailsNamingWhat(t *testing.T) {
	ft := &fatalRecorder{T: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		poll.Until(ft, 50*time.Millisecond, "the thing", func() error { return errors.New("not there") })
	}()
	<-done
	if !strings.Contains(ft.msg, "the thing: not within 50ms: not there") {
		t.Fatalf("Fatal(%q), want what, the timeout and the last error", ft.msg)
	}
}

// fatalRecorder keeps what Fatalf says and ends the goroutine, as
// testing.T does, without failing the test that runs it.
type fatalRecorder struct {
	*testing.T
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
