package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/regd/regd/registry"
)

// ReporterConfig configures the expiry reporter.
type ReporterConfig struct {
	Ledger    *registry.Ledger
	Node      Node
	Logger    *zap.Logger
	Metrics   prometheus.Registerer
	Retention int // ledger entries kept; 0: registry.DefaultExpiryRetention
	// Leases, when set, is the member's lessor, sampled for the leases'
	// deadlines (deadlines.go): entries then carry the deadline, and
	// regd_expiry_lag_seconds measures deadline → durable report.
	Leases LeaseClock
	// MaxTxnOps is the member's --max-txn-ops; the consumer's commits use
	// three quarters of it. 0: etcd's default, 128.
	MaxTxnOps int
}

// Reporter reports each expired instance exactly once, cluster-wide. It runs
// on the leader only (Run, added to Leadership) and serves the ledger on
// every member (Expirations).
//
// The rule and the bookkeeping are the registry's (registry.Ledger,
// registry.Classify): a consumer follows etcd's history from a durable
// cursor and writes each batch of reports in one transaction with the
// cursor's advance, guarded by a compare on the cursor. A new leader
// resumes from the cursor, so nothing is missed; a stale leader's batch
// fails its compare, so nothing is written twice. The reporter adds what
// belongs to leadership: one consumer per term, retries, trimming, the log
// line and the metrics. See DESIGN.md.
type Reporter struct {
	cfg      ReporterConfig
	lg       *zap.Logger
	expired  *prometheus.CounterVec
	lag      prometheus.Histogram
	deadline prometheus.Histogram
	replayed prometheus.Counter
	unmarked prometheus.Counter
}

// Tunables; variables so tests can shorten them.
var (
	// trimEvery is how often the ledger is trimmed to its retention.
	trimEvery = 30 * time.Second
	// retryAfter is the pause after an error before the reporter resumes.
	retryAfter = 250 * time.Millisecond
)

// NewReporter builds a reporter and registers its metrics.
func NewReporter(cfg ReporterConfig) *Reporter {
	if cfg.Retention <= 0 {
		cfg.Retention = registry.DefaultExpiryRetention
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	r := &Reporter{
		cfg: cfg,
		lg:  cfg.Logger,
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regd_expirations_total",
			Help: "Instances reported expired by this member while it led, by service.",
		}, []string{"service"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "regd_expiry_report_lag_seconds",
			Help:    "Time from the leader seeing an instance's deletion to its expiry report being durable.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		deadline: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "regd_expiry_lag_seconds",
			Help: "Time from an instance's lease deadline (its last renewal + TTL, as the leader's lessor knew it, to within a second) to its expiry report being durable. Expiries whose deadline the reporting leader had not sampled (it took over after the lease ran out) are not counted.",
			// From the lessor's 500 ms checks to a mass expiry's queue
			// (etcd revokes at most 1,000 leases a second).
			Buckets: []float64{.25, .5, .75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600},
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regd_expiry_reconciled_total",
			Help: "Expiries found by reconciling from the state at the compaction revision because their history had been compacted.",
		}),
		unmarked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regd_expiry_unmarked_leases_total",
			Help: "Leases of plain etcd clients that ended before the leader could attach their marker; deletions of their keys count as explicit, not as expiries.",
		}),
	}
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(r.expired, r.lag, r.deadline, r.replayed, r.unmarked)
	}
	return r
}

// Expirations serves the ledger, newest first.
func (r *Reporter) Expirations(ctx context.Context, q registry.ExpirationQuery) ([]registry.Expiration, error) {
	return r.cfg.Ledger.Expirations(ctx, q)
}

// Run reports expiries until ctx ends (this member stops leading).
func (r *Reporter) Run(ctx context.Context) {
	// Leadership.Stop waits for Run; Run waits for the trimmer, so no trim
	// outlives the leadership that started it.
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { r.trim(ctx) })

	opts := registry.ConsumerOptions{
		ReportedBy: r.cfg.Node.Name(),
		Logger:     r.lg,
		Reported:   r.reported,
		Unmarked:   func(int64) { r.unmarked.Inc() },
		MaxOps:     r.cfg.MaxTxnOps * 3 / 4,
	}
	if r.cfg.Leases != nil {
		d := newDeadlines(r.cfg.Leases)
		wg.Go(func() { d.run(ctx) })
		opts.Leased = func(lease int64) { d.track(lease, time.Now()) }
		opts.Deadline = func(lease int64) (time.Time, bool) {
			at, _, ok := d.deadline(lease)
			return at, ok
		}
	}
	consumer := r.cfg.Ledger.NewConsumer(opts)
	// A pause that lasts (storage full: the ledger is a write) is logged
	// when it starts and then once a minute, not at every retry.
	var lastErr string
	var lastLogged time.Time
	for ctx.Err() == nil {
		err := consumer.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, registry.ErrCursorMoved) {
			if msg := err.Error(); msg != lastErr || time.Since(lastLogged) >= time.Minute {
				r.lg.Warn("expiry reporter paused", zap.Error(err))
				lastErr, lastLogged = msg, time.Now()
			}
		} else {
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retryAfter):
		}
	}
}

func (r *Reporter) trim(ctx context.Context) {
	tick := time.NewTicker(trimEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if n, err := r.cfg.Ledger.Trim(ctx, r.cfg.Retention); err != nil && ctx.Err() == nil {
				r.lg.Warn("trim expiry ledger", zap.Error(err))
			} else if n > 0 {
				r.lg.Debug("trimmed expiry ledger", zap.Int64("deleted", n))
			}
		}
	}
}

// reported logs and counts one expiry the ledger just recorded.
func (r *Reporter) reported(rep registry.Report) {
	lag := time.Since(rep.Seen)
	r.expired.WithLabelValues(rep.Service).Inc()
	r.lag.Observe(lag.Seconds())
	if rep.Deadline != nil && !rep.Reconciled {
		r.deadline.Observe(time.Since(*rep.Deadline).Seconds())
	}
	if rep.Reconciled {
		r.replayed.Inc()
	}
	r.lg.Info("instance expired",
		zap.String("service", rep.Service),
		zap.String("id", rep.ID),
		zap.String("address", rep.Address),
		zap.String("lease", rep.LeaseID),
		zap.Int64("revision", rep.Revision),
		zap.Duration("report-lag", lag),
		zap.Bool("reconciled", rep.Reconciled),
	)
}
