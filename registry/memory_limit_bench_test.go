package registry_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regd/regd/internal/loadgen"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// BenchmarkMemberMemory registers 50,000 instances in 500 services through
// a real one-member node (its embedded etcd, its view, the expiry
// consumer), 32 at a time as regd-bench's clients do, and reports what the
// process held: the live heap after a collection (live-MiB), the most
// memory Go held from the OS meanwhile (peak-go-MiB: heap and stacks
// mapped and not returned), the peak RSS of the whole test process
// (peak-rss-MiB, VmHWM), collections (gcs) and the CPU the collector took
// (gc-cpu-s). Run it without and with a soft memory limit to see what
// GOMEMLIMIT does (docs/operations.md):
//
//	go test -run '^$' -bench MemberMemory -benchtime 1x ./registry/
//	GOMEMLIMIT=200MiB go test -run '^$' -bench MemberMemory -benchtime 1x ./registry/
func BenchmarkMemberMemory(b *testing.B) {
	const n, services, clients = 50000, 500, 32
	for b.Loop() {
		c := regdtest.StartCluster(b, 1)
		st := c.Members[0].Server().Store()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		resetPeakRSS()
		gc0, cpu0 := gcStats()
		var peak atomic.Uint64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				peak.Store(max(peak.Load(), goHeld()))
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		var next atomic.Int64
		var wg sync.WaitGroup
		ttl := int64(3600)
		for range clients {
			wg.Go(func() {
				for {
					seq := next.Add(1) - 1
					if seq >= n || ctx.Err() != nil {
						return
					}
					svc := "mem-" + strconv.FormatInt(seq%services, 10)
					addr := fmt.Sprintf("10.%d.%d.%d:8080", (seq>>16)&255, (seq>>8)&255, seq&255)
					if _, _, err := st.Register(ctx, svc, "p"+strconv.FormatInt(seq, 10), registry.Registration{Address: addr, TTL: &ttl}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(stop)
		<-sampled
		gc1, cpu1 := gcStats()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		cancel()
		b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "live-MiB")
		b.ReportMetric(float64(peak.Load())/(1<<20), "peak-go-MiB")
		b.ReportMetric(float64(peakRSS())/(1<<20), "peak-rss-MiB")
		b.ReportMetric(float64(gc1-gc0), "gcs")
		b.ReportMetric(cpu1-cpu0, "gc-cpu-s")
		if limit := debug.SetMemoryLimit(-1); limit < math.MaxInt64 {
			b.ReportMetric(float64(limit)/(1<<20), "limit-MiB")
		}
	}
}

// goHeld is the memory Go holds from the OS: everything it mapped, less
// what it returned.
func goHeld() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}

func gcStats() (cycles uint64, cpu float64) {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Float64()
}

// resetPeakRSS restarts the kernel's high-water mark of this process's RSS
// (proc(5), /proc/pid/clear_refs, 5); peakRSS reads it (VmHWM).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	_, hwm := loadgen.ParseStatusMemory(b)
	return hwm
}
