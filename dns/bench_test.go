package dns_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/regd/regd/internal/regdtest"
)

// Discovery lookups on one node holding 1,000 instances in 100 services:
// DNS (A and SRV over UDP, SRV over TCP) beside the REST list of the same
// data (consistent, and ?stale), each asked by 16 concurrent clients for
// random services. Client and server share this machine's cores.
//
//	go test -run '^$' -bench BenchmarkDiscoveryLookups -benchtime 20000x ./dns/
//
// queries/s is the whole run's rate; p50-µs and p99-µs the latency of one
// query as its client saw it.
func BenchmarkDiscoveryLookups(b *testing.B) {
	c := regdtest.StartCluster(b, 1, regdtest.Options{DNS: true})
	m := c.Members[0]
	const services, per = 100, 10
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for s := range services {
		for i := range per {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				register(b, m, fmt.Sprintf("svc%d", s), fmt.Sprintf("i%d", i), map[string]any{
					"address": fmt.Sprintf("10.%d.%d.1:8080", s, i), "ttl": 600, "metadata": map[string]string{"zone": fmt.Sprint(i % 3)},
				})
			}()
		}
	}
	wg.Wait()
	const clients = 16
	httpClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}

	dnsAsk := func(qtype uint16, nameFmt string) func(*mdns.Conn, int) error {
		return func(conn *mdns.Conn, s int) error {
			q := new(mdns.Msg)
			q.SetQuestion(fmt.Sprintf(nameFmt, s), qtype)
			if err := conn.WriteMsg(q); err != nil {
				return err
			}
			r, err := conn.ReadMsg()
			if err == nil && len(r.Answer) != per {
				err = fmt.Errorf("%d records", len(r.Answer))
			}
			return err
		}
	}
	for _, tc := range []struct {
		name string
		net  string // DNS transport; "" for REST
		ask  func(*mdns.Conn, int) error
		url  string
	}{
		{name: "dns-udp-A", net: "udp", ask: dnsAsk(mdns.TypeA, "svc%d.service.regd.")},
		{name: "dns-udp-SRV", net: "udp", ask: dnsAsk(mdns.TypeSRV, "_svc%d._tcp.service.regd.")},
		{name: "dns-tcp-SRV", net: "tcp", ask: dnsAsk(mdns.TypeSRV, "_svc%d._tcp.service.regd.")},
		{name: "rest-list", url: m.URL("/v1/services/svc%d/instances")},
		{name: "rest-list-stale", url: m.URL("/v1/services/svc%d/instances?stale")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			lat := make([][]time.Duration, clients)
			var next atomic.Int64
			var failed atomic.Value
			start := time.Now()
			var wg sync.WaitGroup
			for w := range clients {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					var conn *mdns.Conn
					if tc.net != "" {
						var err error
						if conn, err = mdns.Dial(tc.net, m.DNSAddr); err != nil {
							failed.Store(err)
							return
						}
						defer func() { conn.Close() }()
					}
					for next.Add(1) <= int64(b.N) {
						s := rng.IntN(services)
						t0 := time.Now()
						var err error
						if conn != nil {
							err = tc.ask(conn, s)
							if err != nil && tc.net == "tcp" {
								// The server closes a connection after
								// 128 queries (or 30 s): a resolver
								// opens another, as this one does.
								conn.Close()
								if conn, err = mdns.Dial(tc.net, m.DNSAddr); err == nil {
									err = tc.ask(conn, s)
								}
							}
						} else {
							err = restGet(httpClient, fmt.Sprintf(tc.url, s))
						}
						if err != nil {
							failed.Store(err)
							return
						}
						lat[w] = append(lat[w], time.Since(t0))
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			if err := failed.Load(); err != nil {
				b.Fatal(err)
			}
			all := slices.Concat(lat...)
			slices.Sort(all)
			b.ReportMetric(float64(len(all))/elapsed.Seconds(), "queries/s")
			b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
		})
	}
}

func restGet(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	return nil
}

// BenchmarkDrainVisibility measures, on a 3-member cluster, the time from
// a drain's answer (PATCH through member 0) to the instance's absence from
// each discovery view served by member 1 (a follower): its DNS (A over
// UDP), its Prometheus SD endpoint (a consistent read), and a Go gRPC
// client on etcd's resolver through member 1's client URL (the time of
// the last call that still reached the drained server). Each iteration
// undrains, waits until every view shows the instance again, and drains.
//
//	go test -run '^$' -bench BenchmarkDrainVisibility -benchtime 20x ./dns/
func BenchmarkDrainVisibility(b *testing.B) {
	const prefix = "/grpc/"
	c := regdtest.StartCluster(b, 3, regdtest.Options{DNS: true, GRPCNamingPrefix: prefix})
	origin, obs := c.Members[0], c.Members[1]
	addrs := make([]string, 3)
	hits := make([]*atomic.Int64, 3)
	lastHit := make([]*atomic.Int64, 3) // unix nanoseconds of the last call
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		hits[i], lastHit[i] = &atomic.Int64{}, &atomic.Int64{}
		s := grpc.NewServer()
		healthpb.RegisterHealthServer(s, &benchHealth{hits: hits[i], last: lastHit[i]})
		go s.Serve(ln)
		b.Cleanup(s.Stop)
		addrs[i] = ln.Addr().String()
		register(b, origin, "api", fmt.Sprintf("a%d", i), map[string]any{"address": addrs[i], "ttl": 600})
	}
	rb, err := resolver.NewBuilder(c.EtcdClient(b, 1))
	if err != nil {
		b.Fatal(err)
	}
	conn, err := grpc.NewClient("etcd:///"+prefix+"api", grpc.WithResolvers(rb), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	// Calls go on all the time, from 4 clients.
	ctx, stop := context.WithCancel(context.Background())
	var callers sync.WaitGroup
	for range 4 {
		callers.Go(func() {
			for ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				hc.Check(cctx, &healthpb.HealthCheckRequest{})
				cancel()
			}
		})
	}
	defer func() { stop(); callers.Wait() }()

	dnsHas := func() bool {
		r, err := exchange(obs.DNSAddr, query{name: "api.service.regd.", qtype: mdns.TypeA})
		if err != nil {
			b.Fatal(err)
		}
		return len(r.Answer) == 3
	}
	sdHas := func() bool {
		_, _, body := regdtest.Do(b, http.MethodGet, obs.URL("/v1/prometheus/targets?service=api"), nil)
		return slices.Contains(splitTargets(body), addrs[0])
	}
	var dnsT, sdT, grpcT []time.Duration
	for b.Loop() {
		patchNoWait(b, origin, "api", "a0", `{"status":"up"}`)
		before := hits[0].Load()
		for !dnsHas() || !sdHas() || hits[0].Load() == before {
			time.Sleep(time.Millisecond)
		}
		patchNoWait(b, origin, "api", "a0", `{"status":"draining"}`)
		t0 := time.Now()
		var dnsAt, sdAt time.Duration
		for dnsAt == 0 || sdAt == 0 {
			if dnsAt == 0 && !dnsHas() {
				dnsAt = time.Since(t0)
			}
			if sdAt == 0 && !sdHas() {
				sdAt = time.Since(t0)
			}
		}
		// The last call a0 got, once calls have gone on for a second.
		time.Sleep(time.Second)
		grpcAt := max(time.Duration(lastHit[0].Load()-t0.UnixNano()), 0)
		dnsT, sdT, grpcT = append(dnsT, dnsAt), append(sdT, sdAt), append(grpcT, grpcAt)
	}
	report := func(name string, ds []time.Duration) {
		slices.Sort(ds)
		b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, name+"-p50-ms")
		b.ReportMetric(float64(ds[len(ds)-1].Microseconds())/1000, name+"-max-ms")
	}
	report("dns", dnsT)
	report("sd", sdT)
	report("grpc", grpcT)
}

type benchHealth struct {
	healthpb.UnimplementedHealthServer
	hits, last *atomic.Int64
}

func (h *benchHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.hits.Add(1)
	h.last.Store(time.Now().UnixNano())
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// splitTargets reads the targets of an http_sd_configs answer.
func splitTargets(body []byte) []string {
	var groups []struct{ Targets []string }
	json.Unmarshal(body, &groups)
	var out []string
	for _, g := range groups {
		out = append(out, g.Targets...)
	}
	return out
}
