package dns_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/regdtest"
)

// register puts an instance through member m's REST API (the body's
// fields as the contract has them) and fails the test unless it is
// created or replaced; then it waits until m's view, which DNS answers
// from, has applied the write (viewHas).
func register(t testing.TB, m *regdtest.Member, svc, id string, body map[string]any) {
	t.Helper()
	code, hdr, out := regdtest.Do(t, http.MethodPut, m.URL("/v1/services/"+svc+"/instances/"+id), body)
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("register %s/%s: %d %s", svc, id, code, out)
	}
	viewHas(t, m, svc, hdr)
}

// viewHas waits until m's view has applied the write whose answer carried
// hdr: a list with ?min_revision= (read-your-writes, docs/api.md) answers
// only then. The REST answer comes when the write is committed; the view
// follows it through its watch, a moment later.
func viewHas(t testing.TB, m *regdtest.Member, svc string, hdr http.Header) {
	t.Helper()
	rev := hdr.Get(api.HeaderRevision)
	code, _, out := regdtest.Do(t, http.MethodGet, m.URL("/v1/services/"+svc+"/instances?status=any&min_revision="+rev), nil)
	if rev == "" || code != http.StatusOK {
		t.Fatalf("%s's view at revision %q: %d %s", m.Name, rev, code, out)
	}
}

// registerMany registers n instances of svc, <prefix>0..., at 10.1.x.y:80,
// a few at a time.
func registerMany(t testing.TB, m *regdtest.Member, svc, prefix string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			register(t, m, svc, fmt.Sprintf("%s%d", prefix, i), map[string]any{"address": fmt.Sprintf("10.1.%d.%d:80", i/250, i%250+1), "ttl": 60})
		}()
	}
	wg.Wait()
}

func patch(t testing.TB, m *regdtest.Member, svc, id, body string) {
	t.Helper()
	viewHas(t, m, svc, patchNoWait(t, m, svc, id, body))
}

// patchNoWait is patch without the wait for m's view: for measuring how
// soon a change is seen.
func patchNoWait(t testing.TB, m *regdtest.Member, svc, id, body string) http.Header {
	t.Helper()
	code, hdr, out := regdtest.Do(t, http.MethodPatch, m.URL("/v1/services/"+svc+"/instances/"+id), body)
	if code != http.StatusOK {
		t.Fatalf("patch %s/%s: %d %s", svc, id, code, out)
	}
	return hdr
}

// query is one question to a DNS server, as a resolver asks it.
type query struct {
	name  string
	qtype uint16
	net   string // "udp" (default) or "tcp"
	edns  uint16 // EDNS0 buffer size; 0: no OPT record
}

// ask sends q to the DNS server at addr with miekg/dns's client and
// returns the answer. Over UDP a truncated answer is returned as it came.
func ask(t testing.TB, addr string, q query) *mdns.Msg {
	t.Helper()
	r, err := exchange(addr, q)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", q.name, mdns.TypeToString[q.qtype], q.net, err)
	}
	return r
}

func exchange(addr string, q query) (*mdns.Msg, error) {
	c := &mdns.Client{Net: q.net, Timeout: 3 * time.Second}
	if c.Net == "" {
		c.Net = "udp"
	}
	m := new(mdns.Msg)
	m.SetQuestion(q.name, q.qtype)
	if q.edns != 0 {
		m.SetEdns0(q.edns, false)
		c.UDPSize = q.edns
	}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// records renders rrs without their owner and TTL, sorted: what a test
// compares (answers are shuffled).
func records(rrs []mdns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if _, ok := rr.(*mdns.OPT); ok {
			continue
		}
		h := rr.Header()
		out = append(out, mdns.TypeToString[h.Rrtype]+" "+strings.TrimPrefix(rr.String(), h.String()))
	}
	slices.Sort(out)
	return out
}
