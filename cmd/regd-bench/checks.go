package main

// The health-check workload (issue 13), regd only:
//
//	checks  registers instances with an HTTP check against an endpoint this
//	        tool serves on loopback (interval --interval, default 10s), from
//	        --k (default 1000) doubling up to --instances, and at each size
//	        measures for --duration (default three intervals): probes per
//	        second seen by the endpoint against the N/interval expected, the
//	        gap between two probes of one instance, the leader's probe-start
//	        lag (regd_check_start_lag_seconds), and the CPU of every member
//	        and of this tool from /proc. It stops growing at the first size
//	        whose probes fall behind (start lag p99 over the interval, a
//	        mean gap between two probes of one instance over 105% of it,
//	        or fewer than 80% of the probes expected). Then --count (default
//	        100) instances of a size that kept up have their endpoint fail
//	        at once, and the time from then to each one's expiry report
//	        (expired_at in /v1/expirations) is measured.
//
// Every process shares this machine's cores: the endpoint's CPU (this
// tool) is reported apart from the members'.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/regd/regd/internal/loadgen"
)

// checkFailures is the failures of the measured checks: regd's default.
const checkFailures = 3

// checksReport is what --json prints for the checks workload.
type checksReport struct {
	Workload  string        `json:"workload"`
	Label     string        `json:"label,omitempty"`
	Targets   []string      `json:"targets"`
	Leader    string        `json:"leader"`
	Interval  string        `json:"interval"`
	Failures  int           `json:"failures"`
	Window    string        `json:"window"`
	RunID     string        `json:"run_id"`
	StartedAt time.Time     `json:"started_at"`
	CPUs      int           `json:"cpus"`
	Steps     []checksStep  `json:"steps"`
	Failure   *checksExpiry `json:"failure,omitempty"`
	Notes     []string      `json:"notes,omitempty"`
}

// checksStep is one size's figures.
type checksStep struct {
	Instances int     `json:"instances"`
	Expected  float64 `json:"probes_per_sec_expected"`
	Seen      float64 `json:"probes_per_sec_seen"`
	GapP50Ms  float64 `json:"gap_p50_ms"`
	GapP99Ms  float64 `json:"gap_p99_ms"`
	GapMaxMs  float64 `json:"gap_max_ms"`
	LagP50Ms  float64 `json:"start_lag_p50_ms"`
	LagP99Ms  float64 `json:"start_lag_p99_ms"`
	Failing   float64 `json:"failing_results"` // probes regd counted failing in the window
	// CPU is the CPU each process used per second of the window (1.0 is
	// one core), by member name and "regd-bench" (the endpoint).
	CPU map[string]float64 `json:"cpu_cores"`
	// LeaderCPUPerProbeMs is the leader's CPU per probe it made.
	LeaderCPUPerProbeMs float64 `json:"leader_cpu_per_probe_ms"`
	// ClusterCPUPerProbeMs is the members' CPU together per probe.
	ClusterCPUPerProbeMs float64 `json:"cluster_cpu_per_probe_ms"`
	Load1                float64 `json:"load1"` // the machine's load average at the end
	KeptUp               bool    `json:"kept_up"`
	Why                  string  `json:"why,omitempty"`
}

// checksExpiry is the failure phase's figures.
type checksExpiry struct {
	Instances int     `json:"instances"` // checked instances registered meanwhile
	Failed    int     `json:"failed"`
	Reported  int     `json:"reported"`
	Causes    string  `json:"causes"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	MinMs     float64 `json:"min_ms"`
}

// healthEndpoint serves /h/<n> for the instances: 200, or 503 once failed.
// It counts probes and records the gap between two probes of one
// instance.
type healthEndpoint struct {
	srv    *http.Server
	addr   string
	probes atomic.Int64

	mu     sync.Mutex
	last   []time.Time // by instance
	failed []bool
	gaps   *loadgen.Histogram
}

func newHealthEndpoint(n int) (*healthEndpoint, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &healthEndpoint{addr: ln.Addr().String(), last: make([]time.Time, n), failed: make([]bool, n), gaps: loadgen.NewHistogram()}
	e.srv = &http.Server{Handler: http.HandlerFunc(e.serve), ReadHeaderTimeout: 10 * time.Second}
	go e.srv.Serve(ln)
	return e, nil
}

func (e *healthEndpoint) url(i int) string { return "http://" + e.addr + "/h/" + strconv.Itoa(i) }

func (e *healthEndpoint) grow(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for len(e.last) < n {
		e.last = append(e.last, time.Time{})
		e.failed = append(e.failed, false)
	}
}

func (e *healthEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	i, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/h/"))
	now := time.Now()
	e.mu.Lock()
	if err != nil || i < 0 || i >= len(e.last) {
		e.mu.Unlock()
		http.NotFound(w, r)
		return
	}
	if !e.last[i].IsZero() {
		e.gaps.Record(now.Sub(e.last[i]))
	}
	e.last[i] = now
	failed := e.failed[i]
	e.mu.Unlock()
	e.probes.Add(1)
	if failed {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "failed by regd-bench")
		return
	}
	io.WriteString(w, "ok")
}

// window starts a measurement: the gap histogram restarts.
func (e *healthEndpoint) window() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.gaps = loadgen.NewHistogram()
}

// gapsSoFar ends the window: the gaps recorded since window(), which no
// probe records into any more (a fresh histogram takes the later ones).
func (e *healthEndpoint) gapsSoFar() *loadgen.Histogram {
	e.mu.Lock()
	defer e.mu.Unlock()
	g := e.gaps
	e.gaps = loadgen.NewHistogram()
	return g
}

func (e *healthEndpoint) fail(ids []int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, i := range ids {
		e.failed[i] = true
	}
}

// runChecks runs the checks workload; the result is the exit code.
func runChecks(ctx context.Context, o *options, stdout, stderr io.Writer) int {
	b := newBench(o, stderr)
	defer b.h.close()
	interval := 10 * time.Second
	if o.set["interval"] {
		interval = o.interval
	}
	window := 3 * interval
	if o.set["duration"] {
		window = o.duration
	}
	start, limit := o.k, o.instances
	if !o.set["k"] {
		start = 1000
	}
	count := int(o.count)
	if count == 0 {
		count = 100
	}
	pids, err := parsePids(*o.rawPids)
	if err != nil {
		fmt.Fprintf(stderr, "regd-bench: %v\n", err)
		return exitUsage
	}
	o.pids = pids
	rep := &checksReport{Workload: "checks", Label: o.label, Targets: o.targets, Interval: interval.String(), Failures: checkFailures,
		Window: window.String(), RunID: b.runID, StartedAt: time.Now().UTC(), CPUs: runtime.NumCPU()}
	err = b.checks(ctx, rep, interval, window, start, limit, count)
	if err != nil {
		rep.Notes = append(rep.Notes, err.Error())
	}
	return finish(o, stdout, stderr, rep, true, func(w io.Writer) { writeChecksTable(w, rep) }, err)
}

func (b *bench) checks(ctx context.Context, rep *checksReport, interval, window time.Duration, start, limit, count int) error {
	o := b.o
	if err := b.waitReady(ctx); err != nil {
		return err
	}
	members, leader, err := b.checkMembers(ctx)
	if err != nil {
		return err
	}
	rep.Leader = members[leader]
	pids := make([]int, len(o.targets))
	for i, t := range o.targets {
		pids[i] = -1
		if i < len(o.pids) {
			pids[i] = o.pids[i]
		} else if p, err := findServer(t); err == nil {
			pids[i] = p
		} else {
			rep.Notes = append(rep.Notes, fmt.Sprintf("no CPU figures for %s: %v (give --pids)", t, err))
		}
	}
	ep, err := newHealthEndpoint(start)
	if err != nil {
		return err
	}
	defer ep.srv.Close()
	svc := b.lcService("checks")
	registered := 0
	register := func(n int) error {
		ep.grow(n)
		var g errgroup.Group
		g.SetLimit(o.regConc)
		for i := registered; i < n; i++ {
			g.Go(func() error {
				body, _ := json.Marshal(map[string]any{"address": address(int64(i)), "check": map[string]any{"http": ep.url(i)},
					"interval": interval.String(), "failures": checkFailures})
				// Retried as registerAll does: a loaded quorum answers 503
				// now and then, and registering is idempotent.
				var err error
				for attempt := range 5 {
					err = b.h.do(ctx, http.MethodPut, "http://"+o.targets[i%len(o.targets)]+"/v1/services/"+svc+"/instances/"+checkID(i), body, expect(http.StatusCreated, http.StatusOK))
					if err == nil || ctx.Err() != nil {
						break
					}
					time.Sleep(time.Duration(100*(attempt+1)) * time.Millisecond)
				}
				return err
			})
		}
		err := g.Wait()
		registered = n
		return err
	}
	if o.cleanup {
		defer func() {
			ids := make([]string, registered)
			for i := range ids {
				ids[i] = checkID(i)
			}
			b.logf("checks: deregistering %d instances", len(ids))
			b.lcDeregister(svc, ids)
		}()
	}

	kept := 0
	for n := start; n <= limit; n *= 2 {
		b.logf("checks: registering up to %d instances (interval %s)", n, interval)
		began := time.Now()
		if err := register(n); err != nil {
			return fmt.Errorf("register: %w", err)
		}
		b.logf("checks: registered in %s; settling for an interval", time.Since(began).Round(time.Millisecond))
		if !sleepCtx(ctx, interval+interval/2) {
			return ctx.Err()
		}
		st, err := b.checksWindow(ctx, ep, leader, members, pids, n, interval, window)
		if err != nil {
			return err
		}
		rep.Steps = append(rep.Steps, st)
		b.logf("checks: %d instances: %.0f probes/s of %.0f, gap p99 %.0f ms, start lag p99 %.0f ms, leader %.2f cores (%.3f ms/probe), kept up %v %s",
			n, st.Seen, st.Expected, st.GapP99Ms, st.LagP99Ms, st.CPU[members[leader]], st.LeaderCPUPerProbeMs, st.KeptUp, st.Why)
		if !st.KeptUp {
			break
		}
		kept = n
	}
	if kept == 0 {
		return fmt.Errorf("probes fell behind at the first size, %d", start)
	}
	if registered > kept {
		// Back to a size that kept up: the failure phase measures the
		// report's latency, not an overload.
		ids := make([]string, 0, registered-kept)
		for i := kept; i < registered; i++ {
			ids = append(ids, checkID(i))
		}
		b.logf("checks: back to %d instances for the failure phase", kept)
		b.lcDeregister(svc, ids)
		registered = kept
		if !sleepCtx(ctx, interval) {
			return ctx.Err()
		}
	}
	f, err := b.checksFailure(ctx, ep, svc, kept, min(count, kept), interval)
	rep.Failure = f
	return err
}

func checkID(i int) string { return "c" + strconv.Itoa(i) }

// checkMembers is every target's member name, and the index of the
// leader's target.
func (b *bench) checkMembers(ctx context.Context) ([]string, int, error) {
	names := make([]string, len(b.o.targets))
	leader := -1
	for i, t := range b.o.targets {
		var st struct {
			Node   string `json:"node"`
			Leader string `json:"leader"`
		}
		if err := b.h.do(ctx, http.MethodGet, "http://"+t+"/v1/cluster", nil, func(status int, body []byte) error {
			if status != http.StatusOK {
				return statusErr(status, body)
			}
			return json.Unmarshal(body, &st)
		}); err != nil {
			return nil, 0, err
		}
		names[i] = st.Node
		if st.Node == st.Leader {
			leader = i
		}
	}
	if leader < 0 {
		return nil, 0, fmt.Errorf("the leader is none of --targets; give every member")
	}
	return names, leader, nil
}

// checksWindow measures one window at size n.
func (b *bench) checksWindow(ctx context.Context, ep *healthEndpoint, leader int, members []string, pids []int, n int, interval, window time.Duration) (checksStep, error) {
	leaderTarget := b.o.targets[leader]
	st := checksStep{Instances: n, Expected: float64(n) / interval.Seconds(), CPU: map[string]float64{}}
	cpu := func() []time.Duration {
		out := make([]time.Duration, len(pids)+1)
		for i, p := range append(slices.Clone(pids), 0) {
			if p < 0 {
				out[i] = -1
				continue
			}
			if s, err := loadgen.ReadProc(p); err == nil {
				out[i] = s.CPU
			} else {
				out[i] = -1
			}
		}
		return out
	}
	m0, err := b.scrape(ctx, leaderTarget)
	if err != nil {
		return st, err
	}
	c0, p0, t0 := cpu(), ep.probes.Load(), time.Now()
	ep.window()
	if !sleepCtx(ctx, window) {
		return st, ctx.Err()
	}
	m1, err := b.scrape(ctx, leaderTarget)
	if err != nil {
		return st, err
	}
	c1, p1, t1 := cpu(), ep.probes.Load(), time.Now()
	secs := t1.Sub(t0).Seconds()
	probes := float64(p1 - p0)
	st.Seen = probes / secs
	gaps := ep.gapsSoFar()
	st.GapP50Ms, st.GapP99Ms, st.GapMaxMs = ms(gaps.Quantile(0.5)), ms(gaps.Quantile(0.99)), ms(gaps.Max())
	lag := m1.sub(m0, "regd_check_start_lag_seconds")
	st.LagP50Ms, st.LagP99Ms = lag.quantile(0.5)*1000, lag.quantile(0.99)*1000
	st.Failing = m1.counter(`regd_check_results_total{kind="http",outcome="failing"}`) - m0.counter(`regd_check_results_total{kind="http",outcome="failing"}`)
	leaderProbes := m1.counter(`regd_check_results_total{kind="http",outcome="passing"}`) - m0.counter(`regd_check_results_total{kind="http",outcome="passing"}`) + st.Failing
	var cluster float64
	allMeasured := true
	for i := range pids {
		if c0[i] < 0 || c1[i] < 0 {
			allMeasured = false
			continue
		}
		used := (c1[i] - c0[i]).Seconds()
		st.CPU[members[i]] = used / secs
		cluster += used
		if i == leader && leaderProbes > 0 {
			st.LeaderCPUPerProbeMs = used / leaderProbes * 1000
		}
	}
	if allMeasured && probes > 0 {
		st.ClusterCPUPerProbeMs = cluster / probes * 1000
	}
	st.CPU["regd-bench"] = (c1[len(pids)] - c0[len(pids)]).Seconds() / secs
	st.Load1 = load1()
	st.KeptUp = true
	switch {
	case st.LagP99Ms > float64(interval.Milliseconds()):
		st.KeptUp, st.Why = false, fmt.Sprintf("start lag p99 %.0f ms over the interval", st.LagP99Ms)
	case gaps.Count() > 0 && gaps.Mean() > interval*105/100:
		// The mean gap between two probes of one instance is the rate
		// each instance is probed at, free of where the window cut the
		// schedule (the count in a window of k intervals is off by up to
		// one probe per instance, noise at small sizes).
		st.KeptUp, st.Why = false, fmt.Sprintf("mean gap between probes %s, over 105%% of the interval", gaps.Mean().Round(time.Millisecond))
	case st.Seen < 0.8*st.Expected:
		// Instances not probed at all in the window leave no gap.
		st.KeptUp, st.Why = false, fmt.Sprintf("%.0f probes/s, under 80%% of the %.0f expected", st.Seen, st.Expected)
	}
	return st, nil
}

// checksFailure fails count of the n instances at once and measures the
// time to each one's expiry report.
func (b *bench) checksFailure(ctx context.Context, ep *healthEndpoint, svc string, n, count int, interval time.Duration) (*checksExpiry, error) {
	f := &checksExpiry{Instances: n, Failed: count}
	ids := make([]int, count)
	want := make(map[string]bool, count)
	for k := range ids {
		ids[k] = k * n / count // spread over the registrations (and their phases)
		want[checkID(ids[k])] = true
	}
	b.logf("checks: failing %d of %d instances at once", count, n)
	failedAt := time.Now()
	ep.fail(ids)
	deadline := time.Now().Add(time.Duration(checkFailures+2)*interval + time.Minute)
	hist := loadgen.NewHistogram()
	causes := map[string]int{}
	for {
		var out struct {
			Expirations []struct {
				ID        string    `json:"id"`
				ExpiredAt time.Time `json:"expired_at"`
				Cause     string    `json:"cause"`
			} `json:"expirations"`
		}
		err := b.h.do(ctx, http.MethodGet, "http://"+b.o.targets[0]+"/v1/expirations?limit=10000&service="+svc, nil, func(status int, body []byte) error {
			if status != http.StatusOK {
				return statusErr(status, body)
			}
			return json.Unmarshal(body, &out)
		})
		if err != nil {
			// A loaded cluster answers 503 now and then: poll again
			// until the deadline, as for reports not there yet.
			if ctx.Err() != nil || time.Now().After(deadline) {
				return f, err
			}
			b.logf("checks: reading the expiry reports: %v; again", err)
			if !sleepCtx(ctx, 500*time.Millisecond) {
				return f, ctx.Err()
			}
			continue
		}
		got := 0
		for _, e := range out.Expirations {
			if want[e.ID] {
				got++
			}
		}
		if got >= count || time.Now().After(deadline) {
			hist = loadgen.NewHistogram()
			clear(causes)
			f.Reported = 0
			for _, e := range out.Expirations {
				if !want[e.ID] {
					continue
				}
				f.Reported++
				causes[e.Cause]++
				hist.Record(e.ExpiredAt.Sub(failedAt))
			}
			break
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return f, ctx.Err()
		}
	}
	var cs []string
	for c, k := range causes {
		cs = append(cs, fmt.Sprintf("%s:%d", c, k))
	}
	slices.Sort(cs)
	f.Causes = strings.Join(cs, ",")
	f.P50Ms, f.P99Ms, f.MaxMs, f.MinMs = ms(hist.Quantile(0.5)), ms(hist.Quantile(0.99)), ms(hist.Max()), ms(hist.Min())
	if f.Reported < count {
		return f, fmt.Errorf("%d of %d failed instances reported", f.Reported, count)
	}
	return f, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// load1 is the machine's 1-minute load average (0 when unknown).
func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}

// promScrape is one /metrics answer: every sample by its series.
type promScrape map[string]float64

func (b *bench) scrape(ctx context.Context, target string) (promScrape, error) {
	out := promScrape{}
	err := b.h.do(ctx, http.MethodGet, "http://"+target+"/metrics", nil, func(status int, body []byte) error {
		if status != http.StatusOK {
			return statusErr(status, body)
		}
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			if line == "" || line[0] == '#' {
				continue
			}
			i := strings.LastIndexByte(line, ' ')
			if i < 0 {
				continue
			}
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err == nil {
				out[line[:i]] = v
			}
		}
		return sc.Err()
	})
	return out, err
}

func (p promScrape) counter(series string) float64 { return p[series] }

// promHistogram is a histogram's cumulative buckets over a window.
type promHistogram struct {
	le    []float64
	count []float64
}

// sub is histogram name's buckets in p less those in earlier.
func (p promScrape) sub(earlier promScrape, name string) promHistogram {
	var h promHistogram
	prefix := name + `_bucket{le="`
	for k, v := range p {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
		if err != nil {
			continue
		}
		h.le = append(h.le, le)
		h.count = append(h.count, v-earlier[k])
	}
	idx := make([]int, len(h.le))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		switch {
		case h.le[a] < h.le[b]:
			return -1
		case h.le[a] > h.le[b]:
			return 1
		}
		return 0
	})
	sorted := promHistogram{}
	for _, i := range idx {
		sorted.le = append(sorted.le, h.le[i])
		sorted.count = append(sorted.count, h.count[i])
	}
	return sorted
}

// quantile interpolates linearly within the bucket holding quantile q, as
// Prometheus's histogram_quantile does.
func (h promHistogram) quantile(q float64) float64 {
	if len(h.le) == 0 || h.count[len(h.count)-1] == 0 {
		return 0
	}
	total := h.count[len(h.count)-1]
	rank := q * total
	lo, below := 0.0, 0.0
	for i, le := range h.le {
		if h.count[i] >= rank {
			if math.IsInf(le, 1) {
				return lo
			}
			inBucket := h.count[i] - below
			if inBucket == 0 {
				return le
			}
			return lo + (le-lo)*(rank-below)/inBucket
		}
		lo, below = le, h.count[i]
	}
	return lo
}

func writeChecksTable(w io.Writer, rep *checksReport) {
	fmt.Fprintf(w, "checks against %s (leader %s), HTTP checks every %s, failures %d, %s windows, %d CPUs (run %s)\n",
		strings.Join(rep.Targets, ","), rep.Leader, rep.Interval, rep.Failures, rep.Window, rep.CPUs, rep.RunID)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "instances\tprobes/s\texpected\tgap p50 ms\tgap p99 ms\tgap max ms\tlag p50 ms\tlag p99 ms\tleader cores\tleader ms/probe\tcluster ms/probe\tbench cores\tload1\tkept up")
	for _, s := range rep.Steps {
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.1f\t%.1f\t%.2f\t%.3f\t%.3f\t%.2f\t%.1f\t%v %s\n", s.Instances, s.Seen, s.Expected,
			s.GapP50Ms, s.GapP99Ms, s.GapMaxMs, s.LagP50Ms, s.LagP99Ms, s.CPU[rep.Leader], s.LeaderCPUPerProbeMs, s.ClusterCPUPerProbeMs,
			s.CPU["regd-bench"], s.Load1, s.KeptUp, s.Why)
	}
	tw.Flush()
	if f := rep.Failure; f != nil {
		fmt.Fprintf(w, "failure: %d of %d instances failed at once; %d reported (%s); from failing to the report: min %.0f ms, p50 %.0f ms, p99 %.0f ms, max %.0f ms\n",
			f.Failed, f.Instances, f.Reported, f.Causes, f.MinMs, f.P50Ms, f.P99Ms, f.MaxMs)
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}
