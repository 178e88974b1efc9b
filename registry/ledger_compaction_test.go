package registry_test

import (
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// The expiry ledger and etcd's compaction: history the consumer needs may
// be gone (compacted by a plain client, or by regd past a stalled cursor),
// and the consumer reconciles from the state at the compaction revision
// without reporting anything twice or missing an expiry.

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
	if err := e.ledgerIs(map[expiry]string{
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
	want := map[expiry]string{}
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
	if err := e.ledgerIs(map[expiry]string{
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
	if err := e.ledgerIs(map[expiry]string{exp("wc", "expired", leaseOf(t, expired)): "10.9.0.1:80"}); err != nil {
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
	if err := e.ledgerIs(map[expiry]string{exp("wc", "expired", leaseOf(t, expired)): "10.9.0.1:80"}); err != nil {
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
	if err := e.ledgerIs(map[expiry]string{exp("mo", "gone", leaseOf(t, gone)): "10.10.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	if r := e.reported()[0]; !r.Reconciled || r.Revision != second {
		t.Fatalf("report %+v: want it reconciled at the newer compaction revision %d", r, second)
	}
}
