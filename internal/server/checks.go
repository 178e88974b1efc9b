package server

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/regd/regd/checks"
	"github.com/regd/regd/cluster"
	"github.com/regd/regd/node"
	"github.com/regd/regd/registry"
)

// ChecksConfig configures the health checks the registry runs (contract
// v2; cluster/DESIGN.md, "Health checks").
type ChecksConfig struct {
	// MaxConcurrent bounds the probes in flight on the leader
	// (--check-max-concurrent); 0: cluster.DefaultCheckMaxConcurrent.
	MaxConcurrent int
	// AllowedCIDRs are the networks checks may connect to
	// (--check-allowed-cidrs); nil: checks.DefaultAllowedCIDRs.
	AllowedCIDRs []netip.Prefix
}

// etcdElection is etcd's default election timeout, for a member
// configured without one.
const etcdElection = time.Second

// checkFailover is the part of a checked instance's lease TTL that covers
// a change of check owner (registry.CheckTTL): a graceful hand-over takes
// at most two election timeouts (node.HandOver), and a second of margin.
func checkFailover(n node.Config) time.Duration {
	election := etcdElection
	if n.ElectionMs != 0 {
		election = time.Duration(n.ElectionMs) * time.Millisecond
	}
	return 2*election + time.Second
}

// newChecker builds the leader-only check owner.
func newChecker(cfg Config, store *registry.Store, view *registry.View, n *node.Node, lg *zap.Logger, metrics prometheus.Registerer) *cluster.Checker {
	prober := checks.New(checks.Config{
		AllowedCIDRs:   cfg.Checks.AllowedCIDRs,
		MaxOutputBytes: registry.MaxCheckOutput,
		UserAgent:      fmt.Sprintf("regd-check (member %s)", n.Name()),
	})
	return cluster.NewChecker(cluster.CheckerConfig{
		Store:         store,
		View:          view,
		Prober:        prober,
		Node:          n,
		MaxConcurrent: cfg.Checks.MaxConcurrent,
		Logger:        lg.Named("checks"),
		Metrics:       metrics,
	})
}
