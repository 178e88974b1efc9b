package registry

import "time"

// Registration is what a client sends to register an instance. A
// registration replaces the instance as a whole: status and weight not
// given are the defaults again (StatusUp, DefaultWeight).
type Registration struct {
	Address  string            `json:"address"`
	TTL      *int64            `json:"ttl,omitempty"` // nil: DefaultTTL
	Metadata map[string]string `json:"metadata,omitempty"`
	Status   *string           `json:"status,omitempty"` // nil: StatusUp
	Weight   *int64            `json:"weight,omitempty"` // nil: DefaultWeight
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
	// Revision is that of its last registration or update (PATCH).
	Revision int64 `json:"revision"`
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
