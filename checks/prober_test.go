package checks_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/regd/regd/checks"
	"github.com/regd/regd/internal/checktest"
	"github.com/regd/regd/internal/poll"
)

func probe(t *testing.T, p *checks.Prober, kind, target string) checks.Result {
	t.Helper()
	return p.Probe(context.Background(), kind, target, 2*time.Second)
}

func TestHTTP(t *testing.T) {
	b := checktest.NewHTTP(t)
	p := checks.New(checks.Config{UserAgent: "regd-check (member m9)"})
	b.Set("down", checktest.Failing)
	for _, tc := range []struct {
		id      string
		passing bool
		output  string
	}{
		{"up", true, "HTTP GET " + b.URL("up") + ": 200 OK\nok"},
		{"down", false, "HTTP GET " + b.URL("down") + ": 503 Service Unavailable\ninstance down is down"},
	} {
		r := probe(t, p, checks.KindHTTP, b.URL(tc.id))
		if r.Passing != tc.passing || r.Output != tc.output {
			t.Errorf("%s: %+v, want passing=%v output %q", tc.id, r, tc.passing, tc.output)
		}
	}
	if ps := b.Probes("up"); len(ps) != 1 || ps[0].Member != "m9" {
		t.Errorf("probes of up: %+v, want one from member m9 (User-Agent)", ps)
	}
	// The status decides, the body is output only.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	if r := probe(t, p, checks.KindHTTP, srv.URL); !r.Passing || r.Output != "HTTP GET "+srv.URL+": 204 No Content" {
		t.Errorf("204: %+v", r)
	}
}

// Redirects are followed on the target's host only: a redirect elsewhere
// is the answer, and fails the check.
func TestHTTPRedirects(t *testing.T) {
	other := checktest.NewHTTP(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/away":
			http.Redirect(w, r, other.URL("x"), http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		case "/ok":
			fmt.Fprint(w, "fine")
		}
	}))
	defer srv.Close()
	p := checks.New(checks.Config{})
	if r := probe(t, p, checks.KindHTTP, srv.URL+"/same"); !r.Passing || !strings.HasSuffix(r.Output, "200 OK\nfine") {
		t.Errorf("same-host redirect: %+v, want it followed", r)
	}
	r := probe(t, p, checks.KindHTTP, srv.URL+"/away")
	if r.Passing || !strings.Contains(r.Output, "302 Found (redirect to "+other.URL("x")+" not followed") {
		t.Errorf("redirect to another host: %+v, want a failing 302", r)
	}
	if n := len(other.Probes("x")); n != 0 {
		t.Errorf("the other host got %d requests, want none", n)
	}
	if r := probe(t, p, checks.KindHTTP, srv.URL+"/loop"); r.Passing || !strings.Contains(r.Output, "redirects") {
		t.Errorf("redirect loop: %+v", r)
	}
}

// A hanging target costs the probe its timeout, no more.
func TestHTTPHangingTarget(t *testing.T) {
	b := checktest.NewHTTP(t)
	b.Set("h", checktest.Hanging)
	p := checks.New(checks.Config{})
	start := time.Now()
	r := p.Probe(context.Background(), checks.KindHTTP, b.URL("h"), 300*time.Millisecond)
	if r.Passing || !strings.Contains(r.Output, "timed out") {
		t.Errorf("hanging target: %+v, want a failing timeout", r)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the probe took %s with a 300ms timeout", took)
	}
	// The connection is closed: the backend's handler returns.
	poll.Until(t, 10*time.Second, "the hanging request closed at the backend after the probe ended", func() error {
		if n := b.Hung("h"); n > 0 {
			return fmt.Errorf("%d still open", n)
		}
		return nil
	})
}

// A target that sends an endless body costs the output's 4 KiB and
// the connection, not the body: memory per probe stays small, and the
// connection is closed (the backend's writes fail).
func TestHTTPFloodingTarget(t *testing.T) {
	b := checktest.NewHTTP(t)
	b.Set("f", checktest.Flood)
	p := checks.New(checks.Config{})
	probe(t, p, checks.KindHTTP, b.URL("f")) // warm up
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const n = 10
	for range n {
		r := probe(t, p, checks.KindHTTP, b.URL("f"))
		if !r.Passing || len(r.Output) > checks.DefaultMaxOutputBytes || !strings.Contains(r.Output, "flood flood") {
			t.Fatalf("flooding target: passing=%v, %d bytes of output (at most %d)", r.Passing, len(r.Output), checks.DefaultMaxOutputBytes)
		}
	}
	runtime.ReadMemStats(&after)
	perProbe := (after.TotalAlloc - before.TotalAlloc) / n
	if perProbe > 256<<10 {
		t.Errorf("a probe of a flooding target allocated %d bytes; the body must not be read past the output's limit", perProbe)
	}
	t.Logf("allocated per probe of a flooding target: %d bytes; the backend managed to send %d bytes in %d probes", perProbe, b.Flooded("f"), n+1)
}

func TestHTTPHeaderFlood(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 100 {
			w.Header().Set(fmt.Sprintf("X-Flood-%d", i), strings.Repeat("x", 1000))
		}
	}))
	defer srv.Close()
	r := probe(t, checks.New(checks.Config{}), checks.KindHTTP, srv.URL)
	if r.Passing || !strings.Contains(r.Output, "header") {
		t.Errorf("100 KB of headers: %+v, want a failing probe", r)
	}
}

// HTTP_PROXY would send probes around the allowed networks: it is ignored.
func TestHTTPIgnoresProxyEnvironment(t *testing.T) {
	b := checktest.NewHTTP(t)
	proxy := checktest.NewHTTP(t)
	t.Setenv("HTTP_PROXY", "http://"+proxy.Addr())
	t.Setenv("http_proxy", "http://"+proxy.Addr())
	if r := probe(t, checks.New(checks.Config{}), checks.KindHTTP, b.URL("x")); !r.Passing {
		t.Errorf("probe with HTTP_PROXY set: %+v", r)
	}
	if len(b.Probes("x")) != 1 {
		t.Error("the target did not get the probe")
	}
}

func TestTCP(t *testing.T) {
	b := checktest.NewTCP(t)
	p := checks.New(checks.Config{})
	if r := probe(t, p, checks.KindTCP, b.Addr()); !r.Passing || r.Output != "TCP connect "+b.Addr()+": success" {
		t.Errorf("up: %+v", r)
	}
	b.Down()
	if r := probe(t, p, checks.KindTCP, b.Addr()); r.Passing || !strings.Contains(r.Output, "refused") {
		t.Errorf("down: %+v", r)
	}
	b.Up()
	if r := probe(t, p, checks.KindTCP, b.Addr()); !r.Passing {
		t.Errorf("up again: %+v", r)
	}
}

func TestGRPC(t *testing.T) {
	b := checktest.NewGRPC(t)
	p := checks.New(checks.Config{})
	pre := "gRPC health check "
	for _, tc := range []struct {
		target  string
		passing bool
		output  string
	}{
		{b.Addr(), true, pre + b.Addr() + ": SERVING"},
		{b.Addr() + "/svc.A", true, pre + b.Addr() + "/svc.A: SERVING"},
		{b.Addr() + "/svc.Unknown", false, pre + b.Addr() + "/svc.Unknown: NotFound: unknown service"},
	} {
		if r := probe(t, p, checks.KindGRPC, tc.target); r.Passing != tc.passing || r.Output != tc.output {
			t.Errorf("%s: %+v, want passing=%v %q", tc.target, r, tc.passing, tc.output)
		}
	}
	b.Set("", false)
	if r := probe(t, p, checks.KindGRPC, b.Addr()); r.Passing || r.Output != pre+b.Addr()+": NOT_SERVING" {
		t.Errorf("not serving: %+v", r)
	}
	closed := checktest.NewTCP(t)
	closed.Down()
	if r := probe(t, p, checks.KindGRPC, closed.Addr()); r.Passing || !strings.Contains(r.Output, "Unavailable") {
		t.Errorf("nothing listening: %+v", r)
	}
}

// resolver answers from a table: a name server under the test's control.
type resolver map[string][]netip.Addr

func (r resolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// Every address a target is, or resolves to, must be in the allowed
// networks; the connection goes to a checked address, never to the name.
func TestAllowedNetworks(t *testing.T) {
	b := checktest.NewHTTP(t)
	_, port, _ := net.SplitHostPort(b.Addr())
	tenOnly := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	names := resolver{
		"loop.test":    {netip.MustParseAddr("127.0.0.1")},
		"rebind.test":  {netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("127.0.0.1")},
		"allowed.test": {netip.MustParseAddr("127.0.0.1")},
		"meta.test":    {netip.MustParseAddr("169.254.169.254")},
	}
	for _, tc := range []struct {
		name    string
		allowed []netip.Prefix
		target  string
		passing bool
		output  string // a part of it
	}{
		{"loopback by default", nil, "http://127.0.0.1:" + port + "/health/a", true, "200 OK"},
		{"name by default", nil, "http://allowed.test:" + port + "/health/a", true, "200 OK"},
		{"literal outside", tenOnly, "http://127.0.0.1:" + port + "/health/a", false, "address 127.0.0.1 is outside the networks checks may reach"},
		{"mapped IPv4 outside", tenOnly, "http://[::ffff:127.0.0.1]:" + port + "/health/a", false, "127.0.0.1, which is outside"},
		{"name outside", tenOnly, "http://loop.test:" + port + "/health/a", false, "loop.test resolves to 127.0.0.1, which is outside"},
		{"one address outside", tenOnly, "http://rebind.test:" + port + "/health/a", false, "rebind.test resolves to 127.0.0.1"},
		{"metadata service by default", nil, "http://meta.test/latest/meta-data/", false, "meta.test resolves to 169.254.169.254, which is outside"},
		{"link-local literal by default", nil, "http://169.254.169.254/", false, "address 169.254.169.254 is outside"},
		{"all allowed", []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}, "http://loop.test:" + port + "/health/a", true, "200 OK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := checks.New(checks.Config{AllowedCIDRs: tc.allowed, Resolver: names})
			r := p.Probe(context.Background(), checks.KindHTTP, tc.target, time.Second)
			if r.Passing != tc.passing || !strings.Contains(r.Output, tc.output) {
				t.Errorf("%+v, want passing=%v with %q", r, tc.passing, tc.output)
			}
		})
	}
	// The same rule for TCP and gRPC targets.
	p := checks.New(checks.Config{AllowedCIDRs: tenOnly, Resolver: names})
	for _, kind := range []string{checks.KindTCP, checks.KindGRPC} {
		r := p.Probe(context.Background(), kind, "loop.test:"+port, time.Second)
		if r.Passing || !strings.Contains(r.Output, "loop.test resolves to 127.0.0.1, which is outside") {
			t.Errorf("%s: %+v", kind, r)
		}
	}
	before := len(b.Probes("a"))
	if before != 3 {
		t.Errorf("the backend got %d probes, want 3 (only the allowed ones)", before)
	}
}

// The real resolver: localhost is loopback, outside 10/8.
func TestAllowedNetworksResolvesNames(t *testing.T) {
	b := checktest.NewTCP(t)
	_, port, _ := net.SplitHostPort(b.Addr())
	p := checks.New(checks.Config{AllowedCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	r := probe(t, p, checks.KindTCP, "localhost:"+port)
	if r.Passing || !strings.Contains(r.Output, "localhost resolves to") {
		t.Errorf("localhost with only 10/8 allowed: %+v", r)
	}
}

func TestParseCIDRs(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{"10.0.0.0/8", "10.0.0.0/8", ""},
		{" 10.0.0.0/8 , fd00::/8 ", "10.0.0.0/8,fd00::/8", ""},
		{"10.1.2.3", "10.1.2.3/32", ""},
		{"::1", "::1/128", ""},
		{"10.1.2.3/8", "10.0.0.0/8", ""},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8", ""},
		{"0.0.0.0/0,::/0", "0.0.0.0/0,::/0", ""},
		{"", "", "no networks"},
		{"10.0.0.0/33", "", "CIDR"},
		{"example.com", "", "neither"},
		{"10.0.0.0/8,x", "", "neither"},
	} {
		got, err := checks.ParseCIDRs(tc.in)
		var s []string
		for _, p := range got {
			s = append(s, p.String())
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || strings.Join(s, ",") != tc.want {
			t.Errorf("%q: %v, %v; want %s", tc.in, s, err, tc.want)
		}
	}
}

// Output is cut to the limit on a character boundary.
func TestOutputBound(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, strings.Repeat("é", 5000))
	}))
	defer srv.Close()
	r := probe(t, checks.New(checks.Config{MaxOutputBytes: 101}), checks.KindHTTP, srv.URL)
	if r.Passing || len(r.Output) > 101 || !utf8.ValidString(r.Output) {
		t.Errorf("%d bytes, valid UTF-8 %v: %q", len(r.Output), utf8.ValidString(r.Output), r.Output)
	}
}

// TestRefuseLiteral: registration refuses IP addresses outside the list
// (mapped IPv4 as IPv4, brackets or not) and leaves names to the
// connection.
func TestRefuseLiteral(t *testing.T) {
	for host, refused := range map[string]bool{
		"10.1.2.3": false, "127.0.0.1": false, "[::1]": false, "::1": false, "fd00::5": false,
		"8.8.8.8": true, "169.254.169.254": true, "::ffff:169.254.169.254": true, "[::ffff:8.8.8.8]": true, "0.0.0.0": true, "fe80::1": true,
		"db.internal": false, "metadata.google.internal": false,
	} {
		err := checks.RefuseLiteral(nil, host)
		var denied *checks.DeniedError
		if refused != (err != nil) || err != nil && !errors.As(err, &denied) {
			t.Errorf("%s: %v, want refused %v", host, err, refused)
		}
	}
	anyNet, err := checks.ParseCIDRs("0.0.0.0/0,::/0")
	if err != nil {
		t.Fatal(err)
	}
	if err := checks.RefuseLiteral(anyNet, "8.8.8.8"); err != nil {
		t.Errorf("8.8.8.8 with 0.0.0.0/0 allowed: %v", err)
	}
}
