package registry

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits from the contract.
const (
	MaxNameLen       = 128
	DefaultTTL       = 10
	MinTTL           = 2
	MaxTTL           = 3600
	MaxMetadataPairs = 64
	MaxMetadataBytes = 4096
	maxMetaKeyLen    = 128
)

// validName reports whether s is 1–128 characters of [A-Za-z0-9._-] and not
// "." or "..": such a name is safe as one path segment of an etcd key and of
// a URL, so it can never escape its service's key range.
func validName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidateService checks a service name.
func ValidateService(s string) error {
	if !validName(s) {
		return Errorf(KindInvalid, CodeInvalidService, "service name %s must be 1-%d characters of A-Z a-z 0-9 . _ - and not \".\" or \"..\"", quote(s), MaxNameLen)
	}
	return nil
}

// ValidateID checks an instance id.
func ValidateID(s string) error {
	if !validName(s) {
		return Errorf(KindInvalid, CodeInvalidID, "instance id %s must be 1-%d characters of A-Z a-z 0-9 . _ - and not \".\" or \"..\"", quote(s), MaxNameLen)
	}
	return nil
}

// ValidateAddress checks that a is host:port with port 1–65535 and host an IP
// (IPv6 in brackets) or a DNS name.
func ValidateAddress(a string) error {
	bad := func(why string) error {
		return Errorf(KindInvalid, CodeInvalidAddress, "address %s is not host:port: %s", quote(a), why)
	}
	if a == "" {
		return bad("it is empty")
	}
	if len(a) > 261 { // 253-byte name, colon, 5-digit port, brackets
		return bad("it is too long")
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		if strings.Count(a, ":") > 1 && !strings.HasPrefix(a, "[") {
			return bad("IPv6 hosts go in brackets, e.g. [::1]:8080")
		}
		return bad("expected host:port, e.g. 10.0.0.5:8080")
	}
	if !validPort(port) {
		return bad("the port must be a number from 1 to 65535")
	}
	if host == "" {
		return bad("the host is empty")
	}
	bracketed := strings.HasPrefix(a, "[")
	if ip, err := netip.ParseAddr(host); err == nil {
		// SplitHostPort accepts "[1.2.3.4]:80"; brackets are for IPv6 only.
		if bracketed != ip.Is6() {
			return bad("IPv6 hosts, and only they, go in brackets")
		}
		// netip accepts any bytes as a zone ("%\n", "% /x"): only an
		// interface name or number is a zone.
		if z := ip.Zone(); z != "" && !validName(z) {
			return bad("the IPv6 zone must be an interface name or number")
		}
		return nil
	}
	if bracketed {
		return bad("only IPv6 hosts go in brackets")
	}
	if !validDNSName(host) {
		return bad("the host is neither an IP address nor a DNS name")
	}
	return nil
}

func validPort(p string) bool {
	if len(p) == 0 || len(p) > 5 || p[0] == '0' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	n, _ := strconv.Atoi(p)
	return n >= 1 && n <= 65535
}

// validDNSName follows RFC 1123 host names, with an optional final dot,
// and accepts underscores in labels as resolvers do (glibc, Go's net,
// CoreDNS): container and compose host names such as my_host carry them,
// and so do SRV-style labels (_http._tcp). RFC 2181 §11 allows any octet in
// a DNS label; only the host name syntax of RFC 952/1123 forbids them.
func validDNSName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	// RFC 1123 2.1: the top-level label is never all digits, so a name can
	// not look like a malformed IPv4 address ("256.1.1.1", "010.0.0.1").
	top := h[strings.LastIndexByte(h, '.')+1:]
	return strings.Trim(top, "0123456789") != ""
}

// ResolveTTL applies the default to an absent TTL and checks the bounds.
func ResolveTTL(ttl *int64) (int64, error) {
	if ttl == nil {
		return DefaultTTL, nil
	}
	if *ttl < MinTTL || *ttl > MaxTTL {
		return 0, Errorf(KindInvalid, CodeInvalidTTL, "ttl %d is out of range: it must be a whole number of seconds from %d to %d", *ttl, MinTTL, MaxTTL)
	}
	return *ttl, nil
}

// ValidateMetadata checks the pair count, total size and key shape.
func ValidateMetadata(md map[string]string) error {
	if len(md) > MaxMetadataPairs {
		return Errorf(KindInvalid, CodeInvalidMetadata, "metadata has %d pairs; at most %d are allowed", len(md), MaxMetadataPairs)
	}
	size := 0
	for k, v := range md {
		if k == "" || len(k) > maxMetaKeyLen {
			return Errorf(KindInvalid, CodeInvalidMetadata, "metadata key %s must be 1-%d bytes", quote(k), maxMetaKeyLen)
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) || hasControl(k) {
			return Errorf(KindInvalid, CodeInvalidMetadata, "metadata key %s: keys must be printable UTF-8 and values valid UTF-8", quote(k))
		}
		size += len(k) + len(v)
	}
	if size > MaxMetadataBytes {
		return Errorf(KindInvalid, CodeInvalidMetadata, "metadata is %d bytes; at most %d are allowed", size, MaxMetadataBytes)
	}
	return nil
}

// validateMetaKey checks one metadata key (also of a filter, meta.<key>).
func validateMetaKey(k string) error {
	if k == "" || len(k) > maxMetaKeyLen {
		return fmt.Errorf("keys must be 1-%d bytes", maxMetaKeyLen)
	}
	if !utf8.ValidString(k) || hasControl(k) {
		return errors.New("keys must be printable UTF-8")
	}
	return nil
}

// ResolveStatus applies the default to an absent status and checks it.
func ResolveStatus(s *string) (string, error) {
	if s == nil {
		return StatusUp, nil
	}
	if !validStatus(*s) {
		return "", Errorf(KindInvalid, CodeInvalidStatus, "status %s must be up, draining or out_of_service", quote(*s))
	}
	return *s, nil
}

// ResolveWeight applies the default to an absent weight and checks the
// bounds (0–MaxWeight, as the contract says; SRV weights are 16 bits).
func ResolveWeight(w *int64) (int64, error) {
	if w == nil {
		return DefaultWeight, nil
	}
	if *w < 0 || *w > MaxWeight {
		return 0, Errorf(KindInvalid, CodeInvalidWeight, "weight %d is out of range: it must be a whole number from 0 to %d", *w, MaxWeight)
	}
	return *w, nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

// maxQuoted is how many bytes of user input an error message shows.
const maxQuoted = 64

// QuoteInput renders user input for an error message without letting a
// huge or binary value flood it: Go-quoted, and a value over 64 bytes cut
// on a UTF-8 character boundary (never inside a character, which would show
// as \x escapes of half a character) and marked with "...".
func QuoteInput(s string) string {
	if len(s) > maxQuoted {
		cut := maxQuoted
		// s[cut] is the first byte left out: while it continues a
		// character, that character started inside the kept part, at
		// most UTFMax-1 bytes back (further back is invalid UTF-8, which
		// strconv.Quote escapes byte by byte anyway).
		for cut > maxQuoted-(utf8.UTFMax-1) && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return strconv.Quote(s)
}

// quote is QuoteInput under the short name this package's messages use.
func quote(s string) string { return QuoteInput(s) }
