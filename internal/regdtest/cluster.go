// Package regdtest starts real regd nodes in-process for tests: embedded etcd
// members on free loopback ports, temp data dirs, real HTTP listeners. It is
// test-only.
package regdtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/regd/regd/api"
	"github.com/regd/regd/dns"
	"github.com/regd/regd/internal/freeport"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/server"
	"github.com/regd/regd/internal/syncbuf"
	"github.com/regd/regd/node"
)

// Options tune a test cluster.
type Options struct {
	Prefix          string // default "/service/"
	ExpiryRetention int    // default registry.DefaultExpiryRetention
	// HistoryRetention is --history-retention; 0: the default (1h).
	HistoryRetention time.Duration
	// MaintenanceInterval and DefragMinFree tune automatic
	// defragmentation (server.Config); 0: the defaults.
	MaintenanceInterval time.Duration
	DefragMinFree       int64
	RequestTimeout      time.Duration // default 3s
	// QuotaBackendBytes caps each member's bbolt file (etcd's
	// --quota-backend-bytes); 0 keeps etcd's default. Fault tests fill it.
	QuotaBackendBytes int64
	// MinFreeBytes is the disk guard's minimum (node.Config); 0: 1 MiB,
	// so that test members do not each allocate a full-size reserve.
	// DiskStat replaces statfs for tests that play a disk filling up;
	// DiskCheckInterval is then 50 ms.
	MinFreeBytes int64
	DiskStat     func(dir string) (node.DiskUsage, error)
	// Auth, when set, makes every member check bearer tokens
	// (server.Config.Auth); the test keeps it to change the tokens.
	Auth *api.Auth
	// DNS serves DNS on each member's DNSAddr (UDP and TCP), for
	// DNSDomain ("": regd.) with DNSTTL.
	DNS       bool
	DNSDomain string
	DNSTTL    time.Duration
	// GRPCNamingPrefix is --grpc-naming-prefix; "": no mirror.
	GRPCNamingPrefix string
	// Checks configures the registry's health checks (server.Config.Checks).
	Checks server.ChecksConfig
}

// Cluster is a set of in-process regd nodes forming one etcd cluster.
type Cluster struct {
	t       testing.TB
	opts    Options
	Members []*Member
	logs    *syncbuf.Buffer
}

// Member is one node of a Cluster.
type Member struct {
	Name      string
	HTTPAddr  string // host:port of the REST API, stable across restarts
	ClientURL string // the embedded etcd's client URL, for plain etcd clients
	DNSAddr   string // host:port of DNS (UDP and TCP) with Options.DNS
	dataDir   string
	nodeCfg   node.Config

	mu  sync.Mutex
	srv *server.Server
}

// StartCluster starts n members and waits until they have a leader. Every
// member is stopped when the test ends.
func StartCluster(t testing.TB, n int, opts ...Options) *Cluster {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Prefix == "" {
		o.Prefix = "/service/"
	}
	if o.MinFreeBytes == 0 {
		o.MinFreeBytes = 1 << 20
	}
	c := &Cluster{t: t, opts: o, logs: &syncbuf.Buffer{}}
	peers := make([]string, n)
	// One token for the whole cluster: etcd derives member and cluster IDs
	// from it, so members with different tokens reject each other.
	token := fmt.Sprintf("regdtest-%d", time.Now().UnixNano())
	for i := range n {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			HTTPAddr:  freeAddr(t),
			ClientURL: "http://" + freeAddr(t),
			dataDir:   t.TempDir(),
		}
		if o.DNS {
			m.DNSAddr = freeAddr(t)
		}
		peerURL := "http://" + freeAddr(t)
		peers[i] = m.Name + "=" + peerURL
		m.nodeCfg = node.Config{
			Name:                m.Name,
			DataDir:             m.dataDir,
			ListenClientURLs:    mustURLs(t, m.ClientURL),
			AdvertiseClientURLs: mustURLs(t, m.ClientURL),
			ListenPeerURLs:      mustURLs(t, peerURL),
			AdvertisePeerURLs:   mustURLs(t, peerURL),
			ClusterState:        "new",
			ClusterToken:        token,
			// Short raft timers make failover tests fast; not so short
			// that the race detector's slowdown causes spurious elections.
			TickMs:       50,
			ElectionMs:   750,
			ReadyTimeout: 30 * time.Second,

			QuotaBackendBytes: o.QuotaBackendBytes,
			MinFreeBytes:      o.MinFreeBytes,
			DiskStat:          o.DiskStat,
		}
		if o.DiskStat != nil {
			m.nodeCfg.DiskCheckInterval = 50 * time.Millisecond
		}
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m.nodeCfg.InitialCluster = strings.Join(peers, ",")
	}
	// Registered after the data dirs (t.TempDir), so that it runs before
	// they are removed: cleanups run last-in first-out.
	t.Cleanup(func() {
		c.closeAll()
		if t.Failed() {
			t.Logf("cluster logs (last 64 KiB):\n%s", c.logs.Tail(64<<10))
		}
	})
	// Members of a new cluster become ready only together.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range c.Members {
		wg.Go(func() { errs[i] = c.start(i) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start member %d: %v", i, err)
		}
	}
	for _, m := range c.Members {
		m.nodeCfg.ClusterState = "existing" // for restarts
	}
	leader := c.WaitLeader(t)
	// The leader's one write at the start of its term, the check owner's
	// claim, is made before the cluster is handed over: a test that reads
	// a revision first and then expects nothing to move it (a blocking
	// query, "nothing written") starts from a settled cluster.
	owner := c.Members[leader].Server().Store().Keys().ChecksOwner()
	poll.Until(t, 10*time.Second, "the check owner's claim", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := c.Members[leader].Server().Node().Client().Get(ctx, owner)
		if err != nil {
			return err
		}
		if resp.Count == 0 {
			return fmt.Errorf("no %s yet", owner)
		}
		return nil
	})
	return c
}

func (c *Cluster) start(i int) error {
	m := c.Members[i]
	var ln net.Listener
	// The port was just released by the previous run of this member (or
	// reserved by freeAddr); retry briefly in case the OS holds it.
	err := poll.Wait(5*time.Second, func() (err error) {
		ln, err = net.Listen("tcp", m.HTTPAddr)
		return err
	})
	if err != nil {
		return err
	}
	var dnsUDP net.PacketConn
	var dnsTCP net.Listener
	if m.DNSAddr != "" {
		// As above: the port may be held a moment after a restart.
		err = poll.Wait(5*time.Second, func() (err error) {
			dnsUDP, dnsTCP, err = dns.Listen(m.DNSAddr)
			return err
		})
		if err != nil {
			ln.Close()
			return err
		}
	}
	lg := memberLogger(c.logs, m.Name)
	cfg := m.nodeCfg
	cfg.Logger = lg.Named("etcd").WithOptions(zap.IncreaseLevel(zapcore.WarnLevel))
	srv, err := server.Start(context.Background(), server.Config{
		Node:             cfg,
		Listener:         ln,
		Prefix:           c.opts.Prefix,
		Logger:           lg,
		ExpiryRetention:  c.opts.ExpiryRetention,
		HistoryRetention: c.opts.HistoryRetention,

		MaintenanceInterval: c.opts.MaintenanceInterval,
		DefragMinFree:       c.opts.DefragMinFree,
		RequestTimeout:      c.opts.RequestTimeout,
		Auth:                c.opts.Auth,

		DNSPacketConn:    dnsUDP,
		DNSListener:      dnsTCP,
		DNSDomain:        c.opts.DNSDomain,
		DNSTTL:           c.opts.DNSTTL,
		GRPCNamingPrefix: c.opts.GRPCNamingPrefix,
		Checks:           c.opts.Checks,
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.srv = srv
	m.mu.Unlock()
	return nil
}

// closeAll stops followers first, then the leader: stopping everything at
// once makes the leader wait for a hand-over to members that are going away.
func (c *Cluster) closeAll() {
	leader := c.Leader()
	stop := func(m *Member) {
		if srv := m.take(); srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), server.DefaultShutdownTimeout)
			defer cancel()
			_ = srv.Close(ctx)
		}
	}
	var wg sync.WaitGroup
	for i, m := range c.Members {
		if i != leader {
			wg.Go(func() { stop(m) })
		}
	}
	wg.Wait()
	if leader >= 0 {
		stop(c.Members[leader])
	}
}

func (m *Member) take() *server.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	srv := m.srv
	m.srv = nil
	return srv
}

// Server is the member's running server, or nil when stopped.
func (m *Member) Server() *server.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.srv
}

// DataDir is the member's data dir, which DiskStat receives.
func (m *Member) DataDir() string { return m.dataDir }

// URL is the member's REST URL for path.
func (m *Member) URL(path string) string { return "http://" + m.HTTPAddr + path }

// Stop shuts member i down gracefully (a leader hands over leadership).
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	if srv := c.Members[i].take(); srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			c.t.Errorf("stop member %d: %v", i, err)
		}
	}
}

// Kill stops member i as a crash would: no hand-over, no draining.
func (c *Cluster) Kill(i int) {
	if srv := c.Members[i].take(); srv != nil {
		srv.Kill()
	}
}

// Restart starts a stopped member again from its data dir.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if err := c.start(i); err != nil {
		c.t.Fatalf("restart member %d: %v", i, err)
	}
}

// RestartAll starts the given stopped members again, concurrently. A member
// becomes ready only once a quorum is up, so after a full-cluster stop the
// members must be restarted together: one Restart alone would wait for the
// others until its ready timeout.
func (c *Cluster) RestartAll(idx ...int) {
	c.t.Helper()
	errs := make([]error, len(idx))
	var wg sync.WaitGroup
	for k, i := range idx {
		wg.Go(func() { errs[k] = c.start(i) })
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			c.t.Fatalf("restart member %d: %v", idx[k], err)
		}
	}
}

// Running lists the indexes of running members.
func (c *Cluster) Running() []int {
	var out []int
	for i, m := range c.Members {
		if m.Server() != nil {
			out = append(out, i)
		}
	}
	return out
}

// WaitLeader waits until all running members agree on a leader that is one
// of them, and returns its index.
func (c *Cluster) WaitLeader(t testing.TB) int {
	t.Helper()
	var leader int
	poll.Until(t, 30*time.Second, "the running members agree on a leader", func() error {
		var id uint64
		leader = -1
		for _, i := range c.Running() {
			n := c.Members[i].Server().Node()
			l := n.Leader()
			if l == 0 {
				return fmt.Errorf("member %d knows no leader", i)
			}
			if id != 0 && l != id {
				return fmt.Errorf("members disagree on the leader")
			}
			id = l
			if n.ID() == l {
				leader = i
			}
		}
		if leader < 0 {
			return fmt.Errorf("leader %x is not a running member", id)
		}
		return nil
	})
	return leader
}

// Leader returns the index of the running member that leads, or -1.
func (c *Cluster) Leader() int {
	for _, i := range c.Running() {
		if c.Members[i].Server().Node().IsLeader() {
			return i
		}
	}
	return -1
}

// EtcdClient is a plain gRPC etcd client to member i's client URL, closed
// when the test ends.
func (c *Cluster) EtcdClient(t testing.TB, i int) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{c.Members[i].ClientURL},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Do sends a request with an optional JSON body and returns the status, the
// headers and the body. It fails the test only on transport errors.
func Do(t testing.TB, method, url string, body any) (int, http.Header, []byte) {
	t.Helper()
	return DoToken(t, method, url, "", body)
}

// DoToken is Do with a bearer token in the Authorization header ("": none).
func DoToken(t testing.TB, method, url, token string, body any) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		r = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, resp.Header, out
}

// MustJSON decodes b into v or fails the test.
func MustJSON(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
}

// freeAddr picks a free loopback port (see internal/freeport for why not ":0").
func freeAddr(t testing.TB) string {
	t.Helper()
	return freeport.Addr(t)
}

func mustURLs(t testing.TB, s string) []url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("url %q: %v", s, err)
	}
	return []url.URL{*u}
}

// Lines returns the log lines so far that contain substr.
func (c *Cluster) LogLines(substr string) []string {
	var out []string
	for _, l := range strings.Split(c.logs.String(), "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// memberLogger logs member name's lines into logs. The logs are printed
// only when a test fails; they never go to testing.T, which panics when
// etcd logs from a goroutine after the test returned.
func memberLogger(logs *syncbuf.Buffer, name string) *zap.Logger {
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	core := zapcore.NewCore(enc, logs, zapcore.DebugLevel)
	return zap.New(core).With(zap.String("member", name))
}
