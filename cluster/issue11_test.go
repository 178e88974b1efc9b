package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// TestIssue11DeleteIsNotAnExpiryAfterCompactionAndLeaderMove replays issue
// 11's report as it was filed, with etcdctl's operations done through a
// plain gRPC client: two members; zz/z2 and zz/z3 registered over REST; z2
// overwritten without a lease and deleted; z3 overwritten on a 3 s lease
// that runs out (one expiry, correct); once z2's REST lease is gone too, a
// write outside the prefix, a compaction to the head and a move of
// leadership. The new leader used to reconcile from the meta records and
// report z3 a second time and z2 as expired, both with the REST lease and
// address. z2 was deleted, never expired; z3 expired once. The REST TTL is
// 3 s instead of the report's 60 s: what matters is that the lease ran out
// before the compaction.
func TestIssue11DeleteIsNotAnExpiryAfterCompactionAndLeaderMove(t *testing.T) {
	needsCluster(t)
	t.Parallel()
	c := startCluster(t, 2)
	leader := c.WaitLeader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli := c.EtcdClient(t, leader)

	z2 := register(t, c.Members[0], "zz", "z2", "10.11.0.2:80", 3)
	z3 := register(t, c.Members[1], "zz", "z3", "10.11.0.3:80", 3)

	// etcdctl put /service/zz/z2 10.11.0.22:80; etcdctl del /service/zz/z2
	if _, err := cli.Put(ctx, "/service/zz/z2", "10.11.0.22:80"); err != nil {
		t.Fatal(err)
	}
	if resp, err := cli.Delete(ctx, "/service/zz/z2"); err != nil || resp.Deleted != 1 {
		t.Fatalf("del z2: %v %+v", err, resp)
	}
	// etcdctl lease grant 3; etcdctl put /service/zz/z3 10.11.0.33:80 --lease=<it>
	l3, err := cli.Grant(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/service/zz/z3", "10.11.0.33:80", clientv3.WithLease(l3.ID)); err != nil {
		t.Fatal(err)
	}
	// z3 expires once, on the plain lease and address; z2 never does.
	want := map[key]string{{Service: "zz", ID: "z3", Lease: registry.FormatLease(int64(l3.ID))}: "10.11.0.33:80"}
	forbidden := map[string]bool{"zz/z2": true}
	c.WaitExpiries(t, 15*time.Second, ledgertest.Expected{Want: want, Forbidden: forbidden})

	// z2's REST lease has run out (or was revoked when its key was taken).
	for _, lease := range []string{z2.LeaseID, z3.LeaseID} {
		id, _ := parseLeaseID(lease)
		regdtest.WaitLeaseGone(t, cli, id)
	}

	// etcdctl put /other x; etcdctl compact <head>; etcdctl move-leader <other>
	put, err := cli.Put(ctx, "/other/issue11", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, put.Header.Revision); err != nil {
		t.Fatalf("compact to %d: %v", put.Header.Revision, err)
	}
	other := 1 - leader
	if _, err := cli.MoveLeader(ctx, c.Members[other].Server().Node().ID()); err != nil {
		t.Fatalf("move-leader: %v", err)
	}
	if now := c.WaitLeader(t); now != other {
		t.Fatalf("leader is member %d after move-leader to %d", now, other)
	}

	// A later expiry, reported by the new leader, is the positive marker
	// that it has gone through everything before it.
	barrier := register(t, c.Members[other], "zz-barrier", "b", "10.11.0.9:80", 2)
	want[keyOfInstance(barrier)] = barrier.Address
	c.WaitExpiries(t, 20*time.Second, ledgertest.Expected{Want: want, Forbidden: forbidden, Each: func(e ledgertest.Entry) error {
		if e.Service == "zz-barrier" && e.ReportedBy != c.Members[other].Name {
			return fmt.Errorf("the barrier was reported by %s, not the new leader %s", e.ReportedBy, c.Members[other].Name)
		}
		return nil
	}})
}

func parseLeaseID(s string) (int64, error) {
	var id int64
	_, err := fmt.Sscan(s, &id)
	return id, err
}
