package regdtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/regd/regd/registry"
)

// Expiry names one expiry: an instance under one lease (the lease as the API
// writes it, decimal).
type Expiry struct{ Service, ID, Lease string }

func (e Expiry) String() string { return e.Service + "/" + e.ID + "@" + e.Lease }

// ExpiryOf names the expiry a ledger entry reports.
func ExpiryOf(e registry.Expiration) Expiry { return Expiry{e.Service, e.ID, e.LeaseID} }

// ExpiryOfInstance names the expiry of in under its current lease.
func ExpiryOfInstance(in registry.Instance) Expiry { return Expiry{in.Service, in.ID, in.LeaseID} }

// Expected is what a ledger must hold: Want, each expiry exactly once with
// the address given; never any service/id of Forbidden, under any lease;
// nothing else.
type Expected struct {
	Want      map[Expiry]string
	Forbidden map[string]bool
}

// Ledger reads member m's GET /v1/expirations with query (limit 10000
// unless the query sets one), failing the test on any error.
func (m *Member) Ledger(t testing.TB, query url.Values) []registry.Expiration {
	t.Helper()
	q := url.Values{"limit": {"10000"}}
	for k, v := range query {
		q[k] = v
	}
	code, _, body := Do(t, http.MethodGet, m.URL("/v1/expirations?"+q.Encode()), nil)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/expirations?%s on %s: %d %s", q.Encode(), m.Name, code, body)
	}
	var out struct {
		Expirations []registry.Expiration `json:"expirations"`
	}
	MustJSON(t, body, &out)
	if out.Expirations == nil {
		t.Fatalf("GET /v1/expirations on %s: no expirations array: %s", m.Name, body)
	}
	if err := checkLedgerJSON(body); err != nil {
		t.Fatalf("GET /v1/expirations on %s: %v", m.Name, err)
	}
	return out.Expirations
}

// checkLedgerJSON checks the wire form: expired_at RFC 3339, lease_id a
// non-zero decimal string, the text fields filled.
func checkLedgerJSON(body []byte) error {
	var raw struct {
		Expirations []map[string]any `json:"expirations"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return err
	}
	for _, e := range raw.Expirations {
		at, _ := e["expired_at"].(string)
		if _, err := time.Parse(time.RFC3339, at); err != nil {
			return fmt.Errorf("expired_at %q is not RFC 3339: %v", at, err)
		}
		lease, _ := e["lease_id"].(string)
		if n, err := strconv.ParseInt(lease, 10, 64); err != nil || n == 0 {
			return fmt.Errorf("lease_id %q is not a non-zero decimal string", lease)
		}
		for _, f := range []string{"service", "id", "address", "reported_by"} {
			if s, _ := e[f].(string); s == "" {
				return fmt.Errorf("field %s empty in %v", f, e)
			}
		}
	}
	return nil
}

// Check verifies that es holds exactly x, each expiry once, newest first,
// reported by one of members.
func (x Expected) Check(es []registry.Expiration, members map[string]bool) error {
	seen := make(map[Expiry]int)
	for i, e := range es {
		k := ExpiryOf(e)
		seen[k]++
		if x.Forbidden[e.Service+"/"+e.ID] {
			return fmt.Errorf("%s must never be reported, but is: %+v", k, e)
		}
		addr, ok := x.Want[k]
		if !ok {
			return fmt.Errorf("unexpected report %+v", e)
		}
		if e.Address != addr {
			return fmt.Errorf("report %s has address %q, want %q", k, e.Address, addr)
		}
		if e.ExpiredAt.IsZero() || e.Revision <= 0 || !members[e.ReportedBy] {
			return fmt.Errorf("report %s has unfilled fields: %+v", k, e)
		}
		if i > 0 && es[i-1].Revision < e.Revision {
			return fmt.Errorf("ledger not newest first: revision %d before %d", es[i-1].Revision, e.Revision)
		}
	}
	for k, n := range seen {
		if n != 1 {
			return fmt.Errorf("%s reported %d times", k, n)
		}
	}
	var missing []string
	for k := range x.Want {
		if seen[k] == 0 {
			missing = append(missing, k.String())
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return missingError{fmt.Errorf("%d of %d expiries not reported: %v", len(missing), len(x.Want), missing)}
	}
	return nil
}

// SameLedger reports how two members' ledgers differ, if they do.
func SameLedger(a, b []registry.Expiration) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d entries vs %d", len(a), len(b))
	}
	for i := range a {
		if !a[i].ExpiredAt.Equal(b[i].ExpiredAt) || ExpiryOf(a[i]) != ExpiryOf(b[i]) || a[i].Revision != b[i].Revision || a[i].ReportedBy != b[i].ReportedBy || a[i].Address != b[i].Address {
			return fmt.Errorf("entry %d: %+v vs %+v", i, a[i], b[i])
		}
	}
	return nil
}

// MemberNames is the set of the cluster's member names.
func (c *Cluster) MemberNames() map[string]bool {
	out := make(map[string]bool)
	for _, m := range c.Members {
		out[m.Name] = true
	}
	return out
}

// WaitExpiries waits until every running member's ledger holds exactly x,
// each expiry once, and all of them the same entries: "each expiry exactly
// once on every member". It returns that ledger. A ledger that reports
// something forbidden or twice fails at once: reports are never taken back,
// so waiting cannot fix it.
func (c *Cluster) WaitExpiries(t testing.TB, timeout time.Duration, x Expected) []registry.Expiration {
	t.Helper()
	names := c.MemberNames()
	var final []registry.Expiration
	Eventually(t, timeout, func() error {
		final = nil
		for _, i := range c.Running() {
			es := c.Members[i].Ledger(t, nil)
			if err := x.Check(es, names); err != nil {
				if !isPending(err) {
					t.Fatalf("ledger on %s: %v", c.Members[i].Name, err)
				}
				return fmt.Errorf("ledger on %s: %v", c.Members[i].Name, err)
			}
			if final == nil {
				final = es
			} else if err := SameLedger(final, es); err != nil {
				return fmt.Errorf("ledger on %s differs: %v", c.Members[i].Name, err)
			}
		}
		return nil
	})
	return final
}

// missingError is Check's answer when the only thing wrong is that some
// expiries are not reported yet.
type missingError struct{ error }

func isPending(err error) bool {
	_, ok := err.(missingError)
	return ok
}
