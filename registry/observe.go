package registry

// The drain handshake (contract v2, "Drain handshake"): a PATCH or DELETE
// with ?wait_observed=D answers once every subscriber of the service on
// every member (watch streams and blocking queries open when the change
// committed, whose answer the change affects) has been written the
// change, or when D ends.
//
// Members learn of the request and answer through etcd itself, never a
// side channel that a partition could hide:
//
//  1. The origin grants a short lease (D + observeLeaseSlack) and writes,
//     in the change's own transaction, the request
//     /_regd/observe/<nonce> = {service, id, wait_ms, deadline_ms} on it.
//     The request is thus at the change's revision R on every member.
//  2. Each member's view, applying R, snapshots its subscribers that the
//     change concerns (observeLocked: streams of the service, or of every
//     service, and blocking queries after an index below R, whose filter
//     selects the instance before or after the change), before it
//     publishes R's events. A stream counts as delivered once the write
//     and flush of an event at R or later returned
//     (Subscription.Delivered); a blocking query once its answer, at R or
//     later, was written (Waiter.Done). A subscriber that closes first
//     counts as not delivered.
//  3. When all of them are settled, or just before the deadline (a
//     stalled reader must not hold the answer), the member writes
//     /_regd/observe/<nonce>/<member id> = {delivered, subscribers} on
//     the request's lease.
//  4. The origin's view sees the acks; it answers once every voting
//     member of the current membership acked, or at the deadline, with
//     the sums (X-Regd-Observed) and how many members acked
//     (X-Regd-Observed-Members). A member that never acked (down, cut
//     off, too slow) adds nothing to either sum: only the members count
//     says so. The origin then revokes the lease, which removes the
//     request and the acks; the lease's TTL removes them anyway.
//
// The keys live under /_regd/, outside the registry prefix: plain etcd
// clients never see them, and the expiry ledger skips them (they are no
// instance, meta record or lease marker).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// MaxObserveWait caps ?wait_observed (the contract: at most 60 s).
const MaxObserveWait = 60 * time.Second

// observeLeaseSlack is how much longer than the wait the handshake's lease
// lives: its keys outlast the answer even if the origin cannot revoke it.
const observeLeaseSlack = 5 * time.Second

// ackMargin is how long before the deadline a member with subscribers
// still pending writes its partial ack: enough for one raft write and the
// origin's view to see it. A fifth of the wait, 100 ms to 1 s.
func ackMargin(wait time.Duration) time.Duration {
	return min(max(wait/5, 100*time.Millisecond), time.Second)
}

// Observed is the outcome of a drain handshake: how many of the
// subscribers the change concerned were written it in time, summed over
// the members that answered, and how many members answered out of those
// asked (the voting members of the cluster).
type Observed struct {
	Delivered   int
	Subscribers int
	Acked       int
	Members     int
}

// Complete reports whether every member answered and every subscriber
// was written the change.
func (o Observed) Complete() bool {
	return o.Acked == o.Members && o.Delivered == o.Subscribers
}

// observeRequest is a request as the views decode it.
type observeRequest struct {
	nonce       string
	Service     string `json:"service"`
	ID          string `json:"id"`
	WaitMillis  int64  `json:"wait_ms"`
	DeadlineUTC int64  `json:"deadline_ms"` // Unix milliseconds, the origin's clock
	lease       int64
}

// observeAck is one member's answer.
type observeAck struct {
	nonce       string
	member      uint64
	Delivered   int `json:"delivered"`
	Subscribers int `json:"subscribers"`
}

// decodeObserve reads a key under observeRoot (rest is what follows it).
// Anything malformed is another program's data and ignored.
func (c *Changes) decodeObserve(rest string, kv *mvccpb.KeyValue) {
	nonce, member, isAck := strings.Cut(rest, "/")
	if nonce == "" {
		return
	}
	if !isAck {
		var r observeRequest
		if json.Unmarshal(kv.Value, &r) != nil || r.WaitMillis <= 0 {
			return
		}
		r.nonce, r.lease = nonce, kv.Lease
		c.observeReqs = append(c.observeReqs, r)
		return
	}
	id, err := strconv.ParseUint(member, 16, 64)
	if err != nil {
		return
	}
	var a observeAck
	if json.Unmarshal(kv.Value, &a) != nil {
		return
	}
	a.nonce, a.member = nonce, id
	c.observeAcks = append(c.observeAcks, a)
}

// observation is one request as one member tracks it.
type observation struct {
	nonce     string
	service   string
	rev       int64 // the change's revision
	lease     int64
	total     int
	delivered int
	pending   int
	done      chan struct{} // closed when pending reaches 0
}

// settle records one subscriber's outcome. Call with v.mu held.
func (o *observation) settle(delivered bool) {
	if o.pending == 0 {
		return
	}
	if delivered {
		o.delivered++
	}
	o.pending--
	if o.pending == 0 {
		close(o.done)
	}
}

// observeLocked starts tracking the revision's observe requests: the
// subscribers each change concerns, taken before the revision's events
// are published (so each of them is pushed the change). Call with v.mu
// held, from apply.
func (v *View) observeLocked(ch Changes, changes []viewChange) {
	for _, r := range ch.observeReqs {
		o := &observation{nonce: r.nonce, service: r.Service, rev: ch.Revision, lease: r.lease, done: make(chan struct{})}
		var prev, now *Instance
		for i := range changes {
			c := &changes[i]
			if c.svc != r.Service || c.id != r.ID {
				continue
			}
			if c.del {
				prev = &c.event.Instance
			} else {
				prev, now = c.event.Prev, &c.event.Instance
			}
		}
		concerns := func(f Filter) bool {
			return prev != nil && f.Match(*prev) || now != nil && f.Match(*now)
		}
		if prev != nil || now != nil {
			for s := range v.subs {
				if !s.internal && (s.service == "" || s.service == r.Service) && concerns(s.filter) {
					s.obs = append(s.obs, o)
					s.pending.Add(1)
					o.total++
				}
			}
			for w := range v.waiters[r.Service] {
				if w.index < ch.Revision && concerns(w.filter) {
					w.obs = append(w.obs, o)
					o.total++
				}
			}
		}
		o.pending = o.total
		if o.total == 0 {
			close(o.done)
		}
		// The member's own deadline: the wait from now, but never past
		// the origin's (clocks may differ; a member that applied the
		// revision late answers at once), less the time an ack takes.
		wait := time.Duration(r.WaitMillis) * time.Millisecond
		deadline := time.Now().Add(wait)
		if origin := time.UnixMilli(r.DeadlineUTC); r.DeadlineUTC > 0 && origin.Before(deadline) {
			deadline = origin
		}
		deadline = deadline.Add(-ackMargin(wait))
		v.lg.Debug("drain handshake: observing", zap.String("nonce", o.nonce), zap.String("service", r.Service),
			zap.String("id", r.ID), zap.Int64("revision", o.rev), zap.Int("subscribers", o.total))
		go v.ackObservation(o, deadline)
	}
}

// ackObservation writes this member's ack once every subscriber settled,
// or at deadline with what was delivered by then.
func (v *View) ackObservation(o *observation, deadline time.Time) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-o.done:
	case <-timer.C:
	case <-v.stopped:
		return
	}
	v.mu.Lock()
	a := observeAck{Delivered: o.delivered, Subscribers: o.total}
	member := v.memberID
	v.mu.Unlock()
	buf, _ := json.Marshal(a) // two ints always encode
	ctx, cancel := context.WithTimeout(context.Background(), v.st.timeout)
	defer cancel()
	go func() {
		select {
		case <-v.stopped:
			cancel()
		case <-ctx.Done():
		}
	}()
	_, err := v.st.cli.Put(ctx, v.st.keys.ObserveAck(o.nonce, member), string(buf), clientv3.WithLease(clientv3.LeaseID(o.lease)))
	if err != nil {
		// The origin shows this member as not answered.
		v.lg.Debug("drain handshake: ack not written", zap.String("nonce", o.nonce), zap.Error(err))
		return
	}
	v.lg.Debug("drain handshake: acked", zap.String("nonce", o.nonce), zap.Int("delivered", a.Delivered), zap.Int("subscribers", a.Subscribers))
}

// ackWait collects the acks of one request on its origin.
type ackWait struct {
	acks    map[uint64]observeAck
	changed chan struct{} // receives a value when an ack arrives
}

// awaitAcks starts collecting the acks of nonce. Call before the request
// is written, so that no ack can come before it is collected.
func (v *View) awaitAcks(nonce string) *ackWait {
	aw := &ackWait{acks: make(map[uint64]observeAck), changed: make(chan struct{}, 1)}
	v.mu.Lock()
	v.ackWaits[nonce] = aw
	v.mu.Unlock()
	return aw
}

// stopAcks ends the collection of nonce's acks and returns them.
func (v *View) stopAcks(nonce string) map[uint64]observeAck {
	v.mu.Lock()
	defer v.mu.Unlock()
	aw := v.ackWaits[nonce]
	delete(v.ackWaits, nonce)
	if aw == nil {
		return nil
	}
	return aw.acks
}

// acked reports how many of members acked nonce so far.
func (v *View) acked(nonce string, members []uint64) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	aw := v.ackWaits[nonce]
	n := 0
	for _, m := range members {
		if _, ok := aw.acks[m]; ok {
			n++
		}
	}
	return n
}

// recordAcksLocked hands the revision's acks to the requests this member
// originated. Call with v.mu held.
func (v *View) recordAcksLocked(acks []observeAck) {
	for _, a := range acks {
		aw := v.ackWaits[a.nonce]
		if aw == nil {
			continue // another member's request
		}
		aw.acks[a.member] = a
		select {
		case aw.changed <- struct{}{}:
		default:
		}
	}
}

// newNonce names one request.
func newNonce() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// votingMembers lists the cluster's voting members: the ones that can
// write an ack (a learner's in-process client cannot write).
func (s *Store) votingMembers(ctx context.Context) ([]uint64, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	resp, err := s.cli.MemberList(ctx)
	if err != nil {
		return nil, AsError(err)
	}
	var out []uint64
	for _, m := range resp.Members {
		if !m.IsLearner {
			out = append(out, m.ID)
		}
	}
	return out, nil
}

// observe runs one handshake around write, which must write op (the
// request) in the change's own transaction. It returns what write
// returns, and the outcome: at wait, or when ctx ends (then with what
// arrived by then; the change itself is done).
func (l *Local) observe(ctx context.Context, service, id string, wait time.Duration, write func(op clientv3.Op) error) (Observed, error) {
	wait = min(wait, MaxObserveWait)
	start := time.Now()
	deadline := start.Add(wait)
	nonce := newNonce()
	l.view.awaitAcks(nonce)
	defer l.view.stopAcks(nonce)

	gctx, cancel := l.withTimeout(ctx)
	grant, err := l.cli.Grant(gctx, int64((wait+observeLeaseSlack+time.Second-1)/time.Second))
	cancel()
	if err != nil {
		return Observed{}, AsError(err)
	}
	lease := grant.ID
	defer func() {
		// The request and the acks go with the lease; its TTL removes
		// them anyway should this fail.
		go func() {
			rctx, cancel := context.WithTimeout(context.Background(), l.timeout)
			defer cancel()
			if _, err := l.cli.Revoke(rctx, lease); err != nil && !isLeaseNotFound(err) {
				l.lg.Debug("drain handshake: revoke", zap.String("nonce", nonce), zap.Error(err))
			}
		}()
	}()
	req, _ := json.Marshal(observeRequest{Service: service, ID: id, WaitMillis: max(wait.Milliseconds(), 1), DeadlineUTC: deadline.UnixMilli()})
	if err := write(clientv3.OpPut(l.keys.ObserveRequest(nonce), string(req), clientv3.WithLease(lease))); err != nil {
		return Observed{}, err
	}
	members, err := l.votingMembers(ctx)
	if err != nil {
		l.lg.Warn("drain handshake: membership unknown; waiting for the deadline", zap.Error(err))
	}
	l.view.mu.Lock()
	aw := l.view.ackWaits[nonce]
	l.view.mu.Unlock()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
wait:
	for len(members) == 0 || l.view.acked(nonce, members) < len(members) {
		select {
		case <-aw.changed:
		case <-timer.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	acks := l.view.stopAcks(nonce)
	out := Observed{Members: len(members)}
	for _, a := range acks {
		out.Delivered += a.Delivered
		out.Subscribers += a.Subscribers
		out.Acked++
	}
	if len(members) == 0 {
		out.Members = out.Acked
	}
	l.lg.Info("drain handshake", zap.String("service", service), zap.String("id", id),
		zap.Int("delivered", out.Delivered), zap.Int("subscribers", out.Subscribers),
		zap.Int("members-acked", out.Acked), zap.Int("members", out.Members), zap.Duration("took", time.Since(start)))
	return out, nil
}

// PatchObserved is Patch with the drain handshake: it answers once every
// subscriber the change concerns, on every member, was written it, or when
// wait (at most MaxObserveWait) ends.
func (l *Local) PatchObserved(ctx context.Context, service, id string, p Patch, wait time.Duration) (Instance, Observed, error) {
	if err := validateNames(service, id); err != nil {
		return Instance{}, Observed{}, err
	}
	if err := p.check(); err != nil {
		return Instance{}, Observed{}, err
	}
	var inst Instance
	obs, err := l.observe(ctx, service, id, wait, func(op clientv3.Op) error {
		var err error
		inst, err = l.patch(ctx, service, id, p, op)
		return err
	})
	return inst, obs, err
}

// DeregisterObserved is Deregister with the drain handshake (see
// PatchObserved).
func (l *Local) DeregisterObserved(ctx context.Context, service, id string, wait time.Duration) (int64, Observed, error) {
	if err := validateNames(service, id); err != nil {
		return 0, Observed{}, err
	}
	var rev int64
	obs, err := l.observe(ctx, service, id, wait, func(op clientv3.Op) error {
		var err error
		rev, err = l.deregister(ctx, service, id, op)
		return err
	})
	return rev, obs, err
}
