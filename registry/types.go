package registry

import (
	"encoding/json"
	"time"
)

// Registration is what a client sends to register an instance. A
// registration replaces the instance as a whole: status and weight not
// given are the defaults again (StatusUp, DefaultWeight).
type Registration struct {
	Address  string            `json:"address"`
	TTL      *int64            `json:"ttl,omitempty"` // nil: DefaultTTL
	Metadata map[string]string `json:"metadata,omitempty"`
	Status   *string           `json:"status,omitempty"` // nil: StatusUp
	Weight   *int64            `json:"weight,omitempty"` // nil: DefaultWeight
	// Check is a health check the registry runs (ResolveCheck); nil:
	// none, the client heartbeats. Interval, Timeout and Failures may
	// also be given here, beside the check, as the contract writes them.
	Check    *CheckInput     `json:"check,omitempty"`
	Interval json.RawMessage `json:"interval,omitempty"`
	Timeout  json.RawMessage `json:"timeout,omitempty"`
	Failures *int64          `json:"failures,omitempty"`
}

// Instance is one registered instance, as the API shows it.
type Instance struct {
	Service  string            `json:"service"`
	ID       string            `json:"id"`
	Address  string            `json:"address"`
	Metadata map[string]string `json:"metadata"`
	// Status is StatusUp, StatusDraining or StatusOutOfService; StatusUp
	// for keys written by plain etcd clients.
	Status string `json:"status"`
	// Weight is 0–MaxWeight, DefaultWeight unless set.
	Weight  int    `json:"weight"`
	TTL     int64  `json:"ttl"`      // granted; 0 for a key without a lease
	LeaseID string `json:"lease_id"` // decimal; "0" for a key without a lease
	// RegisteredAt is unknown (absent) for keys written by plain etcd clients.
	RegisteredAt *time.Time `json:"registered_at,omitempty"`
	// Revision is that of its last registration or update (PATCH, or
	// a change of health).
	Revision int64 `json:"revision"`
	// Check is the health check the registry runs for it; nil: none.
	Check *Check `json:"check,omitempty"`
	// Health is what the check's owner last published; nil before the
	// first probe, and for instances without a check.
	Health *Health `json:"health,omitempty"`
}

// InstanceList is one service's instances at one revision.
type InstanceList struct {
	Service   string     `json:"service"`
	Instances []Instance `json:"instances"`
	Revision  int64      `json:"revision"`
}

// ServiceSummary is one entry of the service list.
type ServiceSummary struct {
	Name      string `json:"name"`
	Instances int    `json:"instances"` // all, whatever their status
	Up        int    `json:"up"`        // those with status up
}

// ServiceList is every service with at least one instance.
type ServiceList struct {
	Services []ServiceSummary `json:"services"`
	Revision int64            `json:"revision"`
}

// Expiration is one expiry report in the ledger.
type Expiration struct {
	Service    string    `json:"service"`
	ID         string    `json:"id"`
	Address    string    `json:"address"`
	LeaseID    string    `json:"lease_id"`
	ExpiredAt  time.Time `json:"expired_at"`
	ReportedBy string    `json:"reported_by"`
	Revision   int64     `json:"revision"` // of the deletion that the expiry caused
	// Cause is why the lease ended: ExpiryCauseTTL (heartbeats stopped;
	// also a plain client's revoke, which looks the same) or
	// ExpiryCauseCheckFailed (a registry-run health check failed).
	Cause string `json:"cause"`
	// Output is the last check's output, for ExpiryCauseCheckFailed.
	Output string `json:"output,omitempty"`
	// Deadline is when the lease was due to run out (its last renewal +
	// TTL) as the leader's lessor knew it, to within a second (etcd
	// answers the time left in whole seconds); absent when the reporting
	// leader had not sampled the lease (it became leader after the lease
	// ran out, the report came from a reconcile, an older regd).
	Deadline *time.Time `json:"deadline,omitempty"`
	// ReportedAt is when the leader wrote the entry: the commit that made
	// it durable started then (absent in entries of older versions).
	// ReportedAt − Deadline is the expiry's lag.
	ReportedAt *time.Time `json:"reported_at,omitempty"`
}

// ExpirationQuery selects ledger entries, newest first.
type ExpirationQuery struct {
	Service string // "": every service
	Limit   int    // at most this many (a page never ends inside a revision, see Ledger.Expirations)
	// Before, when not 0, returns only entries of revisions below it: the
	// next page starts below the last entry's revision of the one before.
	Before int64
}

// ClusterStatus is what GET /v1/cluster shows.
type ClusterStatus struct {
	Node     string         `json:"node"`
	Leader   string         `json:"leader"` // "" when this node knows of no leader
	Term     uint64         `json:"term"`
	Revision int64          `json:"revision"`
	Members  []MemberStatus `json:"members"`
	// Alarms are etcd's raised alarms, "<TYPE> (member <name or id>)",
	// e.g. "NOSPACE (member m3)"; empty when none is.
	Alarms []string `json:"alarms"`
}

// MemberStatus is one member in ClusterStatus.
type MemberStatus struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"` // hex, as etcdctl prints it
	PeerURLs   []string `json:"peer_urls"`
	ClientURLs []string `json:"client_urls"`
	IsLeader   bool     `json:"is_leader"`
	// IsLearner: a non-voting member catching up, to be promoted.
	IsLearner bool `json:"is_learner"`
}
