package registry_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// countingHealth is a gRPC server that counts the calls it gets.
type countingHealth struct {
	healthpb.UnimplementedHealthServer
	calls atomic.Int64
}

func (h *countingHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.calls.Add(1)
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// startGRPC starts a real gRPC server on a loopback port.
func startGRPC(t *testing.T) (*countingHealth, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &countingHealth{}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, h)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return h, ln.Addr().String()
}

// TestGRPCNamingMirror: with --grpc-naming-prefix, a Go gRPC client using
// etcd's own resolver (etcd:///<prefix><service>) and round_robin,
// connected to a node's etcd client URL, follows the registry: calls reach
// every registered server, a drained one gets no new calls within a
// second (and calls again when undrained), a deregistered or expired one
// disappears. The mirror keys are never instances, and an expiry is
// reported once, for the instance.
func TestGRPCNamingMirror(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	const prefix = "/grpc/" // sorts inside the range the view and the ledger watch
	c := regdtest.StartCluster(t, 1, regdtest.Options{GRPCNamingPrefix: prefix})
	m := c.Members[0]
	cli := c.EtcdClient(t, 0)
	servers := make([]*countingHealth, 3)
	addrs := make([]string, 3)
	for i := range servers {
		servers[i], addrs[i] = startGRPC(t)
	}
	reg := func(id, addr string, body map[string]any) {
		t.Helper()
		body["address"] = addr
		code, _, out := regdtest.Do(t, http.MethodPut, m.URL("/v1/services/greeter/instances/"+id), body)
		if code != http.StatusCreated && code != http.StatusOK {
			t.Fatalf("register %s: %d %s", id, code, out)
		}
	}
	for i := range servers {
		reg(fmt.Sprintf("g%d", i), addrs[i], map[string]any{"ttl": 60, "metadata": map[string]string{"zone": fmt.Sprint(i)}})
	}
	reg("cold", "127.0.0.1:1", map[string]any{"status": "out_of_service"})

	// The mirror key: etcd's endpoint JSON on the instance's lease.
	var inst registry.Instance
	_, _, body := regdtest.Do(t, http.MethodGet, m.URL("/v1/services/greeter/instances/g0"), nil)
	regdtest.MustJSON(t, body, &inst)
	resp, err := cli.Get(context.Background(), prefix+"greeter/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 3 {
		t.Fatalf("mirror keys %v: want g0-g2 (cold is out of service)", resp.Kvs)
	}
	kv := resp.Kvs[0]
	if want := fmt.Sprintf(`{"Op":0,"Addr":%q,"Metadata":{"zone":"0"}}`, addrs[0]); string(kv.Key) != prefix+"greeter/g0" || string(kv.Value) != want || fmt.Sprint(kv.Lease) != inst.LeaseID {
		t.Fatalf("mirror %s = %s on lease %d; want %s on the instance's lease %s", kv.Key, kv.Value, kv.Lease, want, inst.LeaseID)
	}

	// A Go gRPC client, knowing nothing of regd.
	rb, err := resolver.NewBuilder(cli)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("etcd:///"+prefix+"greeter",
		grpc.WithResolvers(rb),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	call := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("call: %v", err)
		}
	}
	counts := func() []int64 {
		out := make([]int64, len(servers))
		for i, s := range servers {
			out[i] = s.calls.Load()
		}
		return out
	}
	// noneTo waits until 30 calls in a row reach no server in skip, and
	// every other server at least once.
	noneTo := func(within time.Duration, skip ...int) time.Duration {
		t.Helper()
		return regdtest.Await(t, within, func() error {
			before := counts()
			for range 30 {
				call()
			}
			after := counts()
			for i := range servers {
				got := after[i] - before[i]
				switch skipped := slices.Contains(skip, i); {
				case skipped && got > 0:
					return fmt.Errorf("g%d still got %d of 30 calls", i, got)
				case !skipped && got == 0:
					return fmt.Errorf("g%d got none of 30 calls", i)
				}
			}
			return nil
		})
	}
	noneTo(10 * time.Second) // all three reached
	t.Logf("calls %v", counts())

	patch := func(id, body string) {
		t.Helper()
		if code, _, out := regdtest.Do(t, http.MethodPatch, m.URL("/v1/services/greeter/instances/"+id), body); code != http.StatusOK {
			t.Fatalf("patch %s: %d %s", id, code, out)
		}
	}
	patch("g0", `{"status":"draining"}`)
	t.Logf("drained g0: no new calls after %v", noneTo(time.Second, 0))
	patch("g0", `{"status":"up","metadata":{"zone":"z"}}`)
	t.Logf("undrained g0: calls again after %v", noneTo(5*time.Second))
	if resp, _ := cli.Get(context.Background(), prefix+"greeter/g0"); len(resp.Kvs) != 1 || !strings.Contains(string(resp.Kvs[0].Value), `"zone":"z"`) {
		t.Errorf("mirror after the undrain: %v, want the patched metadata", resp.Kvs)
	}

	if code, _, out := regdtest.Do(t, http.MethodDelete, m.URL("/v1/services/greeter/instances/g1"), nil); code != http.StatusNoContent {
		t.Fatalf("deregister: %d %s", code, out)
	}
	t.Logf("deregistered g1: no new calls after %v", noneTo(time.Second, 1))

	// Expiry: g2 registered again with a 2 s TTL and left to run out;
	// etcd deletes the mirror with the lease.
	reg("g2", addrs[2], map[string]any{"ttl": 2})
	t.Logf("expired g2: no new calls after %v", noneTo(15*time.Second, 1, 2))
	var exp struct{ Expirations []registry.Expiration }
	regdtest.Await(t, 10*time.Second, func() error {
		_, _, body := regdtest.Do(t, http.MethodGet, m.URL("/v1/expirations"), nil)
		regdtest.MustJSON(t, body, &exp)
		if len(exp.Expirations) != 1 || exp.Expirations[0].ID != "g2" || exp.Expirations[0].Service != "greeter" {
			return fmt.Errorf("expirations %+v: want g2's alone", exp.Expirations)
		}
		return nil
	})
	if resp, _ := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()); len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != prefix+"greeter/g0" {
		t.Errorf("mirror keys left: %v, want g0's alone", resp.Kvs)
	}
	// Never instances: the service list has greeter alone, no key was
	// taken for another program's value.
	var svcs registry.ServiceList
	_, _, body = regdtest.Do(t, http.MethodGet, m.URL("/v1/services"), nil)
	regdtest.MustJSON(t, body, &svcs)
	if len(svcs.Services) != 1 || svcs.Services[0].Name != "greeter" || svcs.Services[0].Instances != 2 {
		t.Errorf("services %+v: want greeter with g0 and cold", svcs.Services)
	}
	if n := m.Server().View().InvalidValues(); n != 0 {
		t.Errorf("%d keys counted as invalid instance values", n)
	}
}
