package node

import (
	"context"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Lease deadlines, for the expiry lag (cluster's deadline tracker).
//
// A lease's deadline (its last renewal + TTL) lives in the leader's lessor
// only, and etcd forgets it with the lease: by the time the expiry report
// is written, nothing in etcd remembers when the lease was due. etcd
// exposes the deadline only as the time left, in whole seconds, truncated
// toward zero (LeaseTimeToLive's TTL); a follower's lessor holds no
// deadlines at all. So the leader samples: LeaseDeadline turns one answer
// into the interval the deadline lies in, one second wide, and the
// tracker narrows it by intersecting later samples.

// LeaseDeadline is the interval [earliest, latest] in which lease id is
// due to run out, as this member's lessor says now; ok is false when this
// member is not the leader (only the primary lessor keeps deadlines) or
// the lease does not exist. It asks the lessor directly, without a client
// or a round trip (an in-process LeaseTimeToLive on the leader).
func (n *Node) LeaseDeadline(id int64) (earliest, latest time.Time, ok bool) {
	if !n.IsLeader() {
		return time.Time{}, time.Time{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	now := time.Now()
	resp, err := n.etcd.Server.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: id})
	if err != nil || resp.GrantedTTL <= 0 {
		return time.Time{}, time.Time{}, false
	}
	// TTL is int64(remaining seconds): truncated toward zero, so a
	// positive answer t means [t, t+1) left, a negative one (expired, not
	// revoked yet) (t-1, t], and 0 anything in (-1, 1).
	left := time.Duration(resp.TTL) * time.Second
	switch {
	case resp.TTL > 0:
		return now.Add(left), now.Add(left + time.Second), true
	case resp.TTL < 0:
		return now.Add(left - time.Second), now.Add(left), true
	}
	return now.Add(-time.Second), now.Add(time.Second), true
}

// LeaseIDs lists every lease this member's lessor holds (etcd's
// LeaseLeases, served locally). The deadline tracker starts each term
// from it.
func (n *Node) LeaseIDs(ctx context.Context) ([]int64, error) {
	resp, err := n.etcd.Server.LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
	if err != nil {
		return nil, err
	}
	ids := make([]int64, len(resp.Leases))
	for i, l := range resp.Leases {
		ids[i] = l.ID
	}
	return ids, nil
}
