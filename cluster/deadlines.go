package cluster

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// LeaseClock is what the deadline tracker needs of the member: the
// leader's lessor, sampled (node.Node implements it).
type LeaseClock interface {
	// LeaseDeadline is the interval the lease's deadline lies in, as the
	// lessor says now; ok is false off the leader or for a lease that is
	// gone.
	LeaseDeadline(lease int64) (earliest, latest time.Time, ok bool)
	// LeaseIDs lists the leases the lessor holds.
	LeaseIDs(ctx context.Context) ([]int64, error)
}

// Tunables of the deadline tracker; variables so tests can shorten them.
var (
	// deadlineTick is how often due leases are looked at.
	deadlineTick = 250 * time.Millisecond
	// deadlineWindow: a lease whose deadline is nearer than this is
	// looked at every tick (its deadline kept, narrowed, or moved by a
	// renewal); one further away is next looked at when it will be this
	// near. A renewal inside the window's last tick is the one that can
	// go unseen; it moves the deadline by a whole TTL (at least 2 s),
	// later than the window, so the lease is then not due at the old one.
	deadlineWindow = 2 * time.Second
	// deadlineKeep is how long a deadline no report asked for is kept
	// (a lease revoked by a deregistration in its last seconds).
	deadlineKeep = 10 * time.Minute
)

// deadlines follows, on the leader, when each lease is due to run out, so
// that an expiry's report can carry its deadline (the ledger entry's
// deadline, regd_expiry_lag_seconds). etcd forgets a deadline with its
// lease and tells it only as whole seconds left (node.LeaseDeadline), so
// each lease is looked at once more when its deadline is near
// (deadlineWindow), and every tick from then on: the intervals of those
// samples are intersected, which narrows the deadline to well under a
// second; one that does not overlap the last means a renewal, and starts
// over. Cost: one in-process lookup per lease per renewal cycle (with a
// 10 s TTL renewed every 3 s, a lease is looked at every 5–8 s), and a
// few dozen bytes of memory per lease.
type deadlines struct {
	clock LeaseClock

	mu    sync.Mutex
	queue dueQueue            // leases by when to look at them next
	next  map[int64]time.Time // lease → its entry in queue (older entries are stale)
	final map[int64]window    // leases in their last window: where the deadline lies
	seen  map[int64]time.Time // when final[lease] was last confirmed
	swept time.Time
}

// window is an interval a deadline lies in.
type window struct{ lo, hi time.Time }

func newDeadlines(clock LeaseClock) *deadlines {
	return &deadlines{clock: clock, next: make(map[int64]time.Time), final: make(map[int64]window), seen: make(map[int64]time.Time)}
}

// track starts following lease (a no-op for one already followed).
func (d *deadlines) track(lease int64, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.next[lease]; ok {
		return
	}
	d.next[lease] = now
	heap.Push(&d.queue, due{at: now, lease: lease})
}

// deadline is where lease's deadline was last known to lie (the middle
// of the interval, and its half width), and forgets it: each expiry is
// reported once.
func (d *deadlines) deadline(lease int64) (at time.Time, precision time.Duration, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	w, ok := d.final[lease]
	if !ok {
		return time.Time{}, 0, false
	}
	delete(d.final, lease)
	delete(d.seen, lease)
	half := w.hi.Sub(w.lo) / 2
	return w.lo.Add(half), half, true
}

// run follows leases until ctx ends (the term): first every lease the
// lessor holds, then those track adds.
func (d *deadlines) run(ctx context.Context) {
	if ids, err := d.clock.LeaseIDs(ctx); err == nil {
		now := time.Now()
		for _, id := range ids {
			d.track(id, now)
		}
	}
	tick := time.NewTicker(deadlineTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			d.step(time.Now())
		}
	}
}

// step looks at every lease due by now. The lock is not held across a
// lookup: reports ask for deadlines meanwhile.
func (d *deadlines) step(now time.Time) {
	for {
		d.mu.Lock()
		if d.queue.Len() == 0 || d.queue[0].at.After(now) {
			d.mu.Unlock()
			break
		}
		e := heap.Pop(&d.queue).(due)
		stale := !d.next[e.lease].Equal(e.at) // the lease was queued again
		d.mu.Unlock()
		if stale {
			continue
		}
		lo, hi, ok := d.clock.LeaseDeadline(e.lease)
		d.mu.Lock()
		d.sample(e.lease, now, lo, hi, ok)
		d.mu.Unlock()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if now.Sub(d.swept) > time.Minute {
		d.swept = now
		for lease, t := range d.seen {
			if now.Sub(t) > deadlineKeep {
				delete(d.final, lease)
				delete(d.seen, lease)
			}
		}
	}
}

// sample records one look at lease, made at now: its deadline in [lo, hi]
// (ok false: gone), and queues the next look.
func (d *deadlines) sample(lease int64, now, lo, hi time.Time, ok bool) {
	if !ok {
		delete(d.next, lease) // gone; a deadline in final stays for its report
		return
	}
	at := now.Add(deadlineTick)
	if lo.Sub(now) < deadlineWindow {
		w, known := d.final[lease]
		if known && lo.Before(w.hi) && w.lo.Before(hi) {
			w = window{lo: maxTime(lo, w.lo), hi: minTime(hi, w.hi)} // the same deadline: narrow it
		} else {
			w = window{lo: lo, hi: hi} // first sample, or renewed since
		}
		d.final[lease] = w
		d.seen[lease] = now
	} else {
		delete(d.final, lease) // renewed out of its last window
		delete(d.seen, lease)
		at = maxTime(lo.Add(-deadlineWindow), at)
	}
	d.next[lease] = at
	heap.Push(&d.queue, due{at: at, lease: lease})
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// due is one lease and when to look at it next.
type due struct {
	at    time.Time
	lease int64
}

// dueQueue is a min-heap of due by time (container/heap).
type dueQueue []due

func (q dueQueue) Len() int           { return len(q) }
func (q dueQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q dueQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *dueQueue) Push(x any)        { *q = append(*q, x.(due)) }
func (q *dueQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}
