package cluster_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
)

// TestCompactionAcrossLeaderChanges: with leadership moving more often
// than the retention, history is still compacted on schedule, because the
// revision clock is in etcd, not in the leader's memory. Before, each new
// leader sampled revisions itself and waited a full retention before its
// first compaction, so such a cluster never compacted.
func TestCompactionAcrossLeaderChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster")
	}
	// Terms of 6 s, shorter than the retention (9 s), and longer than the
	// 5 s after which an idle expiry reporter moves its cursor
	// (registry.DefaultCursorIdle; the cursor bounds compaction, and a
	// new leader's reporter starts that wait over).
	const retention, term = 9 * time.Second, 6 * time.Second
	c := regdtest.StartCluster(t, 3, regdtest.Options{HistoryRetention: retention})
	cli := c.EtcdClientAll(t)
	ctx := t.Context()
	put, err := cli.Put(ctx, "/regdtest/before", "x")
	if err != nil {
		t.Fatal(err)
	}
	before := put.Header.Revision
	began := time.Now()
	// Leadership moves every term until the revision written first is
	// compacted away.
	compacted := func() bool {
		_, err := cli.Get(ctx, "/regdtest/before", clientv3.WithRev(before))
		return errors.Is(err, rpctypes.ErrCompacted)
	}
	moves := 0
	poll.Until(t, 4*retention, fmt.Sprintf("revision %d compacted", before), func() error {
		if compacted() {
			return nil
		}
		// A registry key (a plain client's instance without a lease): the
		// expiry cursor follows the registry's revisions, and compaction
		// never passes the cursor.
		if _, err := cli.Put(ctx, "/service/churn/c1", fmt.Sprintf("10.0.0.1:%d", 1000+moves)); err != nil {
			t.Fatal(err)
		}
		c.MoveLeader(t, (c.WaitLeader(t)+1)%3)
		moves++
		// The length of each leader's term, which is what is under test;
		// nothing waits on this sleep.
		time.Sleep(term)
		return fmt.Errorf("not compacted %s after it was written, with %d leader changes", time.Since(began).Round(time.Millisecond), moves)
	})
	took := time.Since(began)
	if moves < 2 {
		t.Errorf("only %d leader changes before the compaction: the test did not change leaders faster than the retention", moves)
	}
	t.Logf("revision %d compacted %s after it was written (retention %s), across %d leader changes", before, took.Round(time.Millisecond), retention, moves)
}
