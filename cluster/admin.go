package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/regd/regd/node"
	"github.com/regd/regd/registry"
)

// AdminNode is what Admin needs of the embedded member (node.Node).
type AdminNode interface {
	Node
	AddMember(ctx context.Context, peerURLs []string, learner bool) (node.Added, error)
	PromoteMember(ctx context.Context, id uint64) (node.Member, error)
	RemoveMember(ctx context.Context, id uint64) error
	Snapshot(ctx context.Context) (io.ReadCloser, error)
}

// Admin operates the cluster: membership and backups (the API's admin
// routes). It turns the member's refusals into registry errors.
//
// Membership changes are bounded by MemberTimeout: etcd waits for a
// configuration change to be applied without a deadline of its own, and a
// change proposed while the cluster has no leader (just after the leader
// died) is dropped by raft without a word, so an unbounded request would
// hang until the client gave up. Past the timeout the answer is 503; the
// change may still have been applied (look at GET /v1/cluster) and is safe
// to retry.
type Admin struct {
	n AdminNode
}

// MemberTimeout bounds a membership change: etcd's request timeout (5 s)
// plus room for an election.
const MemberTimeout = 10 * time.Second

// NewAdmin returns an Admin over n.
func NewAdmin(n AdminNode) *Admin { return &Admin{n: n} }

// memberName is the rule of regd's --name, narrowed to characters that
// need no quoting in a shell or a URL.
var memberName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// AddMember announces a new member and says how to start it: the exact
// --initial-cluster (every member's name=peer-url, the new one's included)
// and the flags (--initial-cluster-state existing). The name must be new:
// etcd learns a member's name only when it starts, so regd checks it
// against the members that have.
func (a *Admin) AddMember(ctx context.Context, req registry.MemberAdd) (registry.MemberAdded, error) {
	if !memberName.MatchString(req.Name) {
		return registry.MemberAdded{}, registry.Errorf(registry.KindInvalid, registry.CodeInvalidMember,
			"name %q: want 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'", req.Name)
	}
	if len(req.PeerURLs) == 0 {
		return registry.MemberAdded{}, registry.Errorf(registry.KindInvalid, registry.CodeInvalidMember, "peer_urls: want at least one URL, such as http://10.0.0.4:2380")
	}
	for _, m := range a.n.Members() {
		if m.Name == req.Name {
			return registry.MemberAdded{}, registry.Errorf(registry.KindConflict, registry.CodeMemberConflict, "a member named %q exists already (ID %x)", req.Name, m.ID)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, MemberTimeout)
	defer cancel()
	added, err := a.n.AddMember(ctx, req.PeerURLs, req.Learner)
	if err != nil {
		return registry.MemberAdded{}, membershipError(err)
	}
	var entries []string
	for _, m := range added.Members {
		name := m.Name
		if m.ID == added.Member.ID {
			name = req.Name
		}
		if name == "" {
			// Added before and never started: etcd knows no name for it.
			// The new member must list it all the same; the operator
			// knows the name it was added with.
			name = fmt.Sprintf("<name of member %x>", m.ID)
		}
		for _, u := range m.PeerURLs {
			entries = append(entries, name+"="+u)
		}
	}
	initial := strings.Join(entries, ",")
	peers := strings.Join(req.PeerURLs, ",")
	st := memberStatus(added.Member, 0)
	st.Name = req.Name
	return registry.MemberAdded{
		Member:         st,
		InitialCluster: initial,
		Flags: []string{
			"--name=" + req.Name,
			"--initial-advertise-peer-urls=" + peers,
			"--listen-peer-urls=" + peers,
			"--listen-client-urls=<client-url>",
			"--advertise-client-urls=<client-url>",
			"--http-addr=<host:port>",
			"--data-dir=<dir>",
			"--initial-cluster=" + initial,
			"--initial-cluster-state=existing",
		},
	}, nil
}

// PromoteMember makes the learner id a voting member.
func (a *Admin) PromoteMember(ctx context.Context, id uint64) (registry.MemberStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, MemberTimeout)
	defer cancel()
	m, err := a.n.PromoteMember(ctx, id)
	if err != nil {
		return registry.MemberStatus{}, membershipError(err)
	}
	return memberStatus(m, a.n.Leader()), nil
}

// RemoveMember removes member id (node.RemoveMember has the rule).
func (a *Admin) RemoveMember(ctx context.Context, id uint64) error {
	ctx, cancel := context.WithTimeout(ctx, MemberTimeout)
	defer cancel()
	return membershipError(a.n.RemoveMember(ctx, id))
}

// Snapshot streams a snapshot of this member's backend (node.Snapshot).
func (a *Admin) Snapshot(ctx context.Context) (io.ReadCloser, error) {
	rc, err := a.n.Snapshot(ctx)
	if err != nil {
		return nil, registry.AsError(err)
	}
	return rc, nil
}

func memberStatus(m node.Member, leader uint64) registry.MemberStatus {
	return registry.MemberStatus{
		Name:       m.Name,
		ID:         strconv.FormatUint(m.ID, 16),
		PeerURLs:   nonNil(m.PeerURLs),
		ClientURLs: nonNil(m.ClientURLs),
		IsLeader:   m.ID == leader && leader != 0,
		IsLearner:  m.IsLearner,
	}
}

// membershipError maps node's refusals to registry errors: the rule that
// refused is the code.
func membershipError(err error) error {
	if err == nil {
		return nil
	}
	var me *node.MembershipError
	if !errors.As(err, &me) {
		return registry.AsError(err)
	}
	e := &registry.Error{Message: me.Message, Err: err}
	switch me.Reason {
	case node.ReasonNotFound:
		e.Kind, e.Code = registry.KindNotFound, registry.CodeNotFound
	case node.ReasonQuorum:
		e.Kind, e.Code = registry.KindConflict, registry.CodeQuorumAtRisk
	case node.ReasonLearnerNotSync:
		e.Kind, e.Code = registry.KindConflict, registry.CodeLearnerNotReady
	case node.ReasonConflict, node.ReasonSelf:
		e.Kind, e.Code = registry.KindConflict, registry.CodeMemberConflict
	case node.ReasonInvalid:
		e.Kind, e.Code = registry.KindInvalid, registry.CodeInvalidMember
	default: // node.ReasonUnhealthy
		e.Kind, e.Code = registry.KindUnavailable, registry.CodeUnavailable
	}
	return e
}
