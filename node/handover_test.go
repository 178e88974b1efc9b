package node_test

import (
	"context"
	"expvar"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/tracker"

	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/node"
)

func TestPickTransferee(t *testing.T) {
	st := func(prs map[uint64]tracker.Progress) raft.Status {
		s := raft.Status{Progress: prs}
		s.ID = 1
		return s
	}
	tests := []struct {
		name string
		prs  map[uint64]tracker.Progress
		want uint64
	}{
		{"the voter furthest along", map[uint64]tracker.Progress{
			1: {Match: 100, RecentActive: true},
			2: {Match: 90, RecentActive: true},
			3: {Match: 99, RecentActive: true},
		}, 3},
		{"not an inactive one, however far along", map[uint64]tracker.Progress{
			1: {Match: 100, RecentActive: true},
			2: {Match: 90, RecentActive: true},
			3: {Match: 100, RecentActive: false},
		}, 2},
		{"never a learner", map[uint64]tracker.Progress{
			1: {Match: 100, RecentActive: true},
			2: {Match: 90, RecentActive: true},
			4: {Match: 100, RecentActive: true, IsLearner: true},
		}, 2},
		{"the lowest ID on a tie", map[uint64]tracker.Progress{
			1: {Match: 100, RecentActive: true},
			5: {Match: 100, RecentActive: true},
			3: {Match: 100, RecentActive: true},
		}, 3},
		{"none: alone", map[uint64]tracker.Progress{
			1: {Match: 100, RecentActive: true},
		}, 0},
		{"none: the others are down", map[uint64]tracker.Progress{
			1: {Match: 100, RecentActive: true},
			2: {Match: 100},
		}, 0},
	}
	for _, tt := range tests {
		if got := node.PickTransferee(st(tt.prs)); got != tt.want {
			t.Errorf("%s: picked %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestHandOver moves leadership with HandOver on a real three-member
// cluster. etcd publishes the raft status of the last member started in a
// process only, so the test first makes that member the leader.
func TestHandOver(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three etcd members")
	}
	c := regdtest.StartCluster(t, 3)
	st, ok := expvar.Get("raft.status").(expvar.Func)().(raft.Status)
	if !ok {
		t.Fatal("no raft.status expvar")
	}
	described := -1
	for i, m := range c.Members {
		if m.Server().Node().ID() == st.ID {
			described = i
		}
	}
	if described < 0 {
		t.Fatalf("raft.status describes member %x, not one of this cluster", st.ID)
	}
	c.MoveLeader(t, described)
	leader := c.Members[described].Server().Node()
	follower := c.Members[(described+1)%3].Server().Node()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if to, err := follower.HandOver(ctx); to != 0 || err != nil {
		t.Fatalf("a follower's HandOver: %x %v, want nothing moved", to, err)
	}
	to, err := leader.HandOver(ctx)
	if err != nil || to == 0 || to == leader.ID() {
		t.Fatalf("HandOver: %x %v, want another member", to, err)
	}
	poll.Until(t, 10*time.Second, "every member follows the new leader", func() error {
		for _, m := range c.Members {
			if l := m.Server().Node().Leader(); l != to {
				return fmt.Errorf("%s sees leader %x, want %x", m.Name, l, to)
			}
		}
		return nil
	})
}
