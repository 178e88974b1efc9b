package regdtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/registry"
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
	poll.Until(t, 15*time.Second, "leadership moves to "+c.Members[to].Name, func() error {
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

// WaitLeaseMarker waits until regd's marker is on lease
// (registry.Keys.LeaseMarker): from then on the lease's end shows in etcd's
// history. REST registrations write it themselves; the leader attaches it
// to plain clients' leases when it sees their put.
func WaitLeaseMarker(t testing.TB, cli *clientv3.Client, lease int64) {
	t.Helper()
	key := registry.Keys{}.LeaseMarker(lease)
	poll.Until(t, 10*time.Second, "the lease marker of "+key, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 1 || resp.Kvs[0].Lease != lease {
			return fmt.Errorf("no marker on lease %x", lease)
		}
		return nil
	})
}

// WaitLeaseGone waits until lease no longer exists (it ran out or was
// revoked).
func WaitLeaseGone(t testing.TB, cli *clientv3.Client, lease int64) {
	t.Helper()
	poll.Until(t, 10*time.Second, fmt.Sprintf("lease %x gone", lease), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(lease))
		if err != nil {
			return err
		}
		// GrantedTTL, not TTL: a live lease in its last second shows TTL 0.
		if ttl.GrantedTTL != 0 {
			return fmt.Errorf("lease %x still exists (%d s left)", lease, ttl.TTL)
		}
		return nil
	})
}

// History is etcd's history from revision from to revision to, both
// included: every event a watch from from delivers up to to. Tests use it
// to see what a step wrote, not merely that the revision moved.
func History(t testing.TB, cli *clientv3.Client, from, to int64) []*clientv3.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*clientv3.Event
	for resp := range cli.Watch(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(from)) {
		if err := resp.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Events {
			if ev.Kv.ModRevision > to {
				return out
			}
			out = append(out, ev)
		}
		if resp.Header.Revision >= to && len(out) > 0 && out[len(out)-1].Kv.ModRevision == to {
			return out
		}
	}
	t.Fatalf("history %d..%d: watch ended early", from, to)
	return nil
}

// BackgroundWrite reports whether key is one that leader-only work writes
// on its own schedule, under the default layout: the expiry reporter's
// cursor, ledger and lease markers, the compactor's revision clock, and
// the check owner's claim at the start of its term. A test that a request
// wrote nothing allows these, and nothing else.
func BackgroundWrite(key string) bool {
	k := registry.Keys{}
	return strings.HasPrefix(key, k.ExpiryCursor()) || strings.HasPrefix(key, k.ExpiryLog()) ||
		strings.HasPrefix(key, k.LeaseMarkers()) || key == registry.HistoryClockKey || key == k.ChecksOwner()
}
