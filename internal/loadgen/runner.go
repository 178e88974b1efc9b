package loadgen

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config bounds a run. The measured phase ends when Duration has passed or
// Count operations have started, whichever comes first; at least one of
// them must be set. Operations in flight at the end are waited for and
// counted. A cancelled context ends the run at once.
type Config struct {
	Concurrency int           // workers, each running one operation at a time
	Duration    time.Duration // 0: no time bound
	Count       int64         // 0: no count bound
	// Warmup runs the operation, unmeasured, for this long first (new
	// connections, caches), with the same workers.
	Warmup time.Duration
	// Kinds names the operation kinds Op returns (by index), for mixed
	// workloads; nil means one kind.
	Kinds []string
}

// Op performs operation number seq (0, 1, 2, ... across all workers, in
// start order) on behalf of worker w. It returns the index of the kind of
// operation it did (0 for single-kind runs) and its error.
type Op func(ctx context.Context, w int, seq int64) (kind int, err error)

// Result is what a run measured.
type Result struct {
	Elapsed time.Duration // from the start of the measured phase to the end of its last operation
	Latency *Histogram    // successful operations
	ByKind  []*Histogram  // per Kinds entry; nil for single-kind runs
	Errors  map[string]int64
	// ErrorsByKind is per Kinds entry; nil for single-kind runs.
	ErrorsByKind []map[string]int64
	// LastErr is one error message per class, to show what went wrong.
	LastErr map[string]string
}

type worker struct {
	all     *Histogram
	byKind  []*Histogram
	errs    map[string]int64
	errKind []map[string]int64
	lastErr map[string]string
	end     time.Time
}

// Run drives op from cfg.Concurrency workers in a closed loop.
func Run(ctx context.Context, cfg Config, op Op) (*Result, error) {
	if cfg.Concurrency < 1 {
		return nil, errors.New("concurrency must be at least 1")
	}
	if cfg.Duration <= 0 && cfg.Count <= 0 {
		return nil, errors.New("a run needs a duration or a count")
	}
	nk := max(len(cfg.Kinds), 1)
	var (
		next     atomic.Int64 // seq of the next operation
		measured atomic.Int64 // measured operations started
	)
	begin := time.Now()
	measureStart := begin.Add(cfg.Warmup)
	deadline := time.Time{}
	if cfg.Duration > 0 {
		deadline = measureStart.Add(cfg.Duration)
	}
	workers := make([]*worker, cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{all: NewHistogram(), errs: map[string]int64{}, lastErr: map[string]string{}}
		if len(cfg.Kinds) > 0 {
			for range nk {
				w.byKind = append(w.byKind, NewHistogram())
				w.errKind = append(w.errKind, map[string]int64{})
			}
		}
		workers[i] = w
		wg.Go(func() {
			for ctx.Err() == nil {
				start := time.Now()
				warm := start.Before(measureStart)
				if !warm {
					if !deadline.IsZero() && !start.Before(deadline) {
						return
					}
					if cfg.Count > 0 && measured.Add(1) > cfg.Count {
						return
					}
				}
				seq := next.Add(1) - 1
				kind, err := op(ctx, i, seq)
				end := time.Now()
				if warm || ctx.Err() != nil {
					continue // unmeasured, or cut short by cancellation
				}
				w.end = end
				kind = min(max(kind, 0), nk-1)
				if err != nil {
					class := Classify(err)
					w.errs[class]++
					w.lastErr[class] = err.Error()
					if w.errKind != nil {
						w.errKind[kind][class]++
					}
					continue
				}
				d := end.Sub(start)
				w.all.Record(d)
				if w.byKind != nil {
					w.byKind[kind].Record(d)
				}
			}
		})
	}
	wg.Wait()
	r := &Result{Latency: NewHistogram(), Errors: map[string]int64{}, LastErr: map[string]string{}}
	if len(cfg.Kinds) > 0 {
		for range nk {
			r.ByKind = append(r.ByKind, NewHistogram())
			r.ErrorsByKind = append(r.ErrorsByKind, map[string]int64{})
		}
	}
	var last time.Time
	for _, w := range workers {
		r.Latency.Merge(w.all)
		for k, n := range w.errs {
			r.Errors[k] += n
		}
		for k, m := range w.lastErr {
			r.LastErr[k] = m
		}
		for i := range r.ByKind {
			r.ByKind[i].Merge(w.byKind[i])
			for k, n := range w.errKind[i] {
				r.ErrorsByKind[i][k] += n
			}
		}
		if w.end.After(last) {
			last = w.end
		}
	}
	if last.After(measureStart) {
		r.Elapsed = last.Sub(measureStart)
	}
	return r, ctx.Err()
}

// StatusError is an operation's failure as the server reported it.
type StatusError struct {
	Code  int    // HTTP status; 0 when the failure is not an HTTP status
	Class string // overrides the class ("ttl0", "grpc:5", ...); "" uses Code
	Msg   string
}

func (e *StatusError) Error() string {
	s := e.Class
	if s == "" {
		s = strconv.Itoa(e.Code)
	}
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	return s
}

// Classify names an error's class for the error counts: the HTTP status
// ("503"), a StatusError's own class, "timeout", "conn" for transport
// failures, "canceled", or "other".
func Classify(err error) string {
	var se *StatusError
	switch {
	case errors.As(err, &se):
		if se.Class != "" {
			return se.Class
		}
		return strconv.Itoa(se.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var ne net.Error
	if errors.As(err, &ne) {
		if ne.Timeout() {
			return "timeout"
		}
		return "conn"
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return "conn"
	}
	return "other"
}
