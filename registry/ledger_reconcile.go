package registry

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func sortSteps(steps []step) {
	slices.SortStableFunc(steps, func(a, b step) int { return cmp.Compare(a.rev, b.rev) })
}

// prepare runs once per term, before the first watch: it removes what
// regd before the lease markers left behind, and makes sure every lease
// that holds an instance key now carries a marker. Keys put before the
// cursor (by an older regd, or in a compacted gap) were never seen by a
// consumer and would otherwise have none.
func (c *Consumer) prepare(ctx context.Context) error {
	legacy, err := c.l.cli.Get(ctx, legacyDeregRoot, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return AsError(err)
	}
	if legacy.Count > 0 {
		if _, err := c.l.cli.Delete(ctx, legacyDeregRoot, clientv3.WithPrefix()); err != nil {
			return AsError(err)
		}
		c.lg.Info("removed deregistration markers of an older regd", zap.Int64("count", legacy.Count))
	}
	// Not keys-only for the instances: etcd 3.7 serves a keys-only range
	// from its index ("FastKeysOnly"), without the keys' leases.
	snap, err := c.l.cli.Txn(ctx).Then(
		clientv3.OpGet(c.l.keys.Prefix, clientv3.WithPrefix()),
		clientv3.OpGet(leaseRoot, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return AsError(err)
	}
	marked := make(map[int64]bool)
	for _, kv := range snap.Responses[1].GetResponseRange().Kvs {
		if lease, ok := parseLeaseMarker(string(kv.Key)); ok {
			marked[lease] = true
		}
	}
	attached := 0
	for _, kv := range snap.Responses[0].GetResponseRange().Kvs {
		svc, id, ok := c.l.keys.ParseInstance(string(kv.Key))
		if !ok || kv.Lease == 0 || marked[kv.Lease] {
			continue
		}
		marked[kv.Lease] = true
		if err := c.attach(ctx, kv.Lease, svc, id); err != nil {
			return err
		}
		attached++
	}
	if attached > 0 {
		c.lg.Info("attached lease markers to leases that had none", zap.Int("leases", attached))
	}
	return nil
}

// reconcile recovers after the history between the cursor and compactRev
// was compacted (by a plain client: regd's own compaction never passes the
// cursor), the one place where state must be read instead of history. Only
// the gap is: the state is read at compactRev, the oldest revision etcd
// still serves, the cursor moves there, and the next watch classifies
// everything after it from history as usual: the current state would
// stand for history that is still there, and plain clients' expiries in
// it, which leave no record, would be skipped.
// Every REST instance's meta record outlives its key until a consumer
// removes it, so the REST instances that vanished in the gap are exactly
// the records without their key at compactRev. Each is classified by
// whether its lease was still alive there (its marker, or for leases of an
// older regd without one, the lease itself, now): alive, the key was
// deleted explicitly; gone, it is reported as expired at compactRev. The
// residual ambiguity: a key deleted explicitly whose lease then also ended
// in the gap is reported too. Keys of plain clients leave no record: their
// deletions in the gap are lost. See cluster/DESIGN.md.
//
// If etcd compacted past compactRev meanwhile (or compactRev is a revision
// whose deletion or overwrite came without its previous value, below the
// compaction), the state there is gone too: reconcile returns nil without a write, and
// the caller's next watch from the cursor names the compaction revision.
func (c *Consumer) reconcile(ctx context.Context, cur cursor, compactRev int64) error {
	rev := compactRev
	snap, err := c.l.cli.Txn(ctx).Then(
		clientv3.OpGet(metaRoot, clientv3.WithPrefix(), clientv3.WithRev(rev)),
		clientv3.OpGet(c.l.keys.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev)),
		clientv3.OpGet(leaseRoot, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(rev)),
	).Commit()
	if isCompacted(err) {
		c.lg.Info("history compacted past the revision to reconcile at; starting over from the cursor",
			zap.Int64("cursor", cur.rev), zap.Int64("revision", rev))
		return nil
	}
	if err != nil {
		return AsError(err)
	}
	live := make(map[string]KeyState)
	for _, kv := range snap.Responses[1].GetResponseRange().Kvs {
		live[string(kv.Key)] = keyState(kv)
	}
	marked := make(map[int64]bool)
	for _, kv := range snap.Responses[2].GetResponseRange().Kvs {
		if lease, ok := parseLeaseMarker(string(kv.Key)); ok {
			marked[lease] = true
		}
	}
	now := time.Now()
	var (
		steps   []step
		revokes []int64
		reports []Report
	)
	for _, kv := range snap.Responses[0].GetResponseRange().Kvs {
		metaKey := string(kv.Key)
		svc, id, ok := c.l.keys.ParseInstance(c.l.keys.Prefix + strings.TrimPrefix(metaKey, metaRoot))
		m, decoded := decodeMeta(kv)
		k, exists := live[c.l.keys.Instance(svc, id)]
		if ok && decoded && exists && k.Valid && m.describes(k.Lease) {
			continue // the record of a live instance
		}
		mr := &metaRead{m: m, modRev: kv.ModRevision}
		steps = append(steps, step{rev: rev, op: mr.deleteOp(metaKey)})
		if !ok || !decoded || m.Lease == 0 {
			continue
		}
		if exists {
			revokes = append(revokes, m.Lease) // overwritten in the gap
			continue
		}
		alive := marked[m.Lease]
		if !alive {
			if alive, err = c.leaseAlive(ctx, m.Lease); err != nil {
				return err
			}
		}
		if alive {
			revokes = append(revokes, m.Lease) // deleted explicitly in the gap
			continue
		}
		// The marker, and any cause it held, went with the gap's
		// history: the lease ran out, as far as state can tell.
		reports = append(reports, c.report(svc, id, m.Address, m.Lease, rev, now, LeaseEnd{Cause: ExpiryCauseTTL}, true))
	}
	for i := range reports {
		steps = append(steps, step{rev: rev, report: &reports[i]})
	}
	c.lg.Warn("history was compacted past the expiry cursor; reconciled from the state at the compaction revision",
		zap.Int64("cursor", cur.rev), zap.Int64("compact-revision", rev),
		zap.Int("expired", len(reports)), zap.Int("records-removed", len(steps)-len(reports)))
	if _, err := c.flush(ctx, cur, rev, steps, revokes, false); err != nil {
		return err
	}
	// Keys put in the gap were never seen: mark their leases before the
	// next watch.
	c.prepared = false
	c.marked = nil
	return nil
}

// leaseAlive asks etcd whether lease exists. GrantedTTL, not TTL: a live
// lease in its last second shows TTL 0; a missing one GrantedTTL 0.
func (c *Consumer) leaseAlive(ctx context.Context, lease int64) (bool, error) {
	resp, err := c.l.cli.TimeToLive(ctx, clientv3.LeaseID(lease))
	if err != nil {
		if isLeaseNotFound(err) {
			return false, nil
		}
		return false, AsError(err)
	}
	return resp.GrantedTTL > 0, nil
}
