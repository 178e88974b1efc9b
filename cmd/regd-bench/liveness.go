package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regd/regd/internal/loadgen"
)

// livenessResult is target 1: many instances kept alive by heartbeats for
// a long time, and how many the cluster expired although their client
// renewed them in time.
type livenessResult struct {
	Instances int    `json:"instances"`
	Services  int    `json:"services"`
	TTL       int    `json:"ttl"`
	Interval  string `json:"interval"`
	Mode      string `json:"heartbeat_mode"` // batch or single: what ran
	GroupSize int    `json:"group_size"`     // instances per batch request (single: per schedule slot)

	RegisterSeconds float64 `json:"register_seconds"`
	RegisterPerSec  float64 `json:"register_per_sec"`
	// DuringRegister are the heartbeats sent while instances were still
	// being registered; Steady those of the measured duration.
	DuringRegister heartbeatFigures `json:"heartbeats_during_register"`
	Steady         heartbeatFigures `json:"heartbeats"`

	// False expiries: instances of this run reported expired while the
	// keeper still renewed them, seen on the /v1/watch stream and in the
	// ledger (GET /v1/expirations, newest 10,000 entries).
	FalseExpiriesSSE    int64    `json:"false_expiries_sse"`
	FalseExpiriesLedger int64    `json:"false_expiries_ledger"`
	Examples            []string `json:"examples,omitempty"`
	MonitorEvents       int64    `json:"monitor_events"`
	MonitorReconnects   int      `json:"monitor_reconnects"`
	// Series is CPU and RSS of each member and the tool (in the phases'
	// order) over the steady phase, about a tenth of it a point.
	Series []loadgen.SeriesPoint `json:"series"`
}

// liveness is target 1. It registers --instances instances over --services
// services with --ttl, keeps them alive with heartbeats every --interval
// (batch heartbeats when the server has them), and runs for --duration once
// all are registered, watching /v1/watch for expiries of its instances.
func (s *scaleRun) liveness(ctx context.Context) error {
	o := s.o
	mode, err := s.resolveMode(ctx)
	if err != nil {
		return err
	}
	gs := min(o.batchSize, maxBatch)
	prefix := fmt.Sprintf("%s-%s-live", o.service, s.runID)
	r := &livenessResult{Instances: o.instances, Services: o.services, TTL: o.ttl, Interval: o.interval.String(), Mode: mode, GroupSize: gs}
	s.res.Liveness = r
	s.res.Variant = mode + " heartbeats"
	s.res.Smoke = o.instances < 100000 || o.duration < 10*time.Minute || len(o.targets) < 3 || mode != modeBatch
	s.res.Params = map[string]any{"instances": o.instances, "services": o.services, "ttl": o.ttl, "interval": o.interval.String(),
		"duration": o.duration.String(), "heartbeat_mode": mode, "group_size": gs, "register_concurrency": o.regConc}

	insts := make([]*inst, o.instances)
	for i := range insts {
		insts[i] = &inst{service: prefix + "-" + strconv.Itoa(i%o.services), id: "i" + strconv.Itoa(i), addr: address(int64(i))}
	}
	var (
		falseMu  sync.Mutex
		falseSSE int64
	)
	mon, err := s.startExpiryMonitor(ctx, 0, func(service, id string, at time.Time) {
		if strings.HasPrefix(service, prefix+"-") {
			falseMu.Lock()
			falseSSE++
			if len(r.Examples) < 10 {
				r.Examples = append(r.Examples, service+"/"+id+" expired at "+at.UTC().Format(time.RFC3339Nano))
			}
			falseMu.Unlock()
		}
	})
	if err != nil {
		return err
	}
	defer mon.stop()

	groups := (len(insts) + gs - 1) / gs
	k := newKeeper(ctx, s, mode, o.interval, groups)
	defer k.stopAll()
	nt := len(o.targets)
	counts := make([]atomic.Int32, groups)
	s.logf("liveness: registering %d instances in %d services (TTL %ds), %s heartbeats every %s in groups of %d", len(insts), o.services, o.ttl, mode, o.interval, gs)
	m0 := s.mark()
	err = s.registerAll(ctx, insts, o.ttl, func(i int) {
		g := i / gs
		lo, hi := g*gs, min((g+1)*gs, len(insts))
		if counts[g].Add(1) == int32(hi-lo) {
			k.add(insts[lo:hi], g%nt)
		}
	})
	m1 := s.mark()
	s.addPhase("register", m0, m1)
	r.RegisterSeconds = m1.At.Sub(m0.At).Seconds()
	r.RegisterPerSec = float64(len(insts)) / r.RegisterSeconds
	r.DuringRegister = k.take().figures(mode)
	if err != nil {
		return err
	}
	s.logf("liveness: registered in %.1fs; steady for %s", r.RegisterSeconds, o.duration)

	// The measured stretch, with a progress line a minute.
	end := time.Now().Add(o.duration)
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(time.Until(end), time.Minute)):
		}
		falseMu.Lock()
		n := falseSSE
		falseMu.Unlock()
		s.logf("liveness: %s left, %d false expiries so far", time.Until(end).Round(time.Second), n)
	}
	m2 := s.mark()
	s.addPhase("steady", m1, m2)
	r.Series = s.sampler.Series(m1, m2, max(o.duration/10, o.sampleEvery))
	r.Steady = k.take().figures(mode)
	falseMu.Lock()
	r.FalseExpiriesSSE = falseSSE
	falseMu.Unlock()
	r.MonitorEvents = mon.events.Load()
	r.MonitorReconnects = mon.stream.reconnects

	entries, full, err := s.ledger(ctx, 0, "")
	if err != nil {
		s.res.Notes = append(s.res.Notes, "ledger not read: "+err.Error())
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Service, prefix+"-") && e.ExpiredAt.After(s.res.StartedAt) {
			r.FalseExpiriesLedger++
		}
	}
	if full {
		s.res.Notes = append(s.res.Notes, fmt.Sprintf("the ledger held %d or more entries; only the newest %d were checked", ledgerLimit, ledgerLimit))
	}
	if err := mon.stop(); err != nil {
		s.res.Notes = append(s.res.Notes, "expiry monitor: "+err.Error())
	}
	// Deregister while the heartbeats go on: none may expire because the
	// cleanup took longer than a TTL.
	s.deregisterAll(insts)
	k.stopAll()

	st := r.Steady
	s.res.Goals = append(s.res.Goals,
		metGoal("false expiries", "0", fmt.Sprintf("%d (watch stream), %d (ledger); client-side longest gap between renewals %s (TTL %ds)",
			r.FalseExpiriesSSE, r.FalseExpiriesLedger, fmtMs(st.MaxGapMs), o.ttl), r.FalseExpiriesSSE == 0 && r.FalseExpiriesLedger == 0),
		metGoal("heartbeat p99 (per request)", "≤ 100 ms", fmt.Sprintf("p50 %s, p99 %s, max %s over %d %s requests (%.0f instances renewed/s)",
			fmtMs(st.Latency.P50), fmtMs(st.Latency.P99), fmtMs(st.Latency.Max), st.Requests, mode, st.RenewedPerS), st.Latency.P99 <= 100 && st.Requests > 0),
		goal{Name: "server CPU and RSS per member", Goal: "reported", Measured: s.usageLine("steady")},
	)
	if n := sumMap(st.RequestErrors) + sumMap(st.ItemErrors); n > 0 {
		s.res.Notes = append(s.res.Notes, fmt.Sprintf("heartbeat errors in the steady phase: requests %v, items %v", st.RequestErrors, st.ItemErrors))
	}
	return nil
}

func sumMap(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// fmtMs renders milliseconds as the tables do.
func fmtMs(v float64) string { return loadgen.FormatMs(v) }

// usageLine summarises a phase's per-member CPU and RSS.
func (s *scaleRun) usageLine(name string) string {
	for _, p := range s.res.Phases {
		if p.Name != name {
			continue
		}
		var parts []string
		for _, u := range p.Servers {
			if u.Missing {
				parts = append(parts, u.Name+" not measured")
				continue
			}
			parts = append(parts, fmt.Sprintf("%s %.2f cores, RSS %.0f MiB (max %.0f)", u.Name, u.Cores, u.RSSEnd, u.RSSMax))
		}
		parts = append(parts, fmt.Sprintf("tool %.2f cores, RSS %.0f MiB", p.Tool.Cores, p.Tool.RSSMax))
		return strings.Join(parts, "; ")
	}
	return "not measured"
}
