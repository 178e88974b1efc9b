package regdtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdClientAll is a plain gRPC etcd client to every member's client URL
// (it fails over between them), closed when the test ends.
func (c *Cluster) EtcdClientAll(t testing.TB) *clientv3.Client {
	t.Helper()
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// MoveLeader hands leadership to member to, as etcdctl move-leader does
// (the request goes to the current leader), and waits until every running
// member agrees.
func (c *Cluster) MoveLeader(t testing.TB, to int) {
	t.Helper()
	from := c.WaitLeader(t)
	if from == to {
		return
	}
	cli := c.EtcdClient(t, from)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := cli.MoveLeader(ctx, c.Members[to].Server().Node().ID()); err != nil {
		t.Fatalf("move leader from %s to %s: %v", c.Members[from].Name, c.Members[to].Name, err)
	}
	Eventually(t, 15*time.Second, func() error {
		if now := c.WaitLeader(t); now != to {
			return fmt.Errorf("leader is %s, not %s", c.Members[now].Name, c.Members[to].Name)
		}
		return nil
	})
}

// CompactToHead writes a key outside the registry and compacts etcd's
// history up to it, as a plain client would (etcdctl compact): past
// regd's expiry cursor. It returns the compaction revision.
func (c *Cluster) CompactToHead(t testing.TB, cli *clientv3.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	put, err := cli.Put(ctx, "/regdtest/compact-marker", time.Now().String())
	if err != nil {
		t.Fatalf("put before compaction: %v", err)
	}
	if _, err := cli.Compact(ctx, put.Header.Revision); err != nil {
		t.Fatalf("compact to %d: %v", put.Header.Revision, err)
	}
	return put.Header.Revision
}
