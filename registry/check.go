package registry

import (
	"bytes"
	"encoding/json"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Health checks run by the registry (contract v2, "Health checks run by
// the registry"; issue 13). This file holds the domain: the check an
// instance was registered with, its validation, the health the check's
// owner publishes, and the rule for the lease TTL of a checked instance.
// The probes are in package checks, their schedule and ownership in
// cluster (checks.go), the writes in check_store.go.

// Check kinds: what a probe does to pass.
const (
	// CheckHTTP: GET the URL; passing on a 2xx answer.
	CheckHTTP = "http"
	// CheckTCP: open a TCP connection; passing when it is accepted.
	CheckTCP = "tcp"
	// CheckGRPC: grpc.health.v1 Health/Check; passing on SERVING.
	CheckGRPC = "grpc"
)

// Health statuses.
const (
	HealthPassing = "passing"
	HealthFailing = "failing"
)

// Bounds and defaults of a check (contract v2).
const (
	MinCheckInterval     = time.Second
	MaxCheckInterval     = time.Hour
	DefaultCheckInterval = 10 * time.Second
	// DefaultCheckTimeout is a probe's timeout unless given; for
	// intervals of 4 s and less it is half the interval instead, since a
	// timeout must stay below the interval.
	DefaultCheckTimeout  = 2 * time.Second
	DefaultCheckFailures = 3
	MaxCheckFailures     = 100
	// maxCheckURL bounds an HTTP check's URL (a URL of a health endpoint
	// is short; the bound keeps the record small).
	maxCheckURL = 2048
	// MaxCheckOutput bounds the output kept of a probe, in the instance's
	// health and in an expiry report (Store.EndLease cuts at the same
	// size).
	MaxCheckOutput = maxEndOutput
)

// DefaultCheckFailover is the part of a checked instance's lease TTL that
// covers a change of check owner (CheckTTL): two election timeouts of
// etcd's defaults (1 s each) and a second of margin. Options.CheckFailover
// replaces it with the member's own election timeout.
const DefaultCheckFailover = 3 * time.Second

// Duration is a length of time that JSON shows as a Go duration string
// ("10s", "1m30s", "500ms").
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string, or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	v, err := parseDuration(b)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Check is an instance's health check as regd stores and shows it: one
// target (exactly one of HTTP, TCP, GRPC), with every setting resolved.
type Check struct {
	// HTTP is an http:// or https:// URL; passing on a 2xx answer.
	HTTP string `json:"http,omitempty"`
	// TCP is host:port; passing when a connection is accepted.
	TCP string `json:"tcp,omitempty"`
	// GRPC is host:port, optionally followed by /<service> (the service
	// name asked of grpc.health.v1; none: the server as a whole).
	GRPC string `json:"grpc,omitempty"`
	// Interval is the time between two probes' starts.
	Interval Duration `json:"interval"`
	// Timeout bounds one probe; always below Interval.
	Timeout Duration `json:"timeout"`
	// Failures is how many probes in a row must fail before the instance
	// is removed (its expiry reported with cause check_failed).
	Failures int `json:"failures"`
}

// Kind is the check's kind (CheckHTTP, CheckTCP, CheckGRPC) and Target
// what it probes.
func (c Check) Kind() string {
	switch {
	case c.HTTP != "":
		return CheckHTTP
	case c.TCP != "":
		return CheckTCP
	default:
		return CheckGRPC
	}
}

// Target is what the check probes: the URL or host:port[/service].
func (c Check) Target() string { return c.HTTP + c.TCP + c.GRPC }

// Host is the host the check connects to (a name or an IP address, IPv6
// without brackets), from a check ResolveCheck made; "" if it has none.
func (c Check) Host() string {
	addr := c.TCP
	switch {
	case c.HTTP != "":
		u, err := url.Parse(c.HTTP)
		if err != nil {
			return ""
		}
		return u.Hostname()
	case c.GRPC != "":
		addr, _ = GRPCTarget(c.GRPC)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return host
}

// valid reports whether a stored check is one ResolveCheck would have
// made. Only regd writes meta records; a check another program wrote
// there that is not is ignored (shown and run as no check).
func (c Check) valid() bool {
	in := Registration{Check: &CheckInput{}}
	switch {
	case c.HTTP != "":
		in.Check.HTTP = &c.HTTP
	case c.TCP != "":
		in.Check.TCP = &c.TCP
	case c.GRPC != "":
		in.Check.GRPC = &c.GRPC
	}
	if c.Target() != in.Check.targetOf() {
		return false // two targets
	}
	in.Check.Interval, _ = json.Marshal(c.Interval)
	in.Check.Timeout, _ = json.Marshal(c.Timeout)
	f := int64(c.Failures)
	in.Check.Failures = &f
	r, err := ResolveCheck(in)
	return err == nil && *r == c
}

func (in *CheckInput) targetOf() string {
	var s string
	for _, p := range []*string{in.HTTP, in.TCP, in.GRPC} {
		if p != nil {
			s += *p
		}
	}
	return s
}

// Health is what the check's owner last published about an instance's
// check (cluster/DESIGN.md, "Health checks"): written when the status or
// the count of consecutive failures changes, not at every probe.
type Health struct {
	// Status is HealthPassing or HealthFailing: the result of the probe
	// that set this health.
	Status string `json:"status"`
	// CheckedAt is when that probe ended. Later probes with the same
	// result are not written (each would be a raft write), so in a steady
	// state CheckedAt is when the state began.
	CheckedAt time.Time `json:"checked_at"`
	// Output is that probe's output, at most MaxCheckOutput bytes.
	Output string `json:"output"`
	// ConsecutiveFailures is how many probes in a row had failed then.
	ConsecutiveFailures int `json:"consecutive_failures"`
}

// CheckInput is a check as a registration gives it: one target, and
// optionally interval, timeout and failures (which may also be given beside
// the check, at the top of the registration, as the contract writes them).
// Interval and Timeout are a duration string ("10s", "1500ms") or a number
// of seconds. Anything wrong is KindInvalid with CodeInvalidCheck.
type CheckInput struct {
	HTTP     *string         `json:"http,omitempty"`
	TCP      *string         `json:"tcp,omitempty"`
	GRPC     *string         `json:"grpc,omitempty"`
	Interval json.RawMessage `json:"interval,omitempty"`
	Timeout  json.RawMessage `json:"timeout,omitempty"`
	Failures *int64          `json:"failures,omitempty"`
}

func invalidCheck(format string, args ...any) error {
	return Errorf(KindInvalid, CodeInvalidCheck, format, args...)
}

func present(raw json.RawMessage) bool {
	return len(raw) > 0 && !bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// ResolveCheck checks a registration's check and fills in the defaults.
// It returns nil when the registration has no check. interval, timeout
// and failures may be given in the check object or beside it, not both.
func ResolveCheck(r Registration) (*Check, error) {
	if r.Check == nil {
		for _, f := range []struct {
			name  string
			given bool
		}{{"interval", present(r.Interval)}, {"timeout", present(r.Timeout)}, {"failures", r.Failures != nil}} {
			if f.given {
				return nil, invalidCheck("%s is a setting of a health check, but the registration has no check; add \"check\": {\"http\": ...}, {\"tcp\": ...} or {\"grpc\": ...}", f.name)
			}
		}
		return nil, nil
	}
	in := *r.Check
	both := func(name string) error {
		return invalidCheck("%s is given both in the check and beside it; give it once", name)
	}
	if present(r.Interval) {
		if present(in.Interval) {
			return nil, both("interval")
		}
		in.Interval = r.Interval
	}
	if present(r.Timeout) {
		if present(in.Timeout) {
			return nil, both("timeout")
		}
		in.Timeout = r.Timeout
	}
	if r.Failures != nil {
		if in.Failures != nil {
			return nil, both("failures")
		}
		in.Failures = r.Failures
	}

	var c Check
	kinds := 0
	if in.HTTP != nil {
		kinds++
		if err := validateCheckURL(*in.HTTP); err != nil {
			return nil, err
		}
		c.HTTP = *in.HTTP
	}
	if in.TCP != nil {
		kinds++
		if err := ValidateAddress(*in.TCP); err != nil {
			return nil, invalidCheck("tcp check target %s is not host:port: %s", quote(*in.TCP), reason(err))
		}
		c.TCP = *in.TCP
	}
	if in.GRPC != nil {
		kinds++
		if err := validateGRPCTarget(*in.GRPC); err != nil {
			return nil, err
		}
		c.GRPC = *in.GRPC
	}
	switch kinds {
	case 0:
		return nil, invalidCheck("the check has no target; give exactly one of \"http\" (a URL), \"tcp\" (host:port) or \"grpc\" (host:port)")
	case 1:
	default:
		return nil, invalidCheck("the check has %d targets; give exactly one of \"http\", \"tcp\" or \"grpc\"", kinds)
	}

	interval := DefaultCheckInterval
	if present(in.Interval) {
		d, err := parseDuration(in.Interval)
		if err != nil {
			return nil, invalidCheck("interval %s: %s", quote(string(in.Interval)), err)
		}
		interval = d
	}
	if interval < MinCheckInterval || interval > MaxCheckInterval {
		return nil, invalidCheck("interval %s is out of range: it must be from %s to %s", interval, MinCheckInterval, MaxCheckInterval)
	}
	timeout := min(DefaultCheckTimeout, interval/2)
	if present(in.Timeout) {
		d, err := parseDuration(in.Timeout)
		if err != nil {
			return nil, invalidCheck("timeout %s: %s", quote(string(in.Timeout)), err)
		}
		timeout = d
	}
	if timeout <= 0 || timeout >= interval {
		return nil, invalidCheck("timeout %s must be positive and below the interval (%s)", timeout, interval)
	}
	failures := int64(DefaultCheckFailures)
	if in.Failures != nil {
		failures = *in.Failures
	}
	if failures < 1 || failures > MaxCheckFailures {
		return nil, invalidCheck("failures %d is out of range: it must be a whole number from 1 to %d", failures, MaxCheckFailures)
	}
	c.Interval, c.Timeout, c.Failures = Duration(interval), Duration(timeout), int(failures)
	return &c, nil
}

// reason is the sentence of a validation error, without its code.
func reason(err error) string {
	if e := AsError(err); e != nil {
		return e.Message
	}
	return err.Error()
}

// parseDuration reads a JSON duration: a string in Go's syntax ("10s",
// "1m30s", "1500ms") or a number of seconds.
func parseDuration(raw json.RawMessage) (time.Duration, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, errBadDuration
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, errBadDuration
		}
		return d, nil
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > float64(math.MaxInt64/int64(time.Second)) {
		return 0, errBadDuration
	}
	return time.Duration(f * float64(time.Second)), nil
}

type durationError struct{}

func (durationError) Error() string {
	return "not a duration; give a string such as \"10s\", \"1m\" or \"500ms\", or a number of seconds"
}

var errBadDuration error = durationError{}

// validateCheckURL checks an HTTP check's URL: http or https, a host that
// is an IP or a DNS name, an optional port 1–65535, no credentials (the
// instance object shows the URL to every reader).
func validateCheckURL(s string) error {
	bad := func(why string) error {
		return invalidCheck("http check URL %s %s", quote(s), why)
	}
	if s == "" {
		return bad("is empty")
	}
	if len(s) > maxCheckURL {
		return bad("is too long: at most " + strconv.Itoa(maxCheckURL) + " bytes")
	}
	if hasControl(s) || strings.ContainsAny(s, " \\") {
		return bad("has a space, a backslash or a control character")
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return bad("is not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return bad("must start with http:// or https://")
	case u.Opaque != "" || u.Host == "":
		return bad("has no host")
	case u.User != nil:
		return bad("carries credentials; the instance object shows the URL to every reader, so regd does not take them")
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	host := u.Hostname()
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6, bracketed in the URL
	}
	if strings.HasSuffix(u.Host, ":") {
		return bad("has an empty port")
	}
	if err := ValidateAddress(host + ":" + port); err != nil {
		return bad("has a bad host or port: " + reason(err))
	}
	return nil
}

// validateGRPCTarget checks host:port[/service].
func validateGRPCTarget(s string) error {
	addr, svc, hasSvc := strings.Cut(s, "/")
	if err := ValidateAddress(addr); err != nil {
		return invalidCheck("grpc check target %s is not host:port[/service]: %s", quote(s), reason(err))
	}
	if hasSvc && !validGRPCService(svc) {
		return invalidCheck("grpc check target %s: the service name after / must be 1-%d characters of A-Z a-z 0-9 . _ -", quote(s), MaxNameLen)
	}
	return nil
}

// validGRPCService accepts a fully qualified protobuf service name
// ("grpc.health.v1.Health", "my.pkg.Service"), as validName does.
func validGRPCService(s string) bool { return validName(s) }

// GRPCTarget splits a gRPC check's target into the address and the
// service name asked of grpc.health.v1 ("" for the server as a whole).
func GRPCTarget(target string) (addr, service string) {
	addr, service, _ = strings.Cut(target, "/")
	return addr, service
}

// CheckTTL is the lease TTL granted to an instance registered with check
// c, given the TTL the registration asked for (or the default) and
// failover, the time a change of check owner may take (Options.CheckFailover):
// at least three intervals + timeout + failover, rounded up to whole
// seconds; a larger TTL asked for is kept.
//
// The owner renews the lease at each of the check's intervals, passing or
// failing, until failures probes in a row failed; then it ends the lease
// itself (Store.EndCheck). So it heartbeats the instance as the client kits
// do, at a third of its TTL, and the TTL outlasts every gap between two
// renewals that leaves a healthy instance in place:
//
//   - in a steady state, two renewals may be late or lost (an overloaded
//     owner, a slow quorum) and the third still comes in time, a
//     timeout to spare;
//   - when the owner stops gracefully, its checks stop before it hands
//     leadership over (server.Close), and the hand-over takes at most two
//     election timeouts (failover is two election timeouts and a second),
//     while its lessor still counts down from a renewal at most an
//     interval old;
//   - when the owner dies, no lease runs down until a new leader's lessor
//     is promoted, which gives every lease an election timeout plus its
//     full TTL (etcd's lessor.Promote; for TTLs over etcd's 5 min lease
//     checkpoint interval, the remaining TTL as of the last checkpoint,
//     which after a renewal at most an interval old is still over two
//     intervals), and the new owner renews each lease within one interval
//     of its start.
//
// A longer TTL costs nothing while the checks run: the instance leaves when
// its check fails (EndCheck), or when it is deregistered; the TTL only
// bounds how long it stays once no member checks it.
func CheckTTL(ttl int64, c Check, failover time.Duration) int64 {
	need := 3*time.Duration(c.Interval) + time.Duration(c.Timeout) + failover
	return max(ttl, int64((need+time.Second-1)/time.Second))
}

// cutOutput keeps at most MaxCheckOutput bytes of a probe's output, cut on
// a UTF-8 character boundary.
func cutOutput(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= MaxCheckOutput {
		return s
	}
	cut := MaxCheckOutput
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut]
}
