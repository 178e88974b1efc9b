package cluster_test

import (
	"context"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regd/regd/cluster"
	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// fakeLessor answers like etcd's leader: the time left in whole seconds,
// truncated toward zero (node.LeaseDeadline's arithmetic), at the
// tracker's now.
type fakeLessor struct {
	mu       sync.Mutex
	now      time.Time
	deadline map[int64]time.Time
	looks    int
}

func (f *fakeLessor) LeaseDeadline(lease int64) (lo, hi time.Time, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.looks++
	d, ok := f.deadline[lease]
	if !ok {
		return lo, hi, false
	}
	ttl := int64(d.Sub(f.now).Seconds())
	left := time.Duration(ttl) * time.Second
	switch {
	case ttl > 0:
		return f.now.Add(left), f.now.Add(left + time.Second), true
	case ttl < 0:
		return f.now.Add(left - time.Second), f.now.Add(left), true
	}
	return f.now.Add(-time.Second), f.now.Add(time.Second), true
}

func (f *fakeLessor) LeaseIDs(context.Context) ([]int64, error) { return nil, nil }

// TestDeadlineTracker: a lease that stops being renewed is known to within
// a fraction of a second at its end (the samples' whole-second intervals
// intersected); a renewal in the last window moves the deadline; a lease
// far from its deadline is not looked at every tick; a deadline is handed
// out once.
func TestDeadlineTracker(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := &fakeLessor{now: t0, deadline: map[int64]time.Time{
		1: t0.Add(10*time.Second + 123*time.Millisecond), // runs out
		2: t0.Add(10*time.Second + 700*time.Millisecond), // renewed at 9 s, runs out at 9 s + 10 s
		3: t0.Add(time.Hour),                             // far away
	}}
	d := cluster.NewDeadlines(f)
	for lease := range f.deadline {
		d.Track(lease, t0)
	}
	renewed := false
	for now := t0; now.Before(t0.Add(22 * time.Second)); now = now.Add(250 * time.Millisecond) {
		f.mu.Lock()
		f.now = now
		if !renewed && !now.Before(t0.Add(9*time.Second)) {
			f.deadline[2] = now.Add(10 * time.Second)
			renewed = true
		}
		// etcd revokes an expired lease within its 500 ms checks.
		for lease, dl := range f.deadline {
			if now.Sub(dl) > 500*time.Millisecond {
				delete(f.deadline, lease)
			}
		}
		f.mu.Unlock()
		d.Step(now)
	}
	check := func(lease int64, want time.Time) {
		t.Helper()
		at, half, ok := d.Deadline(lease)
		if !ok {
			t.Fatalf("lease %d: no deadline", lease)
		}
		if diff := math.Abs(float64(at.Sub(want))); diff > float64(half) || half > 300*time.Millisecond {
			t.Errorf("lease %d: deadline %v ± %v, want %v", lease, at.Sub(t0), half, want.Sub(t0))
		}
		if _, _, ok := d.Deadline(lease); ok {
			t.Errorf("lease %d: deadline handed out twice", lease)
		}
	}
	check(1, t0.Add(10*time.Second+123*time.Millisecond))
	check(2, t0.Add(19*time.Second))
	if _, _, ok := d.Deadline(3); ok {
		t.Error("lease 3 is an hour from its deadline and has one already")
	}
	// 22 s at 4 ticks a second is 88 ticks; three leases looked at every
	// tick would be 264 looks. Lease 3 is looked at once, 1 and 2 only in
	// their last seconds.
	if f.looks > 60 {
		t.Errorf("%d looks at the lessor; want the far lease left alone", f.looks)
	}
}

// TestExpiryDeadlineAndLag: an instance registered with a 2 s TTL and never
// renewed is reported with its deadline (registration + TTL, as the
// leader's lessor knew it, to within a second), reported_at at or after
// it, and counted in regd_expiry_lag_seconds.
func TestExpiryDeadlineAndLag(t *testing.T) {
	needsCluster(t)
	t.Parallel()
	c := startCluster(t, 3)
	leader := c.Members[c.WaitLeader(t)]
	before := time.Now()
	in := register(t, leader, "dl", "a", "10.7.0.1:80", 2)
	after := time.Now()
	want := map[key]registry.Instance{keyOfInstance(in): in}
	es := c.WaitExpiries(t, 30*time.Second, expect(want, nil))
	var e ledgertest.Entry
	for _, x := range es {
		if keyOf(x) == keyOfInstance(in) {
			e = x
		}
	}
	if e.Deadline == nil || e.ReportedAt == nil {
		t.Fatalf("entry without deadline or reported_at: %+v", e)
	}
	lo, hi := before.Add(2*time.Second-time.Second), after.Add(2*time.Second+time.Second)
	if e.Deadline.Before(lo) || e.Deadline.After(hi) {
		t.Errorf("deadline %v, want within [%v, %v] (registered between %v and %v, TTL 2 s)", e.Deadline, lo, hi, before, after)
	}
	if e.ReportedAt.Before(e.Deadline.Add(-time.Second)) {
		t.Errorf("reported_at %v before the deadline %v", e.ReportedAt, e.Deadline)
	}
	// The histogram is the leader's that reported it.
	var reporter *regdtest.Member
	for _, m := range c.Members {
		if m.Name == e.ReportedBy {
			reporter = m
		}
	}
	code, _, body := regdtest.Do(t, http.MethodGet, reporter.URL("/metrics"), nil)
	if code != http.StatusOK || !strings.Contains(string(body), "regd_expiry_lag_seconds_count 1") {
		t.Errorf("metrics of %s: %d, no regd_expiry_lag_seconds_count 1:\n%s", reporter.Name, code, grepLines(string(body), "regd_expiry_lag"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
