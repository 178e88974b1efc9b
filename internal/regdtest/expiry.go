package regdtest

import (
	"net/url"
	"testing"
	"time"

	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/registry"
)

// ExpiryOfInstance names the expiry of in under its current lease.
func ExpiryOfInstance(in registry.Instance) ledgertest.Expiry {
	return ledgertest.Expiry{Service: in.Service, ID: in.ID, Lease: in.LeaseID}
}

// Ledger reads member m's GET /v1/expirations with query (limit 10000
// unless the query sets one), in the contract's wire form, failing the
// test on any error.
func (m *Member) Ledger(t testing.TB, query url.Values) []ledgertest.Entry {
	t.Helper()
	es, err := ledgertest.Read(m.URL(""), query)
	if err != nil {
		t.Fatalf("ledger on %s: %v", m.Name, err)
	}
	return es
}

// MemberNames is the set of the cluster's member names.
func (c *Cluster) MemberNames() map[string]bool {
	out := make(map[string]bool)
	for _, m := range c.Members {
		out[m.Name] = true
	}
	return out
}

// WaitExpiries is ledgertest.Wait over the running members: it waits until
// every running member's ledger holds exactly x, each expiry once, and all
// of them the same entries, and returns that ledger. Unless x names the
// reporters, reported_by must be one of the cluster's members.
func (c *Cluster) WaitExpiries(t testing.TB, timeout time.Duration, x ledgertest.Expected) []ledgertest.Entry {
	t.Helper()
	if x.Reporters == nil {
		x.Reporters = c.MemberNames()
	}
	var members []ledgertest.Member
	for _, i := range c.Running() {
		members = append(members, ledgertest.Member{Name: c.Members[i].Name, URL: c.Members[i].URL("")})
	}
	return ledgertest.Wait(t, timeout, members, x)
}
