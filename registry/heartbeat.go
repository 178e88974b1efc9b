package registry

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Heartbeat renews the instance's lease and returns the seconds it has left.
// A renewal is not a raft write: no revision, no watcher woken. It reads
// the key first to learn its lease; Local.Heartbeat skips that read when
// the node's view knows the lease.
func (s *Store) Heartbeat(ctx context.Context, service, id string) (int64, error) {
	return s.heartbeat(ctx, service, id, 0)
}

// heartbeat renews the lease of service/id. hint, when not 0, is the lease
// the caller believes the key is on: it is renewed without reading the key.
// A stale hint (the instance was re-registered or deregistered a moment
// ago) finds its lease gone and falls through to the read, so a 404 always
// rests on a linearizable read.
func (s *Store) heartbeat(ctx context.Context, service, id string, hint int64) (int64, error) {
	if err := validateNames(service, id); err != nil {
		return 0, err
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if hint != 0 {
		ttl, err := s.keepAlive(ctx, hint)
		if err == nil {
			return ttl, nil
		}
		if !isLeaseNotFound(err) {
			return 0, AsError(err)
		}
	}
	if hint == 0 {
		// The view does not know the instance yet (registered a moment
		// ago, or through another member): this member's own store
		// likely does. Its lease, renewed at the leader, is as good a
		// hint as the view's, without the linearizable read's round trip
		// through the leader, which waits for the apply loop and, during
		// a wave of registrations, capped the renewals a node could make
		// (its parallel slots all waiting in reads). A 404 still rests on
		// the linearizable read below.
		if ttl, ok := s.renewLocal(ctx, service, id); ok {
			return ttl, nil
		}
	}
	resp, err := read(ctx, s, func(ctx context.Context) (*clientv3.GetResponse, error) {
		return s.cli.Get(ctx, s.keys.Instance(service, id))
	})
	if err != nil {
		return 0, AsError(err)
	}
	kv := firstKV(resp.Kvs)
	if kv == nil || !keyState(kv).Valid {
		return 0, notFound(service, id)
	}
	if kv.Lease == 0 {
		return 0, Errorf(KindConflict, CodeNoLease, "instance %s of service %s was written without a lease by a plain etcd client; there is nothing to renew", quote(id), quote(service))
	}
	ttl, err := s.keepAlive(ctx, kv.Lease)
	if err != nil {
		if isLeaseNotFound(err) {
			return 0, notFound(service, id)
		}
		return 0, AsError(err)
	}
	return ttl, nil
}

// renewLocal renews the lease service/id has in this member's store (a
// serializable read); ok is false when the key is not there, has no lease,
// or the renewal did not succeed.
func (s *Store) renewLocal(ctx context.Context, service, id string) (int64, bool) {
	resp, err := s.cli.Get(ctx, s.keys.Instance(service, id), clientv3.WithSerializable())
	if err != nil {
		return 0, false
	}
	kv := firstKV(resp.Kvs)
	if kv == nil || kv.Lease == 0 || !keyState(kv).Valid {
		return 0, false
	}
	ttl, err := s.keepAlive(ctx, kv.Lease)
	return ttl, err == nil
}

// keepAlive renews lease once and returns the seconds it now has; renewals
// are safe to repeat. Through the store's LeaseRenewer when it has one (the
// node renews at the leader, node/renew.go), else the client's
// KeepAliveOnce.
func (s *Store) keepAlive(ctx context.Context, lease int64) (int64, error) {
	return read(ctx, s, func(ctx context.Context) (int64, error) {
		if s.renewer != nil {
			return s.renewer.RenewLease(ctx, lease)
		}
		ka, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(lease))
		if err != nil {
			return 0, err
		}
		return ka.TTL, nil
	})
}

// Local is the registry as one node serves it: the Store for writes and
// point reads, and this node's View for the heartbeat's fast path. It
// composes the two so that neither calls back into the other (the view
// reads through the store; the store knows nothing of the view).
type Local struct {
	*Store
	view *View
	// renewals bounds the batch heartbeats' renewals in flight on this
	// node, across all batches (heartbeat_batch.go).
	renewals chan struct{}
}

// NewLocal joins st and the view v that follows st's registry.
func NewLocal(st *Store, v *View) *Local {
	return &Local{Store: st, view: v, renewals: make(chan struct{}, heartbeatParallel)}
}

// Heartbeat renews the instance's lease. Fast path: the lease this node's
// view knows is renewed without reading the key first. On a follower the
// read is a round trip through the leader, as is the renewal; this halves
// a heartbeat's cost there. The view may be a moment behind; Store's
// heartbeat falls back to reading the key when the hinted lease is gone.
func (l *Local) Heartbeat(ctx context.Context, service, id string) (int64, error) {
	lease, _ := l.view.leaseOf(service, id)
	return l.heartbeat(ctx, service, id, lease)
}
