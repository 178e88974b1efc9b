package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/types"
)

// Membership changes go through the in-process client's Cluster API, the
// same calls `etcdctl member add|promote|remove` make, so etcd's own
// safety checks (--strict-reconfig-check, on by default) apply as they
// would there. Before asking etcd, RemoveMember applies the quorum rule
// itself so that a refusal says which rule and why (MembershipError).

// MembershipError is a membership change refused by a rule: Reason is
// one of the Reason* constants, Message a sentence for an operator.
type MembershipError struct {
	Reason  string
	Message string
	Err     error // etcd's error, when etcd refused
}

func (e *MembershipError) Error() string { return e.Message }
func (e *MembershipError) Unwrap() error { return e.Err }

// Reasons of a MembershipError.
const (
	ReasonNotFound       = "not_found"        // no member has that ID
	ReasonQuorum         = "quorum"           // the change would leave the cluster without a quorum of started voters, or without voters
	ReasonLearnerNotSync = "learner_not_sync" // the learner has not caught up with the leader yet (etcd's rule); retry
	ReasonConflict       = "conflict"         // a peer URL in use, a member that is no learner, too many learners
	ReasonInvalid        = "invalid"          // malformed input (peer URLs)
	ReasonSelf           = "self"             // removing the member that serves the request
	ReasonUnhealthy      = "unhealthy"        // etcd: this member has not been connected to a quorum for 5 s; retry
)

// Added is the answer of AddMember: the new member as the cluster knows it
// (no name, no client URLs until it starts) and every member after the
// change, to build its --initial-cluster from.
type Added struct {
	Member  Member
	Members []Member
}

// AddMember announces a new member with peerURLs; learner adds it as a
// non-voting learner (etcd allows one at a time), which is how a member
// should join: it catches up without counting towards the quorum, then is
// promoted. The member must then be started with the flags that the
// caller builds from Added (--initial-cluster-state existing).
func (n *Node) AddMember(ctx context.Context, peerURLs []string, learner bool) (Added, error) {
	for _, u := range peerURLs {
		if err := checkPeerURL(u); err != nil {
			return Added{}, &MembershipError{Reason: ReasonInvalid, Message: err.Error()}
		}
	}
	if len(peerURLs) == 0 {
		return Added{}, &MembershipError{Reason: ReasonInvalid, Message: "peer_urls must name at least one URL"}
	}
	add := n.client.MemberAdd
	if learner {
		add = n.client.MemberAddAsLearner
	}
	resp, err := add(ctx, peerURLs)
	if err != nil {
		return Added{}, membershipErr(err)
	}
	out := Added{Member: memberOf(resp.Member.Name, resp.Member.ID, resp.Member.PeerURLs, resp.Member.ClientURLs, resp.Member.IsLearner)}
	for _, m := range resp.Members {
		out.Members = append(out.Members, memberOf(m.Name, m.ID, m.PeerURLs, m.ClientURLs, m.IsLearner))
	}
	return out, nil
}

func memberOf(name string, id uint64, peers, clients []string, learner bool) Member {
	return Member{Name: name, ID: id, PeerURLs: append([]string(nil), peers...), ClientURLs: append([]string(nil), clients...), IsLearner: learner}
}

func checkPeerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("peer URL %q: want http(s)://host:port", s)
	}
	if u.Port() == "" {
		return fmt.Errorf("peer URL %q: needs a port", s)
	}
	return nil
}

// PromoteMember makes a learner a voting member. etcd refuses while the
// learner's log is behind the leader's (ReasonLearnerNotSync: retry).
func (n *Node) PromoteMember(ctx context.Context, id uint64) (Member, error) {
	if _, ok := n.member(id); !ok {
		return Member{}, notMember(id)
	}
	resp, err := n.client.MemberPromote(ctx, id)
	if err != nil {
		return Member{}, membershipErr(err)
	}
	for _, m := range resp.Members {
		if m.ID == id {
			return memberOf(m.Name, m.ID, m.PeerURLs, m.ClientURLs, m.IsLearner), nil
		}
	}
	return Member{}, notMember(id)
}

// RemoveMember removes a member. Learners can always go. A voting member
// goes only if at least one voter remains and the voters that remain and
// are up are a quorum (a majority) of the voters that remain (RemovalRule;
// "up": started, and its peer URL accepts a connection from this member
// within a second). A member that cannot be reached is thus not counted
// and may itself be removed: that is how a dead member is replaced. etcd
// then applies its own rule (--strict-reconfig-check: the members this one
// has been connected to for 5 s); its refusal is a quorum refusal too.
// The member serving the request is not removed here: it would stop
// before it could answer.
func (n *Node) RemoveMember(ctx context.Context, id uint64) error {
	m, ok := n.member(id)
	if !ok {
		return notMember(id)
	}
	if id == n.ID() {
		return &MembershipError{Reason: ReasonSelf, Message: fmt.Sprintf("member %x serves this request and would stop before answering; ask another member to remove it", id)}
	}
	if !m.IsLearner {
		ms := n.Members()
		if err := RemovalRule(ms, id, n.reachable(ctx, ms)); err != nil {
			return err
		}
	}
	if _, err := n.client.MemberRemove(ctx, id); err != nil {
		err = membershipErr(err)
		var me *MembershipError
		if errors.As(err, &me) && me.Reason == ReasonUnhealthy {
			me.Reason = ReasonQuorum
			me.Message = "etcd refused: this member has not been connected to enough of the others for the last 5 s to be sure the removal keeps a quorum; retry when the cluster is healthy"
		}
		return err
	}
	return nil
}

// Removed reports whether this member has been removed from its cluster
// (etcd then stops it for good: its data dir cannot rejoin).
func (n *Node) Removed() bool {
	return !n.etcd.Server.IsMemberExist(types.ID(n.ID()))
}

// RemovalRule is the quorum rule for removing voting member id from ms:
// at least one voter must remain, and the voters that remain and are up
// (up[ID]; a member added but never started is down) must be a quorum,
// a majority, of the voters that remain.
func RemovalRule(ms []Member, id uint64, up map[uint64]bool) error {
	voters, alive := 0, 0
	var down []string
	for _, m := range ms {
		if m.ID == id || m.IsLearner {
			continue
		}
		voters++
		if m.Started() && up[m.ID] {
			alive++
		} else {
			down = append(down, memberLabel(m))
		}
	}
	if voters == 0 {
		return &MembershipError{Reason: ReasonQuorum, Message: fmt.Sprintf("member %x is the last voting member; a cluster needs at least one", id)}
	}
	if quorum := voters/2 + 1; alive < quorum {
		return &MembershipError{Reason: ReasonQuorum, Message: fmt.Sprintf(
			"removing member %x would leave %d voting members of which %d are up (down or never started: %s), fewer than the quorum of %d; bring members back, or remove the ones that are down first",
			id, voters, alive, strings.Join(down, ", "), quorum)}
	}
	return nil
}

func memberLabel(m Member) string {
	if m.Name != "" {
		return m.Name
	}
	return fmt.Sprintf("%x", m.ID)
}

// reachable tells, for every member, whether this member can open a TCP
// connection to one of its peer URLs within a second (itself: yes).
func (n *Node) reachable(ctx context.Context, ms []Member) map[uint64]bool {
	up := map[uint64]bool{n.ID(): true}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range ms {
		if m.ID == n.ID() {
			continue
		}
		wg.Go(func() {
			for _, raw := range m.PeerURLs {
				u, err := url.Parse(raw)
				if err != nil {
					continue
				}
				d := net.Dialer{Timeout: time.Second}
				conn, err := d.DialContext(ctx, "tcp", u.Host)
				if err == nil {
					conn.Close()
					mu.Lock()
					up[m.ID] = true
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return up
}

func (n *Node) member(id uint64) (Member, bool) {
	for _, m := range n.Members() {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

func notMember(id uint64) error {
	return &MembershipError{Reason: ReasonNotFound, Message: fmt.Sprintf("no member has ID %x", id)}
}

// membershipErr classifies etcd's refusals; other errors (no leader, a
// timeout) are returned as they are.
func membershipErr(err error) error {
	desc := rpctypes.ErrorDesc(err)
	is := func(e error) bool { return errors.Is(err, e) || desc == rpctypes.ErrorDesc(e) }
	switch {
	case is(rpctypes.ErrGRPCMemberNotFound):
		return &MembershipError{Reason: ReasonNotFound, Message: "no such member", Err: err}
	case is(rpctypes.ErrGRPCLearnerNotReady):
		return &MembershipError{Reason: ReasonLearnerNotSync, Message: "the learner has not caught up with the leader yet; promote it again in a moment", Err: err}
	case is(rpctypes.ErrGRPCMemberNotEnoughStarted):
		return &MembershipError{Reason: ReasonQuorum, Message: "etcd refused: the change would leave fewer started voting members than a quorum", Err: err}
	case is(rpctypes.ErrGRPCPeerURLExist):
		return &MembershipError{Reason: ReasonConflict, Message: "a member with that peer URL exists already", Err: err}
	case is(rpctypes.ErrGRPCMemberNotLearner):
		return &MembershipError{Reason: ReasonConflict, Message: "the member is a voting member already, not a learner", Err: err}
	case is(rpctypes.ErrGRPCTooManyLearners):
		return &MembershipError{Reason: ReasonConflict, Message: "the cluster has a learner already; promote or remove it first (etcd allows one)", Err: err}
	case is(rpctypes.ErrGRPCMemberBadURLs):
		return &MembershipError{Reason: ReasonInvalid, Message: "the peer URLs are not valid", Err: err}
	case is(rpctypes.ErrGRPCUnhealthy):
		return &MembershipError{Reason: ReasonUnhealthy, Message: "etcd refused: this member has not been connected to a quorum of the others for the last 5 s, so the change could break the active quorum; retry when the cluster is healthy", Err: err}
	}
	return err
}
