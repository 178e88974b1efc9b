package dns

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/regd/regd/registry"
)

// Sizes of answers, in octets.
const (
	// maxUDPSize is the largest UDP answer regd sends, and the size its
	// EDNS0 OPT record advertises: an EDNS0 client's buffer size is
	// honoured up to it. Larger answers are truncated (TC) and complete
	// over TCP. 4096 is what RFC 6891 §6.2.5 suggests to start from.
	maxUDPSize = 4096
	// maxTXTString is the longest character-string (RFC 1035 §3.3).
	maxTXTString = 255
)

// The SOA's timers, in seconds; nothing transfers regd's zone, so only
// its MINIMUM (the negative-caching TTL, RFC 2308 §4) matters: --dns-ttl.
const (
	soaRefresh = 3600
	soaRetry   = 600
	soaExpire  = 86400
)

// answerer builds answers from the view: one method per kind of name and
// type, over the node's in-memory view, never a raft round trip (Consul's
// agent/dns.go and CoreDNS's plugin/etcd have the same shape).
type answerer struct {
	view   View
	domain string // lower-case, fully qualified
	ttl    uint32 // seconds
}

// endpoint is an instance's address read for DNS: an IP (A or AAAA) or a
// DNS name (an SRV target only), and its port.
type endpoint struct {
	inst registry.Instance
	ip   netip.Addr // valid when the host is an IP
	host string     // fully qualified, when the host is a DNS name
	port uint16
}

// endpointOf reads inst's address; false when DNS cannot express it (an
// IPv6 address with a zone, a host that is no domain name).
func endpointOf(inst registry.Instance) (endpoint, bool) {
	host, portStr, err := net.SplitHostPort(inst.Address)
	if err != nil {
		return endpoint{}, false
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return endpoint{}, false
	}
	e := endpoint{inst: inst, port: uint16(port)}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return endpoint{}, false
		}
		e.ip = ip.Unmap()
		return e, true
	}
	if _, ok := mdns.IsDomainName(host); !ok || strings.ContainsRune(host, '\\') {
		return endpoint{}, false
	}
	e.host = mdns.Fqdn(host)
	return e, true
}

// endpoints is the up instances of service (any case) that DNS serves:
// a servable id and an address DNS can express.
func (a *answerer) endpoints(service string) []endpoint {
	insts := a.view.ServiceFold(service, registry.Filter{})
	out := make([]endpoint, 0, len(insts))
	for _, inst := range insts {
		if !ServableName(inst.Service) || !ServableName(inst.ID) {
			continue
		}
		if e, ok := endpointOf(inst); ok {
			out = append(out, e)
		}
	}
	return out
}

func (a *answerer) hdr(name string, t uint16) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: t, Class: mdns.ClassINET, Ttl: a.ttl}
}

// target is the name of an instance: <id>.<service>.instance.<domain>.
func (a *answerer) target(inst registry.Instance) string {
	return inst.ID + "." + inst.Service + ".instance." + a.domain
}

// addr is e's A or AAAA record named name, or nil when e's host is a DNS
// name or the record is not of type t (TypeANY takes either).
func (a *answerer) addr(name string, e endpoint, t uint16) mdns.RR {
	switch {
	case !e.ip.IsValid():
		return nil
	case e.ip.Is4() && (t == mdns.TypeA || t == mdns.TypeANY):
		return &mdns.A{Hdr: a.hdr(name, mdns.TypeA), A: net.IP(e.ip.AsSlice())}
	case e.ip.Is6() && (t == mdns.TypeAAAA || t == mdns.TypeANY):
		return &mdns.AAAA{Hdr: a.hdr(name, mdns.TypeAAAA), AAAA: net.IP(e.ip.AsSlice())}
	}
	return nil
}

// addrs are the A/AAAA records of a service name: every endpoint whose
// host is an IP. Weight plays no part (A records carry none).
func (a *answerer) addrs(name string, eps []endpoint, t uint16) []mdns.RR {
	var out []mdns.RR
	for _, e := range eps {
		if rr := a.addr(name, e, t); rr != nil {
			out = append(out, rr)
		}
	}
	return out
}

// srvs are the SRV records of a service (RFC 2782): priority 1, the
// instance's weight, its port, and as target the instance's own name
// (whose A/AAAA go into extra) or its host when that is a DNS name.
// Instances of weight 0 are left out: RFC 2782 would still pick them
// when nothing else is left, regd's weight 0 means no traffic.
func (a *answerer) srvs(name string, eps []endpoint) (answer, extra []mdns.RR) {
	for _, e := range eps {
		if e.inst.Weight <= 0 {
			continue
		}
		srv := &mdns.SRV{Hdr: a.hdr(name, mdns.TypeSRV), Priority: 1, Weight: uint16(min(e.inst.Weight, 65535)), Port: e.port, Target: e.host}
		if e.host == "" {
			srv.Target = a.target(e.inst)
			extra = append(extra, a.addr(srv.Target, e, mdns.TypeANY))
		}
		answer = append(answer, srv)
	}
	return answer, extra
}

// txt is an instance's metadata as a TXT record of key=value strings,
// sorted by key (RFC 6763 §6). A pair that DNS-SD cannot carry is left
// out: a key that is not printable US-ASCII or holds "=" (§6.4), or a
// pair longer than 255 octets (one character-string, RFC 1035 §3.3).
// No metadata is a single empty string (§6.1: a TXT record holds at
// least one).
func (a *answerer) txt(name string, inst registry.Instance) mdns.RR {
	keys := make([]string, 0, len(inst.Metadata))
	for k := range inst.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var strs []string
	for _, k := range keys {
		pair := k + "=" + inst.Metadata[k]
		if !txtKey(k) || len(pair) > maxTXTString {
			continue
		}
		// miekg/dns reads TXT strings in presentation format: a
		// backslash starts an escape, so a literal one is doubled.
		strs = append(strs, strings.ReplaceAll(pair, `\`, `\\`))
	}
	if len(strs) == 0 {
		strs = []string{""}
	}
	return &mdns.TXT{Hdr: a.hdr(name, mdns.TypeTXT), Txt: strs}
}

// txtKey reports whether k can be a DNS-SD key (RFC 6763 §6.4).
func txtKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e || k[i] == '=' {
			return false
		}
	}
	return true
}

// soa is the domain's SOA, which negative answers carry in their
// authority section (RFC 2308): its MINIMUM and TTL are --dns-ttl, so
// a name that appears is seen as soon as positive answers would be. The
// serial is the view's revision (its low 32 bits, RFC 1982 arithmetic
// copes with the wrap).
func (a *answerer) soa() mdns.RR {
	return &mdns.SOA{
		Hdr:     a.hdr(a.domain, mdns.TypeSOA),
		Ns:      "ns." + a.domain,
		Mbox:    "hostmaster." + a.domain,
		Serial:  uint32(a.view.Rev()),
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  a.ttl,
	}
}

// answer builds the response to req, a query the server accepted, to be
// sent over TCP or UDP: records of the name asked about, NXDOMAIN with
// the SOA for names that do not exist, NODATA (no error, no records, the
// SOA) for names that exist without records of the type asked. It is
// truncated to what the client can take: over UDP 512 octets, or its
// EDNS0 buffer size up to maxUDPSize; over TCP 64 KiB. A truncated UDP
// answer has TC set and the client asks again over TCP (RFC 7766).
func (a *answerer) answer(req *mdns.Msg, tcp bool) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	size := mdns.MinMsgSize
	if tcp {
		size = mdns.MaxMsgSize
	}
	opt := req.IsEdns0()
	// The OPT record of the answer goes last, after the records.
	reply := func(rcode int) *mdns.Msg {
		m.Rcode = rcode
		if opt != nil {
			m.SetEdns0(maxUDPSize, opt.Do())
		}
		return m
	}
	if opt != nil {
		if opt.Version() != 0 {
			return reply(mdns.RcodeBadVers) // RFC 6891 §6.1.3
		}
		if !tcp {
			size = min(max(int(opt.UDPSize()), mdns.MinMsgSize), maxUDPSize)
		}
	}
	if req.Opcode != mdns.OpcodeQuery {
		return reply(mdns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return reply(mdns.RcodeFormatError)
	}
	q := req.Question[0]
	parsed, inZone := parse(q.Name, a.domain)
	switch {
	case !inZone, q.Qclass != mdns.ClassINET && q.Qclass != mdns.ClassANY:
		// Not regd's to answer: it is no recursive resolver.
		return reply(mdns.RcodeRefused)
	case q.Qtype == mdns.TypeAXFR || q.Qtype == mdns.TypeIXFR:
		return reply(mdns.RcodeRefused) // no zone transfers: the zone is live
	}
	rcode := mdns.RcodeSuccess
	if !a.records(m, q.Name, q.Qtype, parsed) {
		rcode = mdns.RcodeNameError
	}
	if len(m.Answer) == 0 {
		m.Ns = []mdns.RR{a.soa()}
	}
	reply(rcode)
	m.Truncate(size)
	return m
}

// records fills m with the records of type t at name, parsed as q, and
// reports whether the name exists. Answers of several records are
// shuffled: clients that take the first address spread their load.
func (a *answerer) records(m *mdns.Msg, name string, t uint16, q query) (exists bool) {
	anyType := t == mdns.TypeANY
	switch q.kind {
	case nameApex:
		if t == mdns.TypeSOA || anyType {
			m.Answer = append(m.Answer, a.soa())
		}
		return true
	case nameEmpty:
		return true
	case nameService, nameSRV:
		eps := a.endpoints(q.service)
		if q.kind == nameService {
			m.Answer = append(m.Answer, a.addrs(name, eps, t)...)
		}
		if t == mdns.TypeSRV || anyType {
			srv, extra := a.srvs(name, eps)
			m.Answer = append(m.Answer, srv...)
			m.Extra = append(m.Extra, extra...)
		}
		shuffle(m.Answer)
		return len(eps) > 0
	case nameInstances:
		return len(a.endpoints(q.service)) > 0
	case nameInstance:
		for _, e := range a.endpoints(q.service) {
			if !strings.EqualFold(e.inst.ID, q.id) {
				continue
			}
			exists = true
			if rr := a.addr(name, e, t); rr != nil {
				m.Answer = append(m.Answer, rr)
			}
			if t == mdns.TypeTXT || anyType {
				m.Answer = append(m.Answer, a.txt(name, e.inst))
			}
		}
		return exists
	}
	return false
}

func shuffle(rrs []mdns.RR) {
	rand.Shuffle(len(rrs), func(i, j int) { rrs[i], rrs[j] = rrs[j], rrs[i] })
}
