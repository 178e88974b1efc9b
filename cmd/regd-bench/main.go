// Command regd-bench is regd's load tool. It drives running regd nodes
// through the REST API and, side by side, the same workload against plain
// etcd through the JSON gateway that the embedded member serves on its
// client URL, and prints each figure beside its plain-etcd twin.
//
//	regd-bench [flags] register|heartbeat|list|notify|mixed|drain|heartbeats
//	regd-bench report [--heading N] result.json...
//
// See docs/benchmarks.md and scripts/bench.sh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // a run could not be done (setup failed, no successful operation)
	exitUsage  = 2
)

var workloads = []string{"register", "heartbeat", "list", "notify", "mixed", "populate"}

// options is the parsed command line.
type options struct {
	workload    string
	targets     []string // regd REST host:port
	etcd        []string // etcd client URLs
	concurrency int
	duration    time.Duration
	count       int64
	maxDuration time.Duration
	warmup      time.Duration
	waitReady   time.Duration
	drain       time.Duration
	k           int
	subscribers int
	services    int
	ttl         int
	service     string
	etcdPrefix  string
	label       string
	jsonOut     bool
	skipRegd    bool
	skipEtcd    bool
	batch       int // heartbeats: items per batch heartbeat (lifecycle.go)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func newFlagSet(o *options, stderr io.Writer) (*flag.FlagSet, *string, *string) {
	fs := flag.NewFlagSet("regd-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	targets := fs.String("targets", "127.0.0.1:8080", "comma-separated regd REST `addresses` (host:port); operations are spread over them round-robin")
	etcd := fs.String("etcd", "", "comma-separated etcd client `urls` (e.g. http://127.0.0.1:2379) for the plain-etcd twin through the JSON gateway; empty: no twin")
	fs.IntVar(&o.concurrency, "concurrency", 16, "concurrent workers (closed loop: each waits for its answer before the next request)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time per system; 0: only --count bounds the run")
	fs.Int64Var(&o.count, "count", 0, "measured operations per system (notify: registrations); the run ends at --duration or --count, whichever comes first; 0: no count bound")
	fs.DurationVar(&o.maxDuration, "max-duration", 2*time.Minute, "hard cap on the whole run (setup, both systems, drain); cleanup gets up to 60s more")
	fs.DurationVar(&o.warmup, "warmup", 0, "unmeasured run before each measured one (connections, caches); not used by notify")
	fs.DurationVar(&o.waitReady, "wait-ready", 10*time.Second, "wait up to this long for every target's /readyz before starting")
	fs.DurationVar(&o.drain, "drain", 5*time.Second, "notify: how long to wait for outstanding events after the last registration")
	fs.IntVar(&o.k, "k", 1000, "heartbeat, list, mixed: pre-registered instances in the one benchmark service")
	fs.IntVar(&o.services, "services", 1000, "populate: services the registrations are spread over")
	fs.IntVar(&o.subscribers, "subscribers", 64, "notify: watch streams on the benchmark service, spread over the targets (regd allows 64 per client IP and node)")
	fs.IntVar(&o.ttl, "ttl", 30, "TTL in seconds of registrations (pre-registered instances get at least --max-duration + 30s so that none expires during a run)")
	fs.StringVar(&o.service, "service", "bench", "service name prefix; every run uses <prefix>-<run id>-<workload>-<system>")
	fs.StringVar(&o.etcdPrefix, "etcd-prefix", "/BENCH/", "key prefix of the plain-etcd twin; the default sorts outside the key range regd's view watches, so regd does no work for the twin's writes (use /service/ to write the contract's layout)")
	fs.StringVar(&o.label, "label", "", "free-text label stored in the JSON output (scripts/bench.sh puts the cluster size here)")
	fs.BoolVar(&o.jsonOut, "json", false, "print one JSON object instead of the table")
	fs.BoolVar(&o.skipRegd, "skip-regd", false, "run only the etcd twin")
	fs.BoolVar(&o.skipEtcd, "skip-etcd", false, "run only regd, even when --etcd is given")
	fs.IntVar(&o.batch, "batch", 1000, "heartbeats: instances per batch heartbeat (at most 1000)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: regd-bench [flags] <workload>
       regd-bench report [--heading N] <result.json>...

Workloads (each runs against regd's REST API and then, with --etcd, the same
operations against plain etcd through its JSON gateway):
  register   each operation registers a new instance (etcd: lease grant + put)
  heartbeat  --k instances are registered first; each operation renews one,
             round-robin (etcd: lease keepalive)
  list       --k instances in one service; each operation lists it
             (etcd: range over the service's prefix)
  notify     --subscribers watch streams on one service; registrations at
             --concurrency; the figure is the delay from a registration's
             response to each subscriber's event (etcd: /v3/watch)
  mixed      80%% heartbeat, 15%% list, 5%% register (into a second service,
             so the listed service keeps --k instances)
  populate   like register, spread over --services services; the instances
             are left in place (no cleanup), for scale runs
  drain      --subscribers watch streams on one service; --count PATCHes of
             one instance (default 50) without, then with ?wait_observed;
             the figure is each PATCH's latency (regd only)
  heartbeats --k instances; single heartbeats, then batch heartbeats
             (--batch items each); instances renewed per second (regd only)

Flags:
`)
		fs.PrintDefaults()
	}
	return fs, targets, etcd
}

// parseArgs accepts flags before and after the workload.
func parseArgs(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs, targets, etcd := newFlagSet(o, stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return nil, errors.New("no workload given; one of " + strings.Join(append(workloads, lifecycleWorkloads...), ", "))
	}
	o.workload = rest[0]
	if err := fs.Parse(rest[1:]); err != nil {
		return nil, err
	}
	if len(fs.Args()) > 0 {
		return nil, fmt.Errorf("unexpected arguments %q after the workload", fs.Args())
	}
	known := slices.Contains(lifecycleWorkloads, o.workload)
	for _, w := range workloads {
		known = known || w == o.workload
	}
	if !known {
		return nil, fmt.Errorf("unknown workload %q; one of %s", o.workload, strings.Join(append(workloads, lifecycleWorkloads...), ", "))
	}
	o.targets = splitList(*targets)
	o.etcd = splitList(*etcd)
	for i, u := range o.etcd {
		if !strings.Contains(u, "://") {
			o.etcd[i] = "http://" + u
		}
		o.etcd[i] = strings.TrimSuffix(o.etcd[i], "/")
	}
	for i, t := range o.targets {
		o.targets[i] = strings.TrimSuffix(strings.TrimPrefix(t, "http://"), "/")
	}
	switch {
	case len(o.targets) == 0 && !o.skipRegd:
		return nil, errors.New("--targets is empty")
	case o.concurrency < 1:
		return nil, errors.New("--concurrency must be at least 1")
	case o.duration < 0 || o.count < 0:
		return nil, errors.New("--duration and --count must not be negative")
	case o.duration == 0 && o.count == 0:
		return nil, errors.New("give --duration or --count (or both)")
	case o.maxDuration <= 0:
		return nil, errors.New("--max-duration must be positive")
	case o.k < 1:
		return nil, errors.New("--k must be at least 1")
	case o.services < 1:
		return nil, errors.New("--services must be at least 1")
	case o.batch < 1 || o.batch > 1000:
		return nil, errors.New("--batch must be 1-1000 (the contract's limit)")
	case o.subscribers < 1:
		return nil, errors.New("--subscribers must be at least 1")
	case o.ttl < 2 || o.ttl > 3600:
		return nil, errors.New("--ttl must be 2-3600 seconds (regd's accepted range)")
	case !validName(o.service) || len(o.service) > 80:
		return nil, fmt.Errorf("--service %q must be up to 80 characters of A-Z a-z 0-9 . _ -", o.service)
	case !strings.HasPrefix(o.etcdPrefix, "/") || !strings.HasSuffix(o.etcdPrefix, "/"):
		return nil, errors.New("--etcd-prefix must start and end with /")
	case o.skipRegd && (o.skipEtcd || len(o.etcd) == 0):
		return nil, errors.New("--skip-regd leaves nothing to run without --etcd")
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// run is the whole program; its result is the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "report" {
		return runReport(args[1:], stdout, stderr)
	}
	o, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "regd-bench: %v\n", err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, o.maxDuration)
	defer cancel()
	if slices.Contains(lifecycleWorkloads, o.workload) {
		return runLifecycle(ctx, o, stdout, stderr)
	}
	rep, err := newBench(o, stderr).run(ctx)
	if rep != nil {
		if o.jsonOut {
			if werr := writeJSON(stdout, rep); werr != nil {
				fmt.Fprintf(stderr, "regd-bench: %v\n", werr)
				return exitFailed
			}
		} else {
			writeTable(stdout, rep)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "regd-bench: %v\n", err)
		return exitFailed
	}
	return exitOK
}
