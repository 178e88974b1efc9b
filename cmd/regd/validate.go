package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/regd/regd/api"
	"github.com/regd/regd/dns"
	"github.com/regd/regd/internal/server"
	"github.com/regd/regd/registry"
)

// Validate checks the configuration as a whole, after every flag parsed:
// each rule that involves more than one value, or a file, is here. It
// fills in the defaults computed from other flags (--data-dir,
// --initial-cluster), reads the token file and the REST TLS files, and
// builds Server.Auth and Server.TLS from them. Every file is read before
// anything starts, so that a bad one is one line naming its flag; nothing
// read from a token file is ever part of an error. The first problem found
// is returned, as one line naming the flag.
func (c *Config) Validate() error {
	n := &c.Server.Node
	if n.Name == "" {
		return c.fail("name", "must not be empty")
	}
	// "=" and "," are the separators of --initial-cluster.
	if strings.ContainsAny(n.Name, "=,") {
		return c.fail("name", `must not contain "=" or ","`)
	}
	if !c.set["data-dir"] {
		n.DataDir = n.Name + ".regd"
	}
	if n.DataDir == "" {
		return c.fail("data-dir", "must not be empty")
	}
	if err := c.checkListenAddr("http-addr", c.HTTPAddr); err != nil {
		return err
	}
	if !c.set["initial-cluster"] {
		// Same as etcd: a single-member cluster of this member's peer URLs.
		entries := make([]string, len(n.AdvertisePeerURLs))
		for i, u := range n.AdvertisePeerURLs {
			entries[i] = n.Name + "=" + u.String()
		}
		n.InitialCluster = strings.Join(entries, ",")
	}
	if err := c.checkInitialCluster(); err != nil {
		return err
	}
	if n.ClusterToken == "" {
		return c.fail("initial-cluster-token", "must not be empty")
	}
	if err := c.checkPrefix(); err != nil {
		return err
	}
	if err := c.checkDiscovery(); err != nil {
		return err
	}
	if c.Server.ExpiryRetention < 1 {
		return c.fail("expiry-retention", "must be at least 1")
	}
	if c.Server.HistoryRetention < time.Second {
		return c.fail("history-retention", "must be at least 1s")
	}
	if c.ShutdownTimeout <= 0 {
		return c.fail("shutdown-timeout", "must be greater than 0")
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"max-inflight", c.Server.MaxInFlight},
		{"max-conns", c.Server.MaxConns},
		{"max-watches-per-client", c.Server.MaxWatchesPerClient},
		{"check-max-concurrent", c.Server.Checks.MaxConcurrent},
	} {
		if f.v < 1 {
			return c.fail(f.name, "must be at least 1")
		}
	}
	if n.QuotaBackendBytes < 0 {
		return c.fail("quota-backend-bytes", "must not be negative")
	}
	if err := c.checkSharedPorts(); err != nil {
		return err
	}
	return c.checkSecurity()
}

// checkSharedPorts refuses two of regd's own listeners on one port, naming
// both flags: etcd's ports are only probed and released again before etcd
// binds them (bind, run.go), so a collision would otherwise surface deep
// in etcd's start. Port 0 never collides.
func (c *Config) checkSharedPorts() error {
	type listener struct{ flag, host, port string }
	var ls []listener
	add := func(flag, hostport string) {
		host, port, err := net.SplitHostPort(hostport)
		if err == nil && port != "0" {
			ls = append(ls, listener{flag, host, port})
		}
	}
	for _, u := range c.Server.Node.ListenClientURLs {
		add("listen-client-urls", u.Host)
	}
	for _, u := range c.Server.Node.ListenPeerURLs {
		add("listen-peer-urls", u.Host)
	}
	add("http-addr", c.HTTPAddr)
	if c.DNSAddr != "" {
		add("dns-addr", c.DNSAddr) // its TCP socket
	}
	// A wildcard takes the port on every address of its family: "" and
	// "::" (dual stack) all of them, 0.0.0.0 the IPv4 ones (and names,
	// which may resolve to one); [::1] and 0.0.0.0 may share a port.
	covers := func(wild, h string) bool {
		switch wild {
		case "", "::":
			return true
		case "0.0.0.0":
			ip, err := netip.ParseAddr(h)
			return err != nil || ip.Unmap().Is4()
		}
		return false
	}
	for i, a := range ls {
		for _, b := range ls[:i] {
			if a.port == b.port && (a.host == b.host || covers(a.host, b.host) || covers(b.host, a.host)) {
				return c.failValue(a.flag, net.JoinHostPort(a.host, a.port), "the same port as --%s %q; give each listener its own",
					b.flag, net.JoinHostPort(b.host, b.port))
			}
		}
	}
	return nil
}

// checkListenAddr checks a host:port to listen on, given by flag.
func (c *Config) checkListenAddr(flag, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return c.fail(flag, "must be host:port: %s", splitHostPortReason(err))
	}
	if _, err := parsePort(port, 0); err != nil {
		return c.fail(flag, "%s", err)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		return c.fail(flag, "invalid host %q", host)
	}
	return nil
}

// maxDNSTTL bounds --dns-ttl: an answer cached longer would outlive
// instances by far (a TTL is at most an hour) and hide drains.
const maxDNSTTL = 24 * time.Hour

// checkDiscovery checks the flags of the discovery views: DNS and the
// gRPC naming mirror.
func (c *Config) checkDiscovery() error {
	if c.DNSAddr != "" {
		if err := c.checkListenAddr("dns-addr", c.DNSAddr); err != nil {
			return err
		}
	}
	d, err := dns.CanonicalDomain(c.Server.DNSDomain)
	if err != nil {
		return c.fail("dns-domain", "%s", err)
	}
	c.Server.DNSDomain = d
	if ttl := c.Server.DNSTTL; ttl < 0 || ttl > maxDNSTTL || ttl%time.Second != 0 {
		return c.fail("dns-ttl", "must be whole seconds from 0s to %s", maxDNSTTL)
	}
	const name = "grpc-naming-prefix"
	p := c.Server.GRPCNamingPrefix
	if p == "" {
		return nil
	}
	for _, r := range p {
		if r < 0x21 || r > 0x7e {
			return c.fail(name, "must contain only printable ASCII characters without spaces")
		}
	}
	if len(p) > 256 {
		return c.fail(name, "must be at most 256 characters long")
	}
	if why := registry.NamingPrefixOverlap(p, c.Server.Prefix); why != "" {
		return c.fail(name, "%s", why)
	}
	return nil
}

// splitHostPortReason strips the address that net.AddrError repeats, since
// the caller already quotes it.
func splitHostPortReason(err error) string {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return ae.Err
	}
	return err.Error()
}

func (c *Config) checkInitialCluster() error {
	const name = "initial-cluster"
	cluster, member := c.Server.Node.InitialCluster, c.Server.Node.Name
	if strings.TrimSpace(cluster) == "" {
		return c.failValue(name, cluster, "must not be empty")
	}
	seen := map[string]bool{}
	found := false
	for _, entry := range strings.Split(cluster, ",") {
		entry = strings.TrimSpace(entry)
		n, s, ok := strings.Cut(entry, "=")
		if !ok || n == "" {
			return c.failValue(name, entry, "entry must be name=url")
		}
		s = strings.TrimSpace(s)
		u, err := checkURL(s)
		if err != nil {
			return c.failValue(name, entry, "%s", err)
		}
		if seen[urlKey(u)] {
			return c.failValue(name, cluster, "duplicate URL %q", s)
		}
		seen[urlKey(u)] = true
		if n == member {
			found = true
		}
	}
	if !found {
		return c.failValue(name, cluster, "no entry for member %q (--name)", member)
	}
	return nil
}

// checkPrefix keeps the registry prefix apart from regd's own bookkeeping
// (registry.InternalPrefix): overlapping, service keys and bookkeeping keys
// would be indistinguishable to watchers and listings.
func (c *Config) checkPrefix() error {
	const name = "prefix"
	p := c.Server.Prefix
	for _, r := range p {
		// Keys are printed in logs and URLs; spaces and control or non-ASCII
		// characters there cause more trouble than they are worth.
		if r < 0x21 || r > 0x7e {
			return c.fail(name, "must contain only printable ASCII characters without spaces")
		}
	}
	if !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") {
		return c.fail(name, `must start and end with "/"`)
	}
	if strings.HasPrefix(p, registry.InternalPrefix) || strings.HasPrefix(registry.InternalPrefix, p) {
		return c.fail(name, "overlaps regd's internal keyspace %q", registry.InternalPrefix)
	}
	if len(p) < 2 {
		return c.fail(name, "must be at least 2 characters long")
	}
	return nil
}

// ---- security: tokens, TLS, exposure ----

// checkSecurity loads and checks the access tokens and the TLS material,
// and refuses a REST listener beyond loopback that nothing protects.
func (c *Config) checkSecurity() error {
	c.Tokens, c.Server.Auth = nil, nil
	if c.TokenReads && c.AuthTokenFile == "" {
		return c.fail("auth-reads", "needs --auth-token-file (the tokens to ask for)")
	}
	if c.AuthTokenFile != "" {
		tokens, err := server.LoadTokens(c.AuthTokenFile)
		if err != nil {
			return c.fail("auth-token-file", "%s", err)
		}
		c.Tokens = tokens
		c.Server.Auth = api.NewAuth(tokens, c.TokenReads)
	}

	c.HTTPTLS, c.Server.TLS = nil, nil
	if err := c.checkKeyPair("http-cert-file", c.HTTPCertFile, "http-key-file", c.HTTPKeyFile); err != nil {
		return err
	}
	if c.HTTPClientCAFile != "" {
		if c.HTTPCertFile == "" {
			return c.fail("http-client-ca-file", "needs --http-cert-file and --http-key-file: client certificates are asked for over TLS only")
		}
		if err := c.checkCAFile("http-client-ca-file", c.HTTPClientCAFile); err != nil {
			return err
		}
	}
	if c.HTTPCertFile != "" {
		t, err := server.NewReloadableTLS(c.HTTPCertFile, c.HTTPKeyFile, c.HTTPClientCAFile)
		if err != nil { // checked above; the files changed in between
			return c.fail("http-cert-file", "%s", err)
		}
		c.HTTPTLS, c.Server.TLS = t, t.Config()
	}

	n := &c.Server.Node
	if err := c.checkEtcdTLS(etcdTLSFlags{
		cert: "cert-file", key: "key-file", ca: "trusted-ca-file", certAuth: "client-cert-auth", auto: "auto-tls",
		listen: "listen-client-urls", advertise: "advertise-client-urls",
	}, n.ClientTLSInfo, n.ClientAutoTLS, n.ListenClientURLs, n.AdvertiseClientURLs); err != nil {
		return err
	}
	if err := c.checkEtcdTLS(etcdTLSFlags{
		cert: "peer-cert-file", key: "peer-key-file", ca: "peer-trusted-ca-file", certAuth: "peer-client-cert-auth", auto: "peer-auto-tls",
		listen: "listen-peer-urls", advertise: "initial-advertise-peer-urls",
	}, n.PeerTLSInfo, n.PeerAutoTLS, n.ListenPeerURLs, n.AdvertisePeerURLs); err != nil {
		return err
	}

	// A REST listener others can reach must ask who is calling: by token,
	// or by client certificate. --insecure is the explicit way to say that
	// the network itself is trusted.
	host, _, _ := net.SplitHostPort(c.HTTPAddr)
	if !isLoopback(host) && c.Tokens == nil && c.HTTPClientCAFile == "" && !c.Insecure {
		return c.fail("http-addr", "listening beyond loopback without --auth-token-file; add tokens, or --insecure to accept anyone on the network")
	}
	return nil
}

// isLoopback reports whether host (of a listen address) can only be reached
// from this machine. An empty host, 0.0.0.0 and :: listen everywhere; a
// name other than localhost may resolve to anything.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func readPEM(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %v", server.PathReason(err))
	}
	return b, nil
}

// checkKeyPair checks a certificate and key given by two flags: both or
// neither, both readable, matching, and the certificate not expired.
func (c *Config) checkKeyPair(certFlag, cert, keyFlag, key string) error {
	switch {
	case cert == "" && key == "":
		return nil
	case key == "":
		return c.fail(certFlag, "needs --%s too", keyFlag)
	case cert == "":
		return c.fail(keyFlag, "needs --%s too", certFlag)
	}
	certPEM, err := readPEM(cert)
	if err != nil {
		return c.fail(certFlag, "%s", err)
	}
	keyPEM, err := readPEM(key)
	if err != nil {
		return c.fail(keyFlag, "%s", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error names what is wrong (no PEM data, a key that does not
		// match) without quoting either file.
		return c.fail(certFlag, "with --%s %q: %v", keyFlag, key, err)
	}
	if pair.Leaf != nil && time.Now().After(pair.Leaf.NotAfter) {
		return c.fail(certFlag, "the certificate expired on %s", pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkCAFile checks that a CA bundle is readable and holds certificates.
func (c *Config) checkCAFile(flag, path string) error {
	b, err := readPEM(path)
	if err != nil {
		return c.fail(flag, "%s", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return c.fail(flag, "holds no PEM certificate")
	}
	return nil
}

// etcdTLSFlags names one side's (client or peer) TLS flags, as etcd does.
type etcdTLSFlags struct {
	cert, key, ca, certAuth, auto string
	listen, advertise             string
}

// checkEtcdTLS checks one side's TLS flags against its URLs. An https URL
// needs a certificate (or auto-tls) and TLS material needs an https URL to
// serve: etcd itself would fail late on the first and silently ignore the
// second, leaving an operator who asked for TLS without it.
func (c *Config) checkEtcdTLS(f etcdTLSFlags, info transport.TLSInfo, auto bool, listen, advertise []url.URL) error {
	cert, ca, certAuth := info.CertFile, info.TrustedCAFile, info.ClientCertAuth
	if err := c.checkKeyPair(f.cert, cert, f.key, info.KeyFile); err != nil {
		return err
	}
	if ca != "" {
		if err := c.checkCAFile(f.ca, ca); err != nil {
			return err
		}
	}
	if auto && cert != "" {
		return c.fail(f.auto, "given together with --%s; use one or the other", f.cert)
	}
	if auto && (certAuth || ca != "") {
		// etcd replaces the whole TLS setup with the generated one, which
		// has no CA to verify anyone against.
		return c.fail(f.auto, "cannot verify client certificates (--%s, --%s); use --%s and --%s instead", f.certAuth, f.ca, f.cert, f.key)
	}
	if certAuth && ca == "" {
		return c.fail(f.certAuth, "needs --%s to verify the certificates against", f.ca)
	}
	haveTLS := cert != "" || auto
	for _, l := range []struct {
		flag string
		urls []url.URL
	}{{f.listen, listen}, {f.advertise, advertise}} {
		for _, u := range l.urls {
			if u.Scheme == "https" && !haveTLS {
				return c.failValue(l.flag, u.String(), "an https URL needs --%s and --%s, or --%s", f.cert, f.key, f.auto)
			}
		}
	}
	if haveTLS && !slices.ContainsFunc(listen, func(u url.URL) bool { return u.Scheme == "https" }) {
		name := f.cert
		if auto {
			name = f.auto
		}
		return c.fail(name, "no https URL in --%s to use it on", f.listen)
	}
	if certAuth && !haveTLS {
		return c.fail(f.certAuth, "needs https URLs in --%s and --%s with --%s", f.listen, f.cert, f.key)
	}
	return nil
}

// exposure is one way this configuration lets someone past the REST API's
// checks: a warning run logs at start, with the flag and value concerned.
type exposure struct {
	msg, key, value string
}

// exposures are warnings, not errors: clusters on private networks
// legitimately listen beyond loopback.
func (c *Config) exposures() []exposure {
	var out []exposure
	n := &c.Server.Node
	if host, _, _ := net.SplitHostPort(c.HTTPAddr); !isLoopback(host) && c.Tokens == nil && c.HTTPClientCAFile == "" {
		out = append(out, exposure{"--insecure: the REST API lets anyone who reaches it read and write", "http-addr", c.HTTPAddr})
	}
	if u, ok := beyondLoopback(n.ListenClientURLs); ok && !n.ClientTLSInfo.ClientCertAuth {
		out = append(out, exposure{"etcd client URL reachable beyond loopback without --client-cert-auth: whoever reaches it reads and writes every key, bypassing the REST API's tokens", "listen-client-url", u})
	}
	if u, ok := beyondLoopback(n.ListenPeerURLs); ok && !n.PeerTLSInfo.ClientCertAuth {
		out = append(out, exposure{"etcd peer URL reachable beyond loopback without --peer-client-cert-auth: whoever reaches it can pose as a cluster member", "listen-peer-url", u})
	}
	if host, _, _ := net.SplitHostPort(c.DNSAddr); c.DNSAddr != "" && !isLoopback(host) && c.TokenReads {
		out = append(out, exposure{"DNS reachable beyond loopback answers anyone, although REST reads need a token (--auth-reads token)", "dns-addr", c.DNSAddr})
	}
	if c.AuthTokenFile != "" {
		if fi, err := os.Stat(c.AuthTokenFile); err == nil && fi.Mode().Perm()&0o004 != 0 {
			out = append(out, exposure{"token file is readable by every user of this machine; chmod o-r it", "auth-token-file", c.AuthTokenFile})
		}
	}
	return out
}

func beyondLoopback(urls []url.URL) (string, bool) {
	for _, u := range urls {
		if !isLoopback(u.Hostname()) {
			return u.String(), true
		}
	}
	return "", false
}
