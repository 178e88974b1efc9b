package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regd/regd/internal/loadgen"
)

// expiryResult is target 3: many instances stop heartbeating at once.
type expiryResult struct {
	Instances int    `json:"instances"`
	Services  int    `json:"services"`
	Others    int    `json:"others"`
	TTL       int    `json:"ttl"`
	Interval  string `json:"interval"`
	Mode      string `json:"heartbeat_mode"`

	RegisterSeconds float64 `json:"register_seconds"`
	// From the moment the last heartbeat of the stopped instances was
	// answered: to the last expire event on the watch stream, to the
	// latest expired_at in the ledger; and the bound, TTL + 2 min.
	AllReportedSSESeconds    float64 `json:"all_reported_sse_seconds"`
	AllReportedLedgerSeconds float64 `json:"all_reported_ledger_seconds"`
	// AllReportedMetricSeconds is when the members' regd_expirations_total
	// for these services first summed to --instances (polled every second):
	// the reports were durable then. MetricReported is the last sum.
	AllReportedMetricSeconds float64 `json:"all_reported_metric_seconds"`
	MetricReported           int64   `json:"metric_reported"`
	reportedAt               time.Time
	BoundSeconds             float64 `json:"bound_seconds"`
	// ReportsPerSec is the reports' rate between the first and the last.
	ReportsPerSec float64 `json:"reports_per_sec"`

	// Exactly once, per instance, as the watch stream (/v1/watch, one
	// stream, resumed with Last-Event-ID if it broke) and the ledger
	// (GET /v1/expirations?service=..., per service) saw it.
	SSEReported     int64    `json:"sse_reported"`
	SSEDuplicates   int64    `json:"sse_duplicates"`
	SSEMissing      int64    `json:"sse_missing"`
	LedgerReported  int64    `json:"ledger_reported"`
	LedgerDuplicate int64    `json:"ledger_duplicates"`
	LedgerMissing   int64    `json:"ledger_missing"`
	LedgerCut       []string `json:"ledger_cut,omitempty"` // services whose answer hit the limit
	// Instances of other services (kept alive) reported expired.
	OthersExpiredSSE    int64 `json:"others_expired_sse"`
	OthersExpiredLedger int64 `json:"others_expired_ledger"`
	// Expiry lag: deadline (the client's last successful renewal + TTL) →
	// report (expired_at in the ledger; the event's arrival on the stream).
	// With reported_at in the entries, the ledger's lag ends there (the
	// report written) instead of at expired_at (the deletion taken up).
	LagLedger loadgen.Latency `json:"lag_ledger_ms"`
	LagSSE    loadgen.Latency `json:"lag_sse_ms"`
	// LagServer is the server's own measure, reported_at − deadline of
	// each entry (what regd_expiry_lag_seconds counts), over the entries
	// that carry both; ServerDeadlineSkew is the entry's deadline minus
	// the client's (last renewal + TTL): how well the two agree.
	LagServer          *loadgen.Latency `json:"lag_server_ms,omitempty"`
	ServerLagEntries   int64            `json:"server_lag_entries,omitempty"`
	ServerDeadlineSkew *loadgen.Latency `json:"server_deadline_skew_ms,omitempty"`
	ReportedBy         map[string]int64 `json:"reported_by"`
	// Meanwhile: REST reads (list of an other service) and single
	// heartbeats of other instances, closed loop at --concurrency, and
	// the keeper's renewals of the others.
	Probe        *loadgen.Stats   `json:"probe"`
	OthersKeeper heartbeatFigures `json:"others_heartbeats"`
	// MonitorReconnects: the watch stream broke and was resumed.
	MonitorReconnects int `json:"monitor_reconnects"`
}

// expiry is target 3: --instances instances (and --others in other
// services) are registered and kept alive; after --hold, the first stop
// heartbeating at once. It waits (at most --expiry-wait) until every one
// was reported, measuring meanwhile REST reads and heartbeats of the
// others, then checks every report against the ledger.
func (s *scaleRun) expiry(ctx context.Context) error {
	o := s.o
	mode, err := s.resolveMode(ctx)
	if err != nil {
		return err
	}
	gs := min(o.batchSize, maxBatch)
	nt := len(o.targets)
	prefix := fmt.Sprintf("%s-%s-exp", o.service, s.runID)
	dPrefix, oPrefix := prefix+"-d", prefix+"-o"
	otherSvcs := max(1, (o.others+99)/100)
	r := &expiryResult{Instances: o.instances, Services: o.services, Others: o.others, TTL: o.ttl, Interval: o.interval.String(), Mode: mode,
		BoundSeconds: float64(o.ttl + 120), ReportedBy: map[string]int64{}}
	s.res.Expiry = r
	s.res.Variant = mode + " heartbeats"
	s.res.Smoke = o.instances < 100000 || len(o.targets) < 3
	s.res.Params = map[string]any{"instances": o.instances, "services": o.services, "others": o.others, "other_services": otherSvcs, "ttl": o.ttl,
		"interval": o.interval.String(), "hold": o.hold.String(), "heartbeat_mode": mode, "probe_concurrency": o.concurrency, "expiry_wait": o.expiryWait.String()}

	// Others first, then the doomed; groups never mix the two.
	all := make([]*inst, 0, o.others+o.instances)
	for j := range o.others {
		all = append(all, &inst{service: oPrefix + strconv.Itoa(j%otherSvcs), id: "o" + strconv.Itoa(j), addr: address(int64(j))})
	}
	for i := range o.instances {
		all = append(all, &inst{service: dPrefix + strconv.Itoa(i%o.services), id: "i" + strconv.Itoa(i), addr: address(int64(o.others + i))})
	}
	others, doomed := all[:o.others], all[o.others:]
	type span struct{ lo, hi int }
	var spans []span
	groupOf := make([]int32, len(all))
	for _, part := range []span{{0, o.others}, {o.others, len(all)}} {
		for lo := part.lo; lo < part.hi; lo += gs {
			sp := span{lo, min(lo+gs, part.hi)}
			for i := sp.lo; i < sp.hi; i++ {
				groupOf[i] = int32(len(spans))
			}
			spans = append(spans, sp)
		}
	}
	k := newKeeper(ctx, s, mode, o.interval, len(spans))
	defer k.stopAll()
	groups := make([]*hbGroup, len(spans))
	var gmu sync.Mutex
	counts := make([]atomic.Int32, len(spans))
	cleaned := false
	defer func() {
		if !cleaned {
			s.deregisterAll(others)
		}
	}()

	s.logf("expiry: registering %d instances in %d services and %d others (TTL %ds), %s heartbeats every %s", o.instances, o.services, o.others, o.ttl, mode, o.interval)
	m0 := s.mark()
	err = s.registerAll(ctx, all, o.ttl, func(i int) {
		g := groupOf[i]
		sp := spans[g]
		if counts[g].Add(1) == int32(sp.hi-sp.lo) {
			grp := k.add(all[sp.lo:sp.hi], int(g)%nt)
			gmu.Lock()
			groups[g] = grp
			gmu.Unlock()
		}
	})
	m1 := s.mark()
	s.addPhase("register", m0, m1)
	r.RegisterSeconds = m1.At.Sub(m0.At).Seconds()
	if err != nil {
		return err
	}

	// Every expire event from here on, per doomed instance.
	var (
		sseAt    = make([]int64, len(doomed)) // first arrival, UnixNano
		sseCount = make([]int32, len(doomed))
		distinct atomic.Int64
		allSeen  = make(chan struct{})
		others0  int64
	)
	mon, err := s.startExpiryMonitor(ctx, 0, func(service, id string, at time.Time) {
		switch {
		case strings.HasPrefix(service, dPrefix):
			i, err := strconv.Atoi(strings.TrimPrefix(id, "i"))
			if err != nil || i < 0 || i >= len(doomed) || doomed[i].service != service {
				return
			}
			if sseCount[i]++; sseCount[i] == 1 {
				sseAt[i] = at.UnixNano()
				if distinct.Add(1) == int64(len(doomed)) {
					close(allSeen)
				}
			}
		case strings.HasPrefix(service, oPrefix):
			others0++
		}
	})
	if err != nil {
		return err
	}
	defer mon.stop()

	s.logf("expiry: registered in %.1fs; holding for %s", r.RegisterSeconds, o.hold)
	select {
	case <-time.After(o.hold):
	case <-ctx.Done():
		return ctx.Err()
	}
	m2 := s.mark()
	s.addPhase("hold", m1, m2)
	k.take()

	// Stop the doomed groups' heartbeats at once, and wait for their
	// last requests: each instance's last renewal is then known.
	gmu.Lock()
	var doomedGroups []*hbGroup
	for g, sp := range spans {
		if sp.lo >= o.others {
			doomedGroups = append(doomedGroups, groups[g])
		}
	}
	gmu.Unlock()
	for _, g := range doomedGroups {
		g.once.Do(func() { close(g.stopc) })
	}
	for _, g := range doomedGroups {
		<-g.done
	}
	stopped := time.Now()
	deadline := make([]int64, len(doomed))
	var lastDeadline int64
	for i, in := range doomed {
		deadline[i] = in.lastOK.Load() + int64(o.ttl)*int64(time.Second)
		lastDeadline = max(lastDeadline, deadline[i])
	}
	s.logf("expiry: heartbeats of %d instances stopped; the last deadline is %.1fs from now", len(doomed), time.Until(time.Unix(0, lastDeadline)).Seconds())

	// Reads and heartbeats of the others until every report is in.
	pctx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	var probeRes *loadgen.Result
	var probeWG sync.WaitGroup
	kinds := []string{"list", "heartbeat"}
	probeWG.Go(func() {
		probeRes, _ = loadgen.Run(pctx, loadgen.Config{Concurrency: o.concurrency, Duration: o.expiryWait, Kinds: kinds}, func(ctx context.Context, _ int, seq int64) (int, error) {
			t := int(seq % int64(nt))
			if seq%2 == 0 {
				_, err := s.request(ctx, http.MethodGet, t, "/v1/services/"+oPrefix+strconv.Itoa(int(seq/2)%otherSvcs)+"/instances", nil, http.StatusOK)
				return 0, err
			}
			in := others[int(seq/2)%len(others)]
			_, err := s.request(ctx, http.MethodPut, t, "/v1/services/"+in.service+"/instances/"+in.id+"/heartbeat", nil, http.StatusOK)
			return 1, err
		})
	})
	// Done when the stream has shown every expiry and the members'
	// regd_expirations_total counts every report (the leader's report is
	// what the contract promises; the stream's expire event comes from a
	// member's view and may come first).
	timedOut := false
	waitEnd := stopped.Add(o.expiryWait)
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	metricsOK := true
	lastLog := time.Now()
	for {
		sseDone := distinct.Load() == int64(len(doomed))
		if sseDone && (!r.reportedAt.IsZero() || !metricsOK) {
			break
		}
		select {
		case <-poll.C:
		case <-time.After(time.Until(waitEnd)):
			timedOut = true
		case <-ctx.Done():
		}
		if timedOut || ctx.Err() != nil {
			break
		}
		if metricsOK {
			n, err := s.reportsOf(ctx, dPrefix)
			if err != nil {
				metricsOK = false
				s.res.Notes = append(s.res.Notes, "reports not counted from /metrics ("+err.Error()+"): the run waited for the watch stream only")
			} else {
				r.MetricReported = n
				if n >= int64(len(doomed)) && r.reportedAt.IsZero() {
					r.reportedAt = time.Now()
					r.AllReportedMetricSeconds = r.reportedAt.Sub(stopped).Seconds()
				}
			}
		}
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			s.logf("expiry: %.0fs after the stop: %d of %d reported (regd_expirations_total), %d seen on the watch stream", time.Since(stopped).Seconds(), r.MetricReported, len(doomed), distinct.Load())
		}
	}
	// A short while more for duplicates, still under the probe load.
	if !timedOut && ctx.Err() == nil {
		select {
		case <-time.After(3 * time.Second):
		case <-ctx.Done():
		}
	}
	stopProbe()
	probeWG.Wait()
	m3 := s.mark()
	s.addPhase("expiry", m2, m3)
	r.OthersKeeper = k.take().figures(mode)
	// The others go while their heartbeats still run: none may expire
	// because the cleanup took longer than a TTL.
	s.deregisterAll(others)
	cleaned = true
	k.stopAll()
	if err := mon.stop(); err != nil {
		s.res.Notes = append(s.res.Notes, "expiry monitor: "+err.Error())
	}
	r.MonitorReconnects = mon.stream.reconnects
	if probeRes != nil {
		r.Probe = loadgen.FromResult(probeRes, kinds)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	// The watch stream's view.
	var sseLags []time.Duration
	var lastSSE, firstSSE int64
	for i := range doomed {
		switch c := sseCount[i]; {
		case c == 0:
			r.SSEMissing++
			continue
		case c > 1:
			r.SSEDuplicates += int64(c - 1)
		}
		r.SSEReported++
		sseLags = append(sseLags, time.Duration(sseAt[i]-deadline[i]))
		lastSSE = max(lastSSE, sseAt[i])
		if firstSSE == 0 || sseAt[i] < firstSSE {
			firstSSE = sseAt[i]
		}
	}
	r.OthersExpiredSSE = others0
	r.LagSSE = loadgen.Exact(sseLags)
	if lastSSE > 0 {
		r.AllReportedSSESeconds = time.Duration(lastSSE - stopped.UnixNano()).Seconds()
	}

	// The ledger's view, service by service.
	var services []string
	for j := range o.services {
		services = append(services, dPrefix+strconv.Itoa(j))
	}
	for j := range otherSvcs {
		services = append(services, oPrefix+strconv.Itoa(j))
	}
	ledger, cut, lerr := s.ledgerOf(ctx, services)
	if lerr != nil {
		s.res.Notes = append(s.res.Notes, "ledger: "+lerr.Error())
	}
	r.LedgerCut = cut
	seen := make([]int32, len(doomed))
	var ledgerLags, serverLags, skews []time.Duration
	var lastLedger, firstLedger time.Time
	for svc, es := range ledger {
		for _, e := range es {
			if strings.HasPrefix(svc, oPrefix) {
				r.OthersExpiredLedger++
				continue
			}
			i, err := strconv.Atoi(strings.TrimPrefix(e.ID, "i"))
			if err != nil || i < 0 || i >= len(doomed) || doomed[i].service != e.Service {
				continue
			}
			if seen[i]++; seen[i] > 1 {
				r.LedgerDuplicate++
				continue
			}
			r.ReportedBy[e.ReportedBy]++
			at := e.ExpiredAt
			if e.ReportedAt != nil {
				at = *e.ReportedAt
			}
			ledgerLags = append(ledgerLags, at.Sub(time.Unix(0, deadline[i])))
			if e.ReportedAt != nil && e.Deadline != nil {
				serverLags = append(serverLags, e.ReportedAt.Sub(*e.Deadline))
				skews = append(skews, e.Deadline.Sub(time.Unix(0, deadline[i])))
			}
			if at.After(lastLedger) {
				lastLedger = at
			}
			if firstLedger.IsZero() || at.Before(firstLedger) {
				firstLedger = at
			}
		}
	}
	for i := range doomed {
		if seen[i] > 0 {
			r.LedgerReported++
		} else {
			r.LedgerMissing++
		}
	}
	r.LagLedger = loadgen.Exact(ledgerLags)
	if len(serverLags) > 0 {
		l, k := loadgen.Exact(serverLags), loadgen.Exact(skews)
		r.LagServer, r.ServerDeadlineSkew, r.ServerLagEntries = &l, &k, int64(len(serverLags))
	}
	if !lastLedger.IsZero() {
		r.AllReportedLedgerSeconds = lastLedger.Sub(stopped).Seconds()
		if d := lastLedger.Sub(firstLedger).Seconds(); d > 0 {
			r.ReportsPerSec = float64(r.LedgerReported) / d
		}
	}
	if r.LedgerMissing > 0 {
		s.res.Notes = append(s.res.Notes, fmt.Sprintf("%d instances are not in the ledger: if the watch stream saw them, the ledger's retention (--expiry-retention, default 10000) is below --instances", r.LedgerMissing))
	}
	if timedOut {
		s.res.Notes = append(s.res.Notes, fmt.Sprintf("stopped waiting after --expiry-wait %s with %d of %d reported (regd_expirations_total) and %d seen on the watch stream", o.expiryWait, r.MetricReported, len(doomed), distinct.Load()))
	}

	once := r.SSEMissing == 0 && r.SSEDuplicates == 0 && r.LedgerMissing == 0 && r.LedgerDuplicate == 0 && r.OthersExpiredSSE == 0 && r.OthersExpiredLedger == 0
	allIn := max(r.AllReportedSSESeconds, r.AllReportedLedgerSeconds, r.AllReportedMetricSeconds)
	s.res.Goals = append(s.res.Goals,
		metGoal("every instance reported exactly once", "all, once; none of the others",
			fmt.Sprintf("watch stream %d/%d (%d twice); ledger %d/%d (%d twice); others reported %d/%d", r.SSEReported, len(doomed), r.SSEDuplicates,
				r.LedgerReported, len(doomed), r.LedgerDuplicate, r.OthersExpiredSSE, r.OthersExpiredLedger), once),
		metGoal("all reported, from the stop", fmt.Sprintf("≤ TTL + 2 min = %ds", o.ttl+120),
			fmt.Sprintf("%.1f s (reports counted by regd_expirations_total %.1f s, latest expired_at in the ledger %.1f s, watch stream %.1f s; %.0f reports/s)",
				allIn, r.AllReportedMetricSeconds, r.AllReportedLedgerSeconds, r.AllReportedSSESeconds, r.ReportsPerSec),
			!timedOut && r.SSEMissing == 0 && r.LedgerMissing == 0 && allIn <= r.BoundSeconds),
	)
	if p := r.Probe; p != nil {
		l, h := p.ByOp["list"], p.ByOp["heartbeat"]
		s.res.Goals = append(s.res.Goals, metGoal("REST p99 of other instances meanwhile", "< 1 s",
			fmt.Sprintf("reads p99 %s (%d, errors %s), heartbeats p99 %s (%d, errors %s); the keeper's %s renewals of the others p99 %s",
				fmtMs(l.Latency.P99), l.Ops, l.ErrorString(), fmtMs(h.Latency.P99), h.Ops, h.ErrorString(), r.OthersKeeper.Mode, fmtMs(r.OthersKeeper.Latency.P99)),
			l.Ops > 0 && h.Ops > 0 && l.Latency.P99 < 1000 && h.Latency.P99 < 1000 && l.TotalErrors() == 0 && h.TotalErrors() == 0))
	}
	server := "the server reports no deadlines (regd_expiry_lag_seconds needs issue 17's ledger fields)"
	if l := r.LagServer; l != nil {
		server = fmt.Sprintf("server (reported_at − the lessor's deadline, regd_expiry_lag_seconds) p50 %s, p99 %s, max %s over %d entries",
			fmtMs(l.P50), fmtMs(l.P99), fmtMs(l.Max), r.ServerLagEntries)
	}
	s.res.Goals = append(s.res.Goals, goal{Name: "expiry lag, deadline → report", Goal: "summarised, and a server histogram metric",
		Measured: fmt.Sprintf("%s; client's deadline → ledger p50 %s, p99 %s, max %s; → watch stream p50 %s, p99 %s, max %s",
			server, fmtMs(r.LagLedger.P50), fmtMs(r.LagLedger.P99), fmtMs(r.LagLedger.Max), fmtMs(r.LagSSE.P50), fmtMs(r.LagSSE.P99), fmtMs(r.LagSSE.Max))})
	return nil
}
