package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsAreContiguous(t *testing.T) {
	prevHi := int64(-1)
	for i := range nBuckets {
		lo, hi := bucketRange(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, want %d", i, lo, prevHi+1)
		}
		if hi < lo {
			t.Fatalf("bucket %d: hi %d < lo %d", i, hi, lo)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d,%d]: bucketOf gives %d and %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		if lo >= 2*subCount && float64(hi-lo+1)/float64(lo) > 1.0/subCount+1e-12 {
			t.Fatalf("bucket %d [%d,%d] wider than 1/%d of its bound", i, lo, hi, subCount)
		}
		prevHi = hi
	}
	if prevHi != maxValue {
		t.Fatalf("last bucket ends at %d, want %d", prevHi, maxValue)
	}
}

func TestQuantilesWithinOnePercent(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	h := NewHistogram()
	var vals []int64
	for range 100000 {
		// Log-uniform over 1µs..60s, the range that matters.
		v := int64(1000 * math.Pow(60e6, r.Float64()))
		vals = append(vals, v)
		h.Record(time.Duration(v))
	}
	slices.Sort(vals)
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999} {
		want := vals[int(q*float64(len(vals)))-1]
		got := int64(h.Quantile(q))
		if rel := float64(got-want) / float64(want); rel > 0.01 || rel < -0.01 {
			t.Errorf("q%.3f: got %d, want %d (%.2f%% off)", q, got, want, 100*rel)
		}
	}
	if h.Max() != time.Duration(vals[len(vals)-1]) || h.Min() != time.Duration(vals[0]) {
		t.Errorf("min/max %v/%v, want %v/%v", h.Min(), h.Max(), vals[0], vals[len(vals)-1])
	}
	if h.Quantile(1) != h.Max() {
		t.Errorf("q1 %v != max %v", h.Quantile(1), h.Max())
	}
}

func TestMergeAndEdges(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	if a.Quantile(0.5) != 0 || a.Max() != 0 || a.Mean() != 0 {
		t.Fatal("empty histogram should report zeros")
	}
	a.Record(-5)
	a.Record(time.Hour) // clamped to the top bucket
	b.Record(3 * time.Millisecond)
	a.Merge(b)
	a.Merge(nil)
	if a.Count() != 3 {
		t.Fatalf("count %d", a.Count())
	}
	if a.Min() != 0 {
		t.Fatalf("min %v", a.Min())
	}
	if got := a.Quantile(0.5); got < 2970*time.Microsecond || got > 3030*time.Microsecond {
		t.Fatalf("median %v, want ~3ms", got)
	}
}

func TestSigned(t *testing.T) {
	s := NewSigned()
	for _, ms := range []int{-3, -1, 2, 4, 6} {
		s.Record(time.Duration(ms) * time.Millisecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.2, -3 * time.Millisecond}, {0.4, -time.Millisecond}, {0.5, 2 * time.Millisecond}, {1, 6 * time.Millisecond}} {
		got := s.Quantile(tc.q)
		if !near(got, tc.want) {
			t.Errorf("q%.1f = %v, want %v", tc.q, got, tc.want)
		}
	}
	if s.Negative() != 2 || s.Count() != 5 || s.Max() != 6*time.Millisecond || s.Mean() != 1600*time.Microsecond {
		t.Errorf("negative %d count %d max %v mean %v", s.Negative(), s.Count(), s.Max(), s.Mean())
	}
	o := NewSigned()
	o.Record(-10 * time.Millisecond)
	s.Merge(o)
	if !near(s.Quantile(0.01), -10*time.Millisecond) {
		t.Errorf("min after merge %v", s.Quantile(0.01))
	}
}

// near reports whether got is within 1% of want.
func near(got, want time.Duration) bool {
	d := got - want
	return d.Abs() <= want.Abs()/100
}

func TestExactAndNearestRank(t *testing.T) {
	ms := time.Millisecond
	// 1..100 ms, shuffled: p50 is 50, p90 90, p99 99, max 100.
	var s []time.Duration
	for _, i := range rand.New(rand.NewPCG(3, 4)).Perm(100) {
		s = append(s, time.Duration(i+1)*ms)
	}
	l := Exact(s)
	if l.P50 != 50 || l.P90 != 90 || l.P99 != 99 || l.Max != 100 || l.Mean != 50.5 {
		t.Fatalf("%+v", l)
	}
	if s[0] == ms && s[1] == 2*ms {
		t.Fatal("Exact sorted its argument in place")
	}
	for _, tc := range []struct {
		n    int
		q    float64
		want time.Duration
	}{
		{1, 0.99, 1 * ms}, // one sample is every quantile
		{10, 0.99, 10 * ms},
		{10, 0.5, 5 * ms},
		{10, 0.51, 6 * ms},
		{10, 0, 1 * ms},
		{10, 1, 10 * ms},
		{0, 0.5, 0},
	} {
		sorted := make([]time.Duration, tc.n)
		for i := range sorted {
			sorted[i] = time.Duration(i+1) * ms
		}
		if got := NearestRank(sorted, tc.q); got != tc.want {
			t.Errorf("n=%d q=%v: %v, want %v", tc.n, tc.q, got, tc.want)
		}
	}
	if (Exact(nil) != Latency{}) {
		t.Error("Exact(nil) not zero")
	}
}
