package api_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// TestSSEEventIDsUniquePerEvent (contract v2, "SSE event ids are unique per
// event"; issue 11): revisions that change several instances at once (a
// plain client's transaction, keys sharing a lease that is revoked, a
// transaction of deletes) give each event an id of its own, and a stream
// resumed after any of them, on the same member or another, continues with
// the next event: nothing missing, nothing twice. "Nothing more" is
// asserted against a marker event written after everything else.
func TestSSEEventIDsUniquePerEvent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	t.Parallel()
	c := regdtest.StartCluster(t, 3)
	cli := c.EtcdClient(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	head, err := cli.Get(ctx, "/service/ids/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	before := head.Header.Revision

	// Four revisions of three puts each, with another service's key in
	// the middle of each (its event takes an index too).
	for r := range 4 {
		ops := []clientv3.Op{}
		for j := range 3 {
			if j == 1 {
				ops = append(ops, clientv3.OpPut(fmt.Sprintf("/service/ids-other/o%d", r), "10.9.0.1:80"))
			}
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/service/ids/k%d-%d", r, j), fmt.Sprintf("10.0.%d.%d:80", r, j)))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// Three keys on one lease, put together and ended together.
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	var leased []clientv3.Op
	for j := range 3 {
		leased = append(leased, clientv3.OpPut(fmt.Sprintf("/service/ids/l%d", j), "10.1.0.1:80", clientv3.WithLease(lease.ID)))
	}
	if _, err := cli.Txn(ctx).Then(leased...).Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	// A transaction of deletes.
	if _, err := cli.Txn(ctx).Then(clientv3.OpDelete("/service/ids/k0-0"), clientv3.OpDelete("/service/ids/k0-2")).Commit(); err != nil {
		t.Fatal(err)
	}
	// The marker: the last event of the service.
	if _, err := cli.Put(ctx, "/service/ids/zz-marker", "10.2.0.1:80"); err != nil {
		t.Fatal(err)
	}

	// readAll reads a stream's events up to and including the marker.
	readAll := func(t *testing.T, s *sseStream) []sseEvent {
		t.Helper()
		var out []sseEvent
		for {
			e := s.next(t, 15*time.Second)
			out = append(out, e)
			if e.instance(t).ID == "zz-marker" {
				return out
			}
		}
	}
	watch := func(m int) string { return c.Members[m].URL("/v1/services/ids/watch") }
	all := readAll(t, openSSE(t, watch(1), strconv.FormatInt(before, 10)))
	// 12 puts, 3 leased puts, their 3 removals, 2 deletes, the marker.
	if len(all) != 21 {
		t.Fatalf("%d events, want 21: %v", len(all), all)
	}
	seen := map[string]bool{}
	var last registry.EventID
	perRev := map[int64]int{}
	for i, e := range all {
		id, ok := registry.ParseEventID(e.ID)
		if !ok {
			t.Fatalf("event %d: id %q is not an event id", i, e.ID)
		}
		if seen[e.ID] {
			t.Fatalf("id %q twice: %v", e.ID, all)
		}
		seen[e.ID] = true
		if i > 0 && !(id.Rev > last.Rev || id.Rev == last.Rev && id.Index > last.Index) {
			t.Fatalf("event %d: id %s does not follow %s", i, id, last)
		}
		last = id
		perRev[id.Rev]++
	}
	for _, e := range all {
		id, _ := registry.ParseEventID(e.ID)
		// Several events in a revision: each id names its index; the
		// only event of a revision keeps the bare revision.
		if multi := perRev[id.Rev] > 1; multi != (id.Index != registry.WholeRevision) {
			t.Fatalf("id %s in a revision with %d events of this service", e.ID, perRev[id.Rev])
		}
	}
	// The other service's event sits between k<r>-0 and k<r>-1: indexes
	// count the revision's events of every service.
	if first, _ := registry.ParseEventID(all[0].ID); first.Index != 0 {
		t.Fatalf("first event %s", all[0])
	} else if second, _ := registry.ParseEventID(all[1].ID); second.Index != 2 {
		t.Fatalf("second event %s, want index 2 (index 1 is ids-other's)", all[1])
	}

	same := func(t *testing.T, got, want []sseEvent, from string, member int) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("resume after %s on m%d: %d events, want %d:\ngot  %v\nwant %v", from, member, len(got), len(want), got, want)
		}
		for i := range got {
			if got[i].ID != want[i].ID || got[i].Event != want[i].Event || got[i].instance(t).ID != want[i].instance(t).ID {
				t.Fatalf("resume after %s on m%d: event %d is %s, want %s", from, member, i, got[i], want[i])
			}
		}
	}
	for k := range len(all) - 1 {
		m := k % 3
		s := openSSE(t, watch(m), all[k].ID)
		same(t, readAll(t, s), all[k+1:], all[k].ID, m)
		s.Close()
	}

	// Every service: the other service's events are there, with the
	// indexes the service's stream skipped; a resume after one of them on
	// the service's stream continues with the next event of the service.
	everything := readAll(t, openSSE(t, c.Members[2].URL("/v1/watch"), strconv.FormatInt(before, 10)))
	var otherID string
	for _, e := range everything {
		if e.instance(t).Service == "ids-other" {
			otherID = e.ID
			break
		}
	}
	if otherID != all[0].ID[:len(all[0].ID)-1]+"1" {
		t.Fatalf("ids-other's first event has id %q; ids' first is %q", otherID, all[0].ID)
	}
	same(t, readAll(t, openSSE(t, watch(0), otherID)), all[1:], otherID, 0)
}
