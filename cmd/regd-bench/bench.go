package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/regd/regd/internal/loadgen"
)

// report is one run's result: the --json object and what the table shows.
type report struct {
	Workload    string         `json:"workload"`
	Label       string         `json:"label,omitempty"`
	Concurrency int            `json:"concurrency"`
	Targets     []string       `json:"targets"`
	EtcdTargets []string       `json:"etcd_targets,omitempty"`
	K           int            `json:"k,omitempty"`
	Subscribers int            `json:"subscribers,omitempty"`
	Duration    string         `json:"duration"`
	Count       int64          `json:"count,omitempty"`
	Warmup      string         `json:"warmup,omitempty"`
	TTL         int            `json:"ttl"`
	EtcdPrefix  string         `json:"etcd_prefix,omitempty"`
	EtcdVersion string         `json:"etcd_version,omitempty"`
	GoVersion   string         `json:"go_version"`
	RunID       string         `json:"run_id"`
	StartedAt   time.Time      `json:"started_at"`
	Regd        *loadgen.Stats `json:"regd"`
	Etcd        *loadgen.Stats `json:"etcd"`
	Ratio       *ratio         `json:"ratio,omitempty"`
	Notes       []string       `json:"notes,omitempty"`
}

// ratio is regd's figure over etcd's: ops/s above 1 and latencies below 1
// mean regd is faster.
type ratio struct {
	OpsPerSec float64 `json:"ops_per_sec"`
	P50       float64 `json:"p50"`
	P99       float64 `json:"p99"`
}

type bench struct {
	o     *options
	log   io.Writer
	runID string
	h     *httpc
}

func newBench(o *options, log io.Writer) *bench {
	var id [4]byte
	_, _ = rand.Read(id[:])
	return &bench{
		o:     o,
		log:   log,
		runID: hex.EncodeToString(id[:]),
		// A connection per worker and per stream, and some slack for
		// cleanup's and setup's own concurrency.
		h: newHTTPC(o.concurrency + o.subscribers + 64),
	}
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "regd-bench: "+format+"\n", args...)
}

func (b *bench) run(ctx context.Context) (*report, error) {
	o := b.o
	defer b.h.close()
	rep := &report{
		Workload:    o.workload,
		Label:       o.label,
		Concurrency: o.concurrency,
		Targets:     o.targets,
		EtcdTargets: o.etcd,
		Duration:    o.duration.String(),
		Count:       o.count,
		TTL:         o.ttl,
		GoVersion:   runtime.Version(),
		RunID:       b.runID,
		StartedAt:   time.Now().UTC(),
	}
	if o.warmup > 0 && o.workload != "notify" {
		rep.Warmup = o.warmup.String()
	}
	switch o.workload {
	case "heartbeat", "list", "mixed":
		rep.K = o.k
	case "notify":
		rep.Subscribers = o.subscribers
	}
	var backends []backend
	if !o.skipRegd {
		if err := b.waitReady(ctx); err != nil {
			return nil, err
		}
		backends = append(backends, &regdBackend{h: b.h, targets: o.targets})
	}
	if len(o.etcd) > 0 && !o.skipEtcd {
		rep.EtcdPrefix = o.etcdPrefix
		rep.EtcdVersion = b.etcdVersion(ctx)
		backends = append(backends, &etcdBackend{h: b.h, urls: o.etcd, prefix: o.etcdPrefix})
	} else {
		rep.Notes = append(rep.Notes, "no plain-etcd twin: give --etcd with the members' client URLs")
	}
	var errs []error
	for _, be := range backends {
		st, err := b.runOne(ctx, be)
		if err == nil && st.Ops == 0 {
			err = fmt.Errorf("no operation succeeded (errors: %s)", st.ErrorString())
		}
		if err != nil {
			err = fmt.Errorf("%s: %w", be.name(), err)
			errs = append(errs, err)
			rep.Notes = append(rep.Notes, err.Error())
		}
		switch be.name() {
		case "regd":
			rep.Regd = st
		case "etcd":
			rep.Etcd = st
		}
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				errs = append(errs, fmt.Errorf("stopped by --max-duration %s", o.maxDuration))
			} else {
				errs = append(errs, errors.New("interrupted"))
			}
			break
		}
	}
	if r, e := rep.Regd, rep.Etcd; r != nil && e != nil {
		rep.Ratio = &ratio{
			OpsPerSec: div(r.OpsPerSec, e.OpsPerSec),
			P50:       div(r.Latency.P50, e.Latency.P50),
			P99:       div(r.Latency.P99, e.Latency.P99),
		}
	}
	return rep, errors.Join(errs...)
}

// div is a/b, or 0 (no meaningful ratio) unless both are positive: a
// notify delay can be negative.
func div(a, b float64) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return a / b
}

// waitReady waits until every target answers /readyz with 200.
func (b *bench) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(b.o.waitReady, time.Millisecond))
	defer cancel()
	for _, t := range b.o.targets {
		var last error
		for {
			last = b.h.do(ctx, http.MethodGet, "http://"+t+"/readyz", nil, expect(http.StatusOK))
			if last == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("target %s is not ready within --wait-ready %s: %v", t, b.o.waitReady, last)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

func (b *bench) etcdVersion(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var v struct {
		Server string `json:"etcdserver"`
	}
	_ = b.h.do(ctx, http.MethodGet, b.o.etcd[0]+"/version", nil, func(status int, body []byte) error {
		return json.Unmarshal(body, &v)
	})
	return v.Server
}

// service is the name of this run's service for a workload and system.
func (b *bench) service(be backend, what string) string {
	return fmt.Sprintf("%s-%s-%s-%s", b.o.service, b.runID, what, be.name())
}

// preTTL is the TTL of pre-registered instances: long enough that none
// expires during the run even when nothing renews it (list).
func (b *bench) preTTL() int {
	return min(max(b.o.ttl, int(b.o.maxDuration.Seconds())+30), 3600)
}

func address(seq int64) string {
	return fmt.Sprintf("10.%d.%d.%d:8080", (seq>>16)&255, (seq>>8)&255, seq&255)
}

// tracker remembers what a run registered, for cleanup.
type tracker struct {
	mu    sync.Mutex
	insts []*inst
}

func (t *tracker) add(in *inst) {
	t.mu.Lock()
	t.insts = append(t.insts, in)
	t.mu.Unlock()
}

// cleanup deregisters everything tracked, best effort, with its own time
// bound so that it runs even after the run's context ended.
func (b *bench) cleanup(be backend, tr *tracker) {
	tr.mu.Lock()
	insts := tr.insts
	tr.insts = nil
	tr.mu.Unlock()
	if len(insts) == 0 {
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var failed atomic.Int64
	var g errgroup.Group
	g.SetLimit(32)
	for i, in := range insts {
		g.Go(func() error {
			if err := be.deregister(ctx, i%be.ntargets(), in); err != nil {
				failed.Add(1)
			}
			return nil
		})
	}
	_ = g.Wait()
	b.logf("%s: cleanup removed %d instances (%d failed) in %s", be.name(), len(insts)-int(failed.Load()), failed.Load(), time.Since(start).Round(time.Millisecond))
}

// preregister registers n instances of service (untimed), then checks that
// every target lists exactly n.
func (b *bench) preregister(ctx context.Context, be backend, service string, n int, tr *tracker) ([]*inst, error) {
	start := time.Now()
	insts := make([]*inst, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(min(max(b.o.concurrency, 16), 64))
	ttl := b.preTTL()
	for i := range insts {
		in := &inst{service: service, id: fmt.Sprintf("k%05d", i), addr: address(int64(i))}
		insts[i] = in
		tr.add(in)
		g.Go(func() error {
			var err error
			for attempt := 0; attempt < 3; attempt++ {
				if err = be.register(gctx, i%be.ntargets(), in, ttl); err == nil {
					return nil
				}
				if gctx.Err() != nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			return fmt.Errorf("pre-register %s/%s: %w", service, in.id, err)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for t := range be.ntargets() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := be.count(ctx, t, service)
			if err == nil && got == n {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return nil, fmt.Errorf("target %d lists %d of the %d pre-registered instances (%v)", t, got, n, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	b.logf("%s: pre-registered %d instances in %s", be.name(), n, time.Since(start).Round(time.Millisecond))
	return insts, nil
}

func (b *bench) load(ctx context.Context, be backend, kinds []string, op loadgen.Op) (*loadgen.Stats, error) {
	o := b.o
	b.logf("%s: %s, concurrency %d, %s", be.name(), o.workload, o.concurrency, b.bound())
	res, err := loadgen.Run(ctx, loadgen.Config{
		Concurrency: o.concurrency,
		Duration:    o.duration,
		Count:       o.count,
		Warmup:      b.warmup(),
		Kinds:       kinds,
	}, op)
	if res == nil {
		return nil, err
	}
	return loadgen.FromResult(res, kinds), err
}

// warmup is the unmeasured lead-in; notify has none, since registrations
// during it would be events too (cost runs notify, and warms the other
// operations up itself).
func (b *bench) warmup() time.Duration {
	if b.o.workload == "notify" || b.o.workload == "cost" {
		return 0
	}
	return b.o.warmup
}

func (b *bench) bound() string {
	var parts []string
	if b.o.duration > 0 {
		parts = append(parts, b.o.duration.String())
	}
	if b.o.count > 0 {
		parts = append(parts, fmt.Sprintf("%d ops", b.o.count))
	}
	s := strings.Join(parts, " or ")
	if w := b.warmup(); w > 0 {
		s += " after " + w.String() + " warmup"
	}
	return s
}

func (b *bench) runOne(ctx context.Context, be backend) (*loadgen.Stats, error) {
	tr := &tracker{}
	defer b.cleanup(be, tr)
	nt := int64(be.ntargets())
	ttl := b.o.ttl
	switch b.o.workload {
	case "register":
		svc := b.service(be, "register")
		return b.load(ctx, be, nil, func(ctx context.Context, _ int, seq int64) (int, error) {
			in := &inst{service: svc, id: fmt.Sprintf("r%d", seq), addr: address(seq)}
			tr.add(in)
			return 0, be.register(ctx, int(seq%nt), in, ttl)
		})

	case "populate":
		// Not tracked: the instances stay for what is measured next.
		svcs := int64(b.o.services)
		return b.load(ctx, be, nil, func(ctx context.Context, _ int, seq int64) (int, error) {
			in := &inst{service: fmt.Sprintf("%s-%d", b.service(be, "populate"), seq%svcs), id: fmt.Sprintf("p%d", seq), addr: address(seq)}
			return 0, be.register(ctx, int(seq%nt), in, ttl)
		})

	case "heartbeat":
		insts, err := b.preregister(ctx, be, b.service(be, "heartbeat"), b.o.k, tr)
		if err != nil {
			return nil, err
		}
		k := int64(len(insts))
		return b.load(ctx, be, nil, func(ctx context.Context, _ int, seq int64) (int, error) {
			return 0, be.heartbeat(ctx, int(seq%nt), insts[seq%k])
		})

	case "list":
		svc := b.service(be, "list")
		if _, err := b.preregister(ctx, be, svc, b.o.k, tr); err != nil {
			return nil, err
		}
		return b.load(ctx, be, nil, func(ctx context.Context, _ int, seq int64) (int, error) {
			return 0, be.list(ctx, int(seq%nt), svc)
		})

	case "mixed":
		svc, newSvc := b.service(be, "mixed"), b.service(be, "mixednew")
		insts, err := b.preregister(ctx, be, svc, b.o.k, tr)
		if err != nil {
			return nil, err
		}
		k := int64(len(insts))
		var hb atomic.Int64
		// Out of every 20 operations: 1 register, 3 lists, 16 heartbeats.
		kinds := []string{"heartbeat", "list", "register"}
		return b.load(ctx, be, kinds, func(ctx context.Context, _ int, seq int64) (int, error) {
			t := int(seq % nt)
			switch seq % 20 {
			case 0:
				in := &inst{service: newSvc, id: fmt.Sprintf("r%d", seq), addr: address(seq)}
				tr.add(in)
				return 2, be.register(ctx, t, in, ttl)
			case 1, 8, 15:
				return 1, be.list(ctx, t, svc)
			default:
				return 0, be.heartbeat(ctx, t, insts[hb.Add(1)%k])
			}
		})

	case "notify":
		return b.notify(ctx, be, tr)
	}
	return nil, fmt.Errorf("unknown workload %q", b.o.workload)
}
