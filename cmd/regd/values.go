package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// The flag.Value types regd binds its flags with. Each parses into the
// field where the value is used and refuses what does not parse with its
// own reason, which Config.valueError turns into one line naming the flag.
// Get returns a string for values the help text shows quoted.

// elementError is a problem with one element of a list flag's value; the
// error line quotes the element rather than the whole list.
type elementError struct {
	elem   string
	reason string
}

func (e *elementError) Error() string { return e.reason }

type boolValue struct{ dst *bool }

func newBool(dst *bool) *boolValue { *dst = false; return &boolValue{dst} }

func (v *boolValue) IsBoolFlag() bool { return true }
func (v *boolValue) Get() any         { return *v.dst }
func (v *boolValue) String() string {
	if v == nil || v.dst == nil {
		return "false"
	}
	return strconv.FormatBool(*v.dst)
}

func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("must be true or false")
	}
	*v.dst = b
	return nil
}

type intValue[T int | int64] struct{ dst *T }

func newInt[T int | int64](dst *T, def T) *intValue[T] { *dst = def; return &intValue[T]{dst} }

func (v *intValue[T]) Get() any { return *v.dst }
func (v *intValue[T]) String() string {
	if v == nil || v.dst == nil {
		return "0"
	}
	return strconv.FormatInt(int64(*v.dst), 10)
}

func (v *intValue[T]) Set(s string) error {
	n, err := strconv.ParseInt(s, 0, 64)
	if errors.Is(err, strconv.ErrRange) || err == nil && int64(T(n)) != n {
		return errors.New("out of range")
	}
	if err != nil {
		return errors.New("must be a whole number")
	}
	*v.dst = T(n)
	return nil
}

type durationValue struct{ dst *time.Duration }

func newDuration(dst *time.Duration, def time.Duration) *durationValue {
	*dst = def
	return &durationValue{dst}
}

func (v *durationValue) Get() any { return *v.dst }

// String is the duration as Go writes it, without the zero minutes and
// seconds of a whole number of hours or minutes: "1h", not "1h0m0s".
func (v *durationValue) String() string {
	if v == nil || v.dst == nil {
		return "0s"
	}
	s := v.dst.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("must be a duration with a unit, such as 10s or 1m30s")
	}
	*v.dst = d
	return nil
}

// freeBytesValue is --min-free-bytes: 0 turns the disk guard off, which
// node.Config says with a negative value (its 0 means the default).
type freeBytesValue struct{ dst *int64 }

func newFreeBytes(dst *int64, def int64) *freeBytesValue { *dst = def; return &freeBytesValue{dst} }

func (v *freeBytesValue) Get() any { return v.bytes() }
func (v *freeBytesValue) String() string {
	if v == nil || v.dst == nil {
		return "0"
	}
	return strconv.FormatInt(v.bytes(), 10)
}

func (v *freeBytesValue) bytes() int64 { return max(*v.dst, 0) }

func (v *freeBytesValue) Set(s string) error {
	n, err := strconv.ParseInt(s, 0, 64)
	switch {
	case err != nil:
		return errors.New("must be a whole number of bytes")
	case n < 0:
		return errors.New("must not be negative (0 turns the guard off)")
	case n == 0:
		n = -1
	}
	*v.dst = n
	return nil
}

// choiceValue is a string from a fixed set.
type choiceValue struct {
	dst     *string
	choices []string
}

func newChoice(dst *string, def string, choices ...string) *choiceValue {
	*dst = def
	return &choiceValue{dst, choices}
}

func (v *choiceValue) Get() any { return v.String() }
func (v *choiceValue) String() string {
	if v == nil || v.dst == nil {
		return ""
	}
	return *v.dst
}

func (v *choiceValue) Set(s string) error {
	for _, c := range v.choices {
		if s == c {
			*v.dst = s
			return nil
		}
	}
	return fmt.Errorf("must be %s", quotedOr(v.choices))
}

func quotedOr(choices []string) string {
	q := make([]string, len(choices))
	for i, c := range choices {
		q[i] = strconv.Quote(c)
	}
	if len(q) < 2 {
		return strings.Join(q, "")
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// tokenReadsValue is --auth-reads: "open" (false) or "token" (true).
type tokenReadsValue struct{ dst *bool }

func (v *tokenReadsValue) Get() any { return v.String() }
func (v *tokenReadsValue) String() string {
	if v == nil || v.dst == nil || !*v.dst {
		return "open"
	}
	return "token"
}

func (v *tokenReadsValue) Set(s string) error {
	switch s {
	case "open", "token":
		*v.dst = s == "token"
		return nil
	}
	return errors.New(`must be "open" or "token"`)
}

// levelValue accepts only the levels regd actually logs at; zap's
// panic/fatal levels would silently hide errors, and zap maps "" to info.
type levelValue struct{ dst *zapcore.Level }

func newLevel(dst *zapcore.Level, def string) *levelValue {
	v := &levelValue{dst}
	if err := v.Set(def); err != nil {
		panic(err) // a default of this file
	}
	return v
}

func (v *levelValue) Get() any { return v.String() }
func (v *levelValue) String() string {
	if v == nil || v.dst == nil {
		return ""
	}
	return v.dst.String()
}

func (v *levelValue) Set(s string) error {
	l, err := zapcore.ParseLevel(s)
	if s == "" || err != nil || l < zapcore.DebugLevel || l > zapcore.ErrorLevel {
		return errors.New("must be one of debug, info, warn, error")
	}
	*v.dst = l
	return nil
}

// urlsValue is a comma-separated list of etcd member URLs. etcd itself
// accepts more (e.g. unix sockets), but regd supports plain TCP endpoints
// only, and an early, precise error beats a late one from inside the
// embedded server.
type urlsValue struct{ dst *[]url.URL }

func newURLs(dst *[]url.URL, def string) *urlsValue {
	v := &urlsValue{dst}
	if err := v.Set(def); err != nil {
		panic(err) // a default of this file
	}
	return v
}

func (v *urlsValue) Get() any { return v.String() }
func (v *urlsValue) String() string {
	if v == nil || v.dst == nil {
		return ""
	}
	s := make([]string, len(*v.dst))
	for i, u := range *v.dst {
		s[i] = u.String()
	}
	return strings.Join(s, ",")
}

func (v *urlsValue) Set(list string) error {
	if strings.TrimSpace(list) == "" {
		return errors.New("must not be empty")
	}
	var urls []url.URL
	seen := map[string]bool{}
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			return errors.New("empty entry in list")
		}
		u, err := checkURL(s)
		if err != nil {
			return &elementError{s, err.Error()}
		}
		// Listing a URL twice is always a mistake: a second listener on the
		// same address fails to bind, and duplicate advertised URLs confuse
		// etcd's member matching.
		if seen[urlKey(u)] {
			return &elementError{s, "duplicate URL"}
		}
		seen[urlKey(u)] = true
		urls = append(urls, *u)
	}
	*v.dst = urls
	return nil
}

// checkURL validates one etcd member URL: http or https, a host and a
// port, nothing else.
func checkURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return nil, fmt.Errorf("invalid URL: %v", ue.Err)
		}
		return nil, fmt.Errorf("invalid URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, errors.New("scheme must be http or https")
	}
	if u.Opaque != "" || u.Host == "" {
		return nil, errors.New("missing host")
	}
	if u.User != nil {
		return nil, errors.New("must not contain user information")
	}
	if u.Path != "" && u.Path != "/" {
		return nil, errors.New("must not contain a path")
	}
	if u.RawQuery != "" || u.ForceQuery {
		return nil, errors.New("must not contain a query")
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return nil, errors.New("must not contain a fragment")
	}
	if u.Hostname() == "" {
		return nil, errors.New("missing host")
	}
	if _, err := parsePort(u.Port(), 1); err != nil {
		return nil, err
	}
	return u, nil
}

// urlKey identifies a URL for duplicate detection, ignoring a trailing "/"
// and host case.
func urlKey(u *url.URL) string {
	return u.Scheme + "://" + strings.ToLower(u.Host)
}

// originsValue is --cors-allowed-origins: a comma-separated list of web
// origins, scheme://host[:port] as a browser sends them in the Origin
// header (RFC 6454 §6.1), or "*" alone for any origin. Hosts are kept in
// lower case, as browsers send them; empty means no CORS.
type originsValue struct{ dst *[]string }

func newOrigins(dst *[]string) *originsValue { *dst = nil; return &originsValue{dst} }

func (v *originsValue) Get() any { return v.String() }
func (v *originsValue) String() string {
	if v == nil || v.dst == nil {
		return ""
	}
	return strings.Join(*v.dst, ",")
}

func (v *originsValue) Set(list string) error {
	var origins []string
	if strings.TrimSpace(list) != "" {
		for _, s := range strings.Split(list, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				return errors.New("empty entry in list")
			}
			o, err := checkOrigin(s)
			if err != nil {
				return &elementError{s, err.Error()}
			}
			if o == "*" && len(origins) > 0 || len(origins) > 0 && origins[0] == "*" {
				return &elementError{s, `"*" allows every origin; give it alone`}
			}
			for _, prev := range origins {
				if prev == o {
					return &elementError{s, "duplicate origin"}
				}
			}
			origins = append(origins, o)
		}
	}
	*v.dst = origins
	return nil
}

// checkOrigin validates one origin and returns it as browsers write it.
func checkOrigin(s string) (string, error) {
	if s == "*" {
		return s, nil
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return "", errors.New("must be scheme://host[:port], or *")
	}
	for i, r := range scheme {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return "", fmt.Errorf("invalid scheme %q", scheme)
		}
	}
	if i := strings.IndexAny(rest, "/?#@"); i >= 0 {
		return "", fmt.Errorf("an origin has no path, query, fragment or user information (%q)", rest[i:])
	}
	host, port := rest, ""
	if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, ']') {
		host, port = rest[:i], rest[i+1:]
		if _, err := parsePort(port, 1); err != nil {
			return "", err
		}
	}
	// An IPv6 address goes in brackets; a name or an IPv4 address has no colon.
	if inner, ok := strings.CutPrefix(host, "["); ok && strings.HasSuffix(inner, "]") {
		if ip := net.ParseIP(strings.TrimSuffix(inner, "]")); ip == nil || !strings.Contains(inner, ":") {
			return "", fmt.Errorf("invalid host %q", host)
		}
	} else if strings.Contains(host, ":") || net.ParseIP(host) == nil && !validHostname(host) {
		return "", fmt.Errorf("invalid host %q", host)
	}
	scheme = strings.ToLower(scheme)
	if port == "443" && scheme == "https" || port == "80" && scheme == "http" {
		return "", fmt.Errorf("drop the default port %s: browsers leave it out of the Origin header", port)
	}
	return scheme + "://" + strings.ToLower(rest), nil
}

// parsePort accepts a decimal port in [min, 65535]. strconv.Atoi alone would
// also accept signs, hence the digit check.
func parsePort(port string, min int) (int, error) {
	if port == "" {
		return 0, errors.New("missing port")
	}
	for _, r := range port {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("port %q is not numeric", port)
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < min || n > 65535 {
		return 0, fmt.Errorf("port %q out of range %d-65535", port, min)
	}
	return n, nil
}

// validHostname is deliberately loose (RFC 1123 characters and lengths) –
// resolution is left to net.Listen.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
