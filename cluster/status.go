// Package cluster owns what depends on raft leadership: following who leads,
// running leader-only work (the expiry reporter, compaction) under a context
// that ends the moment this member stops leading, and the cluster status the
// API shows. See DESIGN.md.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/regd/regd/node"
	"github.com/regd/regd/registry"
)

// Node is what this package needs of the embedded member (node.Node).
type Node interface {
	Name() string
	ID() uint64
	Leader() uint64
	Term() uint64
	LeaderChanged() <-chan struct{}
	Members() []node.Member
	MemberName(id uint64) string
	// Revision is the newest revision this member has applied.
	Revision() int64
	// StorageErr is nil while the member's data dir works (node.StorageError).
	StorageErr() error
	// Alarms are etcd's raised alarms (node.Alarm).
	Alarms() []node.Alarm
}

// Info answers readiness and status questions about the cluster.
type Info struct {
	n Node
}

// NewInfo returns an Info over n.
func NewInfo(n Node) *Info { return &Info{n: n} }

// Ready is nil when the member knows a leader and its disk works. A member
// on the minority side of a partition loses its leader after an election
// timeout and turns not-ready, so load balancers route around it; so does
// one whose data dir went read-only, because etcd stops at its next write.
// A disk that is merely short of space keeps the member ready: it serves
// reads and heartbeats.
//
// etcd's CORRUPT alarm makes the member not ready: etcd found members whose
// data disagree, and refuses writes cluster-wide until an operator has
// dealt with it. NOSPACE does not: it is etcd's space quota (or regd's
// disk guard), reads, heartbeats and watches go on, and a whole cluster
// turning not-ready would take those away from every client too; the
// alarm shows in /readyz's body (Alarms), in /v1/cluster, in the metric
// regd_etcd_alarm and in the log instead.
func (i *Info) Ready() error {
	for _, a := range i.n.Alarms() {
		if a.Type == "CORRUPT" {
			return fmt.Errorf("etcd's CORRUPT alarm is raised (member %s): members' data disagree; writes are refused until an operator resolves it and disarms the alarm", i.memberName(a.MemberID))
		}
	}
	var se *node.StorageError
	if errors.As(i.n.StorageErr(), &se) && se.Failed {
		return fmt.Errorf("this node cannot write its data dir: %v", se.Err)
	}
	if i.n.Leader() == 0 {
		return errors.New("this node's embedded etcd is not ready or knows no leader")
	}
	return nil
}

// Status describes the cluster as this member sees it. The revision is the
// member's own applied revision, so that it answers even without a quorum.
func (i *Info) Status(context.Context) (registry.ClusterStatus, error) {
	leader := i.n.Leader()
	st := registry.ClusterStatus{
		Node:     i.n.Name(),
		Leader:   i.n.MemberName(leader),
		Term:     i.n.Term(),
		Revision: i.n.Revision(),
		Members:  []registry.MemberStatus{},
	}
	for _, m := range i.n.Members() {
		st.Members = append(st.Members, registry.MemberStatus{
			Name:       m.Name,
			ID:         strconv.FormatUint(m.ID, 16),
			PeerURLs:   nonNil(m.PeerURLs),
			ClientURLs: nonNil(m.ClientURLs),
			IsLeader:   m.ID == leader,
			IsLearner:  m.IsLearner,
		})
	}
	st.Alarms = i.Alarms()
	return st, nil
}

// Alarms lists etcd's raised alarms as "<TYPE> (member <name>)".
func (i *Info) Alarms() []string {
	out := []string{}
	for _, a := range i.n.Alarms() {
		out = append(out, fmt.Sprintf("%s (member %s)", a.Type, i.memberName(a.MemberID)))
	}
	return out
}

func (i *Info) memberName(id uint64) string {
	if name := i.n.MemberName(id); name != "" {
		return name
	}
	return strconv.FormatUint(id, 16)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
