package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regd/regd/internal/loadgen"
)

// fanoutResult is target 2: how long one change takes to reach every one
// of many subscribers, and what a subscriber costs the server in memory.
type fanoutResult struct {
	Watch       string         `json:"watch"` // sse or blocking
	Subscribers int            `json:"subscribers"`
	PerMember   map[string]int `json:"subscribers_per_member"`
	SourceIPs   int            `json:"source_ips"`
	Changes     int            `json:"changes"`
	OpenSeconds float64        `json:"open_seconds"` // to open every stream or send every query
	// Per change: from sending the change (and from its response) to the
	// moment the last subscriber had it; over changes.
	LastFromSend     loadgen.Latency `json:"last_from_send_ms"`
	LastFromResponse loadgen.Latency `json:"last_from_response_ms"`
	// Every delivery, each subscriber and change: from sending the change.
	Every     loadgen.Latency `json:"every_delivery_from_send_ms"`
	PerChange []changeFigure  `json:"per_change"`
	Missed    int64           `json:"missed"`     // deliveries that never came within --change-timeout
	Duplicate int64           `json:"duplicates"` // a change delivered twice to one subscriber
	// Reconnects of SSE streams (each resumed with Last-Event-ID), or
	// blocking queries that came back without the change (wait ended).
	Reconnects int64      `json:"reconnects"`
	RSS        []rssDelta `json:"rss"`
	// RSSPerSubscriberKiB is the largest member's RSS growth per
	// subscriber it holds; ToolRSSPerSubscriberKiB this tool's.
	RSSPerSubscriberKiB     float64 `json:"rss_per_subscriber_kib"`
	ToolRSSPerSubscriberKiB float64 `json:"tool_rss_per_subscriber_kib"`
}

type changeFigure struct {
	Change           int     `json:"change"`
	LastFromSendMs   float64 `json:"last_from_send_ms"`
	LastFromRespMs   float64 `json:"last_from_response_ms"`
	MedianFromSendMs float64 `json:"median_from_send_ms"`
	Delivered        int     `json:"delivered"`
}

type rssDelta struct {
	Member           string  `json:"member"`
	Subscribers      int     `json:"subscribers"`
	BeforeMiB        float64 `json:"before_mib"`
	AfterMiB         float64 `json:"after_mib"`
	PerSubscriberKiB float64 `json:"per_subscriber_kib"`
}

// fanoutState is what the subscribers write and the changes read.
type fanoutState struct {
	subs      int
	arrivals  [][]atomic.Int64 // [change][subscriber] UnixNano, 0 until delivered
	delivered []atomic.Int64
	complete  []chan struct{}
	dups      atomic.Int64
	again     atomic.Int64
}

func newFanoutState(changes, subs int) *fanoutState {
	f := &fanoutState{subs: subs, arrivals: make([][]atomic.Int64, changes), delivered: make([]atomic.Int64, changes), complete: make([]chan struct{}, changes)}
	for k := range f.arrivals {
		f.arrivals[k] = make([]atomic.Int64, subs)
		f.complete[k] = make(chan struct{})
	}
	return f
}

// record notes that subscriber i has change k.
func (f *fanoutState) record(k, i int, at time.Time) {
	if k < 0 || k >= len(f.arrivals) {
		return
	}
	if !f.arrivals[k][i].CompareAndSwap(0, at.UnixNano()) {
		f.dups.Add(1)
		return
	}
	if f.delivered[k].Add(1) == int64(f.subs) {
		close(f.complete[k])
	}
}

// changeIndex reads k from an instance id "c<k>".
func changeIndex(id string) int {
	if len(id) < 2 || id[0] != 'c' {
		return -1
	}
	k, err := strconv.Atoi(id[1:])
	if err != nil {
		return -1
	}
	return k
}

// fanout is target 2: --subscribers SSE streams (or blocking queries) on
// one service spread over --targets, then --changes registrations in that
// service one after the other; for each, the time until the last
// subscriber has it.
func (s *scaleRun) fanout(ctx context.Context) error {
	o := s.o
	svc := fmt.Sprintf("%s-%s-fanout", o.service, s.runID)
	nt := len(o.targets)
	r := &fanoutResult{Watch: o.watchMode, Subscribers: o.subscribers, SourceIPs: o.sourceIPs, Changes: o.changes, PerMember: map[string]int{}}
	s.res.Fanout = r
	s.res.Variant = fmt.Sprintf("%s, %d member(s)", o.watchMode, nt)
	s.res.Smoke = o.subscribers < 10000
	s.res.Params = map[string]any{"subscribers": o.subscribers, "watch": o.watchMode, "changes": o.changes, "change_gap": o.changeGap.String(), "source_ips": o.sourceIPs, "members": nt}
	for i := range o.subscribers {
		r.PerMember[s.res.Members[i%nt]]++
	}
	if lim := s.res.Env.NoFile; lim > 0 && uint64(o.subscribers)+256 > lim {
		return fmt.Errorf("%d subscribers need as many open files, and this process may open %d (ulimit -n; Go raises the soft limit to the hard one): raise the hard limit", o.subscribers, lim)
	}
	f := newFanoutState(o.changes, o.subscribers)

	// The service starts with one instance, so that a list has a body
	// like a real one and the blocking queries have an index.
	seed := &inst{service: svc, id: "seed", addr: address(0)}
	changes := make([]*inst, o.changes)
	for k := range changes {
		changes[k] = &inst{service: svc, id: "c" + strconv.Itoa(k), addr: address(int64(k + 1))}
	}
	defer s.deregisterAll(append([]*inst{seed}, changes...))
	if err := s.registerAll(ctx, []*inst{seed}, s.preTTL(), nil); err != nil {
		return err
	}
	var index int64

	before := s.rssNow()
	m0 := s.mark()
	sctx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	var (
		wg       sync.WaitGroup
		opened   atomic.Int64
		errMu    sync.Mutex
		firstErr error
		allOpen  = make(chan struct{})
		sem      = make(chan struct{}, 256) // connections being opened at once
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
		stopSubs()
	}
	opening := func() {
		if opened.Add(1) == int64(o.subscribers) {
			close(allOpen)
		}
		<-sem
	}
	if o.watchMode == "blocking" {
		b, err := s.request(ctx, http.MethodGet, 0, "/v1/services/"+svc+"/instances", nil, http.StatusOK)
		if err != nil {
			return err
		}
		var l struct {
			Revision int64 `json:"revision"`
		}
		if err := json.Unmarshal(b, &l); err != nil || l.Revision < 1 {
			return fmt.Errorf("list of %s: revision %d (%v)", svc, l.Revision, err)
		}
		index = l.Revision
	}
	s.logf("fanout: opening %d %s subscribers on %d member(s)", o.subscribers, o.watchMode, nt)
	for i := range o.subscribers {
		localIP := ""
		if o.sourceIPs > 1 {
			localIP = "127.0.0." + strconv.Itoa(1+i%o.sourceIPs)
		}
		target := o.targets[i%nt]
		sem <- struct{}{}
		wg.Go(func() {
			var err error
			once := sync.OnceFunc(opening)
			if o.watchMode == "sse" {
				st := &sseStream{addr: target, path: "/v1/services/" + svc + "/watch", localIP: localIP, bufSize: 2 << 10, onOpen: once,
					onEvent: func(e *loadgen.SSEEvent) {
						if string(e.Type) != "register" {
							return
						}
						if id, ok := jsonStringField(e.Data, `"id":"`); ok {
							f.record(changeIndex(id), i, time.Now())
						}
					}}
				err = st.run(sctx)
				f.again.Add(int64(st.reconnects))
			} else {
				err = s.waiter(sctx, target, localIP, svc, index, once, func(k int, at time.Time) {
					for j := 0; j <= k; j++ {
						// A waiter that re-armed late sees several
						// changes in one answer: each is delivered.
						if j == k || f.arrivals[j][i].Load() == 0 {
							f.record(j, i, at)
						}
					}
				}, &f.again)
			}
			once()
			if err != nil && sctx.Err() == nil {
				fail(fmt.Errorf("subscriber %d on %s: %w", i, target, err))
			}
		})
	}
	select {
	case <-allOpen:
	case <-sctx.Done():
	}
	errMu.Lock()
	err := firstErr
	errMu.Unlock()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		stopSubs()
		wg.Wait()
		if errors.Is(err, errOpen) {
			err = fmt.Errorf("%w (regd limits watch streams and blocking queries per client IP, --max-watches-per-client, and connections, --max-conns: start the cluster with both above --subscribers, or spread the subscribers with --source-ips)", err)
		}
		return err
	}
	if o.watchMode == "blocking" {
		// Nothing tells a client that its query is held: give the
		// servers time to take them all.
		settle := 2*time.Second + time.Duration(o.subscribers/2000)*time.Second
		s.logf("fanout: %d blocking queries sent; %s for the servers to hold them all", o.subscribers, settle)
		select {
		case <-time.After(settle):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m1 := s.mark()
	r.OpenSeconds = m1.At.Sub(m0.At).Seconds()
	s.addPhase("open", m0, m1)
	after := s.rssNow()
	s.logf("fanout: all %d subscribers open in %.1fs", o.subscribers, r.OpenSeconds)
	for j, name := range s.res.Members {
		n := r.PerMember[name]
		d := rssDelta{Member: name, Subscribers: n, BeforeMiB: before[j], AfterMiB: after[j]}
		if n > 0 && before[j] > 0 {
			d.PerSubscriberKiB = (after[j] - before[j]) * 1024 / float64(n)
			r.RSSPerSubscriberKiB = max(r.RSSPerSubscriberKiB, d.PerSubscriberKiB)
		}
		r.RSS = append(r.RSS, d)
	}
	if tb, ta := before[len(before)-1], after[len(after)-1]; tb > 0 {
		r.ToolRSSPerSubscriberKiB = (ta - tb) * 1024 / float64(o.subscribers)
	}

	// The changes, one at a time.
	var lastSend, lastResp, every []time.Duration
	for k, in := range changes {
		sent := time.Now()
		if _, err := s.request(ctx, http.MethodPut, k%nt, "/v1/services/"+svc+"/instances/"+in.id, regBody(in.addr, s.preTTL()), http.StatusCreated, http.StatusOK); err != nil {
			return fmt.Errorf("change %d: %w", k, err)
		}
		resp := time.Now()
		select {
		case <-f.complete[k]:
		case <-time.After(o.changeTimeout):
		case <-sctx.Done():
		}
		errMu.Lock()
		err := firstErr
		errMu.Unlock()
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var last int64
		var ds []time.Duration
		for i := range f.arrivals[k] {
			at := f.arrivals[k][i].Load()
			if at == 0 {
				continue
			}
			last = max(last, at)
			d := time.Duration(at - sent.UnixNano())
			ds = append(ds, d)
			every = append(every, d)
		}
		cf := changeFigure{Change: k, Delivered: len(ds)}
		if last > 0 {
			ls, lr := time.Duration(last-sent.UnixNano()), time.Duration(last-resp.UnixNano())
			lastSend, lastResp = append(lastSend, ls), append(lastResp, lr)
			slices.Sort(ds)
			cf.LastFromSendMs, cf.LastFromRespMs = float64(ls)/1e6, float64(lr)/1e6
			cf.MedianFromSendMs = float64(loadgen.NearestRank(ds, 0.5)) / 1e6
		}
		r.PerChange = append(r.PerChange, cf)
		r.Missed += int64(o.subscribers - len(ds))
		s.logf("fanout: change %d reached %d of %d subscribers, the last %.1f ms after it was sent", k, len(ds), o.subscribers, cf.LastFromSendMs)
		select {
		case <-time.After(o.changeGap):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m2 := s.mark()
	s.addPhase("changes", m1, m2)
	stopSubs()
	wg.Wait()
	r.LastFromSend, r.LastFromResponse, r.Every = loadgen.Exact(lastSend), loadgen.Exact(lastResp), loadgen.Exact(every)
	r.Duplicate, r.Reconnects = f.dups.Load(), f.again.Load()

	where := "on one member"
	if nt > 1 {
		where = fmt.Sprintf("spread over %d members", nt)
	}
	s.res.Goals = append(s.res.Goals,
		metGoal(fmt.Sprintf("change → last of %d %s subscribers %s, p99 over %d changes", o.subscribers, o.watchMode, where, o.changes), "≤ 1 s",
			fmt.Sprintf("p50 %s, p99 %s, max %s (from the change's response: p99 %s); %d missed, %d duplicates",
				fmtMs(r.LastFromSend.P50), fmtMs(r.LastFromSend.P99), fmtMs(r.LastFromSend.Max), fmtMs(r.LastFromResponse.P99), r.Missed, r.Duplicate),
			r.Missed == 0 && r.LastFromSend.P99 <= 1000),
		metGoal("server RSS per subscriber", "≤ 20 KiB", fmt.Sprintf("%.1f KiB (largest member); the tool: %.1f KiB", r.RSSPerSubscriberKiB, r.ToolRSSPerSubscriberKiB),
			r.RSSPerSubscriberKiB > 0 && r.RSSPerSubscriberKiB <= 20),
	)
	return nil
}

// rssNow is every sampled process's RSS in MiB (servers in member order,
// then the tool; 0 when not measured), the median of three samples 200 ms
// apart: a Go heap grows in steps, one sample may catch a collection half
// done.
func (s *scaleRun) rssNow() []float64 {
	var marks []loadgen.Mark
	for i := range 3 {
		if i > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		marks = append(marks, s.mark())
	}
	out := make([]float64, len(s.res.Members)+1)
	for j := range out {
		var vs []float64
		for _, m := range marks {
			if u := s.sampler.Usage(m, m)[j]; !u.Missing {
				vs = append(vs, u.RSSEnd)
			}
		}
		if len(vs) > 0 {
			slices.Sort(vs)
			out[j] = vs[len(vs)/2]
		}
	}
	return out
}

// waiter is one blocking-query subscriber: it holds GET
// .../instances?index=N&wait=60s on its own connection, and when the answer
// comes, reads which changes it holds and asks again from the answer's
// revision.
func (s *scaleRun) waiter(ctx context.Context, target, localIP, svc string, index int64, opened func(), got func(k int, at time.Time), again *atomic.Int64) error {
	// One connection of its own, kept alive from one query to the next;
	// the run's end closes it.
	c := loadgen.NewClient(target, localIP, 1, 4<<10, 90*time.Second).CloseOnCancel()
	defer c.Close()
	first := true
	for ctx.Err() == nil {
		if first {
			// The query is on its way once Do sends it; a refusal below
			// still fails the open.
			opened()
		}
		var at time.Time
		var rev int64
		err := c.Do(ctx, http.MethodGet, "/v1/services/"+svc+"/instances?index="+strconv.FormatInt(index, 10)+"&wait=60s", nil, nil, func(r *loadgen.Reply) error {
			at = time.Now()
			if r.Status != http.StatusOK {
				return statusErr(r.Status, r.Body)
			}
			rev, _ = strconv.ParseInt(string(r.Header("X-Regd-Revision")), 10, 64)
			if n := countField(r.Body, `"id":"c`); n > 0 {
				got(n-1, at)
			}
			return nil
		})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if first || index == 0 {
				return fmt.Errorf("%w %s: %w", errOpen, target, err)
			}
			return err
		}
		first = false
		if rev <= index {
			again.Add(1) // the wait ended without a change
		}
		index = max(index, rev)
	}
	return nil
}
