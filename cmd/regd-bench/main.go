// Command regd-bench is regd's load tool. It drives running regd nodes
// through the REST API and, side by side, the same workload against plain
// etcd through the JSON gateway that the embedded member serves on its
// client URL, and prints each figure beside its plain-etcd twin.
//
//	regd-bench [flags] register|heartbeat|list|notify|mixed|populate|drain|heartbeats
//	regd-bench [flags] liveness|fanout|expiry|cost|snapshot
//	regd-bench report [--heading N] result.json...
//	regd-bench scale-report [--heading N] result.json...
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
	"strconv"
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

	// The scale workloads (scale.go).
	instances     int
	regConc       int
	interval      time.Duration
	batchSize     int
	hbMode        string
	changes       int
	changeGap     time.Duration
	changeTimeout time.Duration
	watchMode     string
	sourceIPs     int
	others        int
	expiryWait    time.Duration
	hold          time.Duration
	pids          []int
	sampleEvery   time.Duration
	meta          map[string]string
	cleanup       bool
	systems       []string
	ops           []string
	idle          time.Duration
	out           string
	stopCmd       string
	startCmd      string
	dataDirs      []string
	set           map[string]bool // flags given on the command line

	rawPids, rawSystems, rawOps, rawDataDirs *string
	batch                                    int // heartbeats: items per batch heartbeat (lifecycle.go)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// scaleFlags are the flags of the scale workloads; the strings it returns
// are parsed by parseArgs.
func scaleFlags(fs *flag.FlagSet, o *options) (pids, systems, ops *string) {
	fs.IntVar(&o.instances, "instances", 100000, "liveness, expiry: instances kept alive (expiry: that then stop heartbeating at once)")
	fs.IntVar(&o.regConc, "register-concurrency", 64, "liveness, expiry: concurrent registrations while setting up, and concurrent requests of single-mode heartbeats")
	fs.DurationVar(&o.interval, "interval", 3*time.Second, "liveness, expiry: heartbeat interval of every instance")
	fs.IntVar(&o.batchSize, "batch-size", maxBatch, "liveness, expiry, cost: instances per batch heartbeat (at most 1000, the contract's limit); in single mode, instances per schedule slot")
	fs.StringVar(&o.hbMode, "heartbeat-mode", modeAuto, "liveness, expiry: `batch` (PUT /v1/heartbeats), single (one request per instance) or auto (batch when the server has it)")
	fs.IntVar(&o.changes, "changes", 10, "fanout: changes to the watched service, one at a time")
	fs.DurationVar(&o.changeGap, "change-gap", time.Second, "fanout: pause after every subscriber has a change, before the next")
	fs.DurationVar(&o.changeTimeout, "change-timeout", 30*time.Second, "fanout: how long to wait for every subscriber to have a change")
	fs.StringVar(&o.watchMode, "watch", "sse", "fanout: `sse` streams (GET .../watch) or blocking queries (GET .../instances?index=N&wait=60s)")
	fs.IntVar(&o.sourceIPs, "source-ips", 1, "fanout: spread subscriber connections over this many loopback source addresses 127.0.0.1-127.0.0.N (regd caps watches per client IP)")
	fs.IntVar(&o.others, "others", 1000, "expiry: instances in other services kept alive throughout, whose reads and heartbeats are measured meanwhile")
	fs.DurationVar(&o.expiryWait, "expiry-wait", 0, "expiry: give up waiting for the reports this long after the heartbeats stop (default TTL + 2m30s)")
	fs.DurationVar(&o.hold, "hold", 0, "expiry: keep everything alive this long after registering, before the heartbeats stop (default 2 intervals)")
	pids = fs.String("pids", "", "server `pids`, in --targets order, whose CPU and RSS are sampled from /proc; default: the process listening on each target's port")
	fs.DurationVar(&o.sampleEvery, "sample-interval", time.Second, "how often server CPU and RSS are sampled between phase boundaries")
	fs.Func("meta", "`key=value` recorded in the result (repeatable): what the calling script knows, e.g. regd's version or the cluster's flags", func(v string) error {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return errors.New("want key=value")
		}
		if o.meta == nil {
			o.meta = map[string]string{}
		}
		o.meta[k] = val
		return nil
	})
	fs.BoolVar(&o.cleanup, "cleanup", true, "scale workloads: deregister what the run registered at its end (a script that discards the cluster can skip it)")
	systems = fs.String("systems", "regd,etcd,native", "cost: systems to measure: regd (REST), etcd (its JSON gateway), native (etcd gRPC through clientv3); etcd and native need --etcd")
	ops = fs.String("ops", strings.Join(costOps, ","), "cost: operations to measure")
	fs.DurationVar(&o.idle, "idle", 3*time.Second, "cost: how long the servers' idle CPU is measured first (subtracted from every operation's)")
	fs.StringVar(&o.out, "out", "", "snapshot, million: the `file` to write the snapshot to (default: a temporary file, removed)")
	fs.StringVar(&o.stopCmd, "stop-cmd", "", "million: a shell `command` that stops every member (e.g. scripts/cluster3.sh stop), run before --start-cmd")
	fs.StringVar(&o.startCmd, "start-cmd", "", "million: a shell `command` that starts every member again; the time from its start until all are ready, and until one lists everything again, is measured")
	o.rawDataDirs = fs.String("data-dirs", "", "million: the members' data `dirs`, comma-separated, whose sizes are reported")
	return pids, systems, ops
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
	pids, systems, ops := scaleFlags(fs, o)
	o.rawPids, o.rawSystems, o.rawOps = pids, systems, ops
	fs.IntVar(&o.batch, "batch", 1000, "heartbeats: instances per batch heartbeat (at most 1000)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: regd-bench [flags] <workload>
       regd-bench report [--heading N] <result.json>...
       regd-bench scale-report [--heading N] <result.json>...

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

Scale workloads (issue 17; each prints its figures beside the issue's goals,
with the servers' CPU and RSS per phase from /proc; see docs/scale.md):
  liveness   --instances kept alive by heartbeats every --interval (batch when
             the server has PUT /v1/heartbeats) for --duration; counts
             false expiries, heartbeat latency
  fanout     --subscribers watch streams (--watch sse) or blocking queries
             (--watch blocking) on one service; --changes changes; time until
             the last subscriber has each; server RSS per subscriber
  expiry     --instances stop heartbeating at once: every one reported exactly
             once?  how fast, with what lag; REST latency of --others meanwhile
  million    --instances (default 1,000,000) in --services (10,000): time to
             register, RSS, one --k service's list before and after, snapshot
             size, and with --stop-cmd/--start-cmd the time to restart
  cost       server CPU per operation from /proc, for regd's REST API, etcd's
             JSON gateway and native etcd gRPC (clientv3) on the same members
  snapshot   an etcd snapshot through clientv3 (Maintenance.Snapshot): size, time
Unless given, a scale workload takes the issue's figures, not the defaults
below: liveness --ttl 10 --duration 10m; expiry --ttl 10 --concurrency 8;
fanout --subscribers 10000; million --instances 1000000 --services 10000
--warmup 2s; cost --concurrency 64 --warmup 2s; and --max-duration from an
estimate of the run's length.

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
	all := append(append(slices.Clone(workloads), scaleWorkloads...), lifecycleWorkloads...)
	all = append(all, "checks") // checks.go
	if !slices.Contains(all, o.workload) {
		return nil, fmt.Errorf("unknown workload %q; one of %s", o.workload, strings.Join(all, ", "))
	}
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
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
	if slices.Contains(scaleWorkloads, o.workload) {
		if err := o.scaleDefaults(); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// scaleDefaults gives the scale workloads the figures for the
// flags the command line left out, checks the scale flags, and bounds the
// run by an estimate of its length unless --max-duration was given.
func (o *options) scaleDefaults() error {
	def := func(name string, apply func()) {
		if !o.set[name] {
			apply()
		}
	}
	switch o.workload {
	case "liveness":
		def("ttl", func() { o.ttl = 10 })
		def("duration", func() { o.duration = 10 * time.Minute })
	case "expiry":
		def("ttl", func() { o.ttl = 10 })
		def("concurrency", func() { o.concurrency = 8 })
	case "fanout":
		def("subscribers", func() { o.subscribers = 10000 })
	case "million":
		def("instances", func() { o.instances = 1000000 })
		def("services", func() { o.services = 10000 })
		def("warmup", func() { o.warmup = 2 * time.Second })
	case "cost":
		def("concurrency", func() { o.concurrency = 64 })
		def("warmup", func() { o.warmup = 2 * time.Second })
	}
	def("expiry-wait", func() { o.expiryWait = time.Duration(o.ttl)*time.Second + 150*time.Second })
	def("hold", func() { o.hold = 2 * o.interval })
	for _, p := range splitList(*o.rawPids) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return fmt.Errorf("--pids: %q is not a process id", p)
		}
		o.pids = append(o.pids, n)
	}
	o.dataDirs = splitList(*o.rawDataDirs)
	o.systems = splitList(*o.rawSystems)
	o.ops = splitList(*o.rawOps)
	switch {
	case len(o.targets) == 0:
		return errors.New("--targets is empty")
	case o.instances < 1 || o.others < 1:
		return errors.New("--instances and --others must be at least 1")
	case o.regConc < 1:
		return errors.New("--register-concurrency must be at least 1")
	case o.interval <= 0 || o.interval >= time.Duration(o.ttl)*time.Second:
		return fmt.Errorf("--interval %s must be positive and below the TTL (%ds)", o.interval, o.ttl)
	case o.batchSize < 1 || o.batchSize > maxBatch:
		return fmt.Errorf("--batch-size must be 1-%d (the contract's limit)", maxBatch)
	case o.hbMode != modeAuto && o.hbMode != modeBatch && o.hbMode != modeSingle:
		return fmt.Errorf("--heartbeat-mode %q: one of auto, batch, single", o.hbMode)
	case o.changes < 1 || o.changeTimeout <= 0 || o.changeGap < 0:
		return errors.New("--changes must be at least 1, --change-timeout positive, --change-gap not negative")
	case o.watchMode != "sse" && o.watchMode != "blocking":
		return fmt.Errorf("--watch %q: sse or blocking", o.watchMode)
	case o.sourceIPs < 1 || o.sourceIPs > 254:
		return errors.New("--source-ips must be 1-254")
	case o.expiryWait <= 0 || o.hold < 0:
		return errors.New("--expiry-wait must be positive and --hold not negative")
	case o.sampleEvery <= 0:
		return errors.New("--sample-interval must be positive")
	case o.workload == "liveness" && o.duration <= 0:
		return errors.New("liveness needs a --duration")
	case o.workload == "snapshot" && len(o.etcd) == 0:
		return errors.New("snapshot needs --etcd (a member's client URL)")
	}
	for _, sys := range o.systems {
		if !slices.Contains([]string{"regd", "etcd", "native"}, sys) {
			return fmt.Errorf("--systems: unknown system %q (regd, etcd, native)", sys)
		}
		if sys != "regd" && len(o.etcd) == 0 && o.workload == "cost" {
			return fmt.Errorf("--systems %s needs --etcd with the members' client URLs", sys)
		}
	}
	for _, op := range o.ops {
		if !slices.Contains(costOps, op) {
			return fmt.Errorf("--ops: unknown operation %q (%s)", op, strings.Join(costOps, ", "))
		}
	}
	if !o.set["max-duration"] {
		register := time.Duration(o.instances/250) * time.Second
		switch o.workload {
		case "liveness":
			o.maxDuration = register + o.duration + 2*time.Minute
		case "expiry":
			o.maxDuration = register + o.hold + o.expiryWait + 2*time.Minute
		case "fanout":
			o.maxDuration = time.Duration(o.subscribers/200)*time.Second + time.Duration(o.changes)*(o.changeTimeout+o.changeGap) + 2*time.Minute
		case "cost":
			o.maxDuration = time.Duration(len(o.systems)*len(o.ops))*(o.warmup+o.duration+20*time.Second) + o.idle + 2*time.Minute
		case "snapshot":
			o.maxDuration = 10 * time.Minute
		case "million":
			o.maxDuration = register + 2*(o.warmup+o.duration) + 15*time.Minute
		}
	}
	return nil
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
	if len(args) > 0 && args[0] == "scale-report" {
		return runScaleReport(args[1:], stdout, stderr)
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
	if slices.Contains(scaleWorkloads, o.workload) {
		return runScale(ctx, o, stdout, stderr)
	}
	if slices.Contains(lifecycleWorkloads, o.workload) {
		return runLifecycle(ctx, o, stdout, stderr)
	}
	if o.workload == "checks" {
		return runChecks(ctx, o, stdout, stderr)
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
