package cluster

import (
	"container/heap"
	"errors"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/regd/regd/checks"
	"github.com/regd/regd/registry"
)

// The check owner's probing (checks.go has the task and its term): the
// schedule, one probe per check at a time, what a result does to the
// lease and the published health, and the coalescing health publishers.

// dispatch starts the probes that are due. A check whose previous probe
// has not finished (waiting for a slot, or still running) skips this tick:
// one probe per check at a time. The schedule keeps its phase: the next
// tick is one interval after this one, or, when the owner fell further
// behind, one interval from now.
func (t *term) dispatch(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.schedule) > 0 && !t.schedule[0].due.After(now) {
		e := t.schedule[0]
		due := e.due
		interval := time.Duration(e.check.Interval)
		e.due = due.Add(interval)
		if !e.due.After(now) {
			e.due = now.Add(interval)
		}
		heap.Fix(&t.schedule, 0)
		switch {
		case e.ended:
		case e.inFlight:
			t.c.skipped.Inc()
		default:
			e.inFlight = true
			t.wg.Go(func() { t.probe(e, due) })
		}
	}
}

// probe renews e's lease, probes e's target and acts on the result.
func (t *term) probe(e *entry, due time.Time) {
	defer func() {
		t.mu.Lock()
		e.inFlight = false
		t.mu.Unlock()
	}()
	ctx := t.ctx
	// The lease first, whatever the probe says: the instance lives
	// until the check has failed its allowed number of times.
	select {
	case t.renewals <- struct{}{}:
	case <-ctx.Done():
		return
	}
	_, err := t.c.cfg.Store.RenewLease(ctx, e.lease)
	<-t.renewals
	if err != nil && ctx.Err() == nil {
		if registry.AsError(err).Kind == registry.KindNotFound {
			t.mu.Lock()
			e.ended = true // gone; the view will say so
			t.mu.Unlock()
			return
		}
		t.c.renewErr.Inc()
		t.logRenewal(e, err)
	}
	select {
	case t.probes <- struct{}{}:
	case <-ctx.Done():
		return
	}
	start := time.Now()
	t.c.lag.Observe(start.Sub(due).Seconds())
	res := t.c.cfg.Prober.Probe(ctx, e.check.Kind(), e.check.Target(), time.Duration(e.check.Timeout))
	<-t.probes
	if ctx.Err() != nil {
		return // cut short by the end of the term: not a result
	}
	took := time.Since(start)
	outcome := registry.HealthFailing
	if res.Passing {
		outcome = registry.HealthPassing
	}
	t.c.duration.WithLabelValues(e.check.Kind()).Observe(took.Seconds())
	t.c.results.WithLabelValues(e.check.Kind(), outcome).Inc()
	t.record(e, res, time.Now())
}

// record turns a probe's result into the check's state, and writes what
// changed: the health when its status or count of failures changed, or the
// end of the lease after the allowed failures.
func (t *term) record(e *entry, res checks.Result, at time.Time) {
	t.mu.Lock()
	if e.removed || e.ended {
		t.mu.Unlock()
		return
	}
	prev := e.status
	if res.Passing {
		e.failures, e.status = 0, registry.HealthPassing
	} else {
		e.failures++
		e.status = registry.HealthFailing
	}
	failures := e.failures
	h := registry.Health{Status: e.status, CheckedAt: at.UTC(), Output: res.Output, ConsecutiveFailures: failures}
	end := !res.Passing && failures >= e.check.Failures
	publish := !end && (e.published == nil || e.published.Status != h.Status || e.published.ConsecutiveFailures != h.ConsecutiveFailures)
	fence := t.fence
	switch {
	case publish:
		t.queuePublishLocked(e, h)
	default:
		// The end writes the final health itself; a state back to
		// what the record says cancels a write still waiting.
		e.want = nil
	}
	t.mu.Unlock()

	lg := t.c.lg.With(zap.String("service", e.service), zap.String("id", e.id), zap.String("check", e.check.Kind()+" "+e.check.Target()))
	switch {
	case prev != registry.HealthFailing && h.Status == registry.HealthFailing:
		lg.Warn("health check failing", zap.Int("consecutive-failures", failures), zap.Int("failures-allowed", e.check.Failures), zap.String("output", h.Output))
	case prev == registry.HealthFailing && h.Status == registry.HealthPassing:
		lg.Info("health check passing again", zap.String("output", h.Output))
	case prev == "":
		lg.Debug("first health check result", zap.String("status", h.Status), zap.String("output", h.Output))
	}

	if !end {
		return
	}
	err := t.c.cfg.Store.EndCheck(t.ctx, fence, e.service, e.id, e.lease, h)
	if err == nil {
		t.c.removed.Inc()
		lg.Warn("instance removed: its health check failed", zap.Int("consecutive-failures", failures), zap.String("lease", strconv.FormatInt(e.lease, 10)), zap.String("output", h.Output))
		t.mu.Lock()
		e.ended = true
		t.mu.Unlock()
		return
	}
	t.writeFailed(e, err, lg, true)
}

// writeFailed handles a health write or an EndCheck that failed.
func (t *term) writeFailed(e *entry, err error, lg *zap.Logger, end bool) {
	switch {
	case t.ctx.Err() != nil:
	case errors.Is(err, registry.ErrNotCheckOwner):
		// A claim after ours: a deposed leader's late claim, or we are
		// the deposed one and will stop within Backstop. Claim again
		// while this term lasts; the next probe writes again.
		t.mu.Lock()
		fence := t.fence
		t.mu.Unlock()
		lg.Warn("another member claimed the health checks; claiming them again", zap.Error(err))
		t.claim(fence)
	case registry.AsError(err).Kind == registry.KindNotFound:
		t.mu.Lock()
		e.ended = true // deregistered or registered again meanwhile
		t.mu.Unlock()
	default:
		// Not written: the state in memory stays ahead of the record,
		// and the next probe writes it (or ends the lease) again.
		lg.Warn("writing a health check's result failed; the next probe tries again", zap.Bool("remove", end), zap.Error(err))
	}
}

// queuePublishLocked makes h the health to write for e, for a publisher.
// A health already waiting with the same status and count is kept (its
// checked_at is when the state began); another replaces it. Call with
// t.mu held.
func (t *term) queuePublishLocked(e *entry, h registry.Health) {
	if e.removed || e.ended {
		return
	}
	if w := e.want; w == nil || w.Status != h.Status || w.ConsecutiveFailures != h.ConsecutiveFailures {
		e.want = &h
	}
	if !e.queued {
		e.queued = true
		t.publishQ = append(t.publishQ, e)
		select {
		case t.publishWake <- struct{}{}:
		default:
		}
	}
}

// publisher writes the health of queued entries, one at a time, until the
// term ends.
func (t *term) publisher() {
	for {
		t.mu.Lock()
		var e *entry
		if len(t.publishQ) > 0 {
			e = t.publishQ[0]
			t.publishQ[0] = nil
			t.publishQ = t.publishQ[1:]
			if len(t.publishQ) > 0 {
				select { // another publisher may take the rest
				case t.publishWake <- struct{}{}:
				default:
				}
			}
		}
		var h *registry.Health
		var fence registry.CheckFence
		if e != nil {
			e.queued = false
			h, fence = e.want, t.fence
			if e.removed || e.ended {
				h = nil
			}
		}
		t.mu.Unlock()
		if e == nil {
			select {
			case <-t.ctx.Done():
				return
			case <-t.publishWake:
			}
			continue
		}
		if h == nil {
			continue
		}
		_, err := t.c.cfg.Store.PublishHealth(t.ctx, fence, e.service, e.id, e.lease, *h)
		t.mu.Lock()
		if err == nil {
			e.published = h
		}
		if e.want == h {
			// Written, or failed: a failed one is queued again by the
			// next probe, which finds the record behind.
			e.want = nil
		}
		t.mu.Unlock()
		if err != nil {
			t.writeFailed(e, err, t.c.lg.With(zap.String("service", e.service), zap.String("id", e.id)), false)
		}
	}
}

// logRenewal logs a failed renewal at most every 10 s: when the cluster
// is in trouble, every check's renewal fails.
func (t *term) logRenewal(e *entry, err error) {
	t.mu.Lock()
	now := time.Now()
	if now.Sub(t.renewLogged) < 10*time.Second {
		t.mu.Unlock()
		return
	}
	t.renewLogged = now
	t.mu.Unlock()
	t.c.lg.Warn("renewing a checked instance's lease failed", zap.String("service", e.service), zap.String("id", e.id), zap.Error(err))
}

// schedule is a min-heap of entries by due time.
type schedule []*entry

func (s schedule) Len() int           { return len(s) }
func (s schedule) Less(i, j int) bool { return s[i].due.Before(s[j].due) }
func (s schedule) Swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].index, s[j].index = i, j
}
func (s *schedule) Push(x any) {
	e := x.(*entry)
	e.index = len(*s)
	*s = append(*s, e)
}
func (s *schedule) Pop() any {
	old := *s
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*s = old[:len(old)-1]
	return e
}
