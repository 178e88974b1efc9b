package dns_test

import (
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
)

// TestDNSRecords asks a real node, with a real resolver client, for every
// kind of name and record: the answer, its code and the negative answers'
// SOA.
func TestDNSRecords(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := regdtest.StartCluster(t, 1, regdtest.Options{DNS: true})
	m := c.Members[0]
	register(t, m, "web", "w1", map[string]any{"address": "10.0.0.1:80", "metadata": map[string]string{
		"zone": "a", "path": `C:\x`, "bad=key": "x", "über": "x", "long": strings.Repeat("v", 300),
	}})
	register(t, m, "web", "W2", map[string]any{"address": "[2001:db8::2]:81", "weight": 0})
	register(t, m, "web", "h3", map[string]any{"address": "db.example.com:82", "weight": 5})
	register(t, m, "web", "d4", map[string]any{"address": "10.0.0.4:84", "status": "draining"})
	register(t, m, "web", "my_id", map[string]any{"address": "10.0.0.5:85"})
	register(t, m, "my.svc", "x", map[string]any{"address": "10.0.0.6:86"})
	register(t, m, "Redis", "r1", map[string]any{"address": "10.0.1.1:6379"})
	register(t, m, "redis", "r2", map[string]any{"address": "10.0.1.2:6379"})
	addr := m.DNSAddr

	const (
		noerror  = mdns.RcodeSuccess
		nxdomain = mdns.RcodeNameError
		refused  = mdns.RcodeRefused
	)
	srvWeb := []string{"SRV 1 100 80 w1.web.instance.regd.", "SRV 1 5 82 db.example.com."}
	tests := []struct {
		name   string
		q      query
		rcode  int
		answer []string // sorted, without owner and TTL
		extra  []string
		soa    bool // the SOA in the authority section
	}{
		{name: "service A: up instances with an IPv4 host", q: query{name: "web.service.regd.", qtype: mdns.TypeA}, answer: []string{"A 10.0.0.1"}},
		{name: "service AAAA: weight 0 is still an address", q: query{name: "web.service.regd.", qtype: mdns.TypeAAAA}, answer: []string{"AAAA 2001:db8::2"}},
		{name: "service SRV: weight 0 left out, DNS-name host as target", q: query{name: "web.service.regd.", qtype: mdns.TypeSRV}, answer: srvWeb, extra: []string{"A 10.0.0.1"}},
		{name: "RFC 2782 SRV", q: query{name: "_web._tcp.service.regd.", qtype: mdns.TypeSRV}, answer: srvWeb, extra: []string{"A 10.0.0.1"}},
		{name: "RFC 2782 name has no A", q: query{name: "_web._tcp.service.regd.", qtype: mdns.TypeA}, soa: true},
		{name: "case-insensitive", q: query{name: "WeB.SeRvIcE.ReGd.", qtype: mdns.TypeA}, answer: []string{"A 10.0.0.1"}},
		{name: "services differing in case answer together", q: query{name: "redis.service.regd.", qtype: mdns.TypeA}, answer: []string{"A 10.0.1.1", "A 10.0.1.2"}},
		{name: "ANY", q: query{name: "web.service.regd.", qtype: mdns.TypeANY}, answer: append([]string{"A 10.0.0.1", "AAAA 2001:db8::2"}, srvWeb...), extra: []string{"A 10.0.0.1"}},
		{name: "instance A", q: query{name: "w1.web.instance.regd.", qtype: mdns.TypeA}, answer: []string{"A 10.0.0.1"}},
		{name: "instance AAAA, any case", q: query{name: "w2.WEB.instance.regd.", qtype: mdns.TypeAAAA}, answer: []string{"AAAA 2001:db8::2"}},
		{name: "instance TXT: metadata DNS-SD can carry, sorted", q: query{name: "w1.web.instance.regd.", qtype: mdns.TypeTXT}, answer: []string{`TXT "path=C:\\x" "zone=a"`}},
		{name: "instance TXT without metadata: one empty string", q: query{name: "h3.web.instance.regd.", qtype: mdns.TypeTXT}, answer: []string{`TXT ""`}},
		{name: "instance with a DNS-name host has no A", q: query{name: "h3.web.instance.regd.", qtype: mdns.TypeA}, soa: true},
		{name: "draining instance", q: query{name: "d4.web.instance.regd.", qtype: mdns.TypeA}, rcode: nxdomain, soa: true},
		{name: "id that is no DNS label", q: query{name: `my_id.web.instance.regd.`, qtype: mdns.TypeA}, rcode: nxdomain, soa: true},
		{name: "service that is no DNS label", q: query{name: `my\.svc.service.regd.`, qtype: mdns.TypeA}, rcode: nxdomain, soa: true},
		{name: "unknown service", q: query{name: "nope.service.regd.", qtype: mdns.TypeA}, rcode: nxdomain, soa: true},
		{name: "unknown instance", q: query{name: "w9.web.instance.regd.", qtype: mdns.TypeA}, rcode: nxdomain, soa: true},
		{name: "known name, type it has not", q: query{name: "web.service.regd.", qtype: mdns.TypeTXT}, soa: true},
		{name: "apex SOA", q: query{name: "regd.", qtype: mdns.TypeSOA}, answer: []string{"SOA ns.regd. hostmaster.regd."}},
		{name: "empty non-terminal", q: query{name: "service.regd.", qtype: mdns.TypeA}, soa: true},
		{name: "a service's instances node", q: query{name: "web.instance.regd.", qtype: mdns.TypeA}, soa: true},
		{name: "an unknown service's instances node", q: query{name: "nope.instance.regd.", qtype: mdns.TypeA}, rcode: nxdomain, soa: true},
		{name: "udp is not served", q: query{name: "_web._udp.service.regd.", qtype: mdns.TypeSRV}, rcode: nxdomain, soa: true},
		{name: "deeper names", q: query{name: "a.b.web.instance.regd.", qtype: mdns.TypeA}, rcode: nxdomain, soa: true},
		{name: "outside the domain", q: query{name: "example.com.", qtype: mdns.TypeA}, rcode: refused},
		{name: "zone transfer", q: query{name: "regd.", qtype: mdns.TypeAXFR, net: "tcp"}, rcode: refused},
		{name: "over TCP", q: query{name: "web.service.regd.", qtype: mdns.TypeA, net: "tcp"}, answer: []string{"A 10.0.0.1"}},
		{name: "with EDNS0", q: query{name: "web.service.regd.", qtype: mdns.TypeSRV, edns: 1232}, answer: srvWeb, extra: []string{"A 10.0.0.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ask(t, addr, tt.q)
			if r.Rcode != tt.rcode {
				t.Errorf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tt.rcode])
			}
			if !r.Authoritative && tt.rcode != refused {
				t.Errorf("answer not authoritative")
			}
			got := records(r.Answer)
			for i, g := range got {
				if strings.HasPrefix(g, "SOA ") { // the serial moves
					got[i] = strings.Join(strings.Fields(g)[:3], " ")
				}
			}
			if !slices.Equal(got, tt.answer) {
				t.Errorf("answer %q, want %q", got, tt.answer)
			}
			if got := records(r.Extra); !slices.Equal(got, tt.extra) {
				t.Errorf("additional %q, want %q", got, tt.extra)
			}
			for _, rr := range r.Answer {
				if rr.Header().Name != tt.q.name {
					t.Errorf("owner %q, want the name as asked %q", rr.Header().Name, tt.q.name)
				}
				if rr.Header().Ttl != 0 {
					t.Errorf("TTL %d, want --dns-ttl's default 0", rr.Header().Ttl)
				}
			}
			if srv := findSRV(r.Answer, "w1.web.instance.regd."); srv != nil {
				if a := r.Extra[0]; a.Header().Name != srv.Target {
					t.Errorf("additional A named %q, want the SRV target %q", a.Header().Name, srv.Target)
				}
			}
			hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == mdns.TypeSOA
			if hasSOA != tt.soa {
				t.Errorf("authority %v, want the SOA: %v", r.Ns, tt.soa)
			}
			if hasSOA {
				soa := r.Ns[0].(*mdns.SOA)
				if soa.Hdr.Name != "regd." || soa.Serial == 0 || soa.Minttl != 0 {
					t.Errorf("SOA %v: want owner regd., a serial, MINIMUM --dns-ttl (0)", soa)
				}
			}
			if tt.q.edns != 0 && r.IsEdns0() == nil {
				t.Errorf("no OPT record in the answer to an EDNS0 query")
			}
		})
	}

	t.Run("metrics", func(t *testing.T) {
		_, _, body := regdtest.Do(t, http.MethodGet, m.URL("/metrics"), nil)
		for _, want := range []string{
			`regd_dns_queries_total{rcode="NXDOMAIN",type="A"}`,
			`regd_dns_queries_total{rcode="NOERROR",type="SRV"}`,
			`regd_dns_queries_total{rcode="REFUSED",type="AXFR"} 1`,
			// my_id of web, x of my.svc
			"regd_dns_unservable_instances 2",
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	})
}

func findSRV(rrs []mdns.RR, target string) *mdns.SRV {
	for _, rr := range rrs {
		if s, ok := rr.(*mdns.SRV); ok && s.Target == target {
			return s
		}
	}
	return nil
}

// TestDNSDomainAndTTL: --dns-domain and --dns-ttl reach every record, the
// SOA's MINIMUM (negative caching) included; regd. is then not served.
func TestDNSDomainAndTTL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := regdtest.StartCluster(t, 1, regdtest.Options{DNS: true, DNSDomain: "Disco.Example", DNSTTL: 30 * time.Second})
	m := c.Members[0]
	register(t, m, "web", "w1", map[string]any{"address": "10.0.0.1:80"})
	r := ask(t, m.DNSAddr, query{name: "_web._tcp.service.disco.example.", qtype: mdns.TypeSRV})
	if got := records(r.Answer); !slices.Equal(got, []string{"SRV 1 100 80 w1.web.instance.disco.example."}) {
		t.Fatalf("answer %q", got)
	}
	for _, rr := range append(r.Answer, r.Extra...) {
		if _, ok := rr.(*mdns.OPT); !ok && rr.Header().Ttl != 30 {
			t.Errorf("%v: TTL %d, want 30", rr, rr.Header().Ttl)
		}
	}
	r = ask(t, m.DNSAddr, query{name: "nope.service.disco.example.", qtype: mdns.TypeA})
	if soa, ok := r.Ns[0].(*mdns.SOA); r.Rcode != mdns.RcodeNameError || !ok || soa.Minttl != 30 || soa.Hdr.Ttl != 30 || soa.Hdr.Name != "disco.example." {
		t.Errorf("unknown name: %v", r)
	}
	if r := ask(t, m.DNSAddr, query{name: "web.service.regd.", qtype: mdns.TypeA}); r.Rcode != mdns.RcodeRefused {
		t.Errorf("regd. with another --dns-domain: %s, want REFUSED", mdns.RcodeToString[r.Rcode])
	}
}

// TestDNSTruncation: 200 instances do not fit a UDP answer: TC is set and
// the answer is complete over TCP (what a resolver retries with); EDNS0
// buffer sizes are honoured up to 4096.
func TestDNSTruncation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := regdtest.StartCluster(t, 1, regdtest.Options{DNS: true})
	m := c.Members[0]
	registerMany(t, m, "big", "i", 200)
	addr := m.DNSAddr
	srv := query{name: "_big._tcp.service.regd.", qtype: mdns.TypeSRV}

	for _, tt := range []struct {
		name  string
		edns  uint16
		limit int
	}{
		{"plain UDP: 512 octets", 0, 512},
		{"EDNS0 1232", 1232, 1232},
		{"EDNS0 4096", 4096, 4096},
		{"EDNS0 65000: capped at 4096", 65000, 4096},
		{"EDNS0 100: at least 512", 100, 512},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := srv
			q.edns = tt.edns
			r := ask(t, addr, q)
			r.Compress = true // as it was sent
			packed, err := r.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if !r.Truncated || len(r.Answer) == 0 || len(r.Answer) >= 200 {
				t.Fatalf("TC %v with %d SRV records: want a truncated answer", r.Truncated, len(r.Answer))
			}
			if len(packed) > tt.limit || len(packed) < tt.limit*3/4 {
				t.Errorf("%d octets; want at most %d, and not far below", len(packed), tt.limit)
			}
		})
	}
	t.Run("TCP: complete", func(t *testing.T) {
		q := srv
		q.net = "tcp"
		r := ask(t, addr, q)
		if r.Truncated || len(r.Answer) != 200 || len(r.Extra) != 200 {
			t.Fatalf("TC %v, %d SRV, %d additional: want 200 and 200 untruncated", r.Truncated, len(r.Answer), len(r.Extra))
		}
	})
	t.Run("A records fit EDNS0 4096", func(t *testing.T) {
		r := ask(t, addr, query{name: "big.service.regd.", qtype: mdns.TypeA, edns: 4096})
		if r.Truncated || len(r.Answer) != 200 {
			t.Fatalf("TC %v, %d A records: want 200", r.Truncated, len(r.Answer))
		}
		if r := ask(t, addr, query{name: "big.service.regd.", qtype: mdns.TypeA}); !r.Truncated {
			t.Errorf("200 A records in 512 octets: TC not set")
		}
	})
	t.Run("dig retries over TCP", func(t *testing.T) {
		dig, err := exec.LookPath("dig")
		if err != nil {
			t.Skip("dig is not installed (Debian: bind9-dnsutils; .ci/run installs it)")
		}
		host, port, _ := strings.Cut(addr, ":")
		out, err := exec.Command(dig, "@"+host, "-p", port, "+short", "+time=3", "+tries=1", "_big._tcp.service.regd.", "SRV").CombinedOutput()
		if err != nil {
			t.Fatalf("dig: %v\n%s", err, out)
		}
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 200 || !strings.HasPrefix(lines[0], "1 100 80 i") {
			t.Fatalf("dig printed %d lines, want 200 SRV records:\n%.300s", len(lines), out)
		}
		out, err = exec.Command(dig, "@"+host, "-p", port, "+ignore", "+noedns", "+time=3", "+tries=1", "_big._tcp.service.regd.", "SRV").CombinedOutput()
		if err != nil || !strings.Contains(string(out), " tc ") && !strings.Contains(string(out), " tc;") {
			t.Fatalf("dig +ignore: %v, want the tc flag:\n%.600s", err, out)
		}
	})
}

// TestDNSFollowsChanges: a drain, an undrain and a deregistration show in
// DNS within a second of their answer (the view is fed by a watch).
func TestDNSFollowsChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := regdtest.StartCluster(t, 1, regdtest.Options{DNS: true})
	m := c.Members[0]
	register(t, m, "api", "a1", map[string]any{"address": "10.0.0.1:80"})
	register(t, m, "api", "a2", map[string]any{"address": "10.0.0.2:80"})
	addrs := func(want ...string) func() error {
		return func() error {
			r, err := exchange(m.DNSAddr, query{name: "api.service.regd.", qtype: mdns.TypeA})
			if err != nil {
				return err
			}
			var w []string
			for _, a := range want {
				w = append(w, "A "+a)
			}
			if got := records(r.Answer); !slices.Equal(got, w) {
				return fmt.Errorf("A %q, want %q", got, w)
			}
			return nil
		}
	}
	poll.Until(t, 5*time.Second, "both addresses in DNS", addrs("10.0.0.1", "10.0.0.2"))

	patch(t, m, "api", "a1", `{"status":"draining"}`)
	t.Logf("drain gone from DNS after %v", poll.Measure(t, time.Second, "the drained address gone from DNS", addrs("10.0.0.2")))
	patch(t, m, "api", "a1", `{"status":"up"}`)
	t.Logf("undrain back in DNS after %v", poll.Measure(t, time.Second, "the undrained address back in DNS", addrs("10.0.0.1", "10.0.0.2")))
	if code, _, out := regdtest.Do(t, http.MethodDelete, m.URL("/v1/services/api/instances/a2"), nil); code != http.StatusNoContent {
		t.Fatalf("deregister: %d %s", code, out)
	}
	t.Logf("deregistration gone from DNS after %v", poll.Measure(t, time.Second, "the deregistered address gone from DNS", addrs("10.0.0.1")))
}

// TestDNSClusterAnswersAlike: every member of a 3-member cluster answers
// the same, whichever member the writes went through.
func TestDNSClusterAnswersAlike(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := regdtest.StartCluster(t, 3, regdtest.Options{DNS: true})
	for i := range 6 {
		m := c.Members[i%3]
		register(t, m, "pay", fmt.Sprintf("p%d", i), map[string]any{"address": fmt.Sprintf("10.0.2.%d:443", i+1), "weight": 10 * (i + 1), "metadata": map[string]string{"n": fmt.Sprint(i)}})
	}
	patch(t, c.Members[1], "pay", "p5", `{"status":"out_of_service"}`)
	questions := []query{
		{name: "pay.service.regd.", qtype: mdns.TypeA},
		{name: "_pay._tcp.service.regd.", qtype: mdns.TypeSRV},
		{name: "p3.pay.instance.regd.", qtype: mdns.TypeTXT},
		{name: "p5.pay.instance.regd.", qtype: mdns.TypeA},
	}
	answers := func(m *regdtest.Member) (string, error) {
		var b strings.Builder
		for _, q := range questions {
			r, err := exchange(m.DNSAddr, q)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "%s %s %q %q\n", q.name, mdns.RcodeToString[r.Rcode], records(r.Answer), records(r.Extra))
		}
		return b.String(), nil
	}
	// Writes through every member; member 0 answers with all of them
	// once its view has applied them (DNS never waits for a quorum).
	var want string
	poll.Until(t, 5*time.Second, "member 0 answers with every write", func() error {
		var err error
		want, err = answers(c.Members[0])
		if err == nil && (!strings.Contains(want, "SRV 1 50 443 p4.pay.instance.regd.") || !strings.Contains(want, "p5.pay.instance.regd. NXDOMAIN") || strings.Contains(want, "10.0.2.6")) {
			err = fmt.Errorf("member 0 has not applied every write yet:\n%s", want)
		}
		return err
	})
	if !strings.Contains(want, `"TXT \"n=3\""`) {
		t.Fatalf("member 0 answered:\n%s", want)
	}
	for i := 1; i < 3; i++ {
		poll.Until(t, 5*time.Second, fmt.Sprintf("member %d answers as member 0", i), func() error {
			got, err := answers(c.Members[i])
			if err == nil && got != want {
				err = fmt.Errorf("member %d answered\n%s\nmember 0\n%s", i, got, want)
			}
			return err
		})
	}
}

// TestDNSBadVersion: a query with an EDNS version regd does not implement
// (anything but 0) is answered BADVERS (16, an extended RCODE: 0 in the
// header, 1 in the OPT record's upper TTL byte) with an OPT record of
// version 0, the highest regd implements, and no records (RFC 6891
// §6.1.3), over UDP and TCP, to a real miekg/dns client and to dig.
// miekg/dns's server cannot do it itself: its MsgAcceptFunc sees only the
// header, not the OPT record, so the answerer does.
func TestDNSBadVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := regdtest.StartCluster(t, 1, regdtest.Options{DNS: true})
	m := c.Members[0]
	register(t, m, "web", "w1", map[string]any{"address": "10.0.0.1:80"})
	addr := m.DNSAddr

	badvers := 0
	for _, net := range []string{"udp", "tcp"} {
		for _, version := range []uint8{0, 1, 255} {
			for _, do := range []bool{false, true} {
				name := fmt.Sprintf("%s version %d DO %v", net, version, do)
				req := new(mdns.Msg)
				req.SetQuestion("web.service.regd.", mdns.TypeA)
				req.SetEdns0(1232, do)
				req.IsEdns0().SetVersion(version)
				cl := &mdns.Client{Net: net, UDPSize: 1232, Timeout: 3 * time.Second}
				r, _, err := cl.Exchange(req, addr)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				opt := r.IsEdns0()
				if opt == nil || opt.Version() != 0 || opt.Do() != do {
					t.Fatalf("%s: OPT %v; want one of version 0 with DO %v", name, opt, do)
				}
				if version == 0 { // the control: the same query, answered
					if r.Rcode != mdns.RcodeSuccess || !slices.Equal(records(r.Answer), []string{"A 10.0.0.1"}) {
						t.Fatalf("%s: %s %v; want NOERROR with A 10.0.0.1", name, rcodeName(r.Rcode), r.Answer)
					}
					continue
				}
				badvers++
				// miekg/dns's Unpack adds the OPT record's upper bits
				// to the header's four: 16 is 0 in the header and 1
				// in the OPT record, as RFC 6891 §6.1.3 puts it.
				if r.Rcode != mdns.RcodeBadVers || opt.ExtendedRcode() != mdns.RcodeBadVers {
					t.Fatalf("%s: rcode %s (extended %d); want BADVERS", name, rcodeName(r.Rcode), opt.ExtendedRcode())
				}
				if len(r.Answer)+len(r.Ns) != 0 || len(r.Extra) != 1 {
					t.Fatalf("%s: answer %v, authority %v, additional %v; want the OPT record only", name, r.Answer, r.Ns, r.Extra)
				}
			}
		}
	}

	t.Run("dig", func(t *testing.T) {
		dig, err := exec.LookPath("dig")
		if err != nil {
			t.Skip("dig is not installed (Debian: bind9-dnsutils; .ci/run installs it)")
		}
		host, port, _ := strings.Cut(addr, ":")
		// +noednsnegotiation: dig's default answers BADVERS by asking
		// again with version 0 and prints that answer, after a line
		// saying so.
		out, err := exec.Command(dig, "@"+host, "-p", port, "+edns=1", "+noednsnegotiation", "+time=3", "+tries=1", "web.service.regd.", "A").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "status: BADVERS") || !strings.Contains(string(out), "EDNS: version: 0,") {
			t.Fatalf("dig +edns=1 +noednsnegotiation: %v, want status BADVERS and EDNS version 0:\n%s", err, out)
		}
		badvers++
		out, err = exec.Command(dig, "@"+host, "-p", port, "+edns=1", "+time=3", "+tries=1", "web.service.regd.", "A").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "BADVERS, retrying with EDNS version 0") || !strings.Contains(string(out), "status: NOERROR") {
			t.Fatalf("dig +edns=1: %v, want its retry with version 0 answered NOERROR:\n%s", err, out)
		}
		badvers++
	})

	// Counted under their name, BADVERS (16 is also TSIG's BADSIG, the
	// name miekg/dns's RcodeToString gives it).
	_, _, body := regdtest.Do(t, http.MethodGet, m.URL("/metrics"), nil)
	if want := fmt.Sprintf(`regd_dns_queries_total{rcode="BADVERS",type="A"} %d`, badvers); !strings.Contains(string(body), want) {
		t.Errorf("/metrics lacks %q; it has %q", want, regexp.MustCompile(`(?m)^regd_dns_queries_total.*$`).FindAllString(string(body), -1))
	}
}

func rcodeName(rcode int) string {
	if rcode == mdns.RcodeBadVers {
		return "BADVERS"
	}
	return mdns.RcodeToString[rcode]
}
