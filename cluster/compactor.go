package cluster

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/regd/regd/registry"
)

// Compaction keeps etcd's history bounded, by time and by size. etcd's own
// auto-compaction is off because it knows nothing of the expiry ledger:
// compacting history the ledger has not consumed would force a reconcile.
// See DESIGN.md, "History and disk".
//
// By time: history is kept for the retention (--history-retention), which
// is how far back a watch client can resume with Last-Event-ID before it
// gets a reset. The leader samples the revision every sampleEvery into the
// revision clock (registry.HistoryClockKey), a small record in etcd, so a
// new leader knows at once which revision was current a retention ago and
// compacts on schedule: the clock survives leader changes and restarts.
//
// By size: when the data in the backend (bbolt's pages in use) reaches
// SizeHighWater of the quota, retention gives way: the leader compacts as
// far as the expiry cursor allows, says so in a warning and in
// regd_history_compactions_total{reason="size"}, and defragmentation
// (node.RunMaintenance) gives the freed pages back to the file system.

// DefaultHistoryRetention is --history-retention's default.
const DefaultHistoryRetention = time.Hour

// SizeHighWater is the fraction of the backend quota that the data in use
// may reach before history is compacted beyond the retention. Half leaves
// the other half for what bbolt cannot reuse at once (pages freed while a
// read transaction still sees them) and for the time compaction and
// defragmentation take under load.
const SizeHighWater = 0.5

// sizeEvery is how often the leader looks at the backend's size.
const sizeEvery = time.Second

// History is what the compactor needs of the registry: the current
// revision, a compaction that never passes the expiry cursor
// (registry.Ledger), and the revision clock (registry.Store).
type History interface {
	Revision(ctx context.Context) (int64, error)
	CompactHistory(ctx context.Context, target int64) (int64, error)
	RecordRevision(ctx context.Context, now time.Time, keep time.Duration) ([]registry.HistorySample, error)
	RevisionClock(ctx context.Context) ([]registry.HistorySample, error)
}

// Backend is the size of the leader's backend (node.Node).
type Backend interface {
	DBSizeInUse() int64
	Quota() int64
}

// CompactorConfig configures a Compactor.
type CompactorConfig struct {
	History   History
	Backend   Backend
	Retention time.Duration // 0: DefaultHistoryRetention
	Logger    *zap.Logger
	Metrics   prometheus.Registerer // nil: none
}

// Compactor is leader-only work that compacts etcd's history.
type Compactor struct {
	cfg         CompactorConfig
	lg          *zap.Logger
	sampleEvery time.Duration
	compactions *prometheus.CounterVec
	compacted   prometheus.Gauge
}

// NewCompactor returns a compactor; Run it on the leader.
func NewCompactor(cfg CompactorConfig) *Compactor {
	if cfg.Retention == 0 {
		cfg.Retention = DefaultHistoryRetention
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	c := &Compactor{
		cfg: cfg,
		lg:  cfg.Logger,
		// Thirty samples per retention: compaction lags the retention by
		// at most a thirtieth of it (and at most a minute).
		sampleEvery: min(max(cfg.Retention/30, time.Second), time.Minute),
		compactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regd_history_compactions_total",
			Help: `Compactions of etcd's history by this member as leader, by reason: "time" (older than --history-retention) or "size" (the backend's data reached half the quota; retention gave way).`,
		}, []string{"reason"}),
		compacted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "regd_history_compacted_revision",
			Help: "The revision etcd's history was last compacted to by this member as leader.",
		}),
	}
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(c.compactions, c.compacted)
	}
	return c
}

// Run compacts until ctx ends (this member stops leading). By time on the
// revision clock's schedule, by size every second.
func (c *Compactor) Run(ctx context.Context) {
	size := time.NewTicker(sizeEvery)
	defer size.Stop()
	var (
		samples   []registry.HistorySample
		compacted int64
		warned    time.Time // of the last size warning
		logged    time.Time // of the last time compaction logged
		cut       int
	)
	// byTime compacts by the revision clock. At the start of a term it
	// only reads the clock: a leader that has just been elected compacts
	// what is due at once, and writes its first sample when the clock's
	// newest one is sampleEvery old, so that leaders changing faster than
	// that still keep the clock going, and a cluster at rest is written to
	// once per sampleEvery and no more. (Writing at once would also make
	// every election a write.)
	byTime := func(now time.Time, record bool) {
		var s []registry.HistorySample
		var err error
		if record {
			s, err = c.cfg.History.RecordRevision(ctx, now, c.cfg.Retention)
		} else {
			s, err = c.cfg.History.RevisionClock(ctx)
		}
		if err != nil {
			if ctx.Err() == nil {
				c.lg.Debug("revision clock", zap.Error(err))
			}
			return
		}
		samples = s
		if len(samples) > 0 && now.Sub(samples[0].At) >= c.cfg.Retention && samples[0].Rev > compacted {
			if done := c.compact(ctx, samples[0].Rev, "time"); done > compacted {
				compacted = done
				// One line per compaction would be one a second with a
				// short retention: at most one per 10 minutes.
				if now.Sub(logged) >= 10*time.Minute {
					c.lg.Info("compacted history", zap.Int64("revision", done), zap.Duration("kept", c.cfg.Retention))
					logged = now
				}
			}
		}
	}
	byTime(time.Now(), false)
	// A clock without samples (a new cluster) gets its first one half a
	// sampling interval into the term.
	next := c.sampleEvery / 2
	if n := len(samples); n > 0 {
		next = min(max(time.Until(samples[n-1].At.Add(c.sampleEvery)), 0), c.sampleEvery)
	}
	sample := time.NewTimer(next)
	defer sample.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-sample.C:
			byTime(now, true)
			sample.Reset(c.sampleEvery)
		case now := <-size.C:
			if c.cfg.Backend == nil {
				continue
			}
			inUse, quota := c.cfg.Backend.DBSizeInUse(), c.cfg.Backend.Quota()
			if float64(inUse) < SizeHighWater*float64(quota) {
				continue
			}
			rev, err := c.cfg.History.Revision(ctx)
			if err != nil || rev <= compacted {
				continue
			}
			done := c.compact(ctx, rev, "size")
			if done <= compacted {
				continue
			}
			compacted = done
			cut++
			if now.Sub(warned) >= time.Minute {
				c.lg.Warn("history cut short to stay under the backend quota: watch clients resuming from before the compaction get a reset",
					zap.Int64("in-use-bytes", inUse), zap.Int64("quota-bytes", quota),
					zap.Int64("revision", done), zap.Duration("kept", keptSince(samples, done, now)),
					zap.Duration("retention", c.cfg.Retention), zap.Int("compactions", cut))
				warned, cut = now, 0
			}
		}
	}
}

// compact compacts to target (never past the cursor) and returns the
// revision compacted to, 0 when nothing was.
func (c *Compactor) compact(ctx context.Context, target int64, reason string) int64 {
	done, err := c.cfg.History.CompactHistory(ctx, target)
	if err != nil {
		if ctx.Err() == nil {
			c.lg.Warn("compact history", zap.Int64("revision", target), zap.String("reason", reason), zap.Error(err))
		}
		return 0
	}
	if done > 0 {
		c.compactions.WithLabelValues(reason).Inc()
		c.compacted.Set(float64(done))
	}
	return done
}

// keptSince is how much history a compaction to rev kept, as far as the
// revision clock tells: the age of the newest sample at or below rev.
func keptSince(samples []registry.HistorySample, rev int64, now time.Time) time.Duration {
	kept := time.Duration(0)
	for _, s := range samples {
		if s.Rev <= rev {
			kept = now.Sub(s.At)
		}
	}
	return kept.Round(time.Second)
}
