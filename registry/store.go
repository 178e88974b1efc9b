// Package registry is regd's domain: instances, their validation and error
// codes, the etcd key layout of the contract, Store (writes and point
// reads), View (this node's in-memory copy, fed by one watch), Ledger (the
// expiry ledger and its consumer), and Classify, the one rule that says why
// an instance left.
//
// Layout (see DESIGN.md and the README): an instance is <prefix><service>/<id>
// whose value is the plain host:port, attached to a lease of its own;
// everything else lives under /_regd/, outside the prefix, so plain etcd
// clients that watch the prefix see instances and nothing else.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultTimeout bounds one store operation. It is what makes a node on the
// minority side of a partition answer 503 instead of hanging: etcd itself
// would wait for a leader much longer.
const DefaultTimeout = 3 * time.Second

// Options configures a Store.
type Options struct {
	Prefix  string        // registry prefix, e.g. "/service/"
	Logger  *zap.Logger   // nil: no logs
	Timeout time.Duration // per operation; 0: DefaultTimeout
	// WriteGate, when set, is asked before each register and deregister;
	// a non-nil answer (an *Error) refuses the write before it reaches
	// etcd. regd's node uses it to refuse writes while its disk is short.
	WriteGate func() error
	// Leadership, when set, is the member's view of raft leadership: an
	// etcd call caught by a leader change is cancelled when this member
	// learns of the new leader and made again within the deadline
	// (retry.go). nil: calls are still retried, but only after their
	// answer or a third of the deadline.
	Leadership Leadership
	// NamingPrefix turns on the gRPC naming mirror (naming.go): every up
	// instance is also <NamingPrefix><service>/<id> on its lease. "": off.
	NamingPrefix string
	// CheckHost, when set, vets the host of a registration's check
	// (Check.Host) at registration: an error refuses the registration with
	// 400 invalid_check and its message (internal/server passes the
	// allow-list of --check-allowed-cidrs for IP addresses; names are
	// checked at each connection). nil: every host is taken.
	CheckHost func(host string) error
	// CheckFailover is the part of a checked instance's lease TTL that
	// covers a change of check owner (CheckTTL): two election timeouts and
	// a second; 0: DefaultCheckFailover.
	CheckFailover time.Duration
	// Renewer, when set, renews leases (heartbeats, the check owner's
	// renewals) instead of the client's KeepAliveOnce: node.Node renews at
	// the leader without etcd's per-renewal forwarding (node/renew.go).
	Renewer LeaseRenewer
}

// LeaseRenewer renews one lease (node.Node implements it).
type LeaseRenewer interface {
	// RenewLease renews lease id once and returns the seconds it now
	// has; rpctypes.ErrLeaseNotFound when it does not exist, otherwise
	// the errors of clientv3's KeepAliveOnce.
	RenewLease(ctx context.Context, id int64) (int64, error)
}

// Store reads and writes instances in etcd.
type Store struct {
	cli     *clientv3.Client
	renewer LeaseRenewer // nil: cli's KeepAliveOnce
	keys    Keys
	lg      *zap.Logger
	timeout time.Duration
	now     func() time.Time

	// grantedTTL caches lease ID → granted TTL for keys written by plain
	// clients (they have no meta record). A lease's granted TTL never
	// changes, so entries never go stale, only unused; the cache is reset
	// when it grows past maxTTLCache.
	ttlMu    sync.Mutex
	ttlCache map[int64]int64

	writeGate     func() error
	retry         retryState
	checkFailover time.Duration
	checkHost     func(host string) error
}

const maxTTLCache = 65536

func (s *Store) gate() error {
	if s.writeGate == nil {
		return nil
	}
	return s.writeGate()
}

// NewStore returns a Store over cli.
func NewStore(cli *clientv3.Client, opts Options) *Store {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.CheckFailover == 0 {
		opts.CheckFailover = DefaultCheckFailover
	}
	return &Store{
		cli:       cli,
		keys:      Keys{Prefix: opts.Prefix, NamingPrefix: opts.NamingPrefix},
		lg:        opts.Logger,
		timeout:   opts.Timeout,
		now:       time.Now,
		ttlCache:  make(map[int64]int64),
		writeGate: opts.WriteGate,
		retry:     retryState{lead: opts.Leadership, stopping: make(chan struct{})},

		checkFailover: opts.CheckFailover,
		checkHost:     opts.CheckHost,
		renewer:       opts.Renewer,
	}
}

// Keys is the store's key layout.
func (s *Store) Keys() Keys { return s.keys }

func (s *Store) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

func validateNames(service, id string) error {
	if err := ValidateService(service); err != nil {
		return err
	}
	return ValidateID(id)
}

func notFound(service, id string) error {
	return Errorf(KindNotFound, CodeNotFound, "instance %s of service %s is not registered (or has expired); register it again", quote(id), quote(service))
}

// Register creates or replaces an instance: a new lease with the granted
// TTL, then one transaction puts the key on it, the meta record, and the
// lease's marker (Keys.LeaseMarker), so that the lease's end is visible in
// history. created is false when it replaced a live instance; the replaced
// instance's lease is revoked when regd granted it, which deletes nothing of
// the instance (the key has moved to the new lease), so it is never
// reported as an expiry.
func (s *Store) Register(ctx context.Context, service, id string, r Registration) (inst Instance, created bool, err error) {
	if err := validateNames(service, id); err != nil {
		return Instance{}, false, err
	}
	if err := ValidateAddress(r.Address); err != nil {
		return Instance{}, false, err
	}
	ttl, err := ResolveTTL(r.TTL)
	if err != nil {
		return Instance{}, false, err
	}
	if err := ValidateMetadata(r.Metadata); err != nil {
		return Instance{}, false, err
	}
	status, err := ResolveStatus(r.Status)
	if err != nil {
		return Instance{}, false, err
	}
	weight, err := ResolveWeight(r.Weight)
	if err != nil {
		return Instance{}, false, err
	}
	check, err := ResolveCheck(r)
	if err != nil {
		return Instance{}, false, err
	}
	if check != nil {
		if s.checkHost != nil {
			if err := s.checkHost(check.Host()); err != nil {
				return Instance{}, false, invalidCheck("%s check of %s: %v", check.Kind(), quote(check.Target()), err)
			}
		}
		ttl = CheckTTL(ttl, *check, s.checkFailover)
	}
	if err := s.gate(); err != nil {
		return Instance{}, false, err
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()

	grant, err := s.grant(ctx, ttl)
	if err != nil {
		return Instance{}, false, AsError(err)
	}
	m := meta{Address: r.Address, Metadata: r.Metadata, TTL: grant.TTL, Lease: int64(grant.ID), RegisteredAt: s.now().UTC()}
	m.setLifecycle(status, weight)
	m.Check = check
	buf, err := json.Marshal(m)
	if err != nil {
		return Instance{}, false, AsError(err)
	}
	// No revoke of the new lease on failure: a timed-out transaction may
	// still have been applied, and revoking would turn it into a deletion.
	// An unused lease simply runs out. The transaction is safe to repeat
	// (idempotent.go).
	reg, err := s.put(ctx, service, id, r.Address, string(buf), grant.ID, s.mirror(service, id, r.Address, status, r.Metadata, int64(grant.ID))...)
	if err != nil {
		return Instance{}, false, AsError(err)
	}
	if prev := reg.prev; prev != nil && prev.Lease != 0 && ownsLease(reg.prevMeta, prev.Lease) {
		if err := s.revoke(ctx, prev.Lease); err != nil {
			// Harmless: the old lease holds only its marker now and runs out.
			s.lg.Warn("revoke replaced lease", zap.String("service", service), zap.String("id", id), zap.Int64("lease", prev.Lease), zap.Error(err))
		}
	}
	return m.instance(service, id, reg.rev), reg.created, nil
}

// Deregister deletes the instance now: the key and its meta record in one
// transaction guarded by the key's revision (which also writes the lease's
// marker again), then the lease is revoked when regd granted it. The lease's marker outlives the key's deletion revision,
// which is what tells this deletion from an expiry (Classify); the revoke
// deletes the marker later, in a revision without instance keys, which
// reports nothing. It returns the deletion's revision.
func (s *Store) Deregister(ctx context.Context, service, id string) (int64, error) {
	return s.deregister(ctx, service, id)
}

// deregister is Deregister with extra operations written in the deleting
// transaction (the drain handshake's observe request, observe.go).
func (s *Store) deregister(ctx context.Context, service, id string, extra ...clientv3.Op) (int64, error) {
	if err := validateNames(service, id); err != nil {
		return 0, err
	}
	if err := s.gate(); err != nil {
		return 0, err
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	key, metaKey := s.keys.Instance(service, id), s.keys.Meta(service, id)
	// The compare on the key's revision makes the revoke hit exactly the
	// lease of the key we delete; a concurrent re-registration makes us
	// look again.
	var pending *deletion // a delete that failed, and may have been applied
	for attempt := 0; attempt < 5; attempt++ {
		kv, metaKV, rev, err := s.readInstance(ctx, service, id)
		if err != nil {
			return 0, err
		}
		if pending.applied(kv) {
			s.revokeDeregistered(ctx, service, id, pending)
			return rev, nil
		}
		if kv == nil || !keyState(kv).Valid {
			return 0, notFound(service, id)
		}
		owned := ownsLease(metaKV, kv.Lease)
		ops := []clientv3.Op{clientv3.OpDelete(key)}
		if kv.Lease != 0 {
			// The lease's marker, written again (it stays on its lease):
			// a put makes the deregistration a write that etcd's NOSPACE
			// alarm refuses, as it refuses a registration (regd refuses
			// registry writes while the store is full, whereas etcd
			// lets bare deletes through); and it marks a lease that had
			// no marker yet. A marker written, not deleted, at the
			// delete's revision keeps the deletion explicit.
			ops = append(ops, clientv3.OpPut(s.keys.LeaseMarker(kv.Lease), "", clientv3.WithLease(clientv3.LeaseID(kv.Lease))))
		}
		if owned {
			ops = append(ops, clientv3.OpDelete(metaKey))
		}
		ops = append(ops, s.mirrorDelete(service, id)...)
		ops = append(ops, extra...)
		var resp *clientv3.TxnResponse
		retried, err := s.do(ctx, func(ctx context.Context) error {
			var err error
			resp, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).Then(ops...).Commit()
			return err
		})
		if err != nil {
			return 0, AsError(err)
		}
		if !resp.Succeeded {
			if retried {
				pending = &deletion{kv: kv, owned: owned}
			}
			continue
		}
		s.revokeDeregistered(ctx, service, id, &deletion{kv: kv, owned: owned})
		return resp.Header.Revision, nil
	}
	return 0, Errorf(KindConflict, CodeConflict, "instance %s of service %s kept changing during deregistration; try again", quote(id), quote(service))
}

// Get returns one instance. A key whose value is no instance (ParseValue)
// is not found, as it is not listed.
func (s *Store) Get(ctx context.Context, service, id string) (Instance, error) {
	if err := validateNames(service, id); err != nil {
		return Instance{}, err
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	resp, err := read(ctx, s, func(ctx context.Context) (*clientv3.TxnResponse, error) {
		return s.cli.Txn(ctx).Then(
			clientv3.OpGet(s.keys.Instance(service, id)),
			clientv3.OpGet(s.keys.Meta(service, id)),
		).Commit()
	})
	if err != nil {
		return Instance{}, AsError(err)
	}
	kv := firstKV(resp.Responses[0].GetResponseRange().GetKvs())
	if kv == nil {
		return Instance{}, notFound(service, id)
	}
	m, _ := decodeMeta(firstKV(resp.Responses[1].GetResponseRange().GetKvs()))
	inst, ok := s.build(ctx, service, id, keyState(kv), m)
	if !ok {
		return Instance{}, notFound(service, id)
	}
	return inst, nil
}

// build joins an instance key with its meta record, if m describes the
// key's lease. A key with no such record (written by a plain etcd client)
// gets empty metadata, status up, the default weight and the TTL its lease
// was granted. It reports false
// when the key's value is no instance.
func (s *Store) build(ctx context.Context, service, id string, k KeyState, m meta) (Instance, bool) {
	if !k.Valid {
		return Instance{}, false
	}
	if m.describes(k.Lease) {
		m.Address = k.Address
		return m.instance(service, id, k.ModRevision), true
	}
	return Instance{
		Service:  service,
		ID:       id,
		Address:  k.Address,
		Metadata: noMetadata,
		Status:   StatusUp,
		Weight:   DefaultWeight,
		TTL:      s.leaseTTL(ctx, k.Lease),
		LeaseID:  FormatLease(k.Lease),
		Revision: k.ModRevision,
	}, true
}

func (s *Store) leaseTTL(ctx context.Context, lease int64) int64 {
	if lease == 0 {
		return 0
	}
	s.ttlMu.Lock()
	ttl, ok := s.ttlCache[lease]
	s.ttlMu.Unlock()
	if ok {
		return ttl
	}
	resp, err := read(ctx, s, func(ctx context.Context) (*clientv3.LeaseTimeToLiveResponse, error) {
		return s.cli.TimeToLive(ctx, clientv3.LeaseID(lease))
	})
	if err != nil || resp.TTL < 0 {
		return 0 // expired or unreachable: the key is about to go anyway
	}
	s.ttlMu.Lock()
	if len(s.ttlCache) >= maxTTLCache {
		s.ttlCache = make(map[int64]int64)
	}
	s.ttlCache[lease] = resp.GrantedTTL
	s.ttlMu.Unlock()
	return resp.GrantedTTL
}

// readInstance reads an instance's key and its meta record in one
// linearizable read, retried across leader changes (read). Either is nil
// when absent; rev is the revision read at. Callers decide what a missing
// key or one that holds no instance (keyState) means: after a lost
// attempt of their own it may mean done.
func (s *Store) readInstance(ctx context.Context, service, id string) (kv, metaKV *mvccpb.KeyValue, rev int64, err error) {
	get, err := read(ctx, s, func(ctx context.Context) (*clientv3.TxnResponse, error) {
		return s.cli.Txn(ctx).Then(clientv3.OpGet(s.keys.Instance(service, id)), clientv3.OpGet(s.keys.Meta(service, id))).Commit()
	})
	if err != nil {
		return nil, nil, 0, AsError(err)
	}
	return firstKV(get.Responses[0].GetResponseRange().GetKvs()), firstKV(get.Responses[1].GetResponseRange().GetKvs()), get.Header.Revision, nil
}

func firstKV(kvs []*mvccpb.KeyValue) *mvccpb.KeyValue {
	if len(kvs) > 0 {
		return kvs[0]
	}
	return nil
}

func isLeaseNotFound(err error) bool {
	return errors.Is(err, rpctypes.ErrLeaseNotFound) || rpctypes.ErrorDesc(err) == rpctypes.ErrLeaseNotFound.Error()
}

func isCompacted(err error) bool {
	return errors.Is(err, rpctypes.ErrCompacted) || rpctypes.ErrorDesc(err) == rpctypes.ErrCompacted.Error()
}

// Revision is the cluster's current revision, read linearizably: a read
// served by any member after it has caught up to this revision reflects
// every write acknowledged before the call. It needs a quorum, and answers
// unavailable without one.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	resp, err := read(ctx, s, func(ctx context.Context) (*clientv3.GetResponse, error) {
		return s.cli.Get(ctx, s.keys.ExpiryCursor(), clientv3.WithCountOnly())
	})
	if err != nil {
		return 0, AsError(err)
	}
	return resp.Header.Revision, nil
}
