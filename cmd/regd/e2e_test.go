//go:build e2e

// End-to-end tests: the real regd binary, run as a process with real signals.
// Run them with `make test-e2e` (go test -tags e2e -run E2E ./...).
//
// Every test but TestE2EDevMode gives regd free loopback ports and a temp data
// dir, so these tests never collide with each other or with a developer's
// dev-mode regd on the default ports.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/regd/regd/internal/e2e"
	"github.com/regd/regd/internal/poll"
)

func TestMain(m *testing.M) { e2e.Main(m) }

const (
	readyTimeout = 30 * time.Second // etcd's first start, on a slow CI machine
	stopTimeout  = 15 * time.Second // graceful shutdown
	usageTimeout = 5 * time.Second  // a bad flag must fail at once
)

// checkLogs asserts that stderr is JSON log lines only, that nothing was
// logged at error level or above, and that regd itself (as opposed to the
// embedded etcd, whose warnings regd does not own) warned about nothing.
func checkLogs(t *testing.T, stderr string) {
	t.Helper()
	logs, other := e2e.ParseLogs(stderr)
	for _, line := range other {
		t.Errorf("stderr line is not a JSON log line: %s", line)
	}
	for _, l := range logs {
		switch {
		case l.Level == "error" || l.Level == "dpanic" || l.Level == "panic" || l.Level == "fatal":
			t.Errorf("%s-level log line: %s", l.Level, l.Raw)
		case l.Level == "warn" && !strings.HasPrefix(l.Logger, "etcd"):
			t.Errorf("regd warned: %s", l.Raw)
		case l.Level == "warn":
			t.Logf("etcd warned: %s", l.Raw)
		}
	}
}

// hasLog reports whether stderr has a JSON log line with message msg.
func hasLog(stderr, msg string) bool {
	logs, _ := e2e.ParseLogs(stderr)
	for _, l := range logs {
		if l.Msg == msg {
			return true
		}
	}
	return false
}

func wantStatus(t *testing.T, what string, r e2e.Resp, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: status %d, want %d; body %s", what, r.Status, status, r.Body)
	}
}

type instance struct {
	Service  string            `json:"service"`
	ID       string            `json:"id"`
	Address  string            `json:"address"`
	Metadata map[string]string `json:"metadata"`
	TTL      int               `json:"ttl"`
	LeaseID  string            `json:"lease_id"`
	Revision int64             `json:"revision"`
}

type instanceList struct {
	Service   string     `json:"service"`
	Instances []instance `json:"instances"`
	Revision  int64      `json:"revision"`
}

// register puts service/id with a one-hour TTL, so it cannot expire during a
// test, and checks the answer.
func register(t *testing.T, base, service, id, addr string, status int) instance {
	t.Helper()
	url := fmt.Sprintf("%s/v1/services/%s/instances/%s", base, service, id)
	r := e2e.Do(t, http.MethodPut, url, fmt.Sprintf(`{"address":%q,"ttl":3600}`, addr))
	wantStatus(t, "register", r, status)
	var in instance
	r.JSON(t, &in)
	if in.Service != service || in.ID != id || in.Address != addr || in.TTL != 3600 || in.LeaseID == "" || in.Revision <= 0 {
		t.Fatalf("register answered %s", r.Body)
	}
	return in
}

// checkInstance asserts that service/id is registered at addr: by GET, in the
// service's list, and with a live lease (heartbeat 200).
func checkInstance(t *testing.T, base, service, id, addr string) {
	t.Helper()
	url := fmt.Sprintf("%s/v1/services/%s/instances/%s", base, service, id)
	r := e2e.Do(t, http.MethodGet, url, "")
	wantStatus(t, "get", r, http.StatusOK)
	var in instance
	r.JSON(t, &in)
	if in.Address != addr {
		t.Fatalf("get: address %q, want %q (body %s)", in.Address, addr, r.Body)
	}

	r = e2e.Do(t, http.MethodGet, fmt.Sprintf("%s/v1/services/%s/instances", base, service), "")
	wantStatus(t, "list", r, http.StatusOK)
	var l instanceList
	r.JSON(t, &l)
	if l.Service != service || len(l.Instances) != 1 || l.Instances[0].ID != id || l.Instances[0].Address != addr {
		t.Fatalf("list: %s", r.Body)
	}
	if l.Revision <= 0 || r.Header.Get("X-Regd-Revision") != fmt.Sprint(l.Revision) {
		t.Fatalf("list: revision %d, X-Regd-Revision %q", l.Revision, r.Header.Get("X-Regd-Revision"))
	}

	r = e2e.Do(t, http.MethodPut, url+"/heartbeat", "")
	wantStatus(t, "heartbeat", r, http.StatusOK)
}

// stop sends sig and asserts a clean exit 0 within stopTimeout.
func stop(t *testing.T, p *e2e.Proc, sig syscall.Signal) {
	t.Helper()
	start := time.Now()
	p.Signal(sig)
	if code := p.Wait(stopTimeout); code != 0 {
		t.Fatalf("after %v: exit code %d, want 0", sig, code)
	}
	t.Logf("%v: exited 0 after %v", sig, time.Since(start).Round(time.Millisecond))
}

// TestE2EDevMode is the README's first command: `regd` with no flags at all
// is a working, persistent single-node registry on the default ports.
func TestE2EDevMode(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.1:2379", "127.0.0.1:2380", "127.0.0.1:8600"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("default ports busy: %s: %v", addr, err)
		}
		l.Close()
	}
	if pc, err := net.ListenPacket("udp", "127.0.0.1:8600"); err != nil {
		t.Skipf("default DNS port busy: %v", err)
	} else {
		pc.Close()
	}
	bin := e2e.Build(t)
	dir := t.TempDir()
	const base = "http://127.0.0.1:8080"

	p := e2e.Start(t, bin, dir)
	p.WaitReady(base, readyTimeout)
	register(t, base, "user", "u1", "10.0.0.5:8080", http.StatusCreated)
	checkInstance(t, base, "user", "u1", "10.0.0.5:8080")
	// DNS is on in dev mode too, at its default address and domain. It
	// answers from the view, which applies the registration a moment
	// after the 201.
	poll.Until(t, 5*time.Second, "dev mode DNS answering user.service.regd. A [10.0.0.5]", func() error {
		if got := lookupA(t, "127.0.0.1:8600", "user.service.regd."); !slices.Equal(got, []string{"10.0.0.5"}) {
			return fmt.Errorf("A %v", got)
		}
		return nil
	})
	stop(t, p, syscall.SIGTERM)
	checkLogs(t, p.Stderr())
	if fi, err := os.Stat(filepath.Join(dir, "default.regd")); err != nil || !fi.IsDir() {
		t.Fatalf("dev mode data dir ./default.regd: %v", err)
	}

	// Started again from the same directory, it finds its data: the instance
	// and its lease survived.
	p = e2e.Start(t, bin, dir)
	p.WaitReady(base, readyTimeout)
	checkInstance(t, base, "user", "u1", "10.0.0.5:8080")
	stop(t, p, syscall.SIGINT)
	checkLogs(t, p.Stderr())
}

// TestE2EFlagErrors: every bad invocation exits 2 at once with one line on
// stderr that names what is wrong, and starts nothing.
func TestE2EFlagErrors(t *testing.T) {
	t.Parallel()
	bin := e2e.Build(t)

	// Each case's args come after a full set of good ones (free ports, a
	// temp data dir); the flag package keeps the last value of a flag.
	tests := []struct {
		name   string
		args   func(t *testing.T) []string
		env    []string
		noHTTP bool   // leave --http-addr out of the good args (env tests)
		want   string // stderr must mention this
	}{
		{name: "malformed client URL", args: fixed("--listen-client-urls", "htp:/x"), want: "--listen-client-urls"},
		{name: "peer URL with bad port", args: fixed("--listen-peer-urls", "http://127.0.0.1:notaport"), want: "--listen-peer-urls"},
		{name: "bad cluster state", args: fixed("--initial-cluster-state", "old"), want: "--initial-cluster-state"},
		{name: "cluster without this member", args: fixed("--initial-cluster", "x=http://127.0.0.1:1"), want: "--initial-cluster"},
		{name: "empty advertise client URLs", args: fixed("--advertise-client-urls", ""), want: "--advertise-client-urls"},
		{name: "prefix without slashes", args: fixed("--prefix", "service"), want: "--prefix"},
		{name: "bad log level", args: fixed("--log-level", "loud"), want: "--log-level"},
		{name: "stray argument", args: fixed("extra"), want: "extra"},
		{name: "unknown flag", args: fixed("--nope"), want: "nope"},
		{name: "bad env", env: []string{"REGD_HTTP_ADDR=bad"}, noHTTP: true, want: "REGD_HTTP_ADDR"},
		{
			name: "busy REST port",
			args: func(t *testing.T) []string { return []string{"--http-addr", busy(t)} },
			want: "--http-addr",
		},
		{
			name: "busy DNS port (TCP)",
			args: func(t *testing.T) []string { return []string{"--dns-addr", busy(t)} },
			want: `--dns-addr "`,
		},
		{
			name: "busy DNS port (UDP)",
			args: func(t *testing.T) []string {
				pc, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { pc.Close() })
				return []string{"--dns-addr", pc.LocalAddr().String()}
			},
			want: "cannot listen: udp: ",
		},
		{
			name: "busy client port",
			args: func(t *testing.T) []string {
				u := "http://" + busy(t)
				return []string{"--listen-client-urls", u, "--advertise-client-urls", u}
			},
			want: "--listen-client-urls",
		},
		{
			name: "client and peer URLs on one port",
			args: fixed("--listen-client-urls", "http://127.0.0.1:29991", "--advertise-client-urls", "http://127.0.0.1:29991",
				"--listen-peer-urls", "http://127.0.0.1:29991"),
			want: `--listen-peer-urls "127.0.0.1:29991": the same port as --listen-client-urls "127.0.0.1:29991"`,
		},
		{
			name: "REST on the client port",
			args: fixed("--listen-client-urls", "http://127.0.0.1:29992", "--advertise-client-urls", "http://127.0.0.1:29992",
				"--http-addr", "127.0.0.1:29992"),
			want: `--http-addr "127.0.0.1:29992": the same port as --listen-client-urls`,
		},
		{name: "data dir in /proc", args: fixed("--data-dir", "/proc/regd-x"), want: "--data-dir"},
		{
			name: "data dir under a file",
			args: func(t *testing.T) []string {
				f := filepath.Join(t.TempDir(), "file")
				if err := os.WriteFile(f, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				return []string{"--data-dir", filepath.Join(f, "sub")}
			},
			want: "--data-dir",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := e2e.NewNode(t)
			args := n.Args()
			if tt.noHTTP {
				args = args[2:] // Args starts with --http-addr and its value
			}
			if tt.args != nil {
				args = append(args, tt.args(t)...)
			}
			start := time.Now()
			p := e2e.StartEnv(t, bin, t.TempDir(), e2e.CleanEnv(tt.env...), args...)
			code := p.Wait(usageTimeout)
			t.Logf("exit %d after %v: %s", code, time.Since(start).Round(time.Millisecond), strings.TrimSpace(p.Stderr()))
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			lines := strings.Split(strings.TrimRight(p.Stderr(), "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "regd: ") || !strings.Contains(lines[0], tt.want) {
				t.Errorf("stderr %q: want one line starting %q that mentions %q", p.Stderr(), "regd: ", tt.want)
			}
			if p.Stdout() != "" {
				t.Errorf("stdout %q, want nothing", p.Stdout())
			}
		})
	}
}

func fixed(args ...string) func(*testing.T) []string {
	return func(*testing.T) []string { return args }
}

// busy returns the address of a loopback listener held until the test ends.
func busy(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

// TestE2ESignals: SIGTERM shuts down cleanly with exit 0; a second signal
// during shutdown makes regd exit at once.
func TestE2ESignals(t *testing.T) {
	t.Parallel()
	bin := e2e.Build(t)

	t.Run("graceful", func(t *testing.T) {
		t.Parallel()
		p, n := e2e.StartNode(t, bin, t.TempDir(), e2e.CleanEnv())
		register(t, n.URL(), "user", "u1", "10.0.0.5:8080", http.StatusCreated)
		stop(t, p, syscall.SIGTERM)
		stderr := p.Stderr()
		checkLogs(t, stderr)
		for _, msg := range []string{"shutting down", "regd node stopped"} {
			if !hasLog(stderr, msg) {
				t.Errorf("no log line with msg %q", msg)
			}
		}
	})

	t.Run("second signal", func(t *testing.T) {
		t.Parallel()
		p, n := e2e.StartNode(t, bin, t.TempDir(), e2e.CleanEnv())
		register(t, n.URL(), "user", "u1", "10.0.0.5:8080", http.StatusCreated)
		start := time.Now()
		p.Signal(syscall.SIGTERM)
		p.Signal(syscall.SIGTERM)
		// Either the shutdown finished first (0) or the second signal cut it
		// short (1); the point is that regd is gone promptly.
		code := p.Wait(5 * time.Second)
		t.Logf("exit %d after %v", code, time.Since(start).Round(time.Millisecond))
		if code != 0 && code != 1 {
			t.Errorf("exit code %d, want 0 or 1", code)
		}
	})
}

// TestE2EHelpVersion: --help and --version answer on stdout, exit 0, and
// start nothing (no data dir appears).
func TestE2EHelpVersion(t *testing.T) {
	t.Parallel()
	bin := e2e.Build(t)
	tests := []struct {
		args []string
		want string // stdout starts with this
	}{
		{[]string{"--help"}, "Usage: regd"},
		{[]string{"-h"}, "Usage: regd"},
		{[]string{"--version"}, "regd "},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := e2e.Start(t, bin, dir, tt.args...)
			if code := p.Wait(usageTimeout); code != 0 {
				t.Errorf("exit code %d, want 0; stderr %q", code, p.Stderr())
			}
			if !strings.HasPrefix(p.Stdout(), tt.want) {
				t.Errorf("stdout %q, want it to start with %q", p.Stdout(), tt.want)
			}
			if p.Stderr() != "" {
				t.Errorf("stderr %q, want nothing", p.Stderr())
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("%v created %v in its working directory", tt.args, entries)
			}
		})
	}
}

// TestE2EEnv: every flag can come from REGD_<FLAG>, and a flag beats its
// environment variable.
func TestE2EEnv(t *testing.T) {
	t.Parallel()
	bin := e2e.Build(t)

	t.Run("all from env", func(t *testing.T) {
		t.Parallel()
		n := e2e.NewNode(t)
		env := e2e.CleanEnv(
			"REGD_NAME=envnode",
			"REGD_DATA_DIR="+n.DataDir,
			"REGD_HTTP_ADDR="+n.HTTPAddr,
			"REGD_LISTEN_CLIENT_URLS="+n.ClientURL,
			"REGD_ADVERTISE_CLIENT_URLS="+n.ClientURL,
			"REGD_LISTEN_PEER_URLS="+n.PeerURL,
			"REGD_INITIAL_ADVERTISE_PEER_URLS="+n.PeerURL,
			"REGD_PREFIX=/svc/",
			"REGD_DNS_ADDR="+n.DNSAddr,
		)
		p := e2e.StartEnv(t, bin, t.TempDir(), env)
		p.WaitReady(n.URL(), readyTimeout)

		r := e2e.Do(t, http.MethodGet, n.URL()+"/v1/cluster", "")
		wantStatus(t, "cluster", r, http.StatusOK)
		var c struct {
			Node    string `json:"node"`
			Members []struct {
				Name       string   `json:"name"`
				ClientURLs []string `json:"client_urls"`
			} `json:"members"`
		}
		r.JSON(t, &c)
		if c.Node != "envnode" || len(c.Members) != 1 || len(c.Members[0].ClientURLs) != 1 || c.Members[0].ClientURLs[0] != n.ClientURL {
			t.Errorf("cluster %s: want node envnode advertising %s", r.Body, n.ClientURL)
		}
		if _, err := os.Stat(n.DataDir); err != nil {
			t.Errorf("REGD_DATA_DIR not used: %v", err)
		}
		register(t, n.URL(), "user", "u1", "10.0.0.5:8080", http.StatusCreated)
		// DNS answers from the member's view, which applies the
		// registration from its watch a moment after the 201.
		poll.Until(t, 5*time.Second, "DNS on REGD_DNS_ADDR "+n.DNSAddr+" answering user.service.regd. A [10.0.0.5]", func() error {
			if got := lookupA(t, n.DNSAddr, "user.service.regd."); !slices.Equal(got, []string{"10.0.0.5"}) {
				return fmt.Errorf("A %v", got)
			}
			return nil
		})
		stop(t, p, syscall.SIGTERM)
		checkLogs(t, p.Stderr())
	})

	t.Run("flag beats env", func(t *testing.T) {
		t.Parallel()
		envAddr := fmt.Sprintf("127.0.0.1:%d", e2e.FreePort(t))
		p, n := e2e.StartNode(t, bin, t.TempDir(), e2e.CleanEnv("REGD_HTTP_ADDR="+envAddr))
		// StartNode passed --http-addr n.HTTPAddr and waited for it.
		if c, err := net.DialTimeout("tcp", envAddr, time.Second); err == nil {
			c.Close()
			t.Errorf("regd listens on REGD_HTTP_ADDR %s although --http-addr %s was given", envAddr, n.HTTPAddr)
		}
		stop(t, p, syscall.SIGTERM)
	})
}

// lookupA asks the DNS server at addr, over UDP as a resolver would, for
// name's A records, and returns their addresses sorted.
func lookupA(t *testing.T, addr, name string) []string {
	t.Helper()
	c := &mdns.Client{Timeout: 2 * time.Second}
	q := new(mdns.Msg)
	q.SetQuestion(name, mdns.TypeA)
	r, _, err := c.Exchange(q, addr)
	if err != nil {
		t.Fatalf("DNS %s A at %s: %v", name, addr, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out
}
