package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/regd/regd/internal/loadgen"
)

// costOps are the operations of the cost workload, in run order: register
// first, since the SSE event's cost is what the registrations behind the
// events leave over.
var costOps = []string{"register", "heartbeat", "batch", "list", "list-gzip", "sse"}

// costResult is target 5: server CPU per operation, from /proc, for
// regd's REST API beside etcd's JSON gateway and native etcd gRPC on the
// same members, in one run.
type costResult struct {
	Concurrency int `json:"concurrency"`
	K           int `json:"k"` // instances heartbeated and listed
	Subscribers int `json:"subscribers"`
	BatchSize   int `json:"batch_size"`
	// IdleCPUPerSec is the servers' CPU (summed) per second with no load,
	// subtracted from every row's figure.
	IdleCPUPerSec float64     `json:"idle_server_cpu_per_sec"`
	Rows          []costRow   `json:"rows"`
	Ratios        []costRatio `json:"ratios"`
}

// costRow is one operation on one system.
type costRow struct {
	System    string           `json:"system"`
	Op        string           `json:"op"`
	Ops       int64            `json:"ops"`             // requests (batch: batch requests; sse: events delivered)
	Units     int64            `json:"units,omitempty"` // what the CPU is divided by, when not Ops (batch: instances renewed)
	Seconds   float64          `json:"seconds"`
	OpsPerSec float64          `json:"ops_per_sec"`
	Latency   loadgen.Latency  `json:"latency_ms"`
	Errors    map[string]int64 `json:"errors"`
	// ServerCPUSeconds is the servers' CPU during the measured time,
	// minus their idle CPU for as long; per unit in microseconds.
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	ServerCPUPerOpUs float64 `json:"server_cpu_per_op_us"`
	ToolCPUPerOpUs   float64 `json:"tool_cpu_per_op_us"`
	Note             string  `json:"note,omitempty"`
}

// costRatio is regd beside another system for one operation.
type costRatio struct {
	Op        string  `json:"op"`
	Versus    string  `json:"versus"`
	OpsPerSec float64 `json:"ops_per_sec"` // regd / other: above 1 regd does more
	CPUPerOp  float64 `json:"cpu_per_op"`  // regd / other: below 1 regd costs less
}

// cost is target 5: every --ops operation, closed loop at --concurrency for
// --duration (after --warmup), on every --systems system, against the same
// members; the servers' CPU from /proc for each.
func (s *scaleRun) cost(ctx context.Context) error {
	o := s.o
	r := &costResult{Concurrency: o.concurrency, K: o.k, Subscribers: o.subscribers, BatchSize: min(o.batchSize, o.k)}
	s.res.Cost = r
	s.res.Variant = fmt.Sprintf("%d clients", o.concurrency)
	s.res.Smoke = o.concurrency != 64 || o.duration < 10*time.Second || o.k < 1000
	s.res.Params = map[string]any{"concurrency": o.concurrency, "duration": o.duration.String(), "warmup": o.warmup.String(), "k": o.k,
		"subscribers": o.subscribers, "systems": o.systems, "ops": o.ops, "idle": o.idle.String(), "etcd_prefix": o.etcdPrefix}

	s.logf("cost: the servers' idle CPU for %s", o.idle)
	m0 := s.mark()
	select {
	case <-time.After(o.idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	idle := s.addPhase("idle", m0, s.mark())
	if cpu, ok := idle.serverCPU(); ok {
		r.IdleCPUPerSec = cpu / idle.Seconds
	} else {
		s.res.Notes = append(s.res.Notes, "the servers' CPU could not be read: no CPU per operation")
	}

	for _, sys := range o.systems {
		var be backend
		switch sys {
		case "regd":
			be = &regdBackend{h: s.h, targets: o.targets}
		case "etcd":
			be = &etcdBackend{h: s.h, urls: o.etcd, prefix: o.etcdPrefix}
		case "native":
			nb, err := newNativeBackend(o.etcd, o.etcdPrefix)
			if err != nil {
				return err
			}
			defer nb.close()
			be = nb
		}
		if err := s.costSystem(ctx, be, r); err != nil {
			return fmt.Errorf("%s: %w", sys, err)
		}
	}

	row := func(sys, op string) *costRow {
		for i := range r.Rows {
			if r.Rows[i].System == sys && r.Rows[i].Op == op {
				return &r.Rows[i]
			}
		}
		return nil
	}
	for _, op := range []string{"register", "heartbeat", "list", "sse"} {
		for _, other := range []string{"native", "etcd"} {
			a, b := row("regd", op), row(other, op)
			if a == nil || b == nil {
				continue
			}
			r.Ratios = append(r.Ratios, costRatio{Op: op, Versus: other, OpsPerSec: div(a.OpsPerSec, b.OpsPerSec), CPUPerOp: div(a.ServerCPUPerOpUs, b.ServerCPUPerOpUs)})
		}
	}
	for _, op := range []string{"register", "heartbeat"} {
		var q *costRatio
		for i := range r.Ratios {
			if r.Ratios[i].Op == op && r.Ratios[i].Versus == "native" {
				q = &r.Ratios[i]
			}
		}
		if q == nil {
			continue
		}
		a, b := row("regd", op), row("native", op)
		s.res.Goals = append(s.res.Goals, metGoal(fmt.Sprintf("%s over REST vs native gRPC, ops/s at %d clients", op, o.concurrency), "≥ 1.0×",
			fmt.Sprintf("%.2f× (%.0f vs %.0f/s); server CPU per op %.0f µs vs %.0f µs", q.OpsPerSec, a.OpsPerSec, b.OpsPerSec, a.ServerCPUPerOpUs, b.ServerCPUPerOpUs),
			q.OpsPerSec >= 1))
	}
	var per []string
	for _, rw := range r.Rows {
		if rw.System == "regd" && rw.Ops > 0 {
			per = append(per, fmt.Sprintf("%s %.0f µs", rw.Op, rw.ServerCPUPerOpUs))
		}
	}
	if len(per) > 0 {
		s.res.Goals = append(s.res.Goals, goal{Name: "server CPU per regd operation", Goal: "reported, beside etcd's gateway and native gRPC", Measured: joinComma(per)})
	}
	return nil
}

func joinComma(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(x)
	}
	return b.String()
}

// costSystem measures every --ops operation on one system.
func (s *scaleRun) costSystem(ctx context.Context, be backend, r *costResult) error {
	o := s.o
	tr := &tracker{}
	defer s.cleanup(be, tr)
	nt := int64(be.ntargets())
	sys := be.name()
	svc := s.service(be, "cost")
	var insts []*inst
	ensureK := func() error {
		if insts != nil {
			return nil
		}
		var err error
		insts, err = s.preregister(ctx, be, svc, o.k, tr)
		return err
	}
	for _, op := range o.ops {
		var (
			fn    loadgen.Op
			units func(ops int64) int64
			note  string
		)
		switch op {
		case "register":
			rsvc := s.service(be, "costreg")
			var n atomic.Int64
			fn = func(ctx context.Context, _ int, _ int64) (int, error) {
				seq := n.Add(1) - 1 // not the run's: the warm-up's ids must not come again
				in := &inst{service: rsvc, id: "r" + itoa(seq), addr: address(seq)}
				tr.add(in)
				return 0, be.register(ctx, int(seq%nt), in, s.costTTL())
			}
		case "heartbeat":
			if err := ensureK(); err != nil {
				return err
			}
			k := int64(len(insts))
			fn = func(ctx context.Context, _ int, seq int64) (int, error) {
				return 0, be.heartbeat(ctx, int(seq%nt), insts[seq%k])
			}
		case "batch":
			if sys != "regd" {
				continue
			}
			if err := ensureK(); err != nil {
				return err
			}
			if _, err := s.request(ctx, http.MethodPut, 0, "/v1/heartbeats", batchBody(insts[:1]), http.StatusOK); err != nil {
				r.Rows = append(r.Rows, costRow{System: sys, Op: op, Note: fmt.Sprintf("not measured: PUT /v1/heartbeats answered %v (the batch endpoint is not built)", err)})
				continue
			}
			size := r.BatchSize
			var bodies [][]byte
			for lo := 0; lo+size <= len(insts); lo += size {
				bodies = append(bodies, batchBody(insts[lo:lo+size]))
			}
			nb := int64(len(bodies))
			fn = func(ctx context.Context, _ int, seq int64) (int, error) {
				return 0, s.h.do(ctx, http.MethodPut, "http://"+o.targets[seq%nt]+"/v1/heartbeats", bodies[seq%nb], func(st int, b []byte) error {
					if st != http.StatusOK {
						return statusErr(st, b)
					}
					if bytes.Contains(b, []byte(`"error"`)) {
						return &loadgen.StatusError{Class: "item_error", Msg: "a batch item failed"}
					}
					return nil
				})
			}
			units = func(ops int64) int64 { return ops * int64(size) }
			note = fmt.Sprintf("%d instances a request; CPU per instance renewed", size)
		case "list":
			if err := ensureK(); err != nil {
				return err
			}
			fn = func(ctx context.Context, _ int, seq int64) (int, error) {
				return 0, be.list(ctx, int(seq%nt), svc)
			}
		case "list-gzip":
			if sys != "regd" {
				continue
			}
			if err := ensureK(); err != nil {
				return err
			}
			gz := []string{"Accept-Encoding: gzip"}
			var plain atomic.Int64
			fn = func(ctx context.Context, _ int, seq int64) (int, error) {
				return 0, s.h.doConn(ctx, http.MethodGet, "http://"+o.targets[seq%nt]+"/v1/services/"+svc+"/instances", gz, nil, func(c *loadgen.Reply) error {
					if c.Status != http.StatusOK {
						return statusErr(c.Status, c.Body)
					}
					if !bytes.EqualFold(c.Header("Content-Encoding"), []byte("gzip")) {
						plain.Add(1)
					}
					return nil
				})
			}
			defer func() {
				if plain.Load() > 0 {
					s.res.Notes = append(s.res.Notes, "list-gzip: the server answered without Content-Encoding: gzip (contract v2's compression is not built): the row measures a plain list")
				}
			}()
		case "sse":
			row, err := s.costSSE(ctx, be, tr)
			if err != nil {
				return err
			}
			r.Rows = append(r.Rows, row)
			continue
		}
		st, m, err := s.measure(ctx, be, op, fn)
		if err != nil {
			return err
		}
		row := s.costRowOf(sys, op, st, m, units)
		row.Note = note
		r.Rows = append(r.Rows, row)
	}
	return nil
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// measure runs fn unmeasured for --warmup, then measured for --duration,
// and returns the figures and the phase.
func (s *scaleRun) measure(ctx context.Context, be backend, op string, fn loadgen.Op) (*loadgen.Stats, phase, error) {
	o := s.o
	if o.warmup > 0 {
		if _, err := loadgen.Run(ctx, loadgen.Config{Concurrency: o.concurrency, Duration: o.warmup}, fn); err != nil {
			return nil, phase{}, err
		}
	}
	s.logf("%s: %s %s, %d clients, %s", o.workload, be.name(), op, o.concurrency, o.duration)
	m0 := s.mark()
	res, err := loadgen.Run(ctx, loadgen.Config{Concurrency: o.concurrency, Duration: o.duration}, fn)
	m1 := s.mark()
	p := s.addPhase(be.name()+" "+op, m0, m1)
	if err != nil {
		return nil, p, err
	}
	return loadgen.FromResult(res, nil), p, nil
}

// costTTL is the TTL of the cost run's registrations: longer than the run,
// so that none expires in it. A registration's row must not pay for the
// expiry of earlier ones (a revoke with its own raft write and disk sync
// on every member, and regd's report), nor the rows after it; and every
// registration is of a new id (a warm-up's ids registered again would be
// re-registrations, which regd answers by revoking the replaced lease:
// one raft write more than native etcd's Put over the key).
func (b *bench) costTTL() int {
	return max(b.o.ttl, int(b.o.maxDuration/time.Second)+30)
}

// sseConcurrency is the registrations' concurrency behind the SSE row: low,
// so that the events, not the registrations, are most of the CPU.
const sseConcurrency = 4

// costSSE is the CPU per event delivered to a subscriber, by difference:
// registrations at sseConcurrency into a service nobody watches, then the
// notify workload (the same registrations into a service --subscribers
// watch: SSE, the gateway's /v3/watch, clientv3's Watch); what the second
// costs per registration beyond the first, over the events each
// registration made.
func (s *scaleRun) costSSE(ctx context.Context, be backend, tr *tracker) (costRow, error) {
	o := s.o
	saved := o.concurrency
	o.concurrency = sseConcurrency
	defer func() { o.concurrency = saved }()
	nt := int64(be.ntargets())
	bsvc := s.service(be, "costbase")
	var n atomic.Int64
	base, bp, err := s.measure(ctx, be, "register (unwatched, for sse)", func(ctx context.Context, _ int, _ int64) (int, error) {
		seq := n.Add(1) - 1
		in := &inst{service: bsvc, id: "b" + itoa(seq), addr: address(seq)}
		tr.add(in)
		return 0, be.register(ctx, int(seq%nt), in, s.costTTL())
	})
	if err != nil {
		return costRow{}, err
	}
	s.logf("cost: %s sse, %d subscribers, registrations at %d clients, %s", be.name(), o.subscribers, o.concurrency, o.duration)
	m0 := s.mark()
	st, err := s.notify(ctx, be, tr)
	p := s.addPhase(be.name()+" sse", m0, s.mark())
	if err != nil {
		return costRow{}, err
	}
	row := s.costRowOf(be.name(), "sse", st, p, nil)
	baseCPU, ok := bp.serverCPU()
	if !ok || base.Ops == 0 || st.Registrations == 0 {
		row.Note = "no baseline: CPU per event includes the registrations"
		return row, nil
	}
	perReg := max(baseCPU-s.res.Cost.IdleCPUPerSec*bp.Seconds, 0) / float64(base.Ops)
	net := row.ServerCPUSeconds - perReg*float64(st.Registrations)
	row.ServerCPUPerOpUs = max(net, 0) / float64(max(st.Ops, 1)) * 1e6
	row.Note = fmt.Sprintf("per event delivered: %d subscribers, %d registrations at %d clients; CPU beyond the same registrations unwatched (%.0f µs each)",
		st.Subscribers, st.Registrations, sseConcurrency, perReg*1e6)
	return row, nil
}

func (s *scaleRun) costRowOf(sys, op string, st *loadgen.Stats, p phase, units func(int64) int64) costRow {
	row := costRow{System: sys, Op: op, Ops: st.Ops, Seconds: st.Seconds, OpsPerSec: st.OpsPerSec, Latency: st.Latency, Errors: st.Errors}
	n := st.Ops
	if units != nil {
		row.Units = units(st.Ops)
		n = row.Units
	}
	cpu, ok := p.serverCPU()
	if ok {
		row.ServerCPUSeconds = max(cpu-s.res.Cost.IdleCPUPerSec*p.Seconds, 0)
		if n > 0 {
			row.ServerCPUPerOpUs = row.ServerCPUSeconds / float64(n) * 1e6
		}
	}
	if n > 0 {
		row.ToolCPUPerOpUs = p.Tool.CPUSeconds / float64(n) * 1e6
	}
	if !slices.Contains([]string{"sse"}, op) && st.Ops == 0 {
		row.Note = "no operation succeeded"
	}
	return row
}
