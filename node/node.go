// Package node owns regd's embedded etcd member: it starts it from regd's
// configuration, waits for it to be ready, hands out an in-process client, and
// answers questions about membership and leadership. It is the only package
// that imports go.etcd.io/etcd/server/v3/embed; nothing here knows about
// services.
package node

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/pkg/v3/featuregate"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.etcd.io/etcd/server/v3/features"
	"go.uber.org/zap"
)

// Config is what a member needs to start. URL lists are already validated.
type Config struct {
	Name                string
	DataDir             string
	ListenClientURLs    []url.URL
	AdvertiseClientURLs []url.URL
	ListenPeerURLs      []url.URL
	AdvertisePeerURLs   []url.URL
	InitialCluster      string
	ClusterState        string // "new" or "existing"
	ClusterToken        string

	// Logger receives etcd's own logs; the caller picks its level (regd
	// defaults etcd to warn because etcd is chatty at info).
	Logger *zap.Logger

	// ReadyTimeout bounds the wait for the member to join its cluster and
	// become ready. Zero means one minute.
	ReadyTimeout time.Duration

	// TickMs and ElectionMs tune raft; zero keeps etcd's defaults
	// (100 ms, 1000 ms). Tests shorten them to make failover fast.
	TickMs     uint
	ElectionMs uint

	// QuotaBackendBytes caps the bbolt file; zero keeps etcd's default (2 GiB).
	QuotaBackendBytes int64

	// MinFreeBytes is the free space the disk guard keeps in the data
	// dir's file system (see disk.go); zero: DefaultMinFreeBytes, negative:
	// no guard. DiskCheckInterval is how often it looks; zero:
	// DefaultDiskCheckInterval. DiskStat replaces statfs, for tests that
	// cannot fill a real disk; nil: StatDisk.
	MinFreeBytes      int64
	DiskCheckInterval time.Duration
	DiskStat          func(dir string) (DiskUsage, error)

	// EventLogger receives regd's own events about this member (the disk
	// guard's); nil: none.
	EventLogger *zap.Logger

	// TLS of etcd's own listeners, as etcd's flags of the same names set
	// them: ClientTLSInfo for https client URLs (--cert-file, --key-file,
	// --trusted-ca-file, --client-cert-auth), PeerTLSInfo for https peer
	// URLs and for dialing the other members (--peer-*). The auto variants
	// make etcd generate self-signed certificates in the data dir. regd's
	// own client is in-process and uses none of this.
	ClientTLSInfo transport.TLSInfo
	PeerTLSInfo   transport.TLSInfo
	ClientAutoTLS bool
	PeerAutoTLS   bool
}

// Member describes one member of the cluster.
type Member struct {
	Name       string
	ID         uint64
	PeerURLs   []string
	ClientURLs []string
	// IsLearner: a non-voting member, catching up before its promotion.
	IsLearner bool
}

// Started reports whether the member has started and joined: etcd learns
// a member's name and client URLs only from the member itself, when it
// first runs (etcd's Member.IsStarted).
func (m Member) Started() bool { return m.Name != "" }

// ErrNotReady is returned by Start when the member does not become ready in
// time, typically because the rest of its initial cluster is not up yet.
var ErrNotReady = errors.New("embedded etcd did not become ready in time")

// Node is a running embedded etcd member.
type Node struct {
	cfg    Config
	etcd   *embed.Etcd
	client *clientv3.Client

	closing   *atomic.Bool
	closeOnce sync.Once

	// renewer keeps a follower's lease streams to the leader (renew.go).
	renewer renewer

	guard     *guard // nil without a disk guard
	stopGuard context.CancelFunc
	guardDone chan struct{}
}

// Start starts the member and waits until it is ready to serve. On failure
// everything it started is stopped again.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = time.Minute
	}
	closing := new(atomic.Bool)
	cfg.Logger = quiet(cfg.Logger, closing)
	ec, err := embedConfig(cfg)
	if err != nil {
		return nil, err
	}
	var g *guard
	if cfg.MinFreeBytes >= 0 {
		g = newGuard(cfg)
		g.prepare()
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	timer := time.NewTimer(cfg.ReadyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed: %w", err)
	case <-timer.C:
		e.Server.HardStop()
		e.Close()
		return nil, fmt.Errorf("%w (waited %s; are the other members of --initial-cluster up?)", ErrNotReady, cfg.ReadyTimeout)
	case <-ctx.Done():
		e.Server.HardStop()
		e.Close()
		return nil, ctx.Err()
	}
	n := &Node{cfg: cfg, etcd: e, client: v3client.New(e.Server), closing: closing, guard: g, guardDone: make(chan struct{})}
	if g == nil {
		close(n.guardDone)
		n.stopGuard = func() {}
		return n, nil
	}
	// The first look is synchronous so that a member starting on a short
	// disk refuses writes from its first request.
	gctx, stop := context.WithCancel(context.Background())
	n.stopGuard = stop
	g.step(gctx, n)
	go func() {
		defer close(n.guardDone)
		g.run(gctx, n)
	}()
	return n, nil
}

// StorageErr is nil while this member's data dir is writable and has its
// minimum free space; otherwise a *StorageError saying what is wrong.
func (n *Node) StorageErr() error {
	if n.guard == nil {
		return nil
	}
	if p := n.guard.problem.Load(); p != nil {
		return p
	}
	return nil
}

// MaxTxnOps is the most operations one etcd transaction may hold on
// regd's members (etcd's --max-txn-ops; etcd's default is 128). The
// expiry ledger's consumer writes a batch of reports in as few commits as
// it can (registry.ConsumerOptions.MaxOps): during a mass expiry every
// commit waits behind the lease revocations in raft's apply queue, so
// eight times fewer commits report eight times faster. A commit of 768
// operations is about 350 KB, under etcd's 1.5 MiB request limit.
const MaxTxnOps = 1024

func embedConfig(cfg Config) (*embed.Config, error) {
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.DataDir
	ec.ListenClientUrls = cfg.ListenClientURLs
	ec.AdvertiseClientUrls = cfg.AdvertiseClientURLs
	ec.ListenPeerUrls = cfg.ListenPeerURLs
	ec.AdvertisePeerUrls = cfg.AdvertisePeerURLs
	ec.InitialCluster = cfg.InitialCluster
	ec.ClusterState = cfg.ClusterState
	ec.InitialClusterToken = cfg.ClusterToken
	ec.ClientTLSInfo = cfg.ClientTLSInfo
	ec.PeerTLSInfo = cfg.PeerTLSInfo
	ec.ClientAutoTLS = cfg.ClientAutoTLS
	ec.PeerAutoTLS = cfg.PeerAutoTLS
	if cfg.TickMs != 0 {
		ec.TickMs = cfg.TickMs
	}
	if cfg.ElectionMs != 0 {
		ec.ElectionMs = cfg.ElectionMs
	}
	if cfg.QuotaBackendBytes != 0 {
		ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	}
	ec.MaxTxnOps = MaxTxnOps
	// regd's leader runs compaction itself so that it never compacts history
	// the expiry reporter has not consumed yet; etcd's own must stay off.
	ec.AutoCompactionRetention = "0"
	ec.PreVote = true
	ec.Logger = "zap"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(cfg.Logger)
	// Without checkpoints every leader change restarts every lease at its full
	// TTL; with them a lease longer than etcd's checkpoint interval keeps its
	// remaining time across a failover.
	gate, ok := ec.ServerFeatureGate.(featuregate.MutableFeatureGate)
	if !ok {
		return nil, errors.New("embedded etcd feature gate is not mutable")
	}
	if err := gate.SetFromMap(map[string]bool{
		string(features.LeaseCheckpoint):        true,
		string(features.LeaseCheckpointPersist): true,
	}); err != nil {
		return nil, fmt.Errorf("enable lease checkpoints: %w", err)
	}
	return ec, nil
}

// Client is an in-process etcd client: calls go straight to the server
// without gRPC or sockets. It stays valid until Close.
func (n *Node) Client() *clientv3.Client { return n.client }

// Name is this member's name.
func (n *Node) Name() string { return n.cfg.Name }

// Revision is the newest revision this member has applied: what a
// serializable read here would answer with, without a quorum.
func (n *Node) Revision() int64 { return n.etcd.Server.KV().Rev() }

// ID is this member's raft ID.
func (n *Node) ID() uint64 { return uint64(n.etcd.Server.MemberID()) }

// Leader is the raft ID of the current leader as this member knows it, or 0
// when it knows of none (e.g. it is on the minority side of a partition).
func (n *Node) Leader() uint64 { return uint64(n.etcd.Server.Leader()) }

// IsLeader reports whether this member is the raft leader right now.
func (n *Node) IsLeader() bool {
	l := n.Leader()
	return l != 0 && l == n.ID()
}

// Term is the current raft term.
func (n *Node) Term() uint64 { return n.etcd.Server.Term() }

// LeaderChanged returns a channel that is closed at the next leader change.
// Call it again after every wake: each channel fires once. It is a hint, not
// a count, and it does not fire when the leader becomes none.
func (n *Node) LeaderChanged() <-chan struct{} { return n.etcd.Server.LeaderChangedNotify() }

// Stopping is closed when the embedded server starts stopping, for whatever
// reason (Close, or a fatal error inside etcd).
func (n *Node) Stopping() <-chan struct{} { return n.etcd.Server.StoppingNotify() }

// Err reports fatal errors of the embedded member after start.
func (n *Node) Err() <-chan error { return n.etcd.Err() }

// Members lists the cluster's members sorted by name; members that were
// added but never started have an empty name.
func (n *Node) Members() []Member {
	ms := n.etcd.Server.Cluster().Members()
	out := make([]Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, Member{
			Name:       m.Name,
			ID:         uint64(m.ID),
			PeerURLs:   append([]string(nil), m.PeerURLs...),
			ClientURLs: append([]string(nil), m.ClientURLs...),
			IsLearner:  m.IsLearner,
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// MemberName returns the name of the member with the given ID, or "" if unknown.
func (n *Node) MemberName(id uint64) string {
	if id == 0 {
		return ""
	}
	for _, m := range n.etcd.Server.Cluster().Members() {
		if uint64(m.ID) == id {
			return m.Name
		}
	}
	return ""
}

// Close stops the member: a leader hands leadership to another member first,
// so the cluster does not wait an election timeout. The data dir is kept, so
// the member rejoins when started again. Safe to call more than once.
func (n *Node) Close() {
	n.closeOnce.Do(func() {
		n.stopGuard()
		<-n.guardDone
		n.closing.Store(true)
		n.renewer.close()
		n.client.Close()
		n.etcd.Close()
	})
}

// Kill stops the member without handing over leadership, as a crash would.
// It exists for fault tests.
func (n *Node) Kill() {
	n.closeOnce.Do(func() {
		n.stopGuard()
		<-n.guardDone
		n.closing.Store(true)
		n.renewer.close()
		n.client.Close()
		n.etcd.Server.HardStop()
		n.etcd.Close()
	})
}
