package registry

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultCursorIdle is how often a consumer moves the cursor over
// revisions that needed no ledger write. Moving it on every registration
// would double the raft writes of a register.
const DefaultCursorIdle = 5 * time.Second

// defaultMaxOps keeps one commit well under etcd's default MaxTxnOps
// (128): a commit's transaction holds its operations and the cursor's put,
// and the nested ones (entries, guarded deletes) must fit what is left.
const defaultMaxOps = 96

// maxMarkedCache bounds the consumer's memory of leases known to carry a
// marker; past it the memory starts over (the marker writes it saves are
// put-if-absent, so forgetting costs a write, never correctness).
const maxMarkedCache = 65536

// ConsumerOptions configures a Consumer.
type ConsumerOptions struct {
	ReportedBy string      // the member name written into each entry
	Logger     *zap.Logger // nil: the store's
	CursorIdle time.Duration
	// Reported is called after each commit for every expiry that the
	// commit recorded; not for a replayed deletion whose entry a commit
	// with a lost reply had already written.
	Reported func(Report)
	// Unmarked is called when a plain client's lease had ended before
	// the consumer could attach its marker: deletions of its keys cannot
	// be told from history and count as explicit (cluster/DESIGN.md).
	Unmarked func(lease int64)
	// Leased is told of every lease an instance key was put on (the
	// consumer sees every registration): the leases whose deadlines are
	// worth following.
	Leased func(lease int64)
	// Deadline, when set, says when a lease was due to run out; the
	// entry of its expiry carries it (Expiration.Deadline).
	Deadline func(lease int64) (time.Time, bool)
	// MaxOps is the most operations of one commit, and of one read of
	// meta records; 0: 96, which fits etcd's default --max-txn-ops (128).
	// It must stay a few below the member's --max-txn-ops.
	MaxOps int
}

// Report is one expiry just recorded in the ledger.
type Report struct {
	Expiration
	Seen       time.Time // when the consumer saw the deletion
	Reconciled bool      // found by reconciling after a compaction, not in history
}

// Consumer turns etcd's history into ledger entries, on the leader. It
// follows Keys.HistoryRange from the cursor; for each revision it applies
// Classify, records the expiries, removes the bookkeeping of removed
// instances, and moves the cursor, all in one transaction guarded by the
// cursor's ModRevision. It attaches lease markers to leases of keys that
// plain clients put. One Consumer serves one term of leadership; Run may be
// called again after it returns an error.
type Consumer struct {
	l        *Ledger
	opts     ConsumerOptions
	lg       *zap.Logger
	prepared bool
	marked   map[int64]bool // leases known to carry a marker
	warned   map[int64]bool // unmarked leases already logged
}

// NewConsumer returns a consumer of the ledger's history.
func (l *Ledger) NewConsumer(opts ConsumerOptions) *Consumer {
	if opts.CursorIdle <= 0 {
		opts.CursorIdle = DefaultCursorIdle
	}
	if opts.MaxOps <= 0 {
		opts.MaxOps = defaultMaxOps
	}
	lg := opts.Logger
	if lg == nil {
		lg = l.lg
	}
	return &Consumer{l: l, opts: opts, lg: lg}
}

// Run consumes history until ctx ends (nil) or something fails: an etcd
// error, the member losing its leader (the watch requires one), or
// ErrCursorMoved. It returns nil, too, after reconciling a compaction
// past the cursor, or finding that etcd compacted further while it tried;
// the caller calls Run again.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.prepared {
		if err := c.prepare(ctx); err != nil {
			return err
		}
		c.prepared = true
	}
	cur, err := c.l.readCursor(ctx)
	if err != nil {
		return err
	}
	lo, hi := c.l.keys.HistoryRange()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := c.l.cli.Watch(wctx, lo, clientv3.WithRange(hi), clientv3.WithPrevKV(), clientv3.WithRev(cur.rev+1))
	idle := time.NewTicker(c.opts.CursorIdle)
	defer idle.Stop()
	seen := cur.rev // highest revision delivered by the watch
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-idle.C:
			if seen > cur.rev {
				if cur, _, err = c.l.commit(ctx, cur, seen, nil); err != nil {
					return err
				}
			}
		case resp, ok := <-wch:
			var evs []*clientv3.Event
			stop := &resp
			if ok {
				evs, stop, ok = gather(wch, resp)
			}
			if len(evs) > 0 {
				var lost, last int64
				cur, last, lost, err = c.consume(ctx, cur, evs, time.Now())
				if err != nil {
					return err
				}
				if lost != 0 {
					return c.reconcile(ctx, cur, lost)
				}
				seen = max(seen, last)
			}
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("history watch closed")
			}
			if stop == nil {
				continue
			}
			if stop.CompactRevision != 0 {
				return c.reconcile(ctx, cur, stop.CompactRevision)
			}
			if err := stop.Err(); err != nil {
				return err
			}
		}
	}
}

// maxConsumeEvents bounds the events one consume takes up (gather), and
// gatherWait is how long it waits for the next response: the client's
// watch hands responses over one at a time through a goroutine of its own,
// so "nothing queued right now" is often only that goroutine not having
// run yet.
const (
	maxConsumeEvents = 8192
	gatherWait       = time.Millisecond
)

// gather returns the events of first and of the responses the watch has
// delivered since, without waiting for more, up to maxConsumeEvents: while
// one batch commits, the next piles up, so a mass expiry makes the commits
// larger rather than the consumer later (etcd sends a synced watcher one
// response per revision). It stops at a response that is not plain events
// (a compaction, an error) and returns it as stop, after the events before
// it; ok is false when the watch closed.
func gather(wch clientv3.WatchChan, first clientv3.WatchResponse) (evs []*clientv3.Event, stop *clientv3.WatchResponse, ok bool) {
	for resp := first; ; {
		if resp.CompactRevision != 0 || resp.Err() != nil {
			return evs, &resp, true
		}
		evs = append(evs, resp.Events...)
		if len(evs) >= maxConsumeEvents {
			return evs, nil, true
		}
		select {
		case resp, ok = <-wch:
			if !ok {
				return evs, nil, false
			}
		case <-time.After(gatherWait):
			return evs, nil, true
		}
	}
}

// pendingExpiry and cleanup are a batch's work before its meta records are
// read.
type cleanup struct {
	rev         int64
	service, id string
	lease       int64 // the lease the key was on
	revoke      bool  // the key left a lease that is still alive
}

// step is one operation of a commit, in revision order.
type step struct {
	rev    int64
	op     clientv3.Op // built by flush for ledger entries
	report *Report     // set for ledger entries
}

// consume handles one watch response. It returns the cursor afterwards; the
// last revision that touched the registry (0: none did: the ledger's own
// writes, other programs' keys; the cursor need not move over those, and
// moving it would wake the consumer with its own write); and lost, the
// first revision where an instance key's deletion or overwrite came without
// its previous value (prevLost): everything before lost is committed, and
// the caller reconciles at lost.
func (c *Consumer) consume(ctx context.Context, cur cursor, evs []*clientv3.Event, received time.Time) (next cursor, last, lost int64, err error) {
	var (
		reports  []Report
		cleanups []cleanup
	)
	splitRevisions(evs, func(rev int64, revEvs []*clientv3.Event) {
		if lost != 0 || err != nil {
			return
		}
		ch := c.l.keys.decodeChanges(rev, revEvs)
		if !ch.relevant() {
			return
		}
		if c.prevLost(revEvs) {
			lost = rev
			return
		}
		if err = c.attachMarkers(ctx, ch); err != nil {
			return
		}
		if c.opts.Leased != nil {
			for _, ic := range ch.Instances {
				if !ic.Deleted && ic.Now.Valid && ic.Now.Lease != 0 {
					c.opts.Leased(ic.Now.Lease)
				}
			}
		}
		for _, r := range Classify(ch) {
			if r.Cause == CauseExpired {
				reports = append(reports, c.report(r.Service, r.ID, r.Address, r.Lease, rev, received, r.End, false))
			} else {
				c.lg.Debug("instance removed", zap.String("service", r.Service), zap.String("id", r.ID), zap.Stringer("cause", r.Cause), zap.Int64("revision", rev))
			}
		}
		cleanups = append(cleanups, cleanupsOf(ch)...)
		last = rev
	})
	if err != nil {
		return cur, 0, 0, err
	}
	if len(reports) == 0 && len(cleanups) == 0 {
		return cur, last, lost, nil // the idle tick moves the cursor
	}
	steps, revokes, err := c.steps(ctx, reports, cleanups)
	if err != nil {
		return cur, 0, 0, err
	}
	cur, err = c.flush(ctx, cur, last, steps, revokes, true)
	return cur, last, lost, err
}

// prevLost reports whether an instance key's deletion or overwrite among
// one revision's events came without its previous value. etcd reads that
// value at the revision before the event's, so it is missing exactly when
// history was compacted at or past the event's revision: after the watch
// read the event, or before, when the watch started at the compaction
// revision itself (a watch from there is not "compacted"; etcd keeps the
// events at that revision, not what they replaced).
func (c *Consumer) prevLost(evs []*clientv3.Event) bool {
	for _, ev := range evs {
		if ev.PrevKv != nil || ev.IsCreate() {
			continue
		}
		if _, _, ok := c.l.keys.ParseInstance(string(ev.Kv.Key)); ok {
			return true
		}
	}
	return false
}

// report is the ledger entry of one expiry.
func (c *Consumer) report(service, id, address string, lease, rev int64, seen time.Time, end LeaseEnd, reconciled bool) Report {
	var deadline *time.Time
	if c.opts.Deadline != nil {
		if t, ok := c.opts.Deadline(lease); ok {
			t = t.UTC()
			deadline = &t
		}
	}
	return Report{Expiration: Expiration{
		Deadline:   deadline,
		Cause:      end.Cause,
		Output:     end.Output,
		Service:    service,
		ID:         id,
		Address:    address,
		LeaseID:    FormatLease(lease),
		ExpiredAt:  seen.UTC(),
		ReportedBy: c.opts.ReportedBy,
		Revision:   rev,
	}, Seen: seen, Reconciled: reconciled}
}

// cleanupsOf lists the meta records that a revision may have left behind:
// of an instance key that left its lease (deleted, expired, or overwritten
// with another lease or none) or whose value stopped being an instance,
// unless regd wrote or deleted the record in the same revision (a REST
// registration or deregistration).
func cleanupsOf(ch Changes) []cleanup {
	var out []cleanup
	for _, ic := range ch.Instances {
		if ic.Prev == nil || ic.Prev.Lease == 0 {
			continue
		}
		k := ic.Service + "/" + ic.ID
		if _, ok := ch.metaPut[k]; ok || ch.metaDel[k] {
			continue
		}
		left := ic.Deleted || ic.Now.Lease != ic.Prev.Lease
		if !left && ic.Now.Valid {
			continue
		}
		ended := ch.EndedLeases[ic.Prev.Lease]
		out = append(out, cleanup{rev: ch.Revision, service: ic.Service, id: ic.ID, lease: ic.Prev.Lease, revoke: left && !ended})
	}
	return out
}

// steps reads the meta records the cleanups name and builds the commit:
// a ledger entry per report, a guarded delete per meta record that still
// describes the lease its key left (a newer registration's record stays),
// and the leases regd granted that nothing uses any more, to revoke.
func (c *Consumer) steps(ctx context.Context, reports []Report, cleanups []cleanup) ([]step, []int64, error) {
	metas := make(map[string]*metaRead)
	var keys []string
	for _, cl := range cleanups {
		k := c.l.keys.Meta(cl.service, cl.id)
		if _, ok := metas[k]; !ok {
			metas[k] = nil
			keys = append(keys, k)
		}
	}
	if err := c.readMetas(ctx, keys, metas); err != nil {
		return nil, nil, err
	}
	var steps []step
	var revokes []int64
	for i := range reports {
		steps = append(steps, step{rev: reports[i].Revision, report: &reports[i]})
	}
	done := make(map[string]bool)
	for _, cl := range cleanups {
		k := c.l.keys.Meta(cl.service, cl.id)
		mr := metas[k]
		if mr == nil || !mr.m.describes(cl.lease) || done[k] {
			continue
		}
		done[k] = true
		steps = append(steps, step{rev: cl.rev, op: mr.deleteOp(k)})
		if cl.revoke {
			revokes = append(revokes, cl.lease)
		}
	}
	// Revision order, entries before cleanups within one revision: a
	// commit that has to split a revision still ends on a known prefix.
	sortSteps(steps)
	return steps, revokes, nil
}

// metaRead is a meta record as read, with the ModRevision its guarded
// delete compares on.
type metaRead struct {
	m      meta
	modRev int64
}

func (mr *metaRead) deleteOp(key string) clientv3.Op {
	return clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", mr.modRev)},
		[]clientv3.Op{clientv3.OpDelete(key)},
		nil,
	)
}

// readMetas reads the meta records of keys into into. The reads are
// serializable, served by this member without a round through raft: this
// member has applied every revision the consumer has seen (its watch
// delivered them), so it reads them as they stood then or later, and a
// record changed after the read fails its delete's compare on the
// ModRevision read, so it stays. A linearizable read would instead wait
// behind every lease revocation queued in raft: seconds per read during a
// mass expiry.
func (c *Consumer) readMetas(ctx context.Context, keys []string, into map[string]*metaRead) error {
	for len(keys) > 0 {
		n := min(len(keys), c.opts.MaxOps)
		ops := make([]clientv3.Op, n)
		for i, k := range keys[:n] {
			ops[i] = clientv3.OpGet(k, clientv3.WithSerializable())
		}
		resp, err := c.l.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return AsError(err)
		}
		for i, k := range keys[:n] {
			kv := firstKV(resp.Responses[i].GetResponseRange().GetKvs())
			if m, ok := decodeMeta(kv); ok {
				into[k] = &metaRead{m: m, modRev: kv.ModRevision}
			}
		}
		keys = keys[n:]
	}
	return nil
}

// flush commits steps in transactions of at most MaxOps operations,
// each guarded by the cursor and writing it: the last one moves it to last;
// an earlier one, when the steps come from history (replayable), to just
// before the revision where the next one starts, and otherwise (a
// reconcile, whose state cannot be replayed) not at all. So the cursor never
// claims a revision whose writes are not all durable. Then it tells the
// caller about the new entries and revokes the leases.
func (c *Consumer) flush(ctx context.Context, cur cursor, last int64, steps []step, revokes []int64, replayable bool) (cursor, error) {
	for len(steps) > 0 {
		n := min(len(steps), c.opts.MaxOps)
		to := last
		if n < len(steps) {
			to = cur.rev
			if replayable {
				to = max(cur.rev, steps[n].rev-1)
			}
		}
		ops := make([]clientv3.Op, n)
		now := time.Now().UTC()
		for i := range steps[:n] {
			s := &steps[i]
			if s.report != nil {
				// Stamped when its commit is built, just before it is
				// sent: the entry is durable a commit's round trip later.
				s.report.ReportedAt = &now
				op, err := c.l.entryOp(s.report.Expiration)
				if err != nil {
					return cur, err
				}
				s.op = op
			}
			ops[i] = s.op
		}
		next, resp, err := c.l.commit(ctx, cur, to, ops)
		if err != nil {
			return cur, err
		}
		cur = next
		for i, s := range steps[:n] {
			if s.report != nil && resp.Responses[i].GetResponseTxn().GetSucceeded() && c.opts.Reported != nil {
				c.opts.Reported(*s.report)
			}
		}
		steps = steps[n:]
	}
	if cur.rev < last {
		// Nothing to write in the batch's last revisions: move on anyway.
		var err error
		if cur, _, err = c.l.commit(ctx, cur, last, nil); err != nil {
			return cur, err
		}
	}
	for _, lease := range revokes {
		// Best effort: an unrevoked lease holds only its marker and
		// runs out, reporting nothing.
		if _, err := c.l.cli.Revoke(ctx, clientv3.LeaseID(lease)); err != nil && !isLeaseNotFound(err) && ctx.Err() == nil {
			c.lg.Warn("revoke lease of a removed instance", zap.Int64("lease", lease), zap.Error(err))
		}
	}
	return cur, nil
}

// attachMarkers makes sure that every lease a key was put on at this
// revision carries a marker, so that its end shows in history. REST
// registrations write the marker in the same revision; keys of plain
// clients get it here, put-if-absent on the lease itself.
func (c *Consumer) attachMarkers(ctx context.Context, ch Changes) error {
	for lease := range ch.EndedLeases {
		delete(c.marked, lease)
	}
	for _, ic := range ch.Instances {
		if ic.Deleted || !ic.Now.Valid || ic.Now.Lease == 0 || ch.MarkedLeases[ic.Now.Lease] || c.marked[ic.Now.Lease] {
			continue
		}
		if err := c.attach(ctx, ic.Now.Lease, ic.Service, ic.ID); err != nil {
			return err
		}
	}
	return nil
}

func (c *Consumer) attach(ctx context.Context, lease int64, service, id string) error {
	key := c.l.keys.LeaseMarker(lease)
	_, err := c.l.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, "", clientv3.WithLease(clientv3.LeaseID(lease)))).
		Commit()
	switch {
	case err == nil:
		if len(c.marked) >= maxMarkedCache {
			c.marked = nil
		}
		c.marked = setAdd(c.marked, lease)
		return nil
	case isLeaseNotFound(err):
		if !c.warned[lease] {
			if len(c.warned) >= maxMarkedCache {
				c.warned = nil
			}
			c.warned = setAdd(c.warned, lease)
			c.lg.Warn("lease ended before its marker was attached; deletions of its keys count as explicit",
				zap.Int64("lease", lease), zap.String("service", service), zap.String("id", id))
			if c.opts.Unmarked != nil {
				c.opts.Unmarked(lease)
			}
		}
		return nil
	}
	return AsError(err)
}
