// Package loadgen is the measuring half of regd-bench: a latency histogram,
// a closed-loop runner that drives an operation from N workers for a bounded
// time or count, and the summary statistics both print and JSON use. It knows
// nothing about regd or etcd.
package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// The histogram is log-linear (HDR style): values below 2*subCount
// nanoseconds are counted exactly, every power of two above that is split
// into subCount equal buckets. A bucket is at most 1/subCount = 0.78% of its
// lower bound wide, and quantiles report the bucket's midpoint, so a reported
// quantile is within 0.4% of a recorded value. Values from 1 ns up to
// 2^maxBits ns (about 18 minutes) are covered; longer ones count as that.
const (
	subBits  = 7
	subCount = 1 << subBits
	maxBits  = 40
	// nBuckets is the index of the largest value, 2^maxBits-1, plus one.
	nBuckets = (maxBits-subBits)*subCount + subCount
	maxValue = 1<<maxBits - 1
)

// Histogram records durations. It is not safe for concurrent use: give each
// worker its own and Merge them afterwards.
type Histogram struct {
	counts [nBuckets]uint64
	n      uint64
	sum    float64 // nanoseconds; float so that hours of samples cannot overflow
	min    int64
	max    int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{min: math.MaxInt64} }

func bucketOf(v int64) int {
	if v < 2*subCount {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - subBits - 1 // >= 1
	return (e+1)*subCount + int(v>>e) - subCount
}

// bucketRange is the smallest and largest value that land in bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < 2*subCount {
		return int64(i), int64(i)
	}
	e := i/subCount - 1
	sub := int64(i%subCount + subCount)
	return sub << e, (sub+1)<<e - 1
}

// Record adds one duration. Negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	if v > maxValue {
		v = maxValue
	}
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// Merge adds every sample of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count is the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest sample, exactly; 0 when empty.
func (h *Histogram) Max() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.max)
}

// Min is the smallest sample, exactly; 0 when empty.
func (h *Histogram) Min() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.min)
}

// Mean is the exact mean; 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile is the value below or at which a fraction q of the samples lie
// (nearest rank), within the histogram's precision; 0 when empty. q <= 0 is
// the minimum and q >= 1 the maximum, both exact.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q <= 0 {
		return time.Duration(h.min)
	}
	if q >= 1 {
		return time.Duration(h.max)
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	return h.atRank(min(max(rank, 1), h.n))
}

// atRank is the rank-th smallest sample (1-based), within the precision.
func (h *Histogram) atRank(rank uint64) time.Duration {
	var seen uint64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		seen += c
		if seen >= rank {
			lo, hi := bucketRange(i)
			v := lo + (hi-lo)/2
			// The extreme buckets hold the exact extremes.
			v = min(max(v, h.min), h.max)
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}

// Signed records durations that may be negative, such as the offset of one
// clock reading from another: negative ones in one histogram (by
// magnitude), the others in a second. Safe for one goroutine at a time.
type Signed struct {
	neg, pos *Histogram
}

// NewSigned returns an empty Signed.
func NewSigned() *Signed { return &Signed{neg: NewHistogram(), pos: NewHistogram()} }

// Record adds one duration.
func (s *Signed) Record(d time.Duration) {
	if d < 0 {
		s.neg.Record(-d)
	} else {
		s.pos.Record(d)
	}
}

// Merge adds every sample of o to s.
func (s *Signed) Merge(o *Signed) {
	s.neg.Merge(o.neg)
	s.pos.Merge(o.pos)
}

// Count is the number of samples; Negative the number below zero.
func (s *Signed) Count() uint64    { return s.neg.n + s.pos.n }
func (s *Signed) Negative() uint64 { return s.neg.n }

// Quantile is as Histogram's, over the signed values.
func (s *Signed) Quantile(q float64) time.Duration {
	n := s.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	if rank <= s.neg.n {
		// The rank-th smallest signed value is the negative with the
		// (neg.n-rank+1)-th smallest magnitude.
		return -s.neg.atRank(s.neg.n - rank + 1)
	}
	return s.pos.atRank(rank - s.neg.n)
}

// Max is the largest sample.
func (s *Signed) Max() time.Duration {
	if s.pos.n > 0 {
		return s.pos.Max()
	}
	return -s.neg.Min()
}

// Mean is the exact mean.
func (s *Signed) Mean() time.Duration {
	n := s.Count()
	if n == 0 {
		return 0
	}
	return time.Duration((s.pos.sum - s.neg.sum) / float64(n))
}
