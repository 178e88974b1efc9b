// Package ledgertest checks regd's expiry ledger the way a user sees it:
// GET /v1/expirations on every member, over HTTP. Its one question is the
// contract's "each expiry exactly once, on every member": Wait polls the
// members until each ledger holds exactly the expected expiries and all of
// them hold the same entries.
//
// It decodes the wire form itself and imports nothing of regd, so that the
// in-process tests (internal/regdtest) and the real-process ones (faults/,
// through internal/e2e) hold the server to the same contract with the same
// code, and the end-to-end tests still link no server code.
package ledgertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/regd/regd/internal/poll"
)

// Expiry names one expiry: an instance under one lease (the lease as the
// API writes it, decimal). An instance re-registered under a new lease and
// expiring again is a second expiry.
type Expiry struct{ Service, ID, Lease string }

func (e Expiry) String() string { return e.Service + "/" + e.ID + "@" + e.Lease }

// Entry is one entry of GET /v1/expirations as the contract writes it.
type Entry struct {
	Service    string    `json:"service"`
	ID         string    `json:"id"`
	Address    string    `json:"address"`
	LeaseID    string    `json:"lease_id"`
	ExpiredAt  time.Time `json:"expired_at"`
	ReportedBy string    `json:"reported_by"`
	Revision   int64     `json:"revision"`
	Cause      string    `json:"cause"`
	Output     string    `json:"output"`
	// Deadline (the lease's, as the leader's lessor knew it) and
	// ReportedAt (when the report was committed); nil when absent.
	Deadline   *time.Time `json:"deadline"`
	ReportedAt *time.Time `json:"reported_at"`
	// Raw is the entry as the member served it, for callers that decode
	// it into a type of their own.
	Raw json.RawMessage `json:"-"`
}

// Expiry names the expiry e reports.
func (e Entry) Expiry() Expiry { return Expiry{e.Service, e.ID, e.LeaseID} }

// Member is one member to read: its name (what reported_by holds) and
// the base URL of its REST API ("http://127.0.0.1:8080").
type Member struct{ Name, URL string }

// Expected is what every ledger must hold.
type Expected struct {
	// Service, when set, narrows the ledger read to one service
	// (?service=), for tests that share a cluster between subjects.
	Service string
	// Want: each of these expiries exactly once, with this address.
	Want map[Expiry]string
	// Forbidden: never any entry for these "service/id", under any lease.
	Forbidden map[string]bool
	// Reporters: the names reported_by may hold (the cluster's members).
	Reporters map[string]bool
	// Each, when set, is asked about every entry too; an error fails the
	// wait at once.
	Each func(Entry) error
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// Read is base's GET /v1/expirations with query (limit 10000 unless the
// query sets one). An answer other than 200 or a transport error is an
// error, which a member that is restarting gives; an entry not in the
// contract's wire form is a *WireError.
func Read(base string, query url.Values) ([]Entry, error) {
	q := url.Values{"limit": {"10000"}}
	for k, v := range query {
		q[k] = v
	}
	u := base + "/v1/expirations?" + q.Encode()
	resp, err := httpClient.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %v", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", u, resp.StatusCode, body)
	}
	es, err := decode(body)
	if err != nil {
		return nil, &WireError{URL: u, Err: err}
	}
	return es, nil
}

// WireError is an answer of GET /v1/expirations not in the contract's form.
type WireError struct {
	URL string
	Err error
}

func (e *WireError) Error() string { return fmt.Sprintf("GET %s: %v", e.URL, e.Err) }

// decode checks the wire form: an expirations array (never null);
// expired_at RFC 3339; lease_id a non-zero decimal string; service, id,
// address and reported_by filled; revision positive.
func decode(body []byte) ([]Entry, error) {
	var raw struct {
		Expirations []json.RawMessage `json:"expirations"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("%v: %s", err, body)
	}
	if raw.Expirations == nil {
		return nil, fmt.Errorf("no expirations array: %s", body)
	}
	out := make([]Entry, 0, len(raw.Expirations))
	for _, r := range raw.Expirations {
		var fields map[string]any
		if err := json.Unmarshal(r, &fields); err != nil {
			return nil, fmt.Errorf("%v: %s", err, r)
		}
		at, _ := fields["expired_at"].(string)
		if _, err := time.Parse(time.RFC3339, at); err != nil {
			return nil, fmt.Errorf("expired_at %q is not RFC 3339: %s", at, r)
		}
		lease, _ := fields["lease_id"].(string)
		if n, err := strconv.ParseInt(lease, 10, 64); err != nil || n == 0 {
			return nil, fmt.Errorf("lease_id %q is not a non-zero decimal string: %s", lease, r)
		}
		for _, f := range []string{"service", "id", "address", "reported_by"} {
			if s, _ := fields[f].(string); s == "" {
				return nil, fmt.Errorf("field %s empty: %s", f, r)
			}
		}
		var e Entry
		if err := json.Unmarshal(r, &e); err != nil {
			return nil, fmt.Errorf("%v: %s", err, r)
		}
		if e.Revision <= 0 {
			return nil, fmt.Errorf("revision %d: %s", e.Revision, r)
		}
		e.Raw = r
		out = append(out, e)
	}
	return out, nil
}

// Check verifies that es holds exactly x, each expiry once, newest first.
// It returns a *MissingError when the only thing wrong is that some
// expected expiries are not there yet; any other error is final, because
// reports are never taken back.
func (x Expected) Check(es []Entry) error {
	seen := make(map[Expiry]int)
	for i, e := range es {
		k := e.Expiry()
		seen[k]++
		if x.Forbidden[e.Service+"/"+e.ID] {
			return fmt.Errorf("%s must never be reported, but is: %s", k, e.Raw)
		}
		addr, ok := x.Want[k]
		if !ok {
			return fmt.Errorf("unexpected report: %s", e.Raw)
		}
		if e.Address != addr {
			return fmt.Errorf("report %s has address %q, want %q", k, e.Address, addr)
		}
		if x.Reporters != nil && !x.Reporters[e.ReportedBy] {
			return fmt.Errorf("report %s names %q as reporter, not a member", k, e.ReportedBy)
		}
		if i > 0 && es[i-1].Revision < e.Revision {
			return fmt.Errorf("ledger not newest first: revision %d before %d", es[i-1].Revision, e.Revision)
		}
		if x.Each != nil {
			if err := x.Each(e); err != nil {
				return fmt.Errorf("report %s: %v", k, err)
			}
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
		return &MissingError{fmt.Sprintf("%d of %d expiries not reported: %v", len(missing), len(x.Want), missing)}
	}
	return nil
}

// MissingError is Check's answer when expected expiries are not reported
// yet: the one thing waiting can change.
type MissingError struct{ msg string }

func (e *MissingError) Error() string { return e.msg }

// Wait polls every member until each ledger holds exactly x (Check) and all
// of them the same entries, byte for byte: "each expiry exactly once on
// every member". It returns that ledger. It fails the test at once when a
// ledger holds something Check forbids (a report twice, one never wanted)
// or answers outside the wire form, and after timeout otherwise.
func Wait(t testing.TB, timeout time.Duration, members []Member, x Expected) []Entry {
	t.Helper()
	if len(members) == 0 {
		t.Fatal("ledgertest.Wait: no member to read")
	}
	var final []Entry
	poll.Until(t, timeout, "each expiry exactly once on every member", func() error {
		final = nil
		for _, m := range members {
			var query url.Values
			if x.Service != "" {
				query = url.Values{"service": {x.Service}}
			}
			es, err := Read(m.URL, query)
			var we *WireError
			if errors.As(err, &we) {
				return poll.Stop(fmt.Errorf("ledger on %s: %v", m.Name, err))
			}
			if err != nil {
				return fmt.Errorf("ledger on %s: %v", m.Name, err)
			}
			if err := x.Check(es); err != nil {
				var missing *MissingError
				if !errors.As(err, &missing) {
					return poll.Stop(fmt.Errorf("ledger on %s: %v", m.Name, err))
				}
				return fmt.Errorf("ledger on %s: %v", m.Name, err)
			}
			if final == nil {
				final = es
			} else if err := Same(final, es); err != nil {
				return fmt.Errorf("ledger on %s differs from %s's: %v", m.Name, members[0].Name, err)
			}
		}
		return nil
	})
	return final
}

// Same reports how two ledgers differ, if they do: the same entries in the
// same order, each as the same JSON.
func Same(a, b []Entry) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d entries vs %d", len(a), len(b))
	}
	for i := range a {
		if !bytes.Equal(compact(a[i].Raw), compact(b[i].Raw)) {
			return fmt.Errorf("entry %d: %s vs %s", i, a[i].Raw, b[i].Raw)
		}
	}
	return nil
}

func compact(raw json.RawMessage) []byte {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}
