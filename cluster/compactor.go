package cluster

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// Compaction keeps etcd's history bounded. etcd's own auto-compaction is off
// because it knows nothing of the expiry ledger: compacting history the
// ledger has not consumed would force a reconcile. History is kept for
// HistoryRetention, which is also how far back a watch client can resume
// with Last-Event-ID before it gets a reset.
var (
	HistoryRetention = time.Hour
	compactEvery     = 5 * time.Minute
)

// History is what the compactor needs of the registry (registry.Ledger):
// the current revision, and a compaction that never passes the expiry
// cursor.
type History interface {
	Revision(ctx context.Context) (int64, error)
	CompactHistory(ctx context.Context, target int64) (int64, error)
}

// Compactor is leader-only work that compacts etcd's history.
type Compactor struct {
	h  History
	lg *zap.Logger
}

// NewCompactor returns a compactor of h.
func NewCompactor(h History, lg *zap.Logger) *Compactor {
	return &Compactor{h: h, lg: lg}
}

type revAt struct {
	at  time.Time
	rev int64
}

// Run compacts every compactEvery to the newest revision that is at least
// HistoryRetention old (History.CompactHistory keeps it from passing the
// expiry cursor). It samples revisions itself, so a new leader waits a full
// retention before its first compaction: history is never cut short by a
// leader change.
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
			rev, err := c.h.Revision(ctx)
			if err != nil {
				continue
			}
			samples = append(samples, revAt{now, rev})
			target := int64(0)
			for len(samples) > 0 && now.Sub(samples[0].at) >= HistoryRetention {
				target = samples[0].rev
				samples = samples[1:]
			}
			if target <= compacted {
				continue
			}
			done, err := c.h.CompactHistory(ctx, target)
			if err != nil {
				if ctx.Err() == nil {
					c.lg.Warn("compact history", zap.Int64("revision", target), zap.Error(err))
				}
				continue
			}
			if done > compacted {
				compacted = done
				c.lg.Info("compacted history", zap.Int64("revision", done), zap.Duration("kept", HistoryRetention))
			}
		}
	}
}
