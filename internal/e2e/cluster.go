package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/regd/regd/internal/tcpproxy"
)

// ClusterOptions shape a Cluster.
type ClusterOptions struct {
	// Size is the number of members; 0 means 3.
	Size int
	// Proxies puts a tcpproxy.Proxy in front of every member's peer URL:
	// members listen for peers on one port and advertise the proxy's, so
	// Isolate can partition a member. Without proxies members talk directly.
	Proxies bool
	// DataDir returns member i's data dir; nil: a fresh temp dir each.
	DataDir func(i int) string
	// Env is the members' environment; nil: CleanEnv().
	Env []string
	// Extra flags for every member (not ports, names or the data dir).
	Extra []string
	// ReadyTimeout bounds the start of the cluster; 0: 30 s.
	ReadyTimeout time.Duration
}

// ClusterMember is one member of a Cluster.
type ClusterMember struct {
	Name             string // m1, m2, ...
	Node             Node   // REST, client and (listen) peer addresses, data dir
	AdvertisePeerURL string // the proxy's URL with Proxies, else Node.PeerURL
	Proxy            *tcpproxy.Proxy
	ID               string // the etcd member ID in hex, as /v1/cluster shows it

	mu   sync.Mutex
	proc *Proc
	args []string
}

// URL is the member's REST base URL.
func (m *ClusterMember) URL() string { return m.Node.URL() }

// Proc is the member's current process (the last one started).
func (m *ClusterMember) Proc() *Proc {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc
}

// Cluster is a cluster of real regd processes on loopback ports, started
// the etcd way (--initial-cluster naming every member). Every process and
// proxy is stopped when the test ends.
type Cluster struct {
	tb      testing.TB
	bin     string
	dir     string
	opts    ClusterOptions
	Members []*ClusterMember
}

// StartCluster starts opts.Size members of bin at once and waits until every
// one is ready (a new cluster's members become ready only together). A port
// taken by another process between reservation and bind fails the start
// with "cannot listen"; then the whole cluster is started again on fresh
// ports, up to three times.
func StartCluster(tb testing.TB, bin string, opts ClusterOptions) *Cluster {
	tb.Helper()
	if opts.Size == 0 {
		opts.Size = 3
	}
	if opts.Env == nil {
		opts.Env = CleanEnv()
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	const attempts = 3
	for attempt := 1; ; attempt++ {
		c := &Cluster{tb: tb, bin: bin, dir: tb.TempDir(), opts: opts}
		err := c.start(attempt)
		if err == nil {
			c.memberIDs()
			return c
		}
		if ee, ok := err.(*exitedError); ok && ee.code == 2 && strings.Contains(ee.stderr, "cannot listen") && attempt < attempts {
			tb.Logf("port clash, starting the cluster again: %s", strings.TrimSpace(ee.stderr))
			c.killAll()
			continue
		}
		tb.Fatal(err)
	}
}

func (c *Cluster) start(attempt int) error {
	tb := c.tb
	n := c.opts.Size
	token := fmt.Sprintf("regd-e2e-%d-%d", time.Now().UnixNano(), attempt)
	var peers []string
	for i := range n {
		m := &ClusterMember{Name: fmt.Sprintf("m%d", i+1), Node: NewNode(tb)}
		if c.opts.DataDir != nil {
			m.Node.DataDir = c.opts.DataDir(i)
		} else {
			m.Node.DataDir = filepath.Join(c.dir, m.Name+".regd")
		}
		m.AdvertisePeerURL = m.Node.PeerURL
		if c.opts.Proxies {
			p, err := tcpproxy.New("127.0.0.1:0", strings.TrimPrefix(m.Node.PeerURL, "http://"))
			if err != nil {
				tb.Fatalf("proxy for %s: %v", m.Name, err)
			}
			tb.Cleanup(func() { p.Close() })
			m.Proxy = p
			m.AdvertisePeerURL = "http://" + p.Addr()
		}
		peers = append(peers, m.Name+"="+m.AdvertisePeerURL)
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m.args = append([]string{
			"--name", m.Name,
			"--data-dir", m.Node.DataDir,
			"--http-addr", m.Node.HTTPAddr,
			"--listen-client-urls", m.Node.ClientURL,
			"--advertise-client-urls", m.Node.ClientURL,
			"--listen-peer-urls", m.Node.PeerURL,
			"--initial-advertise-peer-urls", m.AdvertisePeerURL,
			"--dns-addr", m.Node.DNSAddr,
			"--initial-cluster", strings.Join(peers, ","),
			"--initial-cluster-token", token,
		}, c.opts.Extra...)
	}
	for i := range c.Members {
		c.Start(i)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, m := range c.Members {
		wg.Go(func() { errs[i] = m.Proc().waitReady(m.URL(), c.opts.ReadyTimeout) })
	}
	wg.Wait()
	for _, err := range errs {
		if _, ok := err.(*exitedError); ok {
			return err
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) killAll() {
	for _, m := range c.Members {
		if p := m.Proc(); p != nil && !p.Exited() {
			p.cmd.Process.Kill() //nolint:errcheck // it may exit meanwhile
			p.WaitExit(10 * time.Second)
		}
		if m.Proxy != nil {
			m.Proxy.Close()
		}
	}
}

// memberIDs fills in every member's etcd ID from /v1/cluster.
func (c *Cluster) memberIDs() {
	st, err := c.Status(0)
	if err != nil {
		c.tb.Fatalf("cluster status: %v", err)
	}
	for _, m := range c.Members {
		for _, sm := range st.Members {
			if sm.Name == m.Name {
				m.ID = sm.ID
			}
		}
		if m.ID == "" {
			c.tb.Fatalf("%s is not in /v1/cluster: %+v", m.Name, st)
		}
	}
}

// URL is member i's REST base URL.
func (c *Cluster) URL(i int) string { return c.Members[i].URL() }

// Start starts member i's process (again) with its flags and data dir; it
// does not wait for it to be ready.
func (c *Cluster) Start(i int) *Proc {
	c.tb.Helper()
	m := c.Members[i]
	p := StartEnv(c.tb, c.bin, c.dir, c.opts.Env, m.args...)
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()
	return p
}

// Restart starts member i again and waits until it is ready.
func (c *Cluster) Restart(i int, timeout time.Duration) {
	c.tb.Helper()
	c.Start(i).WaitReady(c.URL(i), timeout)
}

// WaitReady waits until member i answers /readyz 200.
func (c *Cluster) WaitReady(i int, timeout time.Duration) {
	c.tb.Helper()
	c.Members[i].Proc().WaitReady(c.URL(i), timeout)
}

// Kill sends SIGKILL to member i and waits for the process to be gone.
func (c *Cluster) Kill(i int) {
	c.tb.Helper()
	p := c.Members[i].Proc()
	if p.Exited() {
		return
	}
	p.Signal(syscall.SIGKILL)
	p.Wait(10 * time.Second)
}

// Running lists the members whose process is running.
func (c *Cluster) Running() []int {
	var out []int
	for i, m := range c.Members {
		if p := m.Proc(); p != nil && !p.Exited() {
			out = append(out, i)
		}
	}
	return out
}

// Index is the index of the member called name, or -1.
func (c *Cluster) Index(name string) int {
	for i, m := range c.Members {
		if m.Name == name {
			return i
		}
	}
	return -1
}

// ClusterStatus is GET /v1/cluster.
type ClusterStatus struct {
	Node     string `json:"node"`
	Leader   string `json:"leader"`
	Term     uint64 `json:"term"`
	Revision int64  `json:"revision"`
	Members  []struct {
		Name     string   `json:"name"`
		ID       string   `json:"id"`
		PeerURLs []string `json:"peer_urls"`
		IsLeader bool     `json:"is_leader"`
	} `json:"members"`
}

var statusClient = &http.Client{Timeout: 3 * time.Second}

// Status is member i's GET /v1/cluster.
func (c *Cluster) Status(i int) (ClusterStatus, error) {
	var st ClusterStatus
	resp, err := statusClient.Get(c.URL(i) + "/v1/cluster")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("/v1/cluster on %s: %d %s", c.Members[i].Name, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("/v1/cluster on %s: %v", c.Members[i].Name, err)
	}
	return st, nil
}

// LeaderAmong waits until the members in idx all name the same leader, one
// of them, and returns its index. The test fails after timeout.
func (c *Cluster) LeaderAmong(timeout time.Duration, idx ...int) int {
	c.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		leader, err := c.agree(idx)
		if err == nil {
			return leader
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("no agreed leader among %v within %v: %v", c.names(idx), timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Leader waits until the running members agree on a leader and returns it.
func (c *Cluster) Leader(timeout time.Duration) int {
	c.tb.Helper()
	return c.LeaderAmong(timeout, c.Running()...)
}

func (c *Cluster) agree(idx []int) (int, error) {
	name := ""
	for _, i := range idx {
		st, err := c.Status(i)
		if err != nil {
			return -1, err
		}
		if st.Leader == "" || (name != "" && st.Leader != name) {
			return -1, fmt.Errorf("%s sees leader %q, others %q", c.Members[i].Name, st.Leader, name)
		}
		name = st.Leader
	}
	l := c.Index(name)
	for _, i := range idx {
		if i == l {
			return l, nil
		}
	}
	return -1, fmt.Errorf("leader %q is not among %v", name, c.names(idx))
}

func (c *Cluster) names(idx []int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, c.Members[i].Name)
	}
	return out
}

// Isolate partitions member i from the others, both ways: its proxy refuses
// everyone (nobody reaches it) and the other members' proxies refuse its
// connections (it reaches nobody). Its REST and client ports stay open.
// It needs ClusterOptions.Proxies.
func (c *Cluster) Isolate(i int) {
	c.tb.Helper()
	if !c.opts.Proxies {
		c.tb.Fatal("Isolate needs a cluster started with Proxies")
	}
	c.Members[i].Proxy.Cut()
	for j, m := range c.Members {
		if j != i {
			m.Proxy.Block(c.Members[i].ID)
		}
	}
}

// Heal ends every partition.
func (c *Cluster) Heal() {
	for _, m := range c.Members {
		if m.Proxy != nil {
			m.Proxy.Heal()
		}
	}
}
