package registry_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

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
	if err := e.ledgerIs(map[expiry]string{exp("win", "late", int64(late)): "10.1.0.2:80"}); err != nil {
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
	poll.Until(t, 10*time.Second, "no deregistration marker left", func() error {
		r, err := e.cli.Get(ctx, registry.InternalPrefix+"dereg/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil || r.Count != 0 {
			return fmt.Errorf("%d deregistration markers left: %v", r.Count, err)
		}
		return nil
	})
	e.revoke(int64(old))
	e.revoke(int64(plain))
	e.barrier("old")
	if err := e.ledgerIs(map[expiry]string{
		exp("old", "rest", int64(old)):    "10.2.0.1:80",
		exp("old", "plain", int64(plain)): "10.2.0.2:80",
	}); err != nil {
		t.Fatal(err)
	}
	if r, err := e.cli.Get(ctx, keys.Meta("old", "rest")); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("meta record of the expired instance left: %v %v", r.Kvs, err)
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
	want := map[expiry]string{exp("rp", "a", int64(a)): "10.4.0.1:80", exp("rp", "b", leaseOf(t, b)): "10.4.0.2:80"}
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
	// The same entry is the same JSON (deadline and reported_at are
	// pointers: compared by value, not address).
	same := func(x, y registry.Expiration) bool {
		bx, errx := json.Marshal(x)
		by, erry := json.Marshal(y)
		return errx == nil && erry == nil && bytes.Equal(bx, by)
	}
	if !slices.EqualFunc(before, after[1:], same) {
		t.Fatalf("the replay changed the entries it found:\nbefore %+v\nafter  %+v", before, after[1:])
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
	want := map[expiry]string{}
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

// TestLedgerFilteredPages: a service's entries spread over a ledger longer
// than one read page (a plain client writes 2,400 entries of two services
// here, as the consumer would): the filtered read finds every one of the
// service's, newest first, once, across the pages read at the first
// page's revision.
func TestLedgerFilteredPages(t *testing.T) {
	e := newLedgerEnv(t)
	keys := registry.Keys{Prefix: "/service/"}
	const n = 2400
	var ops []clientv3.Op
	flush := func() {
		if _, err := e.cli.Txn(e.ctx()).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = ops[:0]
	}
	at := time.Now().UTC()
	for i := range n {
		svc := "fa"
		if i%3 == 0 {
			svc = "fb"
		}
		rev := int64(1_000_000 + i)
		x := registry.Expiration{Service: svc, ID: fmt.Sprintf("i%d", i), Address: "10.9.0.1:80", LeaseID: "1", ExpiredAt: at, ReportedBy: "m", Revision: rev, Cause: registry.ExpiryCauseTTL}
		b, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, clientv3.OpPut(keys.ExpiryEntry(rev, svc, x.ID), string(b)))
		if len(ops) == 500 {
			flush()
		}
	}
	flush()
	got, err := e.l.Expirations(e.ctx(), registry.ExpirationQuery{Service: "fb", Limit: 1000}) // pages of 1,001: three
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n/3 {
		t.Fatalf("service fb: %d entries, want %d", len(got), n/3)
	}
	for k, x := range got {
		want := int64(1_000_000 + n - 3 - 3*k) // the newest first: i = 2397, 2394, ...
		if x.Service != "fb" || x.Revision != want {
			t.Fatalf("entry %d: %s at revision %d, want fb at %d", k, x.Service, x.Revision, want)
		}
	}
}
