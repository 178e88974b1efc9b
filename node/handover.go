package node

import (
	"context"
	"errors"
	"expvar"
	"fmt"
	"time"

	"go.etcd.io/raft/v3"
)

// Handing leadership over before a graceful stop.
//
// etcd's own graceful stop (embed.Etcd.Close in v3.7) first closes its
// client listeners, waiting up to its request timeout (5 s + 2 election
// timeouts, 7 s with default timers) for the gRPC streams of plain etcd
// clients to end, and only then, in EtcdServer.Stop, transfers leadership,
// to the voting member whose peer connection has been up longest. All the
// while this member leads, but regd's leader-only work (expiry reports,
// compaction) has already stopped. HandOver moves leadership first, to the
// member that needs no catching up, so that the next leader starts
// working at once; etcd's stop then finds nothing to transfer.

// ErrNoTransferee is HandOver's answer when this member leads others but
// cannot tell which of them is caught up: raft's progress is not
// available here (see HandOver), or no voter was recently active. etcd's
// stop then makes its own choice.
var ErrNoTransferee = errors.New("no caught-up voter known")

// HandOver moves raft leadership away from this member, when it leads a
// cluster of more than one voting member, to the voter whose log matches
// the leader's furthest (raft's progress Match; among those recently
// active), so that the transfer needs no catching up: raft refuses
// proposals while a transfer is under way, so a short one is what clients
// of the other members never notice. It waits until this member sees the
// new leader, at most two election timeouts (raft abandons a transfer
// after one) or until ctx ends. It returns the new leader's ID; 0 and nil
// when there was nothing to move (not the leader, or the only voter); 0
// and ErrNoTransferee (or the transfer's error) when etcd's stop has to
// try its own transfer.
//
// The progress is read from etcd's "raft.status" expvar, the only place
// etcd v3.7 publishes it. That variable describes the last member started
// in this process; a process with several members (in-process test
// clusters) may see another member's, which HandOver detects.
func (n *Node) HandOver(ctx context.Context) (uint64, error) {
	if !n.IsLeader() {
		return 0, nil
	}
	voters := 0
	for _, m := range n.etcd.Server.Cluster().Members() {
		if !m.IsLearner {
			voters++
		}
	}
	if voters < 2 {
		return 0, nil
	}
	election := time.Duration(n.cfg.ElectionMs) * time.Millisecond
	if election == 0 {
		election = time.Second
	}
	// With CheckQuorum (etcd's default) the leader clears every
	// follower's RecentActive once per election timeout and sets it again
	// at its next answer, a heartbeat later: read at that moment, no voter
	// looks active. So the status is read again, every heartbeat interval
	// (a tenth of the election timeout, etcd's ratio), for up to half an
	// election timeout before giving up.
	var to uint64
	for deadline := time.Now().Add(election / 2); ; {
		st, ok := localRaftStatus(n.ID())
		if !ok {
			return 0, fmt.Errorf("%w: raft.status describes another member of this process", ErrNoTransferee)
		}
		if to = pickTransferee(st); to != 0 || !time.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(election / 10):
		}
	}
	if to == 0 {
		return 0, fmt.Errorf("%w: no voter was recently active", ErrNoTransferee)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*election)
	defer cancel()
	if err := n.etcd.Server.MoveLeader(ctx, n.ID(), to); err != nil {
		return 0, fmt.Errorf("move leadership to %x: %w", to, err)
	}
	return to, nil
}

// localRaftStatus reads etcd's "raft.status" expvar and returns it when it
// is the status of the member with ID self, as its leader.
func localRaftStatus(self uint64) (raft.Status, bool) {
	v, ok := expvar.Get("raft.status").(expvar.Func)
	if !ok {
		return raft.Status{}, false
	}
	st, ok := v().(raft.Status)
	if !ok || st.ID != self || st.RaftState != raft.StateLeader {
		return raft.Status{}, false
	}
	return st, true
}

// pickTransferee is the voter other than the leader st describes whose
// log matches the leader's furthest, among those recently active (lowest
// ID on a tie, so the choice is stable); 0 when there is none.
func pickTransferee(st raft.Status) uint64 {
	var best uint64
	var bestMatch uint64
	for id, pr := range st.Progress {
		if id == st.ID || pr.IsLearner || !pr.RecentActive {
			continue
		}
		if best == 0 || pr.Match > bestMatch || (pr.Match == bestMatch && id < best) {
			best, bestMatch = id, pr.Match
		}
	}
	return best
}
