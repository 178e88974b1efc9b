package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/regd/regd/internal/loadgen"
)

// The scale workloads of issue 17. Each is one bounded run that writes one
// scaleResult: the figures beside the goals, what every server
// process and the tool itself used per phase, and what was run where.
var scaleWorkloads = []string{"liveness", "fanout", "expiry", "million", "cost", "snapshot"}

// scaleResult is the --json object of a scale workload; `regd-bench
// scale-report` renders a set of them as docs/scale.md's sections.
type scaleResult struct {
	Target  string `json:"target"`            // the workload
	Variant string `json:"variant,omitempty"` // e.g. "sse, 1 member"
	// Smoke is true when the run was smaller than the figures
	// (instances, subscribers, duration, members): its numbers show the
	// tool works, not what the target asks.
	Smoke     bool              `json:"smoke"`
	Label     string            `json:"label,omitempty"`
	Command   []string          `json:"command"`
	Meta      map[string]string `json:"meta,omitempty"` // --meta: what the script knows (regd version, cluster flags)
	Env       envInfo           `json:"env"`
	Targets   []string          `json:"targets"`
	Etcd      []string          `json:"etcd_targets,omitempty"`
	Members   []string          `json:"members"` // member names, as /v1/cluster says, by target
	RunID     string            `json:"run_id"`
	StartedAt time.Time         `json:"started_at"`
	Seconds   float64           `json:"seconds"`
	Params    map[string]any    `json:"params"`
	Goals     []goal            `json:"goals"`
	Phases    []phase           `json:"phases"`

	Liveness *livenessResult `json:"liveness,omitempty"`
	Fanout   *fanoutResult   `json:"fanout,omitempty"`
	Expiry   *expiryResult   `json:"expiry,omitempty"`
	Million  *millionResult  `json:"million,omitempty"`
	Cost     *costResult     `json:"cost,omitempty"`
	Snapshot *snapshotResult `json:"snapshot,omitempty"`

	Notes []string `json:"notes,omitempty"`
}

// goal is one figure of the issue beside what the run measured.
type goal struct {
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	// Met is nil when the run cannot tell (a smoke run, a missing
	// server feature).
	Met *bool `json:"met,omitempty"`
}

func metGoal(name, want, got string, ok bool) goal {
	return goal{Name: name, Goal: want, Measured: got, Met: &ok}
}

// phase is what the server processes and the tool used in one stretch of
// a run (from /proc: utime+stime and VmRSS).
type phase struct {
	Name    string              `json:"name"`
	Seconds float64             `json:"seconds"`
	Servers []loadgen.ProcUsage `json:"servers"`
	Tool    loadgen.ProcUsage   `json:"tool"`
}

// envInfo is the machine and the software versions a run had.
type envInfo struct {
	CPU         string `json:"cpu"`
	CPUs        int    `json:"cpus"`
	MemoryGiB   int    `json:"memory_gib"`
	Kernel      string `json:"kernel"`
	Go          string `json:"go"`
	EtcdVersion string `json:"etcd_version,omitempty"`
	LoadAvg     string `json:"load_avg_at_start"`
	NoFile      uint64 `json:"tool_nofile_limit"`
	Hostname    string `json:"hostname,omitempty"`
}

func readEnv() envInfo {
	e := envInfo{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					e.MemoryGiB = int((kb + 512<<10) >> 20)
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			e.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		e.NoFile = rl.Cur
	}
	e.Hostname, _ = os.Hostname()
	return e
}

// scaleRun is the state every scale workload shares.
type scaleRun struct {
	*bench
	res     *scaleResult
	sampler *loadgen.Sampler
	rest    *httpc
}

// runScale runs one scale workload and prints its result.
func runScale(ctx context.Context, o *options, stdout, stderr io.Writer) int {
	b := newBench(o, stderr)
	defer b.h.close()
	s := &scaleRun{bench: b, rest: b.h}
	s.res = &scaleResult{
		Target:    o.workload,
		Label:     o.label,
		Command:   os.Args,
		Meta:      o.meta,
		Env:       readEnv(),
		Targets:   o.targets,
		Etcd:      o.etcd,
		RunID:     b.runID,
		StartedAt: time.Now().UTC(),
		Params:    map[string]any{},
	}
	if len(o.etcd) > 0 {
		s.res.Env.EtcdVersion = b.etcdVersion(ctx)
	}
	err := s.setup(ctx)
	if err == nil {
		switch o.workload {
		case "liveness":
			err = s.liveness(ctx)
		case "fanout":
			err = s.fanout(ctx)
		case "expiry":
			err = s.expiry(ctx)
		case "million":
			err = s.million(ctx)
		case "cost":
			err = s.cost(ctx)
		case "snapshot":
			err = s.snapshot(ctx)
		default:
			err = fmt.Errorf("unknown scale workload %q", o.workload)
		}
	}
	if s.sampler != nil {
		s.sampler.Stop()
	}
	s.res.Seconds = time.Since(s.res.StartedAt).Seconds()
	if err != nil {
		s.res.Notes = append(s.res.Notes, "run failed: "+err.Error())
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			s.res.Notes = append(s.res.Notes, fmt.Sprintf("stopped by --max-duration %s", o.maxDuration))
		}
	}
	return finish(o, stdout, stderr, s.res, false, func(w io.Writer) { writeScaleMarkdown(w, []*scaleResult{s.res}, 2) }, err)
}

// setup waits for the targets, learns their member names and finds the
// server processes to sample.
func (s *scaleRun) setup(ctx context.Context) error {
	o := s.o
	if len(o.targets) > 0 && o.workload != "snapshot" {
		if err := s.waitReady(ctx); err != nil {
			return err
		}
	}
	for _, t := range o.targets {
		s.res.Members = append(s.res.Members, s.memberName(ctx, t))
	}
	s.startSampler(o.pids)
	return nil
}

// startSampler (re)starts sampling: one entry per target, in order, with
// the pid from pids or found by the target's port (-1 when unknown: its
// reads fail and its figures are marked missing), then this process.
func (s *scaleRun) startSampler(pids []int) {
	o := s.o
	if s.sampler != nil {
		s.sampler.Stop()
	}
	names := append(slices.Clone(s.res.Members), "regd-bench")
	all := make([]int, 0, len(names))
	for i, t := range o.targets {
		pid := -1
		if i < len(pids) {
			pid = pids[i]
		} else if p, err := findServer(t); err == nil {
			pid = p
		} else {
			s.res.Notes = append(s.res.Notes, fmt.Sprintf("no CPU or RSS figures for %s: %v (give --pids)", t, err))
		}
		all = append(all, pid)
	}
	s.sampler = loadgen.NewSampler(names, append(all, 0))
	s.sampler.Start(o.sampleEvery)
}

// findServer is the pid of the local process listening on target's port.
func findServer(target string) (int, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return 0, err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return 0, fmt.Errorf("%s is not on this machine's loopback", target)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return 0, err
	}
	pid, err := loadgen.FindListener(p)
	if err == nil && pid == os.Getpid() {
		// An in-process cluster (the package's tests): the servers
		// share this process, whose figures then include the tool.
		return 0, errors.New("the server runs inside this process")
	}
	return pid, err
}

func (s *scaleRun) memberName(ctx context.Context, target string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var st struct {
		Node string `json:"node"`
	}
	_ = s.rest.do(ctx, http.MethodGet, "http://"+target+"/v1/cluster", nil, func(status int, body []byte) error {
		return json.Unmarshal(body, &st)
	})
	if st.Node == "" {
		return target
	}
	return st.Node
}

// mark samples every process now.
func (s *scaleRun) mark() loadgen.Mark { return s.sampler.Mark() }

// addPhase records what the processes used between two marks.
func (s *scaleRun) addPhase(name string, from, to loadgen.Mark) phase {
	u := s.sampler.Usage(from, to)
	p := phase{Name: name, Seconds: to.At.Sub(from.At).Seconds(), Servers: u[:len(u)-1], Tool: u[len(u)-1]}
	s.res.Phases = append(s.res.Phases, p)
	return p
}

// serverCPU is the servers' CPU seconds in a phase, and whether every
// server was measured.
func (p phase) serverCPU() (float64, bool) {
	var sum float64
	ok := len(p.Servers) > 0
	for _, u := range p.Servers {
		sum += u.CPUSeconds
		ok = ok && !u.Missing
	}
	return sum, ok
}

// putJSON is one REST request with a JSON body for the scale workloads:
// want lists the acceptable statuses.
func (s *scaleRun) request(ctx context.Context, method string, t int, path string, body []byte, want ...int) ([]byte, error) {
	var out []byte
	err := s.rest.do(ctx, method, "http://"+s.o.targets[t]+path, body, func(status int, b []byte) error {
		for _, w := range want {
			if status == w {
				out = append(out[:0], b...)
				return nil
			}
		}
		return statusErr(status, b)
	})
	return out, err
}

// regBody is a registration's body.
func regBody(addr string, ttl int) []byte {
	b := make([]byte, 0, 48)
	b = append(b, `{"address":"`...)
	b = append(b, addr...)
	b = append(b, `","ttl":`...)
	b = strconv.AppendInt(b, int64(ttl), 10)
	return append(b, '}')
}

// registerAll registers insts (TTL ttl) with --concurrency workers spread
// over the targets, retrying each a few times, and calls done with each
// instance once it is registered. It returns the first instance that could
// not be registered.
func (s *scaleRun) registerAll(ctx context.Context, insts []*inst, ttl int, done func(i int)) error {
	nt := int64(len(s.o.targets))
	res, err := loadgen.Run(ctx, loadgen.Config{Concurrency: s.o.regConc, Count: int64(len(insts))}, func(ctx context.Context, _ int, seq int64) (int, error) {
		in := insts[seq]
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			_, err = s.request(ctx, http.MethodPut, int(seq%nt), "/v1/services/"+in.service+"/instances/"+in.id, regBody(in.addr, ttl), http.StatusOK, http.StatusCreated)
			if err == nil {
				if done != nil {
					done(int(seq))
				}
				return 0, nil
			}
			if ctx.Err() != nil {
				break
			}
			time.Sleep(time.Duration(100*(attempt+1)) * time.Millisecond)
		}
		return 0, err
	})
	if err != nil {
		return err
	}
	if n := res.Latency.Count(); n != uint64(len(insts)) {
		st := loadgen.FromResult(res, nil)
		return fmt.Errorf("registered %d of %d instances (errors %s; e.g. %v)", n, len(insts), st.ErrorString(), st.ErrorSamples)
	}
	return nil
}

// deregisterAll removes insts, best effort, within a minute.
func (s *scaleRun) deregisterAll(insts []*inst) {
	if len(insts) == 0 || !s.o.cleanup {
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nt := int64(len(s.o.targets))
	res, _ := loadgen.Run(ctx, loadgen.Config{Concurrency: 32, Count: int64(len(insts))}, func(ctx context.Context, _ int, seq int64) (int, error) {
		in := insts[seq]
		_, err := s.request(ctx, http.MethodDelete, int(seq%nt), "/v1/services/"+in.service+"/instances/"+in.id, nil, http.StatusNoContent, http.StatusNotFound)
		return 0, err
	})
	if res != nil {
		s.logf("cleanup: deregistered %d of %d instances in %s", res.Latency.Count(), len(insts), time.Since(start).Round(time.Millisecond))
	}
}

// countField counts occurrences of needle in b.
func countField(b []byte, needle string) int { return bytes.Count(b, []byte(needle)) }
