package loadgen

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// Latency is a latency summary in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Stats is one system's figures for one workload: what the table prints and
// what --json emits.
type Stats struct {
	Ops       int64            `json:"ops"` // successful operations
	Seconds   float64          `json:"seconds"`
	OpsPerSec float64          `json:"ops_per_sec"`
	Latency   Latency          `json:"latency_ms"`
	Errors    map[string]int64 `json:"errors"` // by class: "503", "conn", "timeout", ...
	// ErrorSamples is one message per error class.
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	// ByOp splits a mixed workload by operation, and carries a notify
	// workload's registrations.
	ByOp map[string]*Stats `json:"by_op,omitempty"`
	// Notify only: delivered events are Ops; these say what was expected.
	Registrations int64 `json:"registrations,omitempty"`
	Subscribers   int   `json:"subscribers,omitempty"`
	Missed        int64 `json:"missed,omitempty"`
	// Early counts events that arrived before their registration's
	// response did: their delay is negative.
	Early int64 `json:"early,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// Distribution is what Summarize reads: a Histogram, or a Signed one.
type Distribution interface {
	Count() uint64
	Quantile(q float64) time.Duration
	Max() time.Duration
	Mean() time.Duration
}

// Summarize turns a distribution, error counts and the measured time into Stats.
func Summarize(h Distribution, errs map[string]int64, elapsed time.Duration) *Stats {
	s := &Stats{
		Ops:     int64(h.Count()),
		Seconds: elapsed.Seconds(),
		Latency: Latency{
			P50:  ms(h.Quantile(0.50)),
			P90:  ms(h.Quantile(0.90)),
			P99:  ms(h.Quantile(0.99)),
			Max:  ms(h.Max()),
			Mean: ms(h.Mean()),
		},
		Errors: map[string]int64{},
	}
	maps.Copy(s.Errors, errs)
	if elapsed > 0 {
		s.OpsPerSec = float64(s.Ops) / elapsed.Seconds()
	}
	return s
}

// FromResult summarizes a run; kinds must be the run's Config.Kinds.
func FromResult(r *Result, kinds []string) *Stats {
	s := Summarize(r.Latency, r.Errors, r.Elapsed)
	if len(r.LastErr) > 0 {
		s.ErrorSamples = maps.Clone(r.LastErr)
	}
	if len(kinds) > 0 && len(r.ByKind) == len(kinds) {
		s.ByOp = map[string]*Stats{}
		for i, k := range kinds {
			s.ByOp[k] = Summarize(r.ByKind[i], r.ErrorsByKind[i], r.Elapsed)
		}
	}
	return s
}

// TotalErrors is the number of failed operations.
func (s *Stats) TotalErrors() int64 {
	var n int64
	for _, v := range s.Errors {
		n += v
	}
	return n
}

// ErrorString renders the error counts as "503:2 conn:1", or "-".
func (s *Stats) ErrorString() string {
	if len(s.Errors) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s.Errors)) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, s.Errors[k]))
	}
	return strings.Join(parts, " ")
}

// FormatMs renders milliseconds compactly: 0.412ms, 12.3ms, 1.52s.
func FormatMs(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case a >= 100:
		return fmt.Sprintf("%.0fms", v)
	case a >= 10:
		return fmt.Sprintf("%.1fms", v)
	case a >= 1:
		return fmt.Sprintf("%.2fms", v)
	default:
		return fmt.Sprintf("%.3fms", v)
	}
}

// Exact is the latency summary of a small set of samples (one per change,
// per instance), computed from the samples themselves rather than a
// histogram: every figure is a recorded value.
func Exact(samples []time.Duration) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	var sum float64
	for _, d := range s {
		sum += float64(d)
	}
	return Latency{
		P50:  ms(NearestRank(s, 0.50)),
		P90:  ms(NearestRank(s, 0.90)),
		P99:  ms(NearestRank(s, 0.99)),
		Max:  ms(s[len(s)-1]),
		Mean: sum / float64(len(s)) / 1e6,
	}
}

// NearestRank is the q-quantile of sorted samples by the nearest-rank
// method: the smallest sample with at least q of all samples at or below
// it (q <= 0: the minimum). 0 when there are none.
func NearestRank(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(n)))
	return sorted[min(max(rank, 1), n)-1]
}
