package registry_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// ledgerEnv is a bare etcd member (no regd around it) with a Store and a
// Ledger over it; the test decides when a consumer runs, so it can write
// history first and have it consumed later, as a new leader would.
type ledgerEnv struct {
	t   *testing.T
	cli *clientv3.Client
	st  *registry.Store
	l   *registry.Ledger

	mu       sync.Mutex
	reports  []registry.Report
	unmarked []int64
}

func newLedgerEnv(t *testing.T) *ledgerEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	n := regdtest.StartEtcd(t)
	st := registry.NewStore(n.Client(), registry.Options{Prefix: "/service/"})
	return &ledgerEnv{t: t, cli: n.Client(), st: st, l: registry.NewLedger(st)}
}

func (e *ledgerEnv) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// consume runs a consumer (as the reporter does: Run again after it
// returns) until the returned stop is called.
func (e *ledgerEnv) consume() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	c := e.consumer()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := c.Run(ctx); err != nil && ctx.Err() == nil {
				e.t.Logf("consumer: %v", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(stop)
	return stop
}

// consumer is a consumer that records what it reports in e.
func (e *ledgerEnv) consumer() *registry.Consumer {
	return e.l.NewConsumer(registry.ConsumerOptions{
		ReportedBy: "solo",
		CursorIdle: 50 * time.Millisecond,
		Reported: func(r registry.Report) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.reports = append(e.reports, r)
		},
		Unmarked: func(lease int64) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.unmarked = append(e.unmarked, lease)
		},
	})
}

func (e *ledgerEnv) register(service, id, addr string, ttl int64) registry.Instance {
	e.t.Helper()
	in, _, err := e.st.Register(e.ctx(), service, id, registry.Registration{Address: addr, TTL: &ttl})
	if err != nil {
		e.t.Fatalf("register %s/%s: %v", service, id, err)
	}
	return in
}

func (e *ledgerEnv) grant(ttl int64) clientv3.LeaseID {
	e.t.Helper()
	l, err := e.cli.Grant(e.ctx(), ttl)
	if err != nil {
		e.t.Fatal(err)
	}
	return l.ID
}

func (e *ledgerEnv) put(key, value string, lease clientv3.LeaseID) int64 {
	e.t.Helper()
	resp, err := e.cli.Put(e.ctx(), key, value, clientv3.WithLease(lease))
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.Header.Revision
}

// compactToHead writes a key outside the registry and compacts history up
// to it, as a plain client could: past the cursor of a consumer that has
// not seen it. It returns the compaction revision.
func (e *ledgerEnv) compactToHead() int64 {
	e.t.Helper()
	head := e.put("/other/compact", "x", 0)
	if _, err := e.cli.Compact(e.ctx(), head); err != nil {
		e.t.Fatal(err)
	}
	return head
}

func (e *ledgerEnv) revoke(lease int64) int64 {
	e.t.Helper()
	resp, err := e.cli.Revoke(e.ctx(), clientv3.LeaseID(lease))
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.Header.Revision
}

// barrier puts a lease-less instance and waits until the cursor has passed
// it: the positive marker that the consumer has gone through everything
// before it.
func (e *ledgerEnv) barrier(name string) {
	e.t.Helper()
	rev := e.put("/service/barrier/"+name, "10.9.9.9:9", 0)
	regdtest.Eventually(e.t, 10*time.Second, func() error {
		cur, err := e.l.Cursor(e.ctx())
		if err != nil {
			return err
		}
		if cur < rev {
			return fmt.Errorf("cursor at %d, barrier at %d", cur, rev)
		}
		return nil
	})
}

func (e *ledgerEnv) reported() []registry.Report {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.reports)
}

// ledgerIs checks the ledger and the consumer's reports: exactly want
// (service/id@lease → address), each once. The consumer calls Reported
// after the commit that wrote the entries and moved the cursor, so a
// barrier can pass before the last reports are in: it polls, for up to
// 10 s. Entries and reports are never taken back, so a ledger or report
// too many fails at the deadline as surely as a missing one.
func (e *ledgerEnv) ledgerIs(want map[regdtest.Expiry]string) error {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := e.checkLedger(want)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *ledgerEnv) checkLedger(want map[regdtest.Expiry]string) error {
	es, err := e.l.Expirations(e.ctx(), registry.ExpirationQuery{Limit: 10000})
	if err != nil {
		return err
	}
	got := map[regdtest.Expiry]string{}
	for _, x := range es {
		if _, dup := got[regdtest.ExpiryOf(x)]; dup {
			return fmt.Errorf("%s in the ledger twice", regdtest.ExpiryOf(x))
		}
		got[regdtest.ExpiryOf(x)] = x.Address
		if x.ReportedBy != "solo" || x.ExpiredAt.IsZero() || x.Revision == 0 {
			return fmt.Errorf("entry with unfilled fields: %+v", x)
		}
	}
	reps := map[regdtest.Expiry]int{}
	for _, r := range e.reported() {
		reps[regdtest.ExpiryOf(r.Expiration)]++
	}
	for k, a := range want {
		if got[k] != a {
			return fmt.Errorf("ledger has %s at %q, want %q (ledger %v)", k, got[k], a, got)
		}
		if reps[k] != 1 {
			return fmt.Errorf("%s reported %d times to the caller", k, reps[k])
		}
	}
	if len(got) != len(want) || len(reps) != len(want) {
		return fmt.Errorf("ledger %v, reports %v; want %v", got, reps, want)
	}
	return nil
}

func exp(service, id string, lease int64) regdtest.Expiry {
	return regdtest.Expiry{Service: service, ID: id, Lease: registry.FormatLease(lease)}
}

func leaseOf(t *testing.T, in registry.Instance) int64 { return parseLease(t, in.LeaseID) }

// TestLedgerMarkerWindow pins down the one window the history cannot
// decide: a plain client's key whose lease ends before the consumer has
// attached the lease's marker. It is counted (Unmarked) and not reported.
// A lease that ends after the marker was attached is reported.
func TestLedgerMarkerWindow(t *testing.T) {
	e := newLedgerEnv(t)
	early := e.grant(30)
	e.put("/service/win/early", "10.1.0.1:80", early)
	e.revoke(int64(early)) // before any consumer saw the put

	e.consume()
	late := e.grant(30)
	e.put("/service/win/late", "10.1.0.2:80", late)
	regdtest.WaitLeaseMarker(t, e.cli, int64(late))
	e.revoke(int64(late))
	e.barrier("win")
	if err := e.ledgerIs(map[regdtest.Expiry]string{exp("win", "late", int64(late)): "10.1.0.2:80"}); err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !slices.Equal(e.unmarked, []int64{int64(early)}) {
		t.Fatalf("unmarked leases %v, want only the early one %d", e.unmarked, early)
	}
}

// TestLedgerPreparesDataOfAnOlderRegd: a data dir written by regd before
// the lease markers holds instances without markers and deregistration
// markers. The consumer removes the latter and marks the leases of the
// former, so their expiry is reported like any other.
func TestLedgerPreparesDataOfAnOlderRegd(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := e.ctx()
	keys := e.st.Keys()
	old := e.grant(30)
	meta := fmt.Sprintf(`{"address":"10.2.0.1:80","ttl":30,"lease":%d,"registered_at":"2026-01-01T00:00:00Z"}`, old)
	plain := e.grant(30)
	resp, err := e.cli.Txn(ctx).Then(
		clientv3.OpPut(keys.Instance("old", "rest"), "10.2.0.1:80", clientv3.WithLease(old)),
		clientv3.OpPut(keys.Meta("old", "rest"), meta),
		clientv3.OpPut(keys.Instance("old", "plain"), "10.2.0.2:80", clientv3.WithLease(plain)),
		clientv3.OpPut(registry.InternalPrefix+"dereg/0000000000000007/old/gone", ""),
	).Commit()
	if err != nil {
		t.Fatal(err)
	}
	// The older reporter had consumed all of it.
	if _, err := e.cli.Put(ctx, keys.ExpiryCursor(), fmt.Sprint(resp.Header.Revision)); err != nil {
		t.Fatal(err)
	}

	e.consume()
	for _, l := range []clientv3.LeaseID{old, plain} {
		regdtest.WaitLeaseMarker(t, e.cli, int64(l))
	}
	regdtest.Eventually(t, 10*time.Second, func() error {
		r, err := e.cli.Get(ctx, registry.InternalPrefix+"dereg/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil || r.Count != 0 {
			return fmt.Errorf("%d deregistration markers left: %v", r.Count, err)
		}
		return nil
	})
	e.revoke(int64(old))
	e.revoke(int64(plain))
	e.barrier("old")
	if err := e.ledgerIs(map[regdtest.Expiry]string{
		exp("old", "rest", int64(old)):    "10.2.0.1:80",
		exp("old", "plain", int64(plain)): "10.2.0.2:80",
	}); err != nil {
		t.Fatal(err)
	}
	if r, err := e.cli.Get(ctx, keys.Meta("old", "rest")); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("meta record of the expired instance left: %v %v", r.Kvs, err)
	}
}

// TestLedgerReconcileAfterExternalCompaction: the history between the
// cursor and the head is compacted away before a consumer saw it. The
// consumer reconciles from state: a REST instance whose key is gone and
// whose lease ended is reported (once, flagged Reconciled); one deleted
// explicitly while its lease lives is not, nor one overwritten by a plain
// client; their records go and their leases are revoked. The documented
// ambiguity: a key deleted explicitly whose lease then also ended in the
// gap is reported as expired too.
func TestLedgerReconcileAfterExternalCompaction(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := e.ctx()
	keys := e.st.Keys()
	expired := e.register("rc", "expired", "10.3.0.1:80", 2)
	deleted := e.register("rc", "deleted", "10.3.0.2:80", 30)
	overwritten := e.register("rc", "overwritten", "10.3.0.3:80", 30)
	e.register("rc", "live", "10.3.0.4:80", 30)
	ambiguous := e.register("rc", "deleted-then-ended", "10.3.0.5:80", 2)
	if _, err := e.cli.Delete(ctx, keys.Instance("rc", "deleted")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.Delete(ctx, keys.Instance("rc", "deleted-then-ended")); err != nil {
		t.Fatal(err)
	}
	e.put(keys.Instance("rc", "overwritten"), "10.3.0.33:80", 0)
	for _, in := range []registry.Instance{expired, ambiguous} {
		regdtest.WaitLeaseGone(t, e.cli, leaseOf(t, in))
	}
	head := e.compactToHead()

	e.consume()
	e.barrier("rc")
	if err := e.ledgerIs(map[regdtest.Expiry]string{
		exp("rc", "expired", leaseOf(t, expired)):              "10.3.0.1:80",
		exp("rc", "deleted-then-ended", leaseOf(t, ambiguous)): "10.3.0.5:80",
	}); err != nil {
		t.Fatal(err)
	}
	for _, r := range e.reported() {
		if !r.Reconciled || r.Revision != head {
			t.Fatalf("report %+v: want Reconciled at the compaction revision %d", r, head)
		}
	}
	metas, err := e.cli.Get(ctx, keys.MetaAll(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(metas.Kvs) != 1 || string(metas.Kvs[0].Key) != keys.Meta("rc", "live") {
		t.Fatalf("meta records left: %v; want only rc/live's", metas.Kvs)
	}
	for _, in := range []registry.Instance{deleted, overwritten} {
		regdtest.WaitLeaseGone(t, e.cli, leaseOf(t, in)) // revoked
	}
}

// TestLedgerReplayReportsNothingTwice: a consumer that replays history it
// had already committed (the reply of its commit was lost, then it or a
// successor read the old cursor) rewrites no entry and reports none again.
func TestLedgerReplayReportsNothingTwice(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := e.ctx()
	stop := e.consume()
	a := e.grant(30)
	e.put("/service/rp/a", "10.4.0.1:80", a)
	b := e.register("rp", "b", "10.4.0.2:80", 30)
	e.barrier("rp-1") // a's marker is attached by now
	e.revoke(int64(a))
	e.revoke(leaseOf(t, b))
	e.barrier("rp-2")
	want := map[regdtest.Expiry]string{exp("rp", "a", int64(a)): "10.4.0.1:80", exp("rp", "b", leaseOf(t, b)): "10.4.0.2:80"}
	if err := e.ledgerIs(want); err != nil {
		t.Fatal(err)
	}
	before, err := e.l.Expirations(ctx, registry.ExpirationQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	stop()

	if _, err := e.cli.Put(ctx, e.st.Keys().ExpiryCursor(), "1"); err != nil { // rewind
		t.Fatal(err)
	}
	e.consume()
	c := e.register("rp", "c", "10.4.0.3:80", 30)
	e.revoke(leaseOf(t, c))
	e.barrier("rp-3")
	want[exp("rp", "c", leaseOf(t, c))] = "10.4.0.3:80"
	if err := e.ledgerIs(want); err != nil {
		t.Fatal(err)
	}
	after, err := e.l.Expirations(ctx, registry.ExpirationQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if err := regdtest.SameLedger(before, after[1:]); err != nil {
		t.Fatalf("the replay changed the entries it found: %v", err)
	}
}

// TestLedgerSplitsALargeRevision: a lease that holds more instances than
// one transaction can record ends in one revision; every expiry is
// recorded once, over several commits that never move the cursor past a
// revision whose writes are not all durable.
func TestLedgerSplitsALargeRevision(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := e.ctx()
	e.consume()
	lease := e.grant(60)
	want := map[regdtest.Expiry]string{}
	const n = 250
	for i := 0; i < n; i += 100 {
		var ops []clientv3.Op
		for j := i; j < min(i+100, n); j++ {
			id := fmt.Sprintf("i%03d", j)
			ops = append(ops, clientv3.OpPut(e.st.Keys().Instance("big", id), fmt.Sprintf("10.5.%d.%d:80", j/200, j%200+1), clientv3.WithLease(lease)))
			want[exp("big", id, int64(lease))] = fmt.Sprintf("10.5.%d.%d:80", j/200, j%200+1)
		}
		if _, err := e.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	e.barrier("big-1")
	rev := e.revoke(int64(lease))
	e.barrier("big-2")
	if err := e.ledgerIs(want); err != nil {
		t.Fatal(err)
	}
	for _, r := range e.reported() {
		if r.Revision != rev {
			t.Fatalf("report %+v not at the revoke's revision %d", r, rev)
		}
	}
}

// TestLedgerCompactHistoryNeverPassesTheCursor: regd's own compaction
// stops at the cursor, so the consumer never has to reconcile after it.
func TestLedgerCompactHistoryNeverPassesTheCursor(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := e.ctx()
	if done, err := e.l.CompactHistory(ctx, 1<<62); err != nil || done != 0 {
		t.Fatalf("CompactHistory before any cursor: %d %v, want 0", done, err)
	}
	stop := e.consume()
	e.barrier("cmp")
	stop()
	cur, err := e.l.Cursor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	head := e.put("/service/cmp/after", "10.6.0.1:80", 0)
	done, err := e.l.CompactHistory(ctx, head)
	if err != nil || done != cur {
		t.Fatalf("CompactHistory(%d) with the cursor at %d: %d %v", head, cur, done, err)
	}
	if _, err := e.cli.Get(ctx, "/service/", clientv3.WithPrefix(), clientv3.WithRev(cur+1)); err != nil {
		t.Fatalf("history after the cursor was compacted: %v", err)
	}
}

// TestLedgerReconcilesMoreThanOneCommit: a reconcile whose work needs
// several commits reports each vanished instance once.
func TestLedgerReconcilesMoreThanOneCommit(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := e.ctx()
	want := map[regdtest.Expiry]string{}
	var last registry.Instance
	for i := range 120 {
		last = e.register("rcbig", fmt.Sprintf("i%03d", i), fmt.Sprintf("10.7.0.%d:80", i+1), 2)
		want[regdtest.ExpiryOfInstance(last)] = last.Address
	}
	regdtest.WaitLeaseGone(t, e.cli, leaseOf(t, last))
	if n, err := e.cli.Get(ctx, "/service/rcbig/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || n.Count != 0 {
		t.Fatalf("%d instances left after their leases ended: %v", n.Count, err)
	}
	e.compactToHead()
	e.consume()
	e.barrier("rcbig")
	if err := e.ledgerIs(want); err != nil {
		t.Fatal(err)
	}
}

// TestLedgerReconcileConsumesHistoryAfterTheCompaction: a compaction past
// the cursor removes history up to its revision C, not after it. What
// happened after C is still in history and is classified from it, as if
// no compaction had been: a plain client's revoke after C is an expiry
// (its key and marker go in one revision), a REST key deleted explicitly
// after C whose lease then ended is not. Only the gap up to C is
// reconciled from state (the state at C), reported at C.
func TestLedgerReconcileConsumesHistoryAfterTheCompaction(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := e.ctx()
	keys := e.st.Keys()
	stop := e.consume()
	revoked := e.grant(30)
	e.put(keys.Instance("rh", "revoked"), "10.8.0.1:80", revoked)
	plainDeleted := e.grant(30)
	e.put(keys.Instance("rh", "plain-deleted"), "10.8.0.2:80", plainDeleted)
	restDeleted := e.register("rh", "rest-deleted", "10.8.0.3:80", 30)
	inGap := e.register("rh", "expired-in-gap", "10.8.0.4:80", 30)
	for _, l := range []clientv3.LeaseID{revoked, plainDeleted} {
		regdtest.WaitLeaseMarker(t, e.cli, int64(l))
	}
	e.barrier("rh-1")
	stop() // the leader is gone; the cursor stays here

	e.revoke(leaseOf(t, inGap)) // in the gap: before the compaction
	head := e.compactToHead()
	// After the compaction, still in history when the next consumer starts.
	revokedAt := e.revoke(int64(revoked))
	if _, err := e.cli.Delete(ctx, keys.Instance("rh", "plain-deleted")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.Delete(ctx, keys.Instance("rh", "rest-deleted")); err != nil {
		t.Fatal(err)
	}
	e.revoke(leaseOf(t, restDeleted)) // ends after the explicit delete: no expiry

	e.consume()
	e.barrier("rh-2")
	if err := e.ledgerIs(map[regdtest.Expiry]string{
		exp("rh", "revoked", int64(revoked)):           "10.8.0.1:80",
		exp("rh", "expired-in-gap", leaseOf(t, inGap)): "10.8.0.4:80",
	}); err != nil {
		t.Fatal(err)
	}
	for _, r := range e.reported() {
		switch r.ID {
		case "revoked":
			if r.Reconciled || r.Revision != revokedAt {
				t.Errorf("report %+v: want it from history, at the revoke's revision %d", r, revokedAt)
			}
		case "expired-in-gap":
			if !r.Reconciled || r.Revision != head {
				t.Errorf("report %+v: want it reconciled, at the compaction revision %d", r, head)
			}
		}
	}
	metas, err := e.cli.Get(ctx, keys.Meta("rh", ""), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(metas.Kvs) != 0 {
		t.Fatalf("meta records left: %v", metas.Kvs)
	}
}

// TestLedgerWatchFromTheCompactionRevision: a consumer whose cursor is
// just below an external compaction at C watches from C itself, which etcd
// serves (a watch is "compacted" only below C), but without the values
// C's events replaced. A deletion or overwrite at C is therefore
// reconciled from the state at C: an instance whose lease ended at C is
// reported (reconciled, at C), a REST key overwritten at C loses its
// record and its lease.
func TestLedgerWatchFromTheCompactionRevision(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := e.ctx()
	keys := e.st.Keys()
	expired := e.register("wc", "expired", "10.9.0.1:80", 30)
	overwritten := e.register("wc", "overwritten", "10.9.0.2:80", 30)
	stop := e.consume()
	e.barrier("wc-1")
	stop()
	// compactAt puts the cursor just below rev and compacts there, as a
	// plain client could while no consumer runs.
	compactAt := func(rev int64) {
		t.Helper()
		if _, err := e.cli.Put(ctx, keys.ExpiryCursor(), fmt.Sprint(rev-1)); err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.Compact(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}

	expiredAt := e.revoke(leaseOf(t, expired))
	compactAt(expiredAt)
	stop = e.consume()
	e.barrier("wc-2")
	stop()
	if err := e.ledgerIs(map[regdtest.Expiry]string{exp("wc", "expired", leaseOf(t, expired)): "10.9.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	if r := e.reported()[0]; !r.Reconciled || r.Revision != expiredAt {
		t.Fatalf("report %+v: want it reconciled at the compaction revision %d", r, expiredAt)
	}

	overwrittenAt := e.put(keys.Instance("wc", "overwritten"), "10.9.0.22:80", 0)
	compactAt(overwrittenAt)
	e.consume()
	e.barrier("wc-3")
	regdtest.WaitLeaseGone(t, e.cli, leaseOf(t, overwritten)) // revoked
	if r, err := e.cli.Get(ctx, keys.Meta("wc", "overwritten")); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("meta record of the overwritten instance left: %v %v", r.Kvs, err)
	}
	if err := e.ledgerIs(map[regdtest.Expiry]string{exp("wc", "expired", leaseOf(t, expired)): "10.9.0.1:80"}); err != nil {
		t.Fatal(err)
	}
}

// TestLedgerReconcileAfterTheCompactionMovedOn: when etcd has compacted
// past the revision a reconcile was asked for (a second compaction right
// after the first, or a deletion whose previous value went with a later
// compaction), the state there is gone too. The reconcile writes nothing
// and the next watch from the cursor reconciles at the newer compaction.
func TestLedgerReconcileAfterTheCompactionMovedOn(t *testing.T) {
	e := newLedgerEnv(t)
	ctx := e.ctx()
	gone := e.register("mo", "gone", "10.10.0.1:80", 30)
	stop := e.consume()
	e.barrier("mo-1")
	stop()
	cursor, err := e.l.Cursor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.revoke(leaseOf(t, gone))
	first := e.compactToHead()
	second := e.compactToHead()

	if err := e.consumer().ReconcileAt(ctx, first); err != nil {
		t.Fatalf("reconcile at a compacted revision: %v, want nil (start over)", err)
	}
	if now, err := e.l.Cursor(ctx); err != nil || now != cursor {
		t.Fatalf("cursor %d after a reconcile that could not read its state (%v), want it left at %d", now, err, cursor)
	}
	if got := e.reported(); len(got) != 0 {
		t.Fatalf("reported %+v from a reconcile that could not read its state", got)
	}
	e.consume()
	e.barrier("mo-2")
	if err := e.ledgerIs(map[regdtest.Expiry]string{exp("mo", "gone", leaseOf(t, gone)): "10.10.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	if r := e.reported()[0]; !r.Reconciled || r.Revision != second {
		t.Fatalf("report %+v: want it reconciled at the newer compaction revision %d", r, second)
	}
}

// TestLedgerPages: ?before= pages through the ledger newest first, every
// entry once, and a page never ends inside a revision (three instances on
// one plain lease expire at one revision); entries carry reported_at.
func TestLedgerPages(t *testing.T) {
	e := newLedgerEnv(t)
	e.consume()
	for i := range 4 {
		in := e.register("pg", fmt.Sprintf("r%d", i), fmt.Sprintf("10.8.0.%d:80", i), 30)
		e.revoke(leaseOf(t, in))
	}
	plain := e.grant(30)
	for i := range 3 {
		e.put(fmt.Sprintf("/service/pg/p%d", i), fmt.Sprintf("10.8.1.%d:80", i), plain)
	}
	regdtest.WaitLeaseMarker(t, e.cli, int64(plain))
	shared := e.revoke(int64(plain))
	in := e.register("pg", "last", "10.8.2.1:80", 30)
	e.revoke(leaseOf(t, in))
	e.barrier("pg")
	all, err := e.l.Expirations(e.ctx(), registry.ExpirationQuery{Limit: 100})
	if err != nil || len(all) != 8 {
		t.Fatalf("ledger: %d entries (%v), want 8", len(all), err)
	}
	for limit := 1; limit <= 4; limit++ {
		var got []registry.Expiration
		before := int64(0)
		for page := 0; page < 20; page++ {
			es, err := e.l.Expirations(e.ctx(), registry.ExpirationQuery{Limit: limit, Before: before})
			if err != nil {
				t.Fatal(err)
			}
			if len(es) == 0 {
				break
			}
			last := es[len(es)-1].Revision
			if len(es) > limit && (es[0].Revision != last || last != shared) {
				t.Fatalf("limit %d: page of %d entries, more than the limit though not one revision: %+v", limit, len(es), es)
			}
			for _, x := range es {
				if x.ReportedAt == nil || x.ReportedAt.Before(x.ExpiredAt) {
					t.Fatalf("entry %+v: reported_at missing or before expired_at", x)
				}
				if before != 0 && x.Revision >= before {
					t.Fatalf("limit %d: entry of revision %d on the page before %d", limit, x.Revision, before)
				}
			}
			got = append(got, es...)
			before = last
		}
		if len(got) != len(all) {
			t.Fatalf("limit %d: paged %d entries, want %d", limit, len(got), len(all))
		}
		for i := range got {
			if keyOfExp(got[i]) != keyOfExp(all[i]) {
				t.Fatalf("limit %d: entry %d is %s, want %s", limit, i, keyOfExp(got[i]), keyOfExp(all[i]))
			}
		}
	}
}

func keyOfExp(x registry.Expiration) string {
	return fmt.Sprintf("%d/%s/%s", x.Revision, x.Service, x.ID)
}
