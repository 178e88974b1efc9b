package registry_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// BenchmarkConsumerMassExpiry is issue 17's mass expiry at the ledger:
// n REST instances lose their leases at once while a consumer runs, and
// the benchmark measures until every one is reported. Leases are revoked
// 16 at a time, which is how etcd's leader revokes expired leases
// (etcdserver's maxPendingRevokes; its lessor hands over at most 1,000 a
// second): a revoke deletes the key and its marker in one revision, the
// same history as an expiry. The figures: reports/s over the whole run;
// revokes/s, the rate at which history was produced; and ms-behind, from
// the last revoke to the last report: the consumer keeps up when the
// rates are close and ms-behind is about one commit.
//
//	go test -run '^$' -bench ConsumerMassExpiry -benchtime 3x ./registry/
func BenchmarkConsumerMassExpiry(b *testing.B) {
	if testing.Short() {
		b.Skip("starts an etcd member")
	}
	const n = 3000
	node := regdtest.StartEtcd(b)
	cli := node.Client()
	st := registry.NewStore(cli, registry.Options{Prefix: "/service/"})
	l := registry.NewLedger(st)
	var reported atomic.Int64
	c := l.NewConsumer(registry.ConsumerOptions{
		ReportedBy: "solo",
		Reported:   func(registry.Report) { reported.Add(1) },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := c.Run(ctx); err != nil && ctx.Err() == nil {
				b.Logf("consumer: %v", err)
			}
		}
	}()
	defer func() { cancel(); <-done }()

	var revokeSecs, reportSecs float64
	round := 0
	for b.Loop() {
		b.StopTimer()
		round++
		leases := registerMany(b, st, fmt.Sprintf("mass%d", round), n)
		base := reported.Load()
		b.StartTimer()
		start := time.Now()
		parallel(16, len(leases), func(i int) {
			if _, err := cli.Revoke(ctx, clientv3.LeaseID(leases[i])); err != nil {
				b.Error(err)
			}
		})
		revokeSecs += time.Since(start).Seconds()
		for reported.Load() < base+n {
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("%d of %d reported after 5 minutes", reported.Load()-base, n)
			}
			time.Sleep(time.Millisecond)
		}
		reportSecs += time.Since(start).Seconds()
	}
	runs := float64(round * n)
	b.ReportMetric(runs/reportSecs, "reports/s")
	b.ReportMetric(runs/revokeSecs, "revokes/s")
	b.ReportMetric((reportSecs-revokeSecs)/float64(round)*1000, "ms-behind")
	b.ReportMetric(0, "ns/op")
}

// registerMany registers n instances of service over REST's path (Store.
// Register: lease, key, meta record, marker) and returns their leases.
func registerMany(b *testing.B, st *registry.Store, service string, n int) []int64 {
	b.Helper()
	leases := make([]int64, n)
	ttl := int64(600)
	parallel(32, n, func(i int) {
		in, _, err := st.Register(context.Background(), service, fmt.Sprintf("i%d", i),
			registry.Registration{Address: fmt.Sprintf("10.0.%d.%d:80", i/250, i%250), TTL: &ttl})
		if err != nil {
			b.Error(err)
			return
		}
		var lease int64
		fmt.Sscan(in.LeaseID, &lease)
		leases[i] = lease
	})
	if b.Failed() {
		b.FailNow()
	}
	return leases
}

// parallel calls f(0..n-1) from workers goroutines.
func parallel(workers, n int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}
