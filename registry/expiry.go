package registry

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Verdict says why an instance key disappeared.
type Verdict int

// The verdicts. Only VerdictExpired is reported.
const (
	VerdictIgnore       Verdict = iota // not an instance key (breaks the naming rules)
	VerdictDeregistered                // REST deregistration: the marker was written with the delete
	VerdictDeleted                     // explicit delete by a plain client: no lease, or the lease is still alive
	VerdictExpired                     // the lease ran out (or was revoked by a plain client)
)

func (v Verdict) String() string {
	return [...]string{"ignore", "deregistered", "deleted", "expired"}[v]
}

// Deletion is one deleted key as the watch delivered it.
type Deletion struct {
	Key      string
	Revision int64
	Prev     *mvccpb.KeyValue // the key before deletion; nil if history no longer has it
}

// Outcome is a classified deletion: the verdict, the report when it expired,
// and the writes that consume the deletion's bookkeeping. Cmps guard those
// writes: they fail if the bookkeeping changed since it was read.
type Outcome struct {
	Verdict    Verdict
	Service    string
	ID         string
	Expiration Expiration // VerdictExpired only; ExpiredAt and ReportedBy are the caller's
	Cmps       []clientv3.Cmp
	Ops        []clientv3.Op
}

// Classify decides why d's key disappeared. The rule, in order:
//  1. a deregistration marker for (lease, service, id) written at d's
//     revision: a REST deregistration;
//  2. no lease, or a lease that is still alive: an explicit delete by a
//     plain etcd client;
//  3. otherwise the lease is gone and took the key with it: an expiry.
//
// A plain client's explicit lease revoke is indistinguishable from expiry in
// etcd's history and is reported as one.
func (s *Store) Classify(ctx context.Context, d Deletion) (Outcome, error) {
	service, id, ok := s.keys.ParseInstance(d.Key)
	if !ok {
		return Outcome{Verdict: VerdictIgnore}, nil
	}
	out := Outcome{Service: service, ID: id}
	metaKey := s.keys.Meta(service, id)
	get, err := s.cli.Get(ctx, metaKey)
	if err != nil {
		return Outcome{}, AsError(err)
	}
	metaKV := firstKV((*etcdserverpb.RangeResponse)(get))
	m, hasMeta := decodeMeta(metaKV)

	var lease int64
	address := ""
	switch {
	case d.Prev != nil:
		lease, address = d.Prev.Lease, string(d.Prev.Value)
	case hasMeta:
		lease, address = m.Lease, m.Address
	}
	if lease == 0 {
		out.Verdict = VerdictDeleted
		return out, nil
	}
	// The meta record goes with the instance, unless a newer registration
	// (another lease) has replaced it meanwhile.
	if hasMeta && m.Lease == lease {
		out.Cmps = append(out.Cmps, clientv3.Compare(clientv3.ModRevision(metaKey), "=", metaKV.ModRevision))
		out.Ops = append(out.Ops, clientv3.OpDelete(metaKey))
	}

	marker := s.keys.Dereg(lease, service, id)
	mresp, err := s.cli.Get(ctx, marker)
	if err != nil {
		return Outcome{}, AsError(err)
	}
	if mk := firstKV((*etcdserverpb.RangeResponse)(mresp)); mk != nil && mk.ModRevision == d.Revision {
		out.Verdict = VerdictDeregistered
		out.Ops = append(out.Ops, clientv3.OpDelete(marker))
		return out, nil
	}

	ttl, err := s.cli.TimeToLive(ctx, clientv3.LeaseID(lease))
	if err != nil && !isLeaseNotFound(err) {
		return Outcome{}, AsError(err)
	}
	// The lease still exists: the key was deleted explicitly. Not TTL > 0:
	// etcd truncates the remaining time to whole seconds, so a live lease
	// in its last second shows TTL 0. A missing lease answers TTL -1 and
	// GrantedTTL 0; an existing one always has GrantedTTL >= 1.
	if err == nil && ttl.GrantedTTL > 0 {
		out.Verdict = VerdictDeleted
		return out, nil
	}
	out.Verdict = VerdictExpired
	out.Expiration = Expiration{
		Service:  service,
		ID:       id,
		Address:  address,
		LeaseID:  FormatLease(lease),
		Revision: d.Revision,
	}
	return out, nil
}

// LedgerPut is the write that records e in the expiry ledger. The entry's
// key is derived from the revision and instance, so writing it twice
// (which the reporter's cursor compare prevents anyway) changes nothing.
func (s *Store) LedgerPut(e Expiration) (clientv3.Op, error) {
	buf, err := json.Marshal(e)
	if err != nil {
		return clientv3.Op{}, err
	}
	return clientv3.OpPut(s.keys.ExpiryEntry(e.Revision, e.Service, e.ID), string(buf)), nil
}

// Cursor reads the expiry reporter's cursor: the last revision it consumed,
// and the cursor key's own ModRevision, which the next write compares on so
// that a reporter that lost leadership cannot write after its successor.
// Both are 0 when no reporter has run yet.
func (s *Store) Cursor(ctx context.Context) (rev, modRev int64, err error) {
	resp, err := s.cli.Get(ctx, s.keys.ExpiryCursor())
	if err != nil {
		return 0, 0, AsError(err)
	}
	kv := firstKV((*etcdserverpb.RangeResponse)(resp))
	if kv == nil {
		return 0, 0, nil
	}
	rev, err = strconv.ParseInt(string(kv.Value), 10, 64)
	if err != nil {
		return 0, 0, Errorf(KindInternal, CodeInternal, "expiry cursor %q is corrupt", kv.Value)
	}
	return rev, kv.ModRevision, nil
}

// CommitCursor writes ops and moves the cursor to rev, only if the cursor is
// still at modRev and cmps hold. It returns the cursor's new ModRevision, or
// ok=false when the compare failed.
func (s *Store) CommitCursor(ctx context.Context, modRev, rev int64, cmps []clientv3.Cmp, ops []clientv3.Op) (newModRev int64, ok bool, err error) {
	all := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.keys.ExpiryCursor()), "=", modRev)}, cmps...)
	ops = append(ops, clientv3.OpPut(s.keys.ExpiryCursor(), strconv.FormatInt(rev, 10)))
	resp, err := s.cli.Txn(ctx).If(all...).Then(ops...).Commit()
	if err != nil {
		return 0, false, AsError(err)
	}
	if !resp.Succeeded {
		return 0, false, nil
	}
	return resp.Header.Revision, true, nil
}

// Orphans finds the meta records whose instance key is gone, at one
// revision, plus the deregistration markers; the reporter uses them to
// reconcile after the history it needed was compacted.
func (s *Store) Orphans(ctx context.Context) (orphans []Deletion, markers []string, rev int64, err error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.keys.MetaAll(), clientv3.WithPrefix()),
		clientv3.OpGet(s.keys.Prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(s.keys.DeregAll(), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, nil, 0, AsError(err)
	}
	live := make(map[string]bool)
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		live[string(kv.Key)] = true
	}
	rev = resp.Header.Revision
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		rest := string(kv.Key[len(s.keys.MetaAll()):])
		key := s.keys.Prefix + rest
		if live[key] {
			continue
		}
		// The deletion revision is lost; the reconcile revision stands in.
		orphans = append(orphans, Deletion{Key: key, Revision: rev})
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		markers = append(markers, string(kv.Key))
	}
	return orphans, markers, rev, nil
}

// Expirations reads the ledger, newest first, optionally for one service.
func (s *Store) Expirations(ctx context.Context, service string, limit int) ([]Expiration, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	out := []Expiration{}
	start := s.keys.ExpiryLog()
	end := clientv3.GetPrefixRangeEnd(start)
	page := int64(limit)
	if service != "" && page < 256 {
		page = 256 // filtering: read ahead rather than one round trip per match
	}
	for len(out) < limit {
		resp, err := s.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(page))
		if err != nil {
			return nil, AsError(err)
		}
		for _, kv := range resp.Kvs {
			var e Expiration
			if json.Unmarshal(kv.Value, &e) != nil || (service != "" && e.Service != service) {
				continue
			}
			out = append(out, e)
			if len(out) == limit {
				break
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		end = string(resp.Kvs[len(resp.Kvs)-1].Key) // exclusive: continue below the last key read
	}
	return out, nil
}

// TrimLedger deletes the oldest entries beyond keep.
func (s *Store) TrimLedger(ctx context.Context, keep int) (int64, error) {
	log := s.keys.ExpiryLog()
	count, err := s.cli.Get(ctx, log, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, AsError(err)
	}
	excess := count.Count - int64(keep)
	if excess <= 0 {
		return 0, nil
	}
	oldest, err := s.cli.Get(ctx, log, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(excess))
	if err != nil || len(oldest.Kvs) == 0 {
		return 0, AsError(err)
	}
	last := string(oldest.Kvs[len(oldest.Kvs)-1].Key)
	del, err := s.cli.Delete(ctx, log, clientv3.WithRange(last+"\x00"))
	if err != nil {
		return 0, AsError(err)
	}
	return del.Deleted, nil
}

// Now is the store's clock, for reports.
func (s *Store) Now() time.Time { return s.now() }
