// Package checks probes health-check targets for the registry's checks
// (contract v2, "Health checks run by the registry"): an HTTP GET, a TCP
// connect, a grpc.health.v1 Check. It knows nothing of etcd or of the
// registry; cluster's check owner decides when to probe and what a result
// means for the instance (cluster/checks.go, cluster/DESIGN.md).
//
// Each probe has a bounded cost: its context's deadline (the check's
// timeout) bounds its time, a response body is read only up to
// MaxOutputBytes, response headers up to maxHeaderBytes, no connection is
// kept or reused between probes, no proxy from the environment is used,
// redirects are followed only on the target's own host, and every
// connection goes to an address in the allowed networks (allow.go).
package checks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Kinds of check, as the registry names them.
const (
	KindHTTP = "http"
	KindTCP  = "tcp"
	KindGRPC = "grpc"
)

// DefaultMaxOutputBytes bounds the output kept of one probe, the HTTP body
// included (the registry keeps 4 KiB of it).
const DefaultMaxOutputBytes = 4096

// Bounds of a probe besides its deadline.
const (
	// maxHeaderBytes caps an HTTP answer's headers: a health endpoint's
	// are small; a flood of them fails the probe.
	maxHeaderBytes = 32 << 10
	// maxRedirects caps the redirects followed on the target's host.
	maxRedirects = 5
	// maxGRPCMessage caps a gRPC answer (a HealthCheckResponse is a
	// few bytes).
	maxGRPCMessage = 64 << 10
)

// Config configures a Prober.
type Config struct {
	// AllowedCIDRs are the networks a probe may connect to; nil:
	// DefaultAllowedCIDRs.
	AllowedCIDRs []netip.Prefix
	// MaxOutputBytes bounds a result's output; 0: DefaultMaxOutputBytes.
	MaxOutputBytes int
	// UserAgent is sent with HTTP and gRPC probes; "": "regd-check".
	UserAgent string
	// Resolver resolves target host names; nil: net.DefaultResolver.
	Resolver Resolver
	// TLS is the client configuration of https checks; nil: the system's
	// roots, TLS 1.2 or later.
	TLS *tls.Config
}

// Result is one probe's outcome.
type Result struct {
	Passing bool
	// Output says what happened, for people: the status line and the
	// start of the body, the connect error, the serving status. At most
	// Config.MaxOutputBytes bytes, valid UTF-8.
	Output string
}

// Prober runs probes. It is safe for concurrent use; its probes share no
// connections.
type Prober struct {
	allowed   allowList
	maxOutput int
	ua        string
	resolver  Resolver
	dialer    *net.Dialer
	http      *http.Client
}

// New returns a Prober.
func New(cfg Config) *Prober {
	if cfg.AllowedCIDRs == nil {
		cfg.AllowedCIDRs = DefaultAllowedCIDRs
	}
	if cfg.MaxOutputBytes <= 0 {
		cfg.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "regd-check"
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	p := &Prober{
		allowed:   allowList(cfg.AllowedCIDRs),
		maxOutput: cfg.MaxOutputBytes,
		ua:        cfg.UserAgent,
		resolver:  cfg.Resolver,
	}
	p.dialer = &net.Dialer{Control: p.control, KeepAlive: -1}
	tlsCfg := cfg.TLS
	if tlsCfg == nil {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	p.http = &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil, // never HTTP_PROXY: it would bypass the allowed networks
			DialContext:            p.dial,
			TLSClientConfig:        tlsCfg,
			DisableKeepAlives:      true, // one connection per probe, closed after it
			DisableCompression:     true, // the body is output, read as sent
			MaxResponseHeaderBytes: maxHeaderBytes,
		},
		CheckRedirect: sameHostRedirects,
	}
	return p
}

// Probe runs one probe of kind (KindHTTP, KindTCP, KindGRPC) against
// target (a URL; host:port; host:port[/service]) within timeout, and
// within ctx. It never returns an error: a failure is a failing Result
// saying why.
func (p *Prober) Probe(ctx context.Context, kind, target string, timeout time.Duration) Result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var r Result
	switch kind {
	case KindHTTP:
		r = p.probeHTTP(ctx, target)
	case KindTCP:
		r = p.probeTCP(ctx, target)
	case KindGRPC:
		r = p.probeGRPC(ctx, target)
	default:
		r = Result{Output: fmt.Sprintf("unknown check kind %q", kind)}
	}
	r.Output = cut(r.Output, p.maxOutput)
	return r
}

// describe turns a probe's error into output: a timeout says so, an
// address outside the allowed networks says which.
func describe(ctx context.Context, err error) string {
	var denied *DeniedError
	switch {
	case errors.As(err, &denied):
		return denied.Error()
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timed out: " + err.Error()
	}
	return err.Error()
}

// sameHostRedirects follows redirects on the target's host only: a
// redirect to another host is the answer (3xx: failing), so that a check
// cannot be bounced to a host the operator did not name.
func sameHostRedirects(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return fmt.Errorf("more than %d redirects", maxRedirects)
	}
	if !strings.EqualFold(req.URL.Host, via[0].URL.Host) {
		return http.ErrUseLastResponse
	}
	return nil
}

// cut keeps at most n bytes of s, valid UTF-8, cut on a character boundary.
func cut(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i]
}
