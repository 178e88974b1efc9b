package checks

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// DefaultAllowedCIDRs are the networks a check may reach unless the
// operator says otherwise (--check-allowed-cidrs): loopback and the
// private ranges, where the services of a registry live (RFC 1918 for
// IPv4, RFC 4193 unique local addresses for IPv6). Left out on purpose:
// link-local addresses (169.254.0.0/16, fe80::/10), where cloud metadata
// services answer with credentials; 0.0.0.0/8, which reaches the local
// host on Linux; and the public internet. A write token may register a
// check, and a check's output is shown to every reader, so a check is a
// way to make the registry fetch a URL and show the answer: the list keeps
// that within the networks the registry's services use.
var DefaultAllowedCIDRs = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fc00::/7"),
}

// ParseCIDRs reads a comma-separated list of networks in CIDR notation
// ("10.0.0.0/8,fd00::/8"); a bare address is one host (/32 or /128).
// "0.0.0.0/0,::/0" allows everything.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !strings.Contains(part, "/") {
			a, err := netip.ParseAddr(part)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q is neither a network in CIDR notation (10.0.0.0/8) nor an IP address", part)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, fmt.Errorf("%q is not a network in CIDR notation such as 10.0.0.0/8 or fd00::/8", part)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		out = append(out, p.Masked())
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no networks given; to allow every address give 0.0.0.0/0,::/0")
	}
	return out, nil
}

// RefuseLiteral is the registration-time half of the allow-list: a check
// target whose host is an IP address outside allowed (nil:
// DefaultAllowedCIDRs) is refused with a *DeniedError, so that a check
// that could never be made is a 400 at registration rather than an
// instance that fails its check later. A name is left to the connection,
// where what it resolves to is checked (dial); host may be bracketed
// ("[::1]").
func RefuseLiteral(allowed []netip.Prefix, host string) error {
	if allowed == nil {
		allowed = DefaultAllowedCIDRs
	}
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if err != nil {
		return nil // a name
	}
	if !allowList(allowed).allows(ip) {
		return &DeniedError{Host: ip.String(), IP: ip}
	}
	return nil
}

// allowList is the set of networks checks may connect to.
type allowList []netip.Prefix

// allows reports whether ip is in one of the networks. IPv4 addresses
// written as IPv6 (::ffff:10.0.0.1) count as the IPv4 address, so that a
// mapped address cannot slip past an IPv4 rule; zones are ignored.
func (l allowList) allows(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	for _, p := range l {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (l allowList) String() string {
	s := make([]string, len(l))
	for i, p := range l {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// DeniedError is a check target's address outside the allowed networks.
type DeniedError struct {
	Host string     // as the check names it
	IP   netip.Addr // the address it is, or resolved to
}

func (e *DeniedError) Error() string {
	if e.Host == e.IP.String() {
		return fmt.Sprintf("address %s is outside the networks checks may reach (--check-allowed-cidrs)", e.IP)
	}
	return fmt.Sprintf("%s resolves to %s, which is outside the networks checks may reach (--check-allowed-cidrs)", e.Host, e.IP)
}

// Resolver looks up a host's addresses (net.Resolver does).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// dial connects to addr (host:port) only if every address host resolves to
// is allowed: the name is resolved once, each address is checked, and the
// connection is made to a checked address, never to the name again. A
// name that resolves to an allowed address at the check and to another at
// the connection (DNS rebinding) therefore cannot reach the other, and a
// name with any address outside the list is refused as a whole. The
// dialer's Control hook checks the address of every socket once more
// before it connects.
func (p *Prober) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := net.LookupPort("tcp", portStr)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		ips, err = p.resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("%s has no addresses", host)
		}
	}
	for _, ip := range ips {
		if !p.allowed.allows(ip) {
			return nil, &DeniedError{Host: host, IP: ip.Unmap()}
		}
	}
	var last error
	for _, ip := range ips {
		conn, err := p.dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(ip.Unmap(), uint16(port)).String())
		if err == nil {
			return conn, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

// control refuses a socket whose address is outside the allowed networks:
// the last line of defence, run by net.Dialer just before connect(2).
func (p *Prober) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("unexpected socket address %q: %w", address, err)
	}
	if !p.allowed.allows(ap.Addr()) {
		return &DeniedError{Host: ap.Addr().String(), IP: ap.Addr().Unmap()}
	}
	return nil
}
