package registry

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The writes of Register and Deregister, made safe to repeat (retry.go):
// an attempt that failed may still have been applied (its proposal was
// committed after the answer was lost), so every repeat must find out and
// change nothing a second time.

// grant grants a lease of ttl seconds and returns its ID and the TTL etcd
// granted. Repeating a grant is harmless: an attempt that was applied
// although it failed leaves a lease that nothing is attached to (no key,
// no marker), invisible to watchers, which runs out after ttl.
func (s *Store) grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error) {
	var resp *clientv3.LeaseGrantResponse
	_, err := s.do(ctx, func(ctx context.Context) error {
		var err error
		resp, err = s.cli.Grant(ctx, ttl)
		return err
	})
	return resp, err
}

// registered is what the registration transaction did: the instance's
// revision, and the key and meta record it replaced (nil when there were
// none, or when a repeat could no longer read them).
type registered struct {
	rev            int64
	prev, prevMeta *mvccpb.KeyValue
	// unknownPrev: a repeat found the registration applied, but the
	// history before it is compacted; created is then judged from the
	// key's create revision, and no old lease is revoked.
	unknownPrev bool
	created     bool
}

// put writes the registration: the key on lease (its value addr), the meta
// record and the lease's marker, in one transaction, under
// If(LeaseValue(key) == lease). The lease is new and only this
// registration attaches keys to it, so the key on that lease means an
// earlier attempt was applied: the repeat writes nothing, and answers from
// that attempt's revision and the state just before it (read from etcd's
// history), as the first answer would have. extra are written with them
// (the gRPC naming mirror, naming.go).
func (s *Store) put(ctx context.Context, service, id, addr, metaJSON string, lease clientv3.LeaseID, extra ...clientv3.Op) (registered, error) {
	key, metaKey := s.keys.Instance(service, id), s.keys.Meta(service, id)
	var resp *clientv3.TxnResponse
	_, err := s.do(ctx, func(ctx context.Context) error {
		var err error
		resp, err = s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.LeaseValue(key), "=", lease),
		).Then(
			clientv3.OpGet(key),
		).Else(append([]clientv3.Op{
			clientv3.OpPut(key, addr, clientv3.WithLease(lease), clientv3.WithPrevKV()),
			clientv3.OpPut(metaKey, metaJSON, clientv3.WithPrevKV()),
			clientv3.OpPut(s.keys.LeaseMarker(int64(lease)), "", clientv3.WithLease(lease)),
		}, extra...)...).Commit()
		return err
	})
	if err != nil {
		return registered{}, err
	}
	if !resp.Succeeded {
		r := registered{
			rev:      resp.Header.Revision,
			prev:     resp.Responses[0].GetResponsePut().PrevKv,
			prevMeta: resp.Responses[1].GetResponsePut().PrevKv,
		}
		r.created = r.prev == nil || !keyState(r.prev).Valid
		return r, nil
	}
	// An earlier attempt was applied.
	kv := firstKV(resp.Responses[0].GetResponseRange().GetKvs())
	if kv == nil { // the compare on the key's lease held: the key is there
		return registered{}, errors.New("registration transaction: the key's lease matched but the key is missing")
	}
	r := registered{rev: kv.ModRevision}
	var before *clientv3.TxnResponse
	_, err = s.do(ctx, func(ctx context.Context) error {
		var err error
		before, err = s.cli.Txn(ctx).Then(
			clientv3.OpGet(key, clientv3.WithRev(kv.ModRevision-1)),
			clientv3.OpGet(metaKey, clientv3.WithRev(kv.ModRevision-1)),
		).Commit()
		return err
	})
	switch {
	case err == nil:
		r.prev = firstKV(before.Responses[0].GetResponseRange().GetKvs())
		r.prevMeta = firstKV(before.Responses[1].GetResponseRange().GetKvs())
		r.created = r.prev == nil || !keyState(r.prev).Valid
	case isCompacted(err):
		r.unknownPrev = true
		r.created = kv.CreateRevision == kv.ModRevision
	default:
		return registered{}, err
	}
	return r, nil
}

// revoke revokes lease; a lease already gone is not an error (a repeat
// after an attempt that was applied finds it so).
func (s *Store) revoke(ctx context.Context, lease int64) error {
	_, err := s.do(ctx, func(ctx context.Context) error {
		_, err := s.cli.Revoke(ctx, clientv3.LeaseID(lease))
		if isLeaseNotFound(err) {
			return nil
		}
		return err
	})
	return err
}

// read runs a read-only etcd call under do: reads are safe to repeat.
func read[T any](ctx context.Context, s *Store, f func(ctx context.Context) (T, error)) (T, error) {
	var out T
	_, err := s.do(ctx, func(ctx context.Context) error {
		var err error
		out, err = f(ctx)
		return err
	})
	return out, err
}

// deletion is a deregistration's delete of kv (Deregister's guarded
// transaction), kept when it failed after more than one attempt: an
// attempt may have been applied although the last one found the key
// changed.
type deletion struct {
	kv    *mvccpb.KeyValue
	owned bool // regd granted kv's lease: revoke it after the delete
}

// applied reports whether the key read after the failed delete, now (nil:
// gone), shows the instance deleted since: gone, or created again after
// the deleted version. Then the deregistration is done, whichever delete
// did it, and a new registration is left alone. A key that was only
// overwritten since (same create revision) was not deleted: the delete is
// made again.
func (d *deletion) applied(now *mvccpb.KeyValue) bool {
	return d != nil && (now == nil || now.CreateRevision > d.kv.ModRevision)
}

// revokeDeregistered revokes the lease of a deleted instance when regd
// granted it. The lease then holds only its marker, so the revoke deletes
// no instance and reports nothing.
func (s *Store) revokeDeregistered(ctx context.Context, service, id string, d *deletion) {
	if !d.owned {
		return
	}
	if err := s.revoke(ctx, d.kv.Lease); err != nil {
		// Harmless: the lease holds only its marker and runs out.
		s.lg.Warn("revoke deregistered lease", zap.String("service", service), zap.String("id", id), zap.Int64("lease", d.kv.Lease), zap.Error(err))
	}
}
