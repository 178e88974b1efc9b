package cluster

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/regd/regd/registry"
)

// Compaction keeps etcd's history bounded. etcd's own auto-compaction is off
// because it knows nothing of the expiry reporter: compacting history the
// reporter has not consumed would force a reconcile. History is kept for
// HistoryRetention, which is also how far back a watch client can resume
// with Last-Event-ID before it gets a reset.
var (
	HistoryRetention = time.Hour
	compactEvery     = 5 * time.Minute
)

// Compactor is leader-only work that compacts etcd's history.
type Compactor struct {
	st *registry.Store
	lg *zap.Logger
}

// NewCompactor returns a compactor over st's cluster.
func NewCompactor(st *registry.Store, lg *zap.Logger) *Compactor {
	return &Compactor{st: st, lg: lg}
}

type revAt struct {
	at  time.Time
	rev int64
}

// Run compacts every compactEvery to the newest revision that is at least
// HistoryRetention old and not past the expiry cursor. It samples revisions
// itself, so a new leader waits a full retention before its first
// compaction: history is never cut short by a leader change.
func (c *Compactor) Run(ctx context.Context) {
	ticker := time.NewTicker(compactEvery)
	defer ticker.Stop()
	var samples []revAt
	var compacted int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			rev, err := c.st.Revision(ctx)
			if err != nil {
				continue
			}
			samples = append(samples, revAt{now, rev})
			target := int64(0)
			for len(samples) > 0 && now.Sub(samples[0].at) >= HistoryRetention {
				target = samples[0].rev
				samples = samples[1:]
			}
			cursor, _, err := c.st.Cursor(ctx)
			if err != nil {
				continue
			}
			target = min(target, cursor)
			if target <= compacted {
				continue
			}
			if _, err := c.st.Client().Compact(ctx, target); err != nil {
				if ctx.Err() == nil {
					c.lg.Warn("compact history", zap.Int64("revision", target), zap.Error(err))
				}
				continue
			}
			compacted = target
			c.lg.Info("compacted history", zap.Int64("revision", target), zap.Duration("kept", HistoryRetention))
		}
	}
}
