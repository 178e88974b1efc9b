package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
)

// Admin makes one-shot requests for operators (the regd command line):
// the cluster's status, membership changes, snapshots and exports. Each
// request goes to the nodes of Config.Addrs in order until one answers:
// a node that cannot be reached or answers 5xx, 408 or 429 is left for the
// next one; any other answer is final. Membership changes and snapshots
// need an admin token (Config.Token).
type Admin struct {
	c *conn
}

// NewAdmin returns an Admin for the nodes of cfg.
func NewAdmin(cfg Config) *Admin { return &Admin{c: newConn(cfg)} }

// ClusterStatus is GET /v1/cluster.
type ClusterStatus struct {
	Node     string   `json:"node"`
	Leader   string   `json:"leader"`
	Term     uint64   `json:"term"`
	Revision int64    `json:"revision"`
	Members  []Member `json:"members"`
	Alarms   []string `json:"alarms"`
}

// Member is one member of the cluster. ID is etcd's member ID in hex.
type Member struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"`
	PeerURLs   []string `json:"peer_urls"`
	ClientURLs []string `json:"client_urls"`
	IsLeader   bool     `json:"is_leader"`
	IsLearner  bool     `json:"is_learner"`
}

// MemberAdd is the request of AddMember.
type MemberAdd struct {
	Name     string   `json:"name"`
	PeerURLs []string `json:"peer_urls"`
	Learner  bool     `json:"learner"`
}

// MemberAdded is AddMember's answer: the member, and how to start it
// (Flags, one "--flag=value" each; values in angle brackets are the new
// member's own to fill in).
type MemberAdded struct {
	Member         Member   `json:"member"`
	InitialCluster string   `json:"initial_cluster"`
	Flags          []string `json:"flags"`
}

// Export is GET /v1/export: every instance at one revision.
type Export struct {
	Instances []Instance `json:"instances"`
	Revision  int64      `json:"revision"`
}

// each sends the request to one node after the other, until one gives an
// answer that another node would give too (see Admin).
func (c *conn) each(ctx context.Context, f func(base string) error) error {
	var err error
	for _, base := range c.bases {
		if err = f(base); err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		c.log.Info("regd: trying the next node", "node", base, "err", err)
	}
	return err
}

func (a *Admin) call(ctx context.Context, method, path string, body, out any) error {
	return a.c.each(ctx, func(base string) error {
		_, err := a.c.do(ctx, method, base, path, body, out)
		return err
	})
}

// Cluster is the cluster's status as the first node that answers sees it.
func (a *Admin) Cluster(ctx context.Context) (ClusterStatus, error) {
	var st ClusterStatus
	err := a.call(ctx, http.MethodGet, "/v1/cluster", nil, &st)
	return st, err
}

// AddMember announces a member (POST /v1/cluster/members). A retry on
// another node after a lost answer is refused with 409 member_conflict
// (the peer URL exists): look at Cluster then.
func (a *Admin) AddMember(ctx context.Context, req MemberAdd) (MemberAdded, error) {
	var out MemberAdded
	err := a.call(ctx, http.MethodPost, "/v1/cluster/members", req, &out)
	return out, err
}

// PromoteMember makes learner id (hex) a voting member.
func (a *Admin) PromoteMember(ctx context.Context, id string) (Member, error) {
	var out Member
	err := a.call(ctx, http.MethodPost, "/v1/cluster/members/"+url.PathEscape(id)+"/promote", nil, &out)
	return out, err
}

// RemoveMember removes member id (hex).
func (a *Admin) RemoveMember(ctx context.Context, id string) error {
	return a.call(ctx, http.MethodDelete, "/v1/cluster/members/"+url.PathEscape(id), nil, nil)
}

// Export reads every instance (GET /v1/export).
func (a *Admin) Export(ctx context.Context) (Export, error) {
	var out Export
	err := a.call(ctx, http.MethodGet, "/v1/export", nil, &out)
	return out, err
}

// ErrSnapshotChecksum means a snapshot's trailing SHA-256 does not match
// its content: it was cut short or damaged on the way.
var ErrSnapshotChecksum = errors.New("regd: the snapshot's checksum does not match its content (cut short?)")

// Snapshot streams a snapshot of the first node that answers
// (GET /v1/snapshot) into w and returns its size. It checks the SHA-256
// that etcd appends to the stream. Once bytes have been written to w no
// other node is tried: the caller starts over with a fresh w.
func (a *Admin) Snapshot(ctx context.Context, w io.Writer) (int64, error) {
	var n int64
	err := a.c.each(ctx, func(base string) error {
		req, err := a.c.newRequest(ctx, http.MethodGet, base+"/v1/snapshot", nil)
		if err != nil {
			return err
		}
		resp, err := a.c.hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return apiError(resp)
		}
		tr := &trailerCheck{w: w}
		n, err = io.Copy(tr, resp.Body)
		if err != nil {
			return &partialError{fmt.Errorf("regd: snapshot from %s cut short after %d bytes: %w", base, n, err)}
		}
		if !tr.ok() {
			return &partialError{ErrSnapshotChecksum}
		}
		return nil
	})
	var pe *partialError
	if errors.As(err, &pe) {
		return n, pe.err
	}
	return n, err
}

// partialError is a failure after a snapshot's first bytes: final.
type partialError struct{ err error }

func (e *partialError) Error() string { return e.err.Error() }

// trailerCheck passes a snapshot stream through and checks its last 32
// bytes, the SHA-256 of everything before them (etcd's snapshot format).
type trailerCheck struct {
	w    io.Writer
	h    hash.Hash
	tail []byte // the last bytes seen, at most sha256.Size once past them
}

func (t *trailerCheck) Write(p []byte) (int, error) {
	if t.h == nil {
		t.h = sha256.New()
	}
	n, err := t.w.Write(p)
	if err != nil {
		return n, err
	}
	// Everything but the last 32 bytes seen so far goes into the hash.
	t.tail = append(t.tail, p...)
	if over := len(t.tail) - sha256.Size; over > 0 {
		t.h.Write(t.tail[:over])
		t.tail = append(t.tail[:0], t.tail[over:]...)
	}
	return n, nil
}

func (t *trailerCheck) ok() bool {
	return t.h != nil && len(t.tail) == sha256.Size && bytes.Equal(t.h.Sum(nil), t.tail)
}
