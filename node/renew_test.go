package node_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
)

// renewOn renews lease id through member i's node.
func renewOn(c *regdtest.Cluster, i int, id clientv3.LeaseID) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.Members[i].Server().Node().RenewLease(ctx, int64(id))
}

// waitStream renews id on member i until a renewal has gone over the
// follower's stream to the leader (the streams open in the background; the
// first renewals take etcd's forwarding).
func waitStream(t *testing.T, c *regdtest.Cluster, i int, id clientv3.LeaseID) {
	t.Helper()
	n := c.Members[i].Server().Node()
	before := n.Renewals().Stream
	poll.Until(t, 10*time.Second, "a renewal over "+c.Members[i].Name+"'s stream to the leader", func() error {
		if ttl, err := renewOn(c, i, id); err != nil || ttl <= 0 {
			return fmt.Errorf("renewal: ttl %d, %v", ttl, err)
		}
		if got := n.Renewals().Stream; got == before {
			return fmt.Errorf("no stream renewal yet (%+v)", n.Renewals())
		}
		return nil
	})
}

// TestRenewLease: the leader renews in process, a follower over its stream
// to the leader; both give the lease's TTL, and a lease that does not exist
// is rpctypes.ErrLeaseNotFound on either. After leadership moves, the
// former leader renews over a stream to the new one, and renewals keep
// succeeding on every member throughout.
func TestRenewLease(t *testing.T) {
	c := regdtest.StartCluster(t, 3)
	leader := c.WaitLeader(t)
	follower := (leader + 1) % 3
	cli := c.EtcdClient(t, leader)
	g, err := cli.Grant(context.Background(), 60)
	if err != nil {
		t.Fatal(err)
	}
	ln := c.Members[leader].Server().Node()
	before := ln.Renewals()
	if ttl, err := renewOn(c, leader, g.ID); err != nil || ttl < 59 || ttl > 60 {
		t.Fatalf("renewal at the leader: ttl %d, %v; want 60", ttl, err)
	}
	if after := ln.Renewals(); after.Local != before.Local+1 || after.Fallback != before.Fallback {
		t.Fatalf("the leader's renewal took the wrong path: %+v then %+v", before, after)
	}
	waitStream(t, c, follower, g.ID)
	for _, i := range []int{leader, follower} {
		if ttl, err := renewOn(c, i, 0x7eadbeef); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			t.Fatalf("renewing a lease that does not exist on %s: ttl %d, %v; want ErrLeaseNotFound", c.Members[i].Name, ttl, err)
		}
	}
	// Once the stream is up, a follower's renewals all take it.
	fn := c.Members[follower].Server().Node()
	before = fn.Renewals()
	for range 50 {
		if ttl, err := renewOn(c, follower, g.ID); err != nil || ttl < 59 {
			t.Fatalf("renewal on the follower: ttl %d, %v", ttl, err)
		}
	}
	if after := fn.Renewals(); after.Stream != before.Stream+50 || after.Fallback != before.Fallback {
		t.Fatalf("50 renewals on the follower: %+v then %+v, want all over the stream", before, after)
	}

	// Leadership moves to the follower while every member keeps renewing.
	stop := make(chan struct{})
	errs := make(chan error, 3)
	for i := range 3 {
		go func() {
			var err error
			for {
				select {
				case <-stop:
					errs <- err
					return
				default:
				}
				if ttl, rerr := renewOn(c, i, g.ID); (rerr != nil || ttl <= 0) && err == nil {
					err = fmt.Errorf("%s: ttl %d, %v", c.Members[i].Name, ttl, rerr)
				}
			}
		}()
	}
	c.MoveLeader(t, follower)
	waitStream(t, c, leader, g.ID)
	close(stop)
	for range 3 {
		if err := <-errs; err != nil {
			t.Errorf("a renewal failed while leadership moved: %v", err)
		}
	}
}

// TestRenewLeaseLeaderKilled: when the leader dies, a follower's renewals
// go to the new leader over new streams; the lease is not lost.
func TestRenewLeaseLeaderKilled(t *testing.T) {
	c := regdtest.StartCluster(t, 3)
	leader := c.WaitLeader(t)
	follower := (leader + 1) % 3
	g, err := c.EtcdClient(t, follower).Grant(context.Background(), 60)
	if err != nil {
		t.Fatal(err)
	}
	waitStream(t, c, follower, g.ID)
	old := c.Members[leader].Server().Node().ID()
	c.Kill(leader)
	poll.Until(t, 15*time.Second, "a new leader", func() error {
		n := c.Members[follower].Server().Node()
		if l := n.Leader(); l == 0 || l == old {
			return errors.New("no new leader yet")
		}
		return nil
	})
	if c.Members[follower].Server().Node().IsLeader() {
		follower = 3 - leader - follower // renew on the member that is a follower now
	}
	waitStream(t, c, follower, g.ID)
}
