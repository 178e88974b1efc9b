package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The check owner's writes (cluster/checks.go runs the checks; DESIGN.md
// in cluster has the design). Every write a check owner makes is fenced:
// at the start of its term the owner claims the checks (ClaimChecks), and
// each later write compares the claim key's revision with its own claim,
// so that a deposed owner that has not noticed yet can no longer change
// anything once the next owner has claimed.

// ChecksOwner is the key the check owner claims at the start of its term
// (its value is the member's name, for people). It sorts outside
// HistoryRange: no view or ledger sees its writes.
func (k Keys) ChecksOwner() string { return InternalPrefix + "checks/owner" }

// CheckFence is an owner's claim on the checks: the revision of its write
// of Keys.ChecksOwner.
type CheckFence struct{ rev int64 }

// Revision is the claim's revision (for logs).
func (f CheckFence) Revision() int64 { return f.rev }

// ErrNotCheckOwner answers a fenced write after another member claimed
// the checks: this member is (or was, a moment ago) not the leader.
var ErrNotCheckOwner = errors.New("another member has claimed the health checks since")

// ClaimChecks makes member the checks' owner: a write of Keys.ChecksOwner,
// whose revision fences the owner's later writes. A later claim, by any
// member, makes them fail with ErrNotCheckOwner.
func (s *Store) ClaimChecks(ctx context.Context, member string) (CheckFence, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	var rev int64
	// A repeated put is harmless: the fence is the revision of the
	// attempt that answered, the newest.
	_, err := s.do(ctx, func(ctx context.Context) error {
		resp, err := s.cli.Put(ctx, s.keys.ChecksOwner(), member)
		if err == nil {
			rev = resp.Header.Revision
		}
		return err
	})
	if err != nil {
		return CheckFence{}, AsError(err)
	}
	return CheckFence{rev: rev}, nil
}

// RenewLease renews lease once (the check owner keeps checked instances'
// leases alive) and returns the seconds it has left; KindNotFound when the
// lease is gone.
func (s *Store) RenewLease(ctx context.Context, lease int64) (int64, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	ttl, err := s.keepAlive(ctx, lease)
	if err != nil {
		if isLeaseNotFound(err) {
			return 0, Errorf(KindNotFound, CodeNotFound, "lease %d has ended", lease)
		}
		return 0, AsError(err)
	}
	return ttl, nil
}

// checkedInstance reads service/id and its record and reports them when
// the key is still on lease and the record is regd's record of that lease
// with a check; otherwise the instance is gone (or was registered again):
// KindNotFound.
func (s *Store) checkedInstance(ctx context.Context, service, id string, lease int64) (meta, int64, error) {
	kv, metaKV, _, err := s.readInstance(ctx, service, id)
	if err != nil {
		return meta{}, 0, err
	}
	if kv == nil || kv.Lease != lease || !keyState(kv).Valid {
		return meta{}, 0, notFound(service, id)
	}
	m, ok := decodeMeta(metaKV)
	if !ok || !m.describes(lease) || m.Check == nil {
		return meta{}, 0, notFound(service, id)
	}
	return m, metaKV.ModRevision, nil
}

// fencedWrite writes ops for the checked instance service/id on lease,
// built by build from its current record, under the fence: the claim is
// still f, the key still on lease, the record unchanged since it was read.
// A record changed meanwhile (a PATCH) is read again, up to five times.
func (s *Store) fencedWrite(ctx context.Context, f CheckFence, service, id string, lease int64, build func(m meta) ([]clientv3.Op, error)) (int64, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	owner, key, metaKey := s.keys.ChecksOwner(), s.keys.Instance(service, id), s.keys.Meta(service, id)
	for attempt := 0; attempt < 5; attempt++ {
		m, metaRev, err := s.checkedInstance(ctx, service, id, lease)
		if err != nil {
			return 0, err
		}
		ops, err := build(m)
		if err != nil {
			return 0, err
		}
		var resp *clientv3.TxnResponse
		// Repeating the transaction is safe: it writes the same values
		// again, or its guard fails and the record is read again.
		_, err = s.do(ctx, func(ctx context.Context) error {
			var err error
			resp, err = s.cli.Txn(ctx).If(
				clientv3.Compare(clientv3.ModRevision(owner), "=", f.rev),
				clientv3.Compare(clientv3.LeaseValue(key), "=", lease),
				clientv3.Compare(clientv3.ModRevision(metaKey), "=", metaRev),
			).Then(ops...).Else(clientv3.OpGet(owner)).Commit()
			return err
		})
		if err != nil {
			if isLeaseNotFound(err) {
				return 0, notFound(service, id)
			}
			return 0, AsError(err)
		}
		if resp.Succeeded {
			return resp.Header.Revision, nil
		}
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 0 || kvs[0].ModRevision != f.rev {
			return 0, ErrNotCheckOwner
		}
	}
	return 0, Errorf(KindConflict, CodeConflict, "instance %s of service %s kept changing while its health was written", quote(id), quote(service))
}

// PublishHealth writes h as the health of the checked instance service/id
// on lease: its meta record rewritten alone, as a PATCH does (no instance
// change; watch streams get an update event), fenced by f. A recovery
// (the record said failing, h says passing) also empties the lease's
// marker, in case an owner wrote a cause into it (EndCheck) and lost its
// leadership before it could revoke the lease. It returns the write's
// revision; KindNotFound when the instance is gone or was registered again,
// ErrNotCheckOwner when another member claimed the checks since f.
func (s *Store) PublishHealth(ctx context.Context, f CheckFence, service, id string, lease int64, h Health) (int64, error) {
	h.Output = cutOutput(h.Output)
	return s.fencedWrite(ctx, f, service, id, lease, func(m meta) ([]clientv3.Op, error) {
		recovery := m.Health != nil && m.Health.Status == HealthFailing && h.Status == HealthPassing
		m.Health = &h
		buf, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		ops := []clientv3.Op{clientv3.OpPut(s.keys.Meta(service, id), string(buf))}
		if recovery {
			ops = append(ops, clientv3.OpPut(s.keys.LeaseMarker(lease), "", clientv3.WithLease(clientv3.LeaseID(lease))))
		}
		return ops, nil
	})
}

// EndCheck removes the checked instance service/id on lease after its
// check failed h.ConsecutiveFailures times in a row: the expiry is
// reported once, with cause check_failed and h's output (EndLease's
// mechanism). One fenced transaction writes the cause into the lease's
// marker and h into the record (so that an owner that takes over before
// the lease is revoked sees the failures: its next passing probe is a
// recovery, which empties the marker again); then the lease is revoked,
// which deletes the key and the marker in one revision, where the ledger
// reads the cause. Errors as PublishHealth's; a revoke that fails is
// returned too (the next owner's probe will end the lease again).
func (s *Store) EndCheck(ctx context.Context, f CheckFence, service, id string, lease int64, h Health) error {
	h.Output = cutOutput(h.Output)
	end, err := json.Marshal(LeaseEnd{Cause: ExpiryCauseCheckFailed, Output: h.Output})
	if err != nil {
		return AsError(err)
	}
	if _, err := s.fencedWrite(ctx, f, service, id, lease, func(m meta) ([]clientv3.Op, error) {
		m.Health = &h
		buf, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		return []clientv3.Op{
			clientv3.OpPut(s.keys.LeaseMarker(lease), string(end), clientv3.WithLease(clientv3.LeaseID(lease))),
			clientv3.OpPut(s.keys.Meta(service, id), string(buf)),
		}, nil
	}); err != nil {
		return err
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := s.revoke(ctx, lease); err != nil {
		return fmt.Errorf("revoke lease %d of a failed check: %w", lease, AsError(err))
	}
	return nil
}

// Follow is SubscribeFromList for regd's own followers of the registry
// (the check owner): the list, and a subscription to every event after it
// that concerns the instances f selects. The drain handshake neither
// counts nor waits for it: its X-Regd-Observed counts clients' streams and
// blocking queries only.
func (v *View) Follow(ctx context.Context, service string, f Filter) (InstanceList, *Subscription, error) {
	return v.subscribeFromList(ctx, service, f, true)
}
