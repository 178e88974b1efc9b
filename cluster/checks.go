package cluster

import (
	"container/heap"
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/regd/regd/checks"
	"github.com/regd/regd/registry"
)

// Health checks run by the registry: the leader owns every check
// (DESIGN.md, "Health checks"). Checker.Run is a leader-only task
// (Leadership.OnLead): each term it claims the checks (a fenced claim,
// registry.Store.ClaimChecks), follows the view for instances with a check,
// and probes each at its interval, from a jittered start. At every tick it
// renews the instance's lease; after the check's failures in a row it
// ends the lease (registry.Store.EndCheck), so that the expiry is reported
// once with cause check_failed.

// DefaultCheckMaxConcurrent bounds the probes in flight on the check owner
// (--check-max-concurrent): each holds a socket and a goroutine for at most
// its timeout.
const DefaultCheckMaxConcurrent = 256

// checkRenewParallel bounds the lease renewals in flight, as batch
// heartbeats do (a renewal is a round trip within the leader, one ReadIndex).
const checkRenewParallel = 32

// checkPublishParallel bounds the health writes in flight: they are raft
// writes, and a burst of them (a thousand registrations, each with its
// first result) must not starve the registrations and the lease renewals.
// A write that waits is coalesced with the check's later changes.
const checkPublishParallel = 4

// CheckStore is what the check owner writes through (registry.Store).
type CheckStore interface {
	ClaimChecks(ctx context.Context, member string) (registry.CheckFence, error)
	RenewLease(ctx context.Context, lease int64) (int64, error)
	PublishHealth(ctx context.Context, f registry.CheckFence, service, id string, lease int64, h registry.Health) (int64, error)
	EndCheck(ctx context.Context, f registry.CheckFence, service, id string, lease int64, h registry.Health) error
}

// CheckSource is where the check owner learns of checked instances
// (registry.View): a list and the changes after it, followed as regd's own
// (the drain handshake does not wait for it).
type CheckSource interface {
	Follow(ctx context.Context, service string, f registry.Filter) (registry.InstanceList, *registry.Subscription, error)
}

// Prober runs one probe (checks.Prober).
type Prober interface {
	Probe(ctx context.Context, kind, target string, timeout time.Duration) checks.Result
}

// CheckerConfig configures the check owner.
type CheckerConfig struct {
	Store  CheckStore
	View   CheckSource
	Prober Prober
	Node   interface{ Name() string }
	// MaxConcurrent bounds probes in flight; 0: DefaultCheckMaxConcurrent.
	MaxConcurrent int
	Logger        *zap.Logger
	Metrics       prometheus.Registerer
}

// Checker runs the registry's health checks while this member leads.
type Checker struct {
	cfg CheckerConfig
	lg  *zap.Logger

	running  prometheus.Gauge
	duration *prometheus.HistogramVec
	lag      prometheus.Histogram
	results  *prometheus.CounterVec
	skipped  prometheus.Counter
	removed  prometheus.Counter
	renewErr prometheus.Counter
}

// NewChecker builds the check owner and registers its metrics.
func NewChecker(cfg CheckerConfig) *Checker {
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultCheckMaxConcurrent
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	c := &Checker{
		cfg: cfg,
		lg:  cfg.Logger,
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "regd_checks_running",
			Help: "Health checks this member runs now (the leader runs all of them; 0 elsewhere).",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "regd_check_duration_seconds",
			Help:    "Time one health-check probe took, by kind (http, tcp, grpc).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"kind"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "regd_check_start_lag_seconds",
			Help:    "Time from a probe's scheduled start to its start: waiting for its lease renewal and for a free probe slot (--check-max-concurrent). Probes fall behind when it nears the interval.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regd_check_results_total",
			Help: "Health-check probes by kind and outcome (passing, failing).",
		}, []string{"kind", "outcome"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regd_check_skipped_total",
			Help: "Probes not started because the check's previous probe had not finished yet.",
		}),
		removed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regd_check_removals_total",
			Help: "Instances this member removed because their check failed its allowed number of times in a row.",
		}),
		renewErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regd_check_renewal_errors_total",
			Help: "Lease renewals of checked instances that failed for another reason than the lease being gone.",
		}),
	}
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(c.running, c.duration, c.lag, c.results, c.skipped, c.removed, c.renewErr)
	}
	return c
}

// Run runs the checks until ctx ends (this member stops leading): claim
// them, then follow the view and probe. In-flight probes are cancelled with
// ctx and waited for.
func (c *Checker) Run(ctx context.Context) {
	t := &term{
		c:        c,
		ctx:      ctx,
		entries:  make(map[string]*entry),
		probes:   make(chan struct{}, c.cfg.MaxConcurrent),
		renewals: make(chan struct{}, checkRenewParallel),
	}
	t.publishWake = make(chan struct{}, 1)
	defer c.running.Set(0)
	defer t.wg.Wait()
	if !t.claim(registry.CheckFence{}) {
		return
	}
	for range checkPublishParallel {
		t.wg.Go(t.publisher)
	}
	for ctx.Err() == nil {
		err := t.follow()
		if ctx.Err() != nil {
			return
		}
		c.lg.Info("following checked instances again", zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(retryAfter):
		}
	}
}

// entry is one checked instance on the owner.
type entry struct {
	service, id string
	lease       int64
	check       registry.Check
	due         time.Time // next scheduled probe
	index       int       // in the schedule heap; -1 when removed

	// Guarded by term.mu.
	inFlight  bool
	ended     bool // its lease was ended (or found gone): no more probes
	removed   bool
	failures  int              // consecutive failing probes
	status    string           // of the last probe; "" before the first
	published *registry.Health // as last written (or found in the record)
	want      *registry.Health // to be written by a publisher; nil: nothing
	queued    bool             // in term.publishQ
}

// term is one term's checking state.
type term struct {
	c   *Checker
	ctx context.Context

	claimMu  sync.Mutex // one claim at a time
	mu       sync.Mutex
	fence    registry.CheckFence
	entries  map[string]*entry // by service/id
	schedule schedule

	probes   chan struct{} // a slot per probe in flight
	renewals chan struct{}
	wg       sync.WaitGroup

	publishQ    []*entry      // entries whose want awaits a publisher; guarded by mu
	publishWake chan struct{} // a value when publishQ may be non-empty

	renewLogged time.Time
}

// claim claims the checks, unless the fence has moved on from stale
// (another goroutine claimed again already), retrying until it succeeds
// or the term ends. Probes go on meanwhile; their writes use the fence
// they read.
func (t *term) claim(stale registry.CheckFence) bool {
	t.claimMu.Lock()
	defer t.claimMu.Unlock()
	t.mu.Lock()
	current := t.fence
	t.mu.Unlock()
	if current != stale {
		return true
	}
	var lastErr string
	for {
		f, err := t.c.cfg.Store.ClaimChecks(t.ctx, t.c.cfg.Node.Name())
		if err == nil {
			t.mu.Lock()
			t.fence = f
			t.mu.Unlock()
			t.c.lg.Info("claimed the health checks", zap.Int64("revision", f.Revision()))
			return true
		}
		if t.ctx.Err() != nil {
			return false
		}
		if msg := err.Error(); msg != lastErr {
			t.c.lg.Warn("claiming the health checks failed; retrying", zap.Error(err))
			lastErr = msg
		}
		select {
		case <-t.ctx.Done():
			return false
		case <-time.After(retryAfter):
		}
	}
}

// follow subscribes to every instance, whatever its status, and probes the
// checked ones until the subscription ends (it fell behind, the view
// stopped) or the term does.
func (t *term) follow() error {
	list, sub, err := t.c.cfg.View.Follow(t.ctx, "", registry.Filter{Status: registry.StatusAny})
	if err != nil {
		return err
	}
	defer sub.Close()
	t.sync(list.Instances)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Reset(t.untilNext())
		select {
		case <-t.ctx.Done():
			return nil
		case <-sub.Notify():
			events, err := sub.Drain()
			for _, e := range events {
				t.apply(e)
			}
			if len(events) == 0 && err != nil {
				return err
			}
		case <-timer.C:
			t.dispatch(time.Now())
		}
	}
}

func (t *term) untilNext() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.schedule) == 0 {
		return time.Hour
	}
	return max(time.Until(t.schedule[0].due), 0)
}

// sync makes the entries those of list: after a (re)subscription.
func (t *term) sync(list []registry.Instance) {
	seen := make(map[string]bool, len(list))
	for _, inst := range list {
		seen[inst.Service+"/"+inst.ID] = true
		t.upsert(inst)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, e := range t.entries {
		if !seen[k] {
			t.removeLocked(e)
		}
	}
}

// apply follows one change of the registry.
func (t *term) apply(ev registry.Event) {
	switch ev.Type {
	case registry.EventRegister, registry.EventUpdate:
		t.upsert(ev.Instance)
	case registry.EventDeregister, registry.EventExpire:
		t.mu.Lock()
		defer t.mu.Unlock()
		if e := t.entries[ev.Instance.Service+"/"+ev.Instance.ID]; e != nil && strconv.FormatInt(e.lease, 10) == ev.Instance.LeaseID {
			t.removeLocked(e)
		}
	}
}

// upsert starts checking inst, or goes on with its entry: a new lease
// (registered again) or a new check starts afresh, at a jittered time
// within one interval; anything else (a PATCH, the health this owner
// published) changes nothing.
func (t *term) upsert(inst registry.Instance) {
	key := inst.Service + "/" + inst.ID
	lease, _ := strconv.ParseInt(inst.LeaseID, 10, 64)
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entries[key]
	if inst.Check == nil || lease == 0 {
		if e != nil {
			t.removeLocked(e)
		}
		return
	}
	if e != nil && e.lease == lease && e.check == *inst.Check {
		return
	}
	if e != nil {
		t.removeLocked(e)
	}
	e = &entry{service: inst.Service, id: inst.ID, lease: lease, check: *inst.Check}
	if h := inst.Health; h != nil {
		// Carried over from the previous owner: the count of failures
		// goes on across a failover.
		hc := *h
		e.published, e.status, e.failures = &hc, h.Status, h.ConsecutiveFailures
	}
	interval := time.Duration(e.check.Interval)
	// Jitter: a new owner (or a burst of registrations) spreads the
	// first probes of checks with one interval over that interval.
	e.due = time.Now().Add(rand.N(interval))
	t.entries[key] = e
	heap.Push(&t.schedule, e)
	t.c.running.Set(float64(len(t.entries)))
}

func (t *term) removeLocked(e *entry) {
	if e.removed {
		return
	}
	e.removed = true
	delete(t.entries, e.service+"/"+e.id)
	if e.index >= 0 {
		heap.Remove(&t.schedule, e.index)
	}
	t.c.running.Set(float64(len(t.entries)))
}

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
