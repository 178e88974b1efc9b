package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regd/regd/internal/loadgen"
)

// subscriber is one watch stream of the notify workload. Only its own
// goroutine touches h and pending until the stream has ended.
type subscriber struct {
	after    *loadgen.Signed    // event time - response time
	fromSend *loadgen.Histogram // event time - request time
	received atomic.Int64       // events of this run's registrations
	pending  []pendingEvent     // arrived before their registration's times were recorded
}

// regTimes is when a registration's request started and its response had
// been read.
type regTimes struct{ sent, resp time.Time }

func (s *subscriber) record(t regTimes, at time.Time) {
	s.after.Record(at.Sub(t.resp))
	s.fromSend.Record(at.Sub(t.sent))
}

type pendingEvent struct {
	id string
	at time.Time
}

// notify measures, for every registration and every subscriber, the delay
// from the moment the registering client had the response to the moment the
// subscriber had the event. That delay is negative when the event overtook
// the response (common: both leave the server at about the same time), so
// it is kept signed; the delay from the moment the request was sent, always
// positive, is reported beside it as "from send".
func (b *bench) notify(ctx context.Context, be backend, tr *tracker) (*loadgen.Stats, error) {
	o := b.o
	svc := b.service(be, "notify")
	nt := be.ntargets()
	var times sync.Map // id → regTimes

	subs := make([]*subscriber, o.subscribers)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	readyc := make(chan int, len(subs))
	errc := make(chan error, len(subs))
	var wg sync.WaitGroup
	for i := range subs {
		s := &subscriber{after: loadgen.NewSigned(), fromSend: loadgen.NewHistogram()}
		subs[i] = s
		onEvent := func(id string, at time.Time) {
			if v, ok := times.Load(id); ok {
				s.record(v.(regTimes), at)
			} else {
				s.pending = append(s.pending, pendingEvent{id, at})
			}
			s.received.Add(1)
		}
		wg.Go(func() {
			// regd refuses streams over its per-client limit with 429
			// until earlier ones are released: retry for a while.
			deadline := time.Now().Add(10 * time.Second)
			for {
				ready := false
				err := be.watch(wctx, i%nt, svc, func() { ready = true; readyc <- i }, onEvent)
				if ready || wctx.Err() != nil {
					if err != nil && wctx.Err() == nil {
						errc <- fmt.Errorf("subscriber %d: %w", i, err)
					}
					return
				}
				var se *loadgen.StatusError
				if !errors.As(err, &se) || (se.Code != 429 && se.Code != 503) || time.Now().After(deadline) {
					errc <- fmt.Errorf("subscriber %d: %w", i, err)
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
	// All streams up before the first registration.
	setup := time.NewTimer(20 * time.Second)
	defer setup.Stop()
	for n := 0; n < len(subs); {
		select {
		case <-readyc:
			n++
		case err := <-errc:
			stopWatch()
			wg.Wait()
			return nil, err
		case <-setup.C:
			stopWatch()
			wg.Wait()
			return nil, fmt.Errorf("only %d of %d watch streams started within 20s", n, len(subs))
		case <-ctx.Done():
			stopWatch()
			wg.Wait()
			return nil, ctx.Err()
		}
	}
	b.logf("%s: %d watch streams open", be.name(), len(subs))

	ttl := o.ttl
	if o.workload == "cost" {
		ttl = b.costTTL() // none may expire within the cost run
	}
	var regs atomic.Int64
	regStats, runErr := b.load(ctx, be, nil, func(ctx context.Context, _ int, seq int64) (int, error) {
		in := &inst{service: svc, id: fmt.Sprintf("n%d", seq), addr: address(seq)}
		tr.add(in)
		sent := time.Now()
		err := be.register(ctx, int(seq%int64(nt)), in, ttl)
		if err == nil {
			times.Store(in.id, regTimes{sent, time.Now()})
			regs.Add(1)
		}
		return 0, err
	})

	// Let outstanding events arrive: each subscriber should see every
	// successful registration (and perhaps some that timed out but were
	// applied).
	want := regs.Load()
	drainEnd := time.Now().Add(o.drain)
	for time.Now().Before(drainEnd) && ctx.Err() == nil {
		done := true
		for _, s := range subs {
			if s.received.Load() < want {
				done = false
				break
			}
		}
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopWatch()
	wg.Wait()
	var streamErr error
	select {
	case streamErr = <-errc:
	default:
	}

	after, fromSend := loadgen.NewSigned(), loadgen.NewHistogram()
	for _, s := range subs {
		for _, p := range s.pending {
			if v, ok := times.Load(p.id); ok {
				s.record(v.(regTimes), p.at)
			} // else a registration that failed for the client
		}
		after.Merge(s.after)
		fromSend.Merge(s.fromSend)
	}
	delivered := int64(after.Count())
	var elapsed time.Duration
	if regStats != nil {
		elapsed = time.Duration(regStats.Seconds * float64(time.Second))
	}
	st := loadgen.Summarize(after, nil, elapsed)
	st.Registrations = want
	st.Subscribers = len(subs)
	st.Missed = max(want*int64(len(subs))-delivered, 0)
	st.Early = int64(after.Negative())
	if st.Missed > 0 {
		st.Errors["missed"] = st.Missed
	}
	st.ByOp = map[string]*loadgen.Stats{"from_send": loadgen.Summarize(fromSend, nil, elapsed)}
	if regStats != nil {
		st.ByOp["register"] = regStats
		for k, n := range regStats.Errors {
			st.Errors["register:"+k] = n
		}
	}
	if runErr != nil {
		return st, runErr
	}
	if streamErr != nil {
		return st, streamErr
	}
	return st, nil
}
