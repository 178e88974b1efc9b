package cli

import (
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/regd/regd/client"
)

// metaFlag is a repeatable --meta key=value flag.
type metaFlag map[string]string

func (m metaFlag) String() string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		kv = append(kv, k+"="+m[k])
	}
	return strings.Join(kv, ",")
}

func (m metaFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value")
	}
	if _, dup := m[k]; dup {
		return fmt.Errorf("key %q given twice", k)
	}
	m[k] = val
	return nil
}

// intFlag is an int flag that knows whether it was given, so that regd's
// default applies when it was not (--weight 0 is a weight).
type intFlag struct {
	v   int
	set bool
}

func (f *intFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return strconv.Itoa(f.v)
}

func (f *intFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("not a whole number")
	}
	f.v, f.set = n, true
	return nil
}

// ptr is the value, or nil when the flag was not given.
func (f *intFlag) ptr() *int {
	if !f.set {
		return nil
	}
	v := f.v
	return &v
}

// validStatuses are the instance statuses (the contract's lifecycle).
var validStatuses = []string{"up", "draining", "out_of_service"}

// checkStatus checks a --status flag; allowAny admits "any" (lists).
func checkStatus(flag, s string, allowAny bool) error {
	if s == "" || slices.Contains(validStatuses, s) || allowAny && s == "any" {
		return nil
	}
	want := strings.Join(validStatuses, ", ")
	if allowAny {
		want += " or any"
	}
	return usagef("--%s %q: want %s", flag, s, want)
}

// checkFlags are the --check-* flags of register and run: a health check
// regd runs for the instance (contract v2, "Health checks run by the
// registry"). regd validates the check (400 invalid_check); only the
// shape is checked here.
type checkFlags struct {
	http, tcp, grpc   string
	interval, timeout time.Duration
	failures          int
}

func (f *checkFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&f.http, "check-http", "", "health check: regd GETs this `URL` (http:// or https://), passing on a 2xx answer")
	fs.StringVar(&f.tcp, "check-tcp", "", "health check: regd connects to this `host:port`, passing when it is accepted")
	fs.StringVar(&f.grpc, "check-grpc", "", "health check: grpc.health.v1 Check at `host:port[/service]`, passing on SERVING")
	fs.DurationVar(&f.interval, "check-interval", 0, "`duration` between probes, 1s–1h (default regd's, 10s)")
	fs.DurationVar(&f.timeout, "check-timeout", 0, "`duration` a probe may take, below the interval (default regd's, 2s)")
	fs.IntVar(&f.failures, "check-failures", 0, "failed probes in a row before regd removes the instance, `1-100` (default regd's, 3)")
}

// check is the check the flags describe; nil when no --check-http, -tcp
// or -grpc was given (then --check-interval and the others are an error).
func (f *checkFlags) check() (*client.Check, error) {
	kinds := 0
	for _, s := range []string{f.http, f.tcp, f.grpc} {
		if s != "" {
			kinds++
		}
	}
	if kinds > 1 {
		return nil, usagef("give one of --check-http, --check-tcp and --check-grpc")
	}
	if kinds == 0 {
		if f.interval != 0 || f.timeout != 0 || f.failures != 0 {
			return nil, usagef("--check-interval, --check-timeout and --check-failures need --check-http, --check-tcp or --check-grpc")
		}
		return nil, nil
	}
	return &client.Check{HTTP: f.http, TCP: f.tcp, GRPC: f.grpc, Interval: f.interval, Timeout: f.timeout, Failures: f.failures}, nil
}
