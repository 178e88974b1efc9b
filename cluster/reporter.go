package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/regd/regd/registry"
)

// ReporterConfig configures the expiry reporter.
type ReporterConfig struct {
	Store     *registry.Store
	Node      Node
	Logger    *zap.Logger
	Metrics   prometheus.Registerer
	Retention int // ledger entries kept
}

// Reporter reports each expired instance exactly once, cluster-wide. It runs
// on the leader only (Run, under Leadership) and serves the ledger on every
// member (Expirations).
//
// Exactly once: the reporter consumes the registry prefix's history from a
// durable cursor. Every batch of reports is written in one transaction
// together with the cursor's advance, guarded by a compare on the cursor's
// ModRevision. A new leader resumes from the cursor, so nothing is missed;
// a stale leader's batch fails its compare, so nothing is written twice; the
// log line and the metric follow a successful commit only. See DESIGN.md.
type Reporter struct {
	cfg      ReporterConfig
	lg       *zap.Logger
	expired  *prometheus.CounterVec
	lag      prometheus.Histogram
	replayed prometheus.Counter
}

// Tunables; variables so tests can shorten them.
var (
	// cursorIdle is how often the cursor is advanced over revisions that
	// had no deletions. Advancing it on every registration would double
	// the raft writes of a register.
	cursorIdle = 5 * time.Second
	// trimEvery is how often the ledger is trimmed to its retention.
	trimEvery = 30 * time.Second
	// retryAfter is the pause after an error before the reporter resumes.
	retryAfter = 250 * time.Millisecond
)

// maxBatchOps keeps one commit well under etcd's MaxTxnOps.
const maxBatchOps = 96

// NewReporter builds a reporter and registers its metrics.
func NewReporter(cfg ReporterConfig) *Reporter {
	if cfg.Retention <= 0 {
		cfg.Retention = 10000
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
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regd_expiry_reconciled_total",
			Help: "Deletions classified by reconciliation because their history had been compacted.",
		}),
	}
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(r.expired, r.lag, r.replayed)
	}
	return r
}

// Expirations serves the ledger, newest first.
func (r *Reporter) Expirations(ctx context.Context, service string, limit int) ([]registry.Expiration, error) {
	return r.cfg.Store.Expirations(ctx, service, limit)
}

// Run reports expiries until ctx ends (this member stops leading).
func (r *Reporter) Run(ctx context.Context) {
	trim := time.NewTicker(trimEvery)
	defer trim.Stop()
	// Leadership.Stop waits for Run; Run waits for the trimmer, so no trim
	// outlives the leadership that started it.
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-trim.C:
				if n, err := r.cfg.Store.TrimLedger(ctx, r.cfg.Retention); err != nil && ctx.Err() == nil {
					r.lg.Warn("trim expiry ledger", zap.Error(err))
				} else if n > 0 {
					r.lg.Debug("trimmed expiry ledger", zap.Int64("deleted", n))
				}
			}
		}
	})
	// A pause that lasts (storage full: the ledger is a write) is logged
	// when it starts and then once a minute, not at every retry.
	var lastErr string
	var lastLogged time.Time
	for ctx.Err() == nil {
		err := r.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, errCursorMoved) {
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

var errCursorMoved = errors.New("expiry cursor moved: another reporter is active")

// follow watches the registry from the cursor and reports until an error,
// a compare failure or the end of ctx.
func (r *Reporter) follow(ctx context.Context) error {
	st := r.cfg.Store
	cursor, modRev, err := st.Cursor(ctx)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := st.Client().Watch(wctx, st.Keys().Prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(cursor+1))
	idle := time.NewTicker(cursorIdle)
	defer idle.Stop()
	seen := cursor // highest revision delivered by the watch
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-idle.C:
			if seen > cursor {
				newMod, ok, err := st.CommitCursor(ctx, modRev, seen, nil, nil)
				if err != nil {
					return err
				}
				if !ok {
					return errCursorMoved
				}
				cursor, modRev = seen, newMod
			}
		case resp, ok := <-wch:
			if !ok {
				return errors.New("watch closed")
			}
			if resp.CompactRevision != 0 {
				return r.reconcile(ctx, modRev, resp.CompactRevision)
			}
			if err := resp.Err(); err != nil {
				return err
			}
			received := time.Now()
			var batch []pending
			for _, ev := range resp.Events {
				if ev.Kv.ModRevision > seen {
					seen = ev.Kv.ModRevision
				}
				if ev.Type != clientv3.EventTypeDelete {
					continue
				}
				batch = append(batch, pending{d: registry.Deletion{Key: string(ev.Kv.Key), Revision: ev.Kv.ModRevision, Prev: ev.PrevKv}, seen: received})
			}
			if len(batch) == 0 {
				continue
			}
			newMod, err := r.commit(ctx, modRev, batch, false)
			if err != nil {
				return err
			}
			cursor, modRev = batch[len(batch)-1].d.Revision, newMod
		}
	}
}

type pending struct {
	d    registry.Deletion
	seen time.Time
}

// commit classifies the deletions (in revision order) and writes them in
// batches that each end on a revision boundary, moving the cursor to the
// batch's last revision. It returns the cursor's ModRevision afterwards.
func (r *Reporter) commit(ctx context.Context, modRev int64, batch []pending, reconciled bool) (int64, error) {
	st := r.cfg.Store
	for len(batch) > 0 {
		var (
			cmps    []clientv3.Cmp
			ops     []clientv3.Op
			reports []registry.Expiration
			seen    []time.Time
			n       int
		)
		for n < len(batch) {
			// Never split one revision across commits: the cursor
			// says "everything up to here is done".
			if len(ops) >= maxBatchOps && batch[n].d.Revision != batch[n-1].d.Revision {
				break
			}
			p := batch[n]
			out, err := st.Classify(ctx, p.d)
			if err != nil {
				return 0, err
			}
			cmps = append(cmps, out.Cmps...)
			ops = append(ops, out.Ops...)
			if out.Verdict == registry.VerdictExpired {
				e := out.Expiration
				e.ExpiredAt = p.seen.UTC()
				e.ReportedBy = r.cfg.Node.Name()
				put, err := st.LedgerPut(e)
				if err != nil {
					return 0, err
				}
				ops = append(ops, put)
				reports = append(reports, e)
				seen = append(seen, p.seen)
			} else if out.Verdict != registry.VerdictIgnore {
				r.lg.Debug("instance removed", zap.String("service", out.Service), zap.String("id", out.ID), zap.Stringer("verdict", out.Verdict), zap.Int64("revision", p.d.Revision))
			}
			n++
		}
		last := batch[n-1].d.Revision
		newMod, ok, err := st.CommitCursor(ctx, modRev, last, cmps, ops)
		if err != nil {
			return 0, err
		}
		if !ok {
			// Either another reporter advanced the cursor, or
			// bookkeeping changed under us (a re-registration). Both
			// are resolved by starting over from the durable cursor.
			return 0, errCursorMoved
		}
		modRev = newMod
		now := time.Now()
		for i, e := range reports {
			r.expired.WithLabelValues(e.Service).Inc()
			r.lag.Observe(now.Sub(seen[i]).Seconds())
			if reconciled {
				r.replayed.Inc()
			}
			r.lg.Info("instance expired",
				zap.String("service", e.Service),
				zap.String("id", e.ID),
				zap.String("address", e.Address),
				zap.String("lease", e.LeaseID),
				zap.Int64("revision", e.Revision),
				zap.Duration("report-lag", now.Sub(seen[i])),
				zap.Bool("reconciled", reconciled),
			)
		}
		batch = batch[n:]
	}
	return modRev, nil
}

// reconcile recovers after the history between the cursor and compactRev
// was compacted (by a plain client: regd's own compaction never passes the
// cursor). Deletions in the gap cannot be replayed, but every REST instance's
// meta record outlives its key until the reporter consumes it, so the
// instances that vanished are exactly the meta records without a key.
// They are classified like live deletions (their revision is the reconcile
// revision); keys written by plain clients leave no record and are lost.
func (r *Reporter) reconcile(ctx context.Context, modRev, compactRev int64) error {
	st := r.cfg.Store
	orphans, markers, rev, err := st.Orphans(ctx)
	if err != nil {
		return err
	}
	r.lg.Warn("expiry history was compacted past the cursor; reconciling from current state",
		zap.Int64("compact-revision", compactRev), zap.Int64("revision", rev), zap.Int("vanished", len(orphans)))
	now := time.Now()
	batch := make([]pending, 0, len(orphans))
	for _, d := range orphans {
		batch = append(batch, pending{d: d, seen: now})
	}
	if len(batch) > 0 {
		if modRev, err = r.commit(ctx, modRev, batch, true); err != nil {
			return err
		}
	}
	// Markers of deletions in the gap will never be matched; drop them
	// with the final cursor move to the reconcile revision.
	var ops []clientv3.Op
	for _, m := range markers {
		ops = append(ops, clientv3.OpDelete(m))
	}
	for len(ops) > maxBatchOps {
		if _, err := st.Client().Txn(ctx).Then(ops[:maxBatchOps]...).Commit(); err != nil {
			return registry.AsError(err)
		}
		ops = ops[maxBatchOps:]
	}
	_, ok, err := st.CommitCursor(ctx, modRev, rev, nil, ops)
	if err != nil {
		return err
	}
	if !ok {
		return errCursorMoved
	}
	return nil
}
