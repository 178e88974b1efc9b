package dns

import (
	"fmt"
	"strings"
)

// MaxLabel is the longest DNS label, in octets (RFC 1035 §2.3.4).
const MaxLabel = 63

// ServableName reports whether a regd name (a service name or an instance
// id) can be served over DNS: it must be one label of the preferred name
// syntax (RFC 1035 §2.3.1, as relaxed by RFC 1123 §2.1): 1–63 letters,
// digits and hyphens, neither first nor last a hyphen. regd's names may
// also hold "." (which would split the label), "_" (which host names may
// not hold, and which would make "_x._tcp" names ambiguous) and up to 128
// characters; instances with such a service name or id are left out of
// every DNS answer (documented in docs/discovery.md and counted by
// regd_dns_unservable_instances). Consul applies the same rule to its
// service names.
func ServableName(s string) bool {
	if len(s) == 0 || len(s) > MaxLabel || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-':
		default:
			return false
		}
	}
	return true
}

// CanonicalDomain checks a domain regd answers for (--dns-domain) and
// returns it lower-cased and fully qualified ("regd" → "regd."): one or
// more labels of ServableName, at most 253 octets in all, and not the
// root (regd would claim every name).
func CanonicalDomain(d string) (string, error) {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	if d == "" {
		return "", fmt.Errorf("must be a domain name such as %q, not empty or the root", DefaultDomain)
	}
	if len(d) > 253 {
		return "", fmt.Errorf("is %d octets long; a domain name has at most 253", len(d))
	}
	for _, l := range strings.Split(d, ".") {
		if !ServableName(l) {
			return "", fmt.Errorf("label %q: labels are 1-%d letters, digits and hyphens, not starting or ending with a hyphen", l, MaxLabel)
		}
	}
	return d + ".", nil
}

// nameKind is what a query name is within regd's domain.
type nameKind uint8

const (
	// nameUnknown: in the domain, but nothing regd serves (NXDOMAIN).
	nameUnknown nameKind = iota
	// nameApex: the domain itself (its SOA).
	nameApex
	// nameEmpty: a name that holds no records but has names below it
	// (an empty non-terminal, RFC 8020): "service.<domain>",
	// "instance.<domain>", "_tcp.service.<domain>". Answered NODATA,
	// never NXDOMAIN, which would deny the names below.
	nameEmpty
	// nameService: "<service>.service.<domain>": A/AAAA and SRV.
	nameService
	// nameSRV: "_<service>._tcp.service.<domain>" (RFC 2782): SRV.
	nameSRV
	// nameInstances: "<service>.instance.<domain>": an empty non-terminal
	// while the service has instances.
	nameInstances
	// nameInstance: "<id>.<service>.instance.<domain>": A/AAAA and TXT.
	nameInstance
)

// query is a question's name parsed once: what it names, and the service
// and instance it names (lower-case; they match regd's names without
// regard to case).
type query struct {
	kind        nameKind
	service, id string
}

// parse reads a query name (presentation format, fully qualified, as
// miekg/dns gives it) against domain (lower-case, fully qualified). ok is
// false for names outside the domain, which regd refuses: it is no
// recursive resolver.
func parse(name, domain string) (q query, ok bool) {
	name = strings.ToLower(name)
	var rest string
	switch {
	case name == domain:
		return query{kind: nameApex}, true
	case strings.HasSuffix(name, "."+domain):
		rest = name[:len(name)-len(domain)-1]
	default:
		return query{}, false
	}
	// An escaped octet (\. inside a label, \DDD) never belongs to a
	// servable name.
	if strings.ContainsRune(rest, '\\') {
		return query{}, true
	}
	labels := strings.Split(rest, ".")
	switch len(labels) {
	case 1:
		if labels[0] == "service" || labels[0] == "instance" {
			return query{kind: nameEmpty}, true
		}
	case 2:
		switch {
		case labels[1] == "service" && labels[0] == "_tcp":
			return query{kind: nameEmpty}, true
		case labels[1] == "service" && ServableName(labels[0]):
			return query{kind: nameService, service: labels[0]}, true
		case labels[1] == "instance" && ServableName(labels[0]):
			return query{kind: nameInstances, service: labels[0]}, true
		}
	case 3:
		switch {
		case labels[2] == "service" && labels[1] == "_tcp" && strings.HasPrefix(labels[0], "_") && ServableName(labels[0][1:]):
			return query{kind: nameSRV, service: labels[0][1:]}, true
		case labels[2] == "instance" && ServableName(labels[0]) && ServableName(labels[1]):
			return query{kind: nameInstance, service: labels[1], id: labels[0]}, true
		}
	}
	return query{}, true
}
