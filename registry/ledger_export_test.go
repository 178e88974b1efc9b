package registry

import "context"

// ReconcileAt runs c's reconcile from the durable cursor as a watch that
// met a compaction at rev would: tests use it with a revision that etcd
// has compacted past since, which a watch reports only in a narrow race.
func (c *Consumer) ReconcileAt(ctx context.Context, rev int64) error {
	cur, err := c.l.readCursor(ctx)
	if err != nil {
		return err
	}
	return c.reconcile(ctx, cur, rev)
}
