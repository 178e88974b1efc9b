package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/regd/regd/internal/loadgen"
)

// Heartbeat modes: batch is PUT /v1/heartbeats (contract v2, up to 1,000
// instances a request), single is PUT .../instances/{id}/heartbeat.
const (
	modeBatch  = "batch"
	modeSingle = "single"
	modeAuto   = "auto"
)

// maxBatch is the contract's limit of instances per batch heartbeat.
const maxBatch = 1000

// keeper keeps instances alive the way an agent or sidecar would: in
// groups (one batch request each, or one request per instance), each group
// renewed every interval on its own schedule, the groups' schedules spread
// evenly over the interval. It records per request latency and errors, and
// per instance the time of its last successful renewal (the moment the
// client had the answer), from which expiry deadlines are computed.
type keeper struct {
	ctx      context.Context
	s        *scaleRun
	mode     string
	interval time.Duration
	slots    int // expected number of groups: the schedule's slots
	base     time.Time
	jobs     chan hbJob // single mode: one heartbeat each
	workers  sync.WaitGroup

	stopOnce sync.Once

	mu    sync.Mutex
	st    *hbStats
	group []*hbGroup
	wg    sync.WaitGroup
}

// hbStats are the keeper's figures since the last take.
type hbStats struct {
	since    time.Time
	lat      *loadgen.Histogram // per request
	requests int64
	items    int64            // instances renewed
	reqErrs  map[string]int64 // failed requests, by class
	itemErrs map[string]int64 // batch items refused, by error code
	samples  map[string]string
	late     int64 // rounds sent more than a quarter interval after their time
	maxGap   time.Duration
}

func newHBStats() *hbStats {
	return &hbStats{since: time.Now(), lat: loadgen.NewHistogram(), reqErrs: map[string]int64{}, itemErrs: map[string]int64{}, samples: map[string]string{}}
}

// hbGroup is one group of instances renewed together.
type hbGroup struct {
	k      *keeper
	n      int
	insts  []*inst
	target int
	body   []byte // batch mode: the request body
	stopc  chan struct{}
	done   chan struct{}
	once   sync.Once
}

type hbJob struct {
	g  *hbGroup
	in *inst
	wg *sync.WaitGroup
}

func newKeeper(ctx context.Context, s *scaleRun, mode string, interval time.Duration, expectedGroups int) *keeper {
	k := &keeper{ctx: ctx, s: s, mode: mode, interval: interval, slots: max(expectedGroups, 1), base: time.Now(), st: newHBStats()}
	if mode == modeSingle {
		k.jobs = make(chan hbJob, 4*s.o.regConc)
		for range s.o.regConc {
			k.workers.Go(func() {
				for j := range k.jobs {
					j.g.single(j.in)
					j.wg.Done()
				}
			})
		}
	}
	return k
}

// add starts keeping insts alive: the first renewal comes between half and
// one and a half intervals from now, in the group's slot of the schedule.
func (k *keeper) add(insts []*inst, target int) *hbGroup {
	k.mu.Lock()
	g := &hbGroup{k: k, n: len(k.group), insts: insts, target: target, stopc: make(chan struct{}), done: make(chan struct{})}
	k.group = append(k.group, g)
	k.mu.Unlock()
	now := time.Now()
	for _, in := range insts {
		in.lastOK.Store(now.UnixNano()) // registered just now
	}
	if k.mode == modeBatch {
		g.body = batchBody(insts)
	}
	offset := time.Duration(int64(k.interval) * int64(g.n%k.slots) / int64(k.slots))
	first := k.base.Add(offset)
	for first.Before(now.Add(k.interval / 2)) {
		first = first.Add(k.interval)
	}
	k.wg.Go(func() { g.loop(k.ctx, first) })
	return g
}

func batchBody(insts []*inst) []byte {
	b := make([]byte, 0, 64*len(insts))
	b = append(b, `{"instances":[`...)
	for i, in := range insts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"service":"`...)
		b = append(b, in.service...)
		b = append(b, `","id":"`...)
		b = append(b, in.id...)
		b = append(b, `"}`...)
	}
	return append(b, "]}"...)
}

// stop ends the group's renewals and waits until its last one is done, so
// every instance's last renewal is known.
func (g *hbGroup) stop() {
	g.once.Do(func() { close(g.stopc) })
	<-g.done
}

// stopAll stops every group and the workers; it may be called more than
// once, and no group may be added after it.
func (k *keeper) stopAll() {
	k.stopOnce.Do(func() {
		k.mu.Lock()
		groups := k.group
		k.mu.Unlock()
		for _, g := range groups {
			g.once.Do(func() { close(g.stopc) })
		}
		k.wg.Wait()
		if k.jobs != nil {
			close(k.jobs)
			k.workers.Wait()
		}
	})
}

func (g *hbGroup) loop(ctx context.Context, next time.Time) {
	defer close(g.done)
	t := time.NewTimer(time.Until(next))
	defer t.Stop()
	for {
		select {
		case <-g.stopc:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := time.Now(); now.Sub(next) > g.k.interval/4 {
			g.k.mu.Lock()
			g.k.st.late++
			g.k.mu.Unlock()
		}
		if g.k.mode == modeBatch {
			g.batch(ctx)
		} else {
			var wg sync.WaitGroup
			for _, in := range g.insts {
				wg.Add(1)
				select {
				case g.k.jobs <- hbJob{g, in, &wg}:
				case <-g.stopc:
					wg.Done()
				}
			}
			wg.Wait()
		}
		next = next.Add(g.k.interval)
		if d := time.Until(next); d > 0 {
			t.Reset(d)
		} else {
			// Behind schedule: go on at once, from now.
			next = time.Now()
			t.Reset(0)
		}
	}
}

// renewed records a successful renewal of in at time at.
func (k *keeper) renewed(in *inst, at int64, maxGap *time.Duration) {
	prev := in.lastOK.Swap(at)
	if gap := time.Duration(at - prev); gap > *maxGap {
		*maxGap = gap
	}
}

// batchResult is one item of PUT /v1/heartbeats' answer.
type batchResult struct {
	Service string `json:"service"`
	ID      string `json:"id"`
	Error   *struct {
		Code string `json:"code"`
	} `json:"error"`
}

func (g *hbGroup) batch(ctx context.Context) {
	k := g.k
	start := time.Now()
	var (
		status int
		body   []byte
	)
	err := k.s.rest.do(ctx, http.MethodPut, "http://"+k.s.o.targets[g.target]+"/v1/heartbeats", g.body, func(st int, b []byte) error {
		status = st
		if st != http.StatusOK {
			return statusErr(st, b)
		}
		// The common answer has no error at all: no decoding.
		if bytes.Contains(b, []byte(`"error"`)) {
			body = append(body, b...)
		}
		return nil
	})
	end := time.Now()
	if ctx.Err() != nil {
		return
	}
	var gap time.Duration
	failed := map[string]int64{}
	renewed := 0
	switch {
	case err != nil:
	case body == nil:
		for _, in := range g.insts {
			k.renewed(in, end.UnixNano(), &gap)
		}
		renewed = len(g.insts)
	default:
		var r struct {
			Results []batchResult `json:"results"`
		}
		if derr := json.Unmarshal(body, &r); derr != nil || len(r.Results) != len(g.insts) {
			err = fmt.Errorf("batch answer with %d results for %d instances (%v)", len(r.Results), len(g.insts), derr)
			break
		}
		for i, res := range r.Results {
			if res.Error != nil {
				failed[res.Error.Code]++
				continue
			}
			k.renewed(g.insts[i], end.UnixNano(), &gap)
			renewed++
		}
	}
	class := ""
	if err != nil {
		class = loadgen.Classify(err)
		if status == http.StatusNotFound || status == http.StatusMethodNotAllowed {
			class = "no_batch_endpoint"
		}
	}
	k.account(err, class, end.Sub(start), int64(renewed), failed, gap)
}

// account adds one request's outcome to the figures: a failed request
// (err, counted under class), or its latency, the instances it renewed,
// the items it failed by error code and the longest renewal gap it ended.
func (k *keeper) account(err error, class string, d time.Duration, renewed int64, failed map[string]int64, gap time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.st
	st.requests++
	if err != nil {
		st.reqErrs[class]++
		st.samples[class] = err.Error()
		return
	}
	st.lat.Record(d)
	st.items += renewed
	for c, n := range failed {
		st.itemErrs[c] += n
	}
	st.maxGap = max(st.maxGap, gap)
}

func (g *hbGroup) single(in *inst) {
	k := g.k
	ctx := k.ctx
	start := time.Now()
	_, err := k.s.request(ctx, http.MethodPut, g.target, "/v1/services/"+in.service+"/instances/"+in.id+"/heartbeat", nil, http.StatusOK)
	end := time.Now()
	var gap time.Duration
	if err == nil {
		k.renewed(in, end.UnixNano(), &gap)
		k.account(nil, "", end.Sub(start), 1, nil, gap)
		return
	}
	if se := (*loadgen.StatusError)(nil); errors.As(err, &se) && se.Code == http.StatusNotFound {
		// The instance is unknown: it expired, as a batch item's
		// not_found would say. The request itself worked.
		k.account(nil, "", end.Sub(start), 0, map[string]int64{"not_found": 1}, 0)
		return
	}
	k.account(err, loadgen.Classify(err), 0, 0, nil, 0)
}

// take returns the figures since the last take and starts new ones.
func (k *keeper) take() *hbStats {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.st
	k.st = newHBStats()
	return st
}

// heartbeatFigures is hbStats as reported.
type heartbeatFigures struct {
	Mode          string            `json:"mode"`
	Seconds       float64           `json:"seconds"`
	Requests      int64             `json:"requests"`
	RequestsPerS  float64           `json:"requests_per_sec"`
	Renewed       int64             `json:"instances_renewed"`
	RenewedPerS   float64           `json:"instances_renewed_per_sec"`
	Latency       loadgen.Latency   `json:"latency_ms"` // per request
	RequestErrors map[string]int64  `json:"request_errors"`
	ItemErrors    map[string]int64  `json:"item_errors"`
	ErrorSamples  map[string]string `json:"error_samples,omitempty"`
	Late          int64             `json:"late_rounds"`
	// MaxGapMs is the longest time between two successful renewals of one
	// instance, as the client saw them: below the TTL, an expiry is the
	// server's doing, not the client's.
	MaxGapMs float64 `json:"max_gap_ms"`
}

func (st *hbStats) figures(mode string) heartbeatFigures {
	secs := time.Since(st.since).Seconds()
	s := loadgen.Summarize(st.lat, nil, 0)
	f := heartbeatFigures{
		Mode: mode, Seconds: secs, Requests: st.requests, Renewed: st.items,
		Latency: s.Latency, RequestErrors: st.reqErrs, ItemErrors: st.itemErrs,
		Late: st.late, MaxGapMs: float64(st.maxGap) / 1e6,
	}
	if len(st.samples) > 0 {
		f.ErrorSamples = st.samples
	}
	if secs > 0 {
		f.RequestsPerS = float64(st.requests) / secs
		f.RenewedPerS = float64(st.items) / secs
	}
	return f
}

// resolveMode turns --heartbeat-mode auto into batch or single by asking
// the server for a batch heartbeat of one unknown instance: a server with
// the endpoint answers 200 with a per-item not_found; one without answers
// 404 or 405 for the route.
func (s *scaleRun) resolveMode(ctx context.Context) (string, error) {
	mode := s.o.hbMode
	if mode != modeAuto && mode != modeBatch {
		return mode, nil
	}
	body := []byte(`{"instances":[{"service":"` + s.o.service + `-probe","id":"` + s.runID + `"}]}`)
	b, err := s.request(ctx, http.MethodPut, 0, "/v1/heartbeats", body, http.StatusOK)
	if err == nil && bytes.Contains(b, []byte(`"results"`)) {
		return modeBatch, nil
	}
	if mode == modeBatch {
		return "", fmt.Errorf("--heartbeat-mode batch, but PUT /v1/heartbeats does not work on %s: %v", s.o.targets[0], err)
	}
	s.res.Notes = append(s.res.Notes, fmt.Sprintf("heartbeat mode: single heartbeats, because PUT /v1/heartbeats (contract v2) answered %v on %s: the batch endpoint is not built on this server", err, s.o.targets[0]))
	return modeSingle, nil
}
