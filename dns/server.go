// Package dns serves the registry over DNS, for clients that have no regd
// library (nginx, HAProxy, JDBC URLs, anything that resolves names): on
// UDP and TCP, for one domain (--dns-domain, "regd." by default), answered
// from this node's in-memory view of the registry (registry.View) without
// a raft round trip, so a node answers from what it has applied: during a
// partition a node cut off from the quorum keeps answering with the
// registry as it last saw it (possibly stale), as Consul's DNS does by
// default.
//
// Names (docs/discovery.md has examples):
//
//	<service>.service.<domain>        A/AAAA (up instances whose host is an IP), SRV
//	_<service>._tcp.service.<domain>  SRV (RFC 2782)
//	<id>.<service>.instance.<domain>  A/AAAA, TXT (metadata, RFC 6763 §6)
//
// Only up instances are served, and only those whose service name and id
// are DNS labels (ServableName). Names match without regard to case
// (registry.View.ServiceFold). The wire work, truncation and EDNS0 are
// miekg/dns's; this package decides what the records are (answer.go), once
// per query type, over a name parsed once (names.go).
package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/net/netutil"

	"github.com/regd/regd/registry"
)

// DefaultDomain is --dns-domain's default.
const DefaultDomain = "regd."

// Limits of the TCP listener: a DNS client opens a connection, asks, and
// goes; these keep connections that do not from holding the server.
const (
	// DefaultMaxTCPConns caps the TCP connections open at once; beyond
	// it new ones wait in the kernel's backlog.
	DefaultMaxTCPConns = 256
	// DefaultConnLifetime is the longest a TCP connection is kept,
	// however busy (RFC 7766 §6.2.3 lets servers close idle and
	// long-lived connections).
	DefaultConnLifetime = 30 * time.Second
	// readTimeout bounds the first query on a connection and a UDP
	// read; idleTimeout the wait for each next query on a connection
	// (RFC 7766 §6.2.3 suggests a few seconds); writeTimeout an answer.
	readTimeout  = 2 * time.Second
	idleTimeout  = 8 * time.Second
	writeTimeout = 2 * time.Second
	// maxTCPQueries is the most queries one connection may ask.
	maxTCPQueries = 128
)

// View is what DNS reads of the registry (registry.View implements it).
type View interface {
	// ServiceFold is the instances that f selects of every service
	// whose name equals service ignoring ASCII case.
	ServiceFold(service string, f registry.Filter) []registry.Instance
	// Rev is the revision the view reflects (the SOA's serial).
	Rev() int64
	// Services and Count serve the unservable-names gauge.
	Services() registry.ServiceList
	Count(service string, f registry.Filter, match func(registry.Instance) bool) int
}

// Config is one node's DNS server.
type Config struct {
	View View
	// Domain is the domain answered for; "": DefaultDomain. Checked
	// with CanonicalDomain.
	Domain string
	// TTL is every record's TTL, and the negative-caching TTL (the SOA's
	// MINIMUM); whole seconds. 0 (the default of --dns-ttl): clients
	// ask again each time, and see a drain at once.
	TTL time.Duration
	// PacketConn (UDP) and Listener (TCP) are bound by the caller, so
	// that a busy port fails before anything starts.
	PacketConn net.PacketConn
	Listener   net.Listener
	Logger     *zap.Logger          // nil: no logs
	Metrics    *prometheus.Registry // nil: no metrics
	// MaxTCPConns and ConnLifetime bound TCP connections; 0: the
	// defaults above.
	MaxTCPConns  int
	ConnLifetime time.Duration
}

// Server is a running DNS server: one miekg/dns server per transport.
type Server struct {
	a       *answerer
	lg      *zap.Logger
	m       *metrics
	servers []*mdns.Server
	wg      sync.WaitGroup
}

// Start checks cfg and serves DNS on its sockets until Close. On error
// nothing is started (the sockets stay the caller's to close).
func Start(cfg Config) (*Server, error) {
	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	domain, err := CanonicalDomain(cfg.Domain)
	if err != nil {
		return nil, fmt.Errorf("DNS domain %q %v", cfg.Domain, err)
	}
	if cfg.TTL < 0 || cfg.TTL%time.Second != 0 {
		return nil, fmt.Errorf("DNS TTL %v: must be whole seconds, at least 0", cfg.TTL)
	}
	if cfg.PacketConn == nil || cfg.Listener == nil {
		return nil, errors.New("DNS needs both a UDP and a TCP socket")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.MaxTCPConns <= 0 {
		cfg.MaxTCPConns = DefaultMaxTCPConns
	}
	if cfg.ConnLifetime <= 0 {
		cfg.ConnLifetime = DefaultConnLifetime
	}
	a := &answerer{view: cfg.View, domain: domain, ttl: uint32(cfg.TTL / time.Second)}
	s := &Server{a: a, lg: cfg.Logger, m: newMetrics(cfg.Metrics, cfg.View)}
	ln := &lifetimeListener{Listener: netutil.LimitListener(cfg.Listener, cfg.MaxTCPConns), lifetime: cfg.ConnLifetime}
	for _, srv := range []*mdns.Server{
		{PacketConn: cfg.PacketConn, Net: "udp", UDPSize: maxUDPSize},
		{Listener: ln, Net: "tcp", MaxTCPQueries: maxTCPQueries},
	} {
		srv.Handler = s
		srv.ReadTimeout, srv.WriteTimeout = readTimeout, writeTimeout
		srv.IdleTimeout = func() time.Duration { return idleTimeout }
		srv.MsgAcceptFunc = s.accept
		srv.MsgInvalidFunc = s.invalid
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.servers = append(s.servers, srv)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				s.lg.Warn("dns server stopped", zap.String("net", srv.Net), zap.Error(err))
			}
		}()
		// Close must find it started: miekg/dns's shutdown of a server
		// that has not started yet is an error, and leaves it running.
		<-started
	}
	s.lg.Info("dns serving", zap.String("udp", cfg.PacketConn.LocalAddr().String()), zap.String("tcp", cfg.Listener.Addr().String()),
		zap.String("domain", domain), zap.Duration("ttl", cfg.TTL))
	return s, nil
}

// Close stops both servers: the sockets close, answers being written
// finish (ctx bounds the wait).
func (s *Server) Close(ctx context.Context) error {
	var errs []error
	for _, srv := range s.servers {
		if err := srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("dns %s: %w", srv.Net, err))
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// ServeDNS answers one query (mdns.Handler).
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	defer func() {
		// A bug must cost one query, not the node: the UDP server
		// runs each query in a goroutine of its own, whose panic
		// would end the process.
		if p := recover(); p != nil {
			s.lg.Error("dns query panicked", zap.Any("panic", p), zap.Stringer("query", req))
			m := new(mdns.Msg)
			m.SetRcode(req, mdns.RcodeServerFailure)
			s.m.count(req, m)
			_ = w.WriteMsg(m)
		}
	}()
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	m := s.a.answer(req, tcp)
	s.m.count(req, m)
	if err := w.WriteMsg(m); err != nil {
		// The client went away, or its socket refused: its loss.
		s.lg.Debug("dns answer not sent", zap.Stringer("remote", w.RemoteAddr()), zap.Error(err))
	}
}

// accept is miekg/dns's first look at a message, before it is parsed:
// its default rules (a query with one question, no update), with NOTIFY
// refused as not implemented too (regd has no secondaries to notify it).
func (s *Server) accept(dh mdns.Header) mdns.MsgAcceptAction {
	action := mdns.DefaultMsgAcceptFunc(dh)
	if action == mdns.MsgAccept && int(dh.Bits>>11)&0xF != mdns.OpcodeQuery {
		action = mdns.MsgRejectNotImplemented
	}
	switch action {
	case mdns.MsgReject:
		s.m.queries.WithLabelValues(typeNone, mdns.RcodeToString[mdns.RcodeFormatError]).Inc()
	case mdns.MsgRejectNotImplemented:
		s.m.queries.WithLabelValues(typeNone, mdns.RcodeToString[mdns.RcodeNotImplemented]).Inc()
	}
	return action
}

// invalid counts a message that could not be parsed: miekg/dns drops
// it, or answers FORMERR when its header could be read.
func (s *Server) invalid(m []byte, err error) {
	s.m.malformed.Inc()
	s.lg.Debug("dns message malformed", zap.Int("bytes", len(m)), zap.Error(err))
}

// lifetimeListener closes each connection it accepts after lifetime, so
// that no client holds one for good, however many queries it asks.
type lifetimeListener struct {
	net.Listener
	lifetime time.Duration
}

func (l *lifetimeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	lc := &lifetimeConn{Conn: c}
	lc.timer = time.AfterFunc(l.lifetime, func() { c.Close() })
	return lc, nil
}

type lifetimeConn struct {
	net.Conn
	timer *time.Timer
}

func (c *lifetimeConn) Close() error {
	c.timer.Stop()
	return c.Conn.Close()
}

// Listen binds addr (host:port) for DNS over UDP and TCP, the same port
// for both. Port 0 picks one that is free for both. The error names the
// transport that could not listen.
func Listen(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	// A port the kernel picks for UDP may be taken for TCP: try again.
	tries := 1
	if port == "0" {
		tries = 20
	}
	for i := 1; ; i++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("udp: %w", opReason(err))
		}
		_, got, _ := net.SplitHostPort(pc.LocalAddr().String())
		ln, err := net.Listen("tcp", net.JoinHostPort(host, got))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if i >= tries {
			return nil, nil, fmt.Errorf("tcp: %w", opReason(err))
		}
	}
}

// opReason is what went wrong in a failed listen, without the operation
// and address net.OpError repeats.
func opReason(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}
