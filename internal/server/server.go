// Package server assembles one regd node — embedded etcd member, registry
// store, leader-only work and REST API — and shuts it down in order. The
// regd command and the in-process test clusters both use it, so the wiring
// and the shutdown order exist once.
package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/regd/regd/api"
	"github.com/regd/regd/checks"
	"github.com/regd/regd/cluster"
	"github.com/regd/regd/dns"
	"github.com/regd/regd/node"
	"github.com/regd/regd/registry"
	"github.com/regd/regd/ui"
)

// Config is one node's configuration.
type Config struct {
	Node     node.Config
	Listener net.Listener // the REST listener, already bound by the caller
	Prefix   string
	Logger   *zap.Logger // regd's own logger; etcd's is in Node.Logger

	ExpiryRetention int // ledger entries kept; 0: registry.DefaultExpiryRetention
	// HistoryRetention is how long etcd's history is kept (the SSE
	// resume window); 0: cluster.DefaultHistoryRetention.
	HistoryRetention time.Duration
	// MaintenanceInterval and DefragMinFree tune the member's automatic
	// defragmentation (node.MaintenanceConfig); 0: node's defaults. Tests
	// shorten them.
	MaintenanceInterval time.Duration
	DefragMinFree       int64
	RequestTimeout      time.Duration // per store operation; 0: registry.DefaultTimeout

	// TLS, when set, serves the REST API over TLS on Listener.
	TLS *tls.Config
	// Auth checks the REST API's bearer tokens; nil: none.
	Auth *api.Auth
	// MaxConns caps the REST API's open connections; 0:
	// api.DefaultMaxConns, negative: no cap.
	MaxConns int
	// MaxInFlight and MaxWatchesPerClient: see api.Config (MaxInFlight,
	// MaxWatchesPerClient); 0 keeps the API's defaults.
	MaxInFlight         int
	MaxWatchesPerClient int
	EnablePprof         bool // serve /debug/pprof/ on the REST listener
	// CORSAllowedOrigins are the origins (scheme://host[:port], or "*"
	// for any) whose browser pages may call the REST API; empty: no CORS.
	CORSAllowedOrigins []string

	// DNS serves the registry over DNS on these sockets, bound by the
	// caller (--dns-addr); both nil: no DNS. DNSDomain ("":
	// dns.DefaultDomain) and DNSTTL are --dns-domain and --dns-ttl.
	DNSPacketConn net.PacketConn
	DNSListener   net.Listener
	DNSDomain     string
	DNSTTL        time.Duration
	// GRPCNamingPrefix turns on the gRPC naming mirror
	// (registry/naming.go); "": off.
	GRPCNamingPrefix string
	// Checks configures the health checks the registry runs
	// (checks.go).
	Checks ChecksConfig
}

// ErrRemoved is the Fatal error of a node whose member was removed from
// the cluster (regd members remove): it stops for good, and its data dir
// cannot rejoin. regd exits 0 on it, so a supervisor that restarts failed
// processes does not restart it into a loop.
var ErrRemoved = errors.New("this member was removed from the cluster; its data dir cannot rejoin it (delete it, or add the member again with an empty one)")

// DefaultShutdownTimeout is the time Close is given to let in-flight
// requests finish: regd's --shutdown-timeout, and the test clusters'.
const DefaultShutdownTimeout = 10 * time.Second

// Timeouts of the REST server. There is deliberately no ReadTimeout or
// WriteTimeout: they bound whole requests and responses, which would end
// every watch stream and blocking query; the API bounds body reads and each
// response write itself (api.DefaultBodyTimeout, api.DefaultWriteTimeout).
const (
	// readHeaderTimeout bounds a request's headers, and a TLS handshake.
	readHeaderTimeout = 10 * time.Second
	// idleTimeout closes keep-alive connections that send nothing.
	idleTimeout = 2 * time.Minute
	// maxHeaderBytes caps request headers (431 beyond); regd's requests
	// carry a token at most.
	maxHeaderBytes = 64 << 10
)

// Server is a running regd node.
type Server struct {
	cfg      Config
	lg       *zap.Logger
	node     *node.Node
	store    *registry.Store
	view     *registry.View
	api      *api.Server
	http     *http.Server
	dns      *dns.Server // nil without DNS
	leader   *cluster.Leadership
	stopView context.CancelFunc
	viewDone chan struct{}
	// The member's maintenance (defragmentation, alarm log), stopped
	// before the member.
	stopMaint context.CancelFunc
	maintDone chan struct{}

	httpDone chan struct{}
	httpErr  error
	fatal    chan error
	stopOnce sync.Once
}

// Start starts the member, waits until it is ready and this node's view
// has loaded the registry, then starts the leader-only work and serves the
// REST API on cfg.Listener. On error the listener is closed and nothing
// keeps running.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	lg := cfg.Logger
	if cfg.Node.EventLogger == nil {
		cfg.Node.EventLogger = lg.Named("disk")
	}
	if cfg.DNSPacketConn != nil {
		if _, err := dns.CanonicalDomain(cmp.Or(cfg.DNSDomain, dns.DefaultDomain)); err != nil {
			closeListeners(cfg)
			return nil, fmt.Errorf("DNS domain: %w", err)
		}
	}
	n, err := node.Start(ctx, cfg.Node)
	if err != nil {
		closeListeners(cfg)
		return nil, err
	}
	metrics := prometheus.NewRegistry()
	store := registry.NewStore(n.Client(), registry.Options{
		Prefix:    cfg.Prefix,
		Logger:    lg.Named("registry"),
		Timeout:   cfg.RequestTimeout,
		WriteGate: func() error { return storageRefusal(n.StorageErr()) },
		// Requests caught by a leader change are retried as soon as this
		// member knows the new leader (registry/retry.go).
		Leadership: n,
		// Heartbeats renew at the leader: in process there, over lease
		// streams to it from a follower (node/renew.go).
		Renewer:       n,
		NamingPrefix:  cfg.GRPCNamingPrefix,
		CheckFailover: checkFailover(cfg.Node),
		// A check at an IP address outside --check-allowed-cidrs could
		// never be made: refused at registration (400 invalid_check).
		CheckHost: func(host string) error { return checks.RefuseLiteral(cfg.Checks.AllowedCIDRs, host) },
	})
	view := registry.NewView(store, registry.ViewOptions{MemberID: n.ID()})
	metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "regd_invalid_instance_values",
		Help: "Keys under the registry prefix whose value is neither host:port nor a gRPC naming endpoint: not instances.",
	}, func() float64 { return float64(view.InvalidValues()) }))
	metrics.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "regd_store_retries_total",
		Help: "etcd calls the registry made again because a leader change (or a lost attempt) overtook them; the clients saw one answer.",
	}, func() float64 { return float64(store.Retries()) }))
	for path, count := range map[string]func(node.RenewalCounts) int64{
		"local":    func(c node.RenewalCounts) int64 { return c.Local },
		"stream":   func(c node.RenewalCounts) int64 { return c.Stream },
		"fallback": func(c node.RenewalCounts) int64 { return c.Fallback },
	} {
		metrics.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "regd_lease_renewals_total",
			Help:        "Lease renewals (heartbeats, the check owner's) this member made, by path: local at the leader in process, stream over a follower's stream to the leader, fallback through etcd's forwarding (node/renew.go).",
			ConstLabels: prometheus.Labels{"path": path},
		}, func() float64 { return float64(count(n.Renewals())) }))
	}
	ledger := registry.NewLedger(store)
	viewCtx, stopView := context.WithCancel(context.Background())
	viewDone := make(chan struct{})
	go func() {
		defer close(viewDone)
		view.Run(viewCtx)
	}()
	// REST is served once the view has loaded the registry (a local,
	// serializable read: it does not wait for a quorum). Before that,
	// every list would wait for it, and a member restarted in a rolling
	// restart would look ready to load balancers too early.
	select {
	case <-view.Ready():
	case <-ctx.Done():
		stopView()
		<-viewDone
		n.Close()
		closeListeners(cfg)
		return nil, ctx.Err()
	}
	info := cluster.NewInfo(n)
	leader := cluster.NewLeadership(n, lg.Named("cluster"))
	reporter := cluster.NewReporter(cluster.ReporterConfig{
		Ledger:    ledger,
		Node:      n,
		Logger:    lg.Named("expiry"),
		Metrics:   metrics,
		Retention: cfg.ExpiryRetention,
		Leases:    n,
		MaxTxnOps: node.MaxTxnOps,
	})
	leader.OnLead(reporter.Run)
	leader.OnLead(cluster.NewCompactor(cluster.CompactorConfig{
		History:   history{ledger, store},
		Backend:   n,
		Retention: cfg.HistoryRetention,
		Logger:    lg.Named("compactor"),
		Metrics:   metrics,
	}).Run)
	leader.OnLead(newChecker(cfg, store, view, n, lg, metrics).Run)
	registerBackendMetrics(metrics, n)
	admin := cluster.NewAdmin(n)
	a := api.New(api.Config{
		Registry:            registry.NewLocal(store, view),
		View:                view,
		Cluster:             info,
		Expirations:         reporter,
		Membership:          admin,
		Backup:              admin,
		Exporter:            store,
		Logger:              lg.Named("api"),
		Metrics:             metrics,
		Auth:                cfg.Auth,
		MaxInFlight:         cfg.MaxInFlight,
		MaxWatchesPerClient: cfg.MaxWatchesPerClient,
		CORSAllowedOrigins:  cfg.CORSAllowedOrigins,
		EnablePprof:         cfg.EnablePprof,
		UI:                  ui.New(),
	})
	maxConns := cfg.MaxConns
	if maxConns == 0 {
		maxConns = api.DefaultMaxConns
	}
	// The cap counts TCP connections, so it sits under TLS: a connection
	// stuck in its handshake holds a slot too.
	ln := api.LimitListener(cfg.Listener, maxConns)
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	s := &Server{
		cfg:      cfg,
		lg:       lg,
		node:     n,
		store:    store,
		view:     view,
		api:      a,
		leader:   leader,
		stopView: stopView,
		viewDone: viewDone,
		httpDone: make(chan struct{}),
		fatal:    make(chan error, 1),
		http: &http.Server{
			Handler:           a.Handler(),
			ReadHeaderTimeout: readHeaderTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          log.New(httpErrorLog{lg.Named("http")}, "", 0),
		},
	}
	maintCtx, stopMaint := context.WithCancel(context.Background())
	s.stopMaint, s.maintDone = stopMaint, make(chan struct{})
	go func() {
		defer close(s.maintDone)
		mc := maintenanceConfig(metrics, lg.Named("maintenance"))
		mc.Interval, mc.MinFree = cfg.MaintenanceInterval, cfg.DefragMinFree
		n.RunMaintenance(maintCtx, mc)
	}()
	if cfg.DNSPacketConn != nil {
		// Checked above; nothing else can fail here.
		s.dns, err = dns.Start(dns.Config{
			View:       view,
			Domain:     cfg.DNSDomain,
			TTL:        cfg.DNSTTL,
			PacketConn: cfg.DNSPacketConn,
			Listener:   cfg.DNSListener,
			Logger:     lg.Named("dns"),
			Metrics:    metrics,
		})
		if err != nil {
			lg.Error("dns not started", zap.Error(err))
			cfg.DNSPacketConn.Close()
			cfg.DNSListener.Close()
		}
	}
	leader.Start()
	go func() {
		defer close(s.httpDone)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.httpErr = err
			s.fail(fmt.Errorf("REST server: %w", err))
		}
	}()
	go func() {
		select {
		case err, ok := <-n.Err():
			if ok && err != nil {
				s.fail(fmt.Errorf("embedded etcd: %w", err))
			}
		case <-n.Stopping():
			if n.Removed() {
				s.fail(ErrRemoved)
				return
			}
			s.fail(errors.New("embedded etcd stopped"))
		}
	}()
	auth := "none"
	if cfg.Auth != nil {
		auth = "writes"
		if cfg.Auth.TokenReads() {
			auth = "reads and writes"
		}
	}
	lg.Info("regd node started",
		zap.String("name", n.Name()),
		zap.String("http-addr", cfg.Listener.Addr().String()),
		zap.Bool("http-tls", cfg.TLS != nil),
		zap.String("tokens-required-for", auth),
		zap.String("member-id", fmt.Sprintf("%x", n.ID())),
		zap.String("data-dir", cfg.Node.DataDir),
	)
	return s, nil
}

// closeListeners closes the sockets the caller bound, when Start fails.
func closeListeners(cfg Config) {
	cfg.Listener.Close()
	if cfg.DNSPacketConn != nil {
		cfg.DNSPacketConn.Close()
		cfg.DNSListener.Close()
	}
}

// storageRefusal turns the disk guard's verdict into the error a refused
// write answers with: 503 either way, with a code that tells a full disk
// (wait, or write elsewhere once space is freed) from a broken one.
func storageRefusal(err error) error {
	var se *node.StorageError
	if !errors.As(err, &se) {
		return err
	}
	if se.Full {
		return &registry.Error{Kind: registry.KindUnavailable, Code: registry.CodeStorageFull,
			Message: "this node's data dir is short of free space; writes are refused until space is freed", Err: se}
	}
	return &registry.Error{Kind: registry.KindUnavailable, Code: registry.CodeStorageUnwritable,
		Message: "this node cannot write its data dir; writes are refused until it can", Err: se}
}

// httpErrorLog receives net/http's own error log. Failed TLS handshakes
// are what any client can cause (a port scan, a client that does not trust
// the certificate, one without a client certificate): debug level, so they
// cannot flood the log. Everything else (accept errors such as running out
// of file descriptors, which net/http retries) is a warning.
type httpErrorLog struct{ lg *zap.Logger }

func (w httpErrorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := zap.WarnLevel
	if strings.Contains(msg, "TLS handshake error") {
		level = zap.DebugLevel
	}
	if ce := w.lg.Check(level, "net/http"); ce != nil {
		ce.Write(zap.String("error", msg))
	}
	return len(p), nil
}

func (s *Server) fail(err error) {
	select {
	case s.fatal <- err:
	default:
	}
}

// Fatal delivers an error when the node fails on its own (etcd stopped, the
// listener broke). After Close it may deliver the stop; callers that are
// already shutting down ignore it.
func (s *Server) Fatal() <-chan error { return s.fatal }

// HTTPAddr is the REST listener's address.
func (s *Server) HTTPAddr() string { return s.cfg.Listener.Addr().String() }

// Node is the embedded member.
func (s *Server) Node() *node.Node { return s.node }

// Store is the registry store.
func (s *Server) Store() *registry.Store { return s.store }

// View is this node's view of the registry.
func (s *Server) View() *registry.View { return s.view }

// Close shuts down in reverse order of start, so that clients of the other
// members never notice (docs/operations.md, "Upgrades and rolling
// restarts", has the steps with their bounds):
//
//  1. /readyz answers 503, watch streams and blocking queries end, and
//     requests that would wait for a leader or retry answer 503
//     unavailable at once (their clients go to another member);
//  2. the REST listener closes and requests in flight finish (each is
//     bounded by the store's timeout; ctx bounds the whole wait), watch
//     streams taken over from net/http end (api.Server.Wait), then
//     the DNS sockets close (answers being written finish);
//  3. leader-only work stops and is waited for;
//  4. a leader hands leadership to the most caught-up voter
//     (node.HandOver, at most two election timeouts), so the next leader
//     starts its work at once and the others' requests are retried there;
//  5. the view stops and the member closes (etcd's own stop: its client
//     listeners, raft, its peers).
//
// The data dir stays, so the member rejoins when started again.
func (s *Server) Close(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		began := time.Now()
		s.api.Drain()
		s.api.Close()
		s.store.Shutdown()
		if e := s.http.Shutdown(ctx); e != nil {
			err = fmt.Errorf("REST server did not drain in time: %w", e)
			s.http.Close()
		}
		<-s.httpDone
		// Watch streams taken over from net/http end on api.Close too,
		// but Shutdown does not wait for them; closed beyond ctx.
		if e := s.api.Wait(ctx); e != nil && err == nil {
			err = fmt.Errorf("watch streams did not end in time: %w", e)
		}
		if e := s.closeDNS(ctx); e != nil && err == nil {
			err = e
		}
		s.leader.Stop()
		s.stopMaint()
		<-s.maintDone
		s.handOver(ctx)
		s.stopView()
		<-s.viewDone
		s.node.Close()
		s.lg.Info("regd node stopped", zap.String("name", s.node.Name()), zap.Duration("took", time.Since(began)))
	})
	return err
}

// closeDNS stops the DNS server, if there is one: its sockets close, and
// answers being written finish.
func (s *Server) closeDNS(ctx context.Context) error {
	if s.dns == nil {
		return nil
	}
	return s.dns.Close(ctx)
}

// handOver moves leadership away from this member if it leads, and logs
// what happened.
func (s *Server) handOver(ctx context.Context) {
	if !s.node.IsLeader() {
		return
	}
	began := time.Now()
	to, err := s.node.HandOver(ctx)
	switch {
	case errors.Is(err, node.ErrNoTransferee):
		s.lg.Info("leadership hand-over left to etcd's stop", zap.String("reason", err.Error()))
	case err != nil:
		s.lg.Warn("leadership hand-over failed; etcd's stop tries its own", zap.Duration("took", time.Since(began)), zap.Error(err))
	case to != 0:
		s.lg.Info("leadership handed over", zap.String("to", s.node.MemberName(to)), zap.Duration("took", time.Since(began)))
	}
}

// Kill stops the node the way a crash would: no draining, no leadership
// hand-over. For fault tests. Everything that reads through the in-process
// client stops first: a read after the member's hard stop would reach its
// closed database.
func (s *Server) Kill() {
	s.stopOnce.Do(func() {
		s.api.Close()
		s.http.Close()
		<-s.httpDone
		now, cancel := context.WithCancel(context.Background())
		cancel()
		_ = s.api.Wait(now) // closes the taken-over watch streams' connections
		_ = s.closeDNS(context.Background())
		s.leader.Stop()
		s.stopMaint()
		<-s.maintDone
		s.stopView()
		<-s.viewDone
		s.node.Kill()
	})
}
