package registry_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/regdtest"
)

// BenchmarkLeaseRenewal measures what one lease renewal costs a 3-member
// cluster, the way a batch heartbeat renews today (clientv3's
// KeepAliveOnce on the member's in-process client: a stream opened for one
// request; and the same over gRPC, as the seeds' Go code does) against renewals
// sent over long-lived LeaseKeepAlive streams, each sent to the leader and
// to a follower (which forwards every renewal to the leader as its own
// HTTP request between members). 1,000 leases are renewed per iteration
// by 32 workers, the batch heartbeat's parallelism (heartbeatParallel).
// Figures: renewals/s, and cpu-us/renewal, the CPU of this process (three
// members and the client) per renewal, from getrusage. This is the
// evidence for moving batch heartbeats to streams against the leader
// (docs/scale/notes.md, targets 1 and 3). The batch-rest rows are regd's
// PUT /v1/heartbeats of 1,000 instances, one request at a time, per
// instance renewed.
//
//	go test -run '^$' -bench LeaseRenewal -benchtime 5x ./registry/
func BenchmarkLeaseRenewal(b *testing.B) {
	if testing.Short() {
		b.Skip("starts a 3-member cluster")
	}
	const n, workers = 1000, 32
	c := regdtest.StartCluster(b, 3)
	leader := c.WaitLeader(b)
	follower := (leader + 1) % 3
	setup := c.EtcdClient(b, leader)
	ids := make([]clientv3.LeaseID, n)
	for i := range ids {
		g, err := setup.Grant(context.Background(), 600)
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = g.ID
	}
	// regd's batch heartbeat over REST, 1,000 instances a request, one
	// request at a time: the figures are per instance renewed.
	var items []map[string]string
	for i := range n {
		id := fmt.Sprintf("i%d", i)
		st, _, body := regdtest.Do(b, http.MethodPut, c.Members[leader].URL("/v1/services/renew/instances/"+id), map[string]any{"address": "10.0.0.1:80", "ttl": 600})
		if st != http.StatusCreated {
			b.Fatalf("register %s: %d %s", id, st, body)
		}
		items = append(items, map[string]string{"service": "renew", "id": id})
	}
	batch := map[string]any{"instances": items}
	// A follower opens its lease streams to the leader on its first
	// renewal (node/renew.go); the rounds measured find them open.
	for i := range c.Members {
		if st, _, body := regdtest.Do(b, http.MethodPut, c.Members[i].URL("/v1/heartbeats"), batch); st != http.StatusOK {
			b.Fatalf("warm-up: %d %.300s", st, body)
		}
	}
	for _, to := range []struct {
		name   string
		member int
	}{{"leader", leader}, {"follower", follower}} {
		url := c.Members[to.member].URL("/v1/heartbeats")
		b.Run("batch-rest/"+to.name, func(b *testing.B) {
			cpu0, start := cpuTime(), time.Now()
			rounds := 0
			for b.Loop() {
				rounds++
				if st, _, body := regdtest.Do(b, http.MethodPut, url, batch); st != http.StatusOK || bytes.Contains(body, []byte(`"error"`)) {
					b.Fatalf("%d %.300s", st, body)
				}
			}
			total := float64(rounds * n)
			b.ReportMetric(total/time.Since(start).Seconds(), "renewals/s")
			b.ReportMetric((cpuTime()-cpu0).Seconds()/total*1e6, "cpu-us/renewal")
		})
	}
	for _, to := range []struct {
		name   string
		member int
	}{{"leader", leader}, {"follower", follower}} {
		cli := c.EtcdClient(b, to.member)
		once := func(cli *clientv3.Client) func(b *testing.B) {
			return func(b *testing.B) {
				renewals(b, n, func(ctx context.Context) (func(i int) error, func()) {
					return func(i int) error {
						ka, err := cli.KeepAliveOnce(ctx, ids[i])
						if err == nil && ka.TTL <= 0 {
							err = fmt.Errorf("lease %x not found", ids[i])
						}
						return err
					}, func() {}
				}, workers)
			}
		}
		// What regd does: the member's in-process client (v3client).
		b.Run("once-inprocess/"+to.name, once(c.Members[to.member].Server().Node().Client()))
		b.Run("once/"+to.name, once(cli))
		b.Run("stream/"+to.name, func(b *testing.B) {
			lc := pb.NewLeaseClient(cli.ActiveConnection())
			renewals(b, n, func(ctx context.Context) (func(i int) error, func()) {
				st, err := lc.LeaseKeepAlive(ctx)
				if err != nil {
					b.Fatal(err)
				}
				return func(i int) error {
						if err := st.Send(&pb.LeaseKeepAliveRequest{ID: int64(ids[i])}); err != nil {
							return err
						}
						r, err := st.Recv()
						if err == nil && r.TTL <= 0 {
							err = fmt.Errorf("lease %x not found", ids[i])
						}
						return err
					}, func() {
						_ = st.CloseSend()
					}
			}, workers)
		})
	}
}

// renewals runs b's loop: each iteration renews leases 0..n-1 from
// workers, each worker with the renew function open returned for it.
func renewals(b *testing.B, n int, open func(context.Context) (func(int) error, func()), workers int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	renew := make([]func(int) error, workers)
	for w := range renew {
		f, closeFn := open(ctx)
		defer closeFn()
		renew[w] = f
	}
	jobs := make(chan int)
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			var first error
			for i := range jobs {
				if err := renew[w](i); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		}()
	}
	cpu0, start := cpuTime(), time.Now()
	rounds := 0
	for b.Loop() {
		rounds++
		for i := range n {
			jobs <- i
		}
	}
	close(jobs)
	for range workers {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	secs, cpu := time.Since(start).Seconds(), (cpuTime() - cpu0).Seconds()
	total := float64(rounds * n)
	b.ReportMetric(total/secs, "renewals/s")
	b.ReportMetric(cpu/total*1e6, "cpu-us/renewal")
}

// cpuTime is this process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
