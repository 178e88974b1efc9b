package registry_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

var invalidGauge = regexp.MustCompile(`(?m)^regd_invalid_instance_values (\d+)$`)

// TestPlainClientValues writes each encoding a plain etcd client may leave
// under the prefix, through a real gRPC client, on short leases: only
// host:port (trimmed) and etcd's gRPC naming endpoint are instances, listed
// with their address and reported once when they expire; the rest are not
// listed, not found, not renewable, never reported, counted in
// regd_invalid_instance_values and logged once each (contract v2, "Values
// written by plain etcd clients").
func TestPlainClientValues(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	e := contractEnv{m: c.Members[0], cli: c.EtcdClient(t, 0), keys: registry.Keys{Prefix: "/service/"}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lease, err := e.cli.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	leaseID := registry.FormatLease(int64(lease.ID))
	em, err := endpoints.NewManager(e.cli, "/service/vals")
	if err != nil {
		t.Fatal(err)
	}
	if err := em.AddEndpoint(ctx, "/service/vals/naming", endpoints.Endpoint{Addr: "10.0.0.7:50051", Metadata: map[string]string{"zone": "a"}}, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	valid := map[string]string{"naming": "10.0.0.7:50051", "newline": "10.0.0.9:80"}
	values := map[string]string{
		"newline":   "10.0.0.9:80\n",
		"empty":     "",
		"garbage":   "not an address",
		"bad-addr":  `{"Op":0,"Addr":"10.0.0.7","Metadata":null}`,
		"delete-op": `{"Op":1,"Addr":"10.0.0.7:50051"}`,
	}
	for id, v := range values {
		if _, err := e.cli.Put(ctx, "/service/vals/"+id, v, clientv3.WithLease(lease.ID)); err != nil {
			t.Fatal(err)
		}
	}

	poll.Until(t, 5*time.Second, "only the two valid values listed", func() error {
		l := e.list(t, "vals")
		if got := ids(l); !slices.Equal(got, []string{"naming", "newline"}) {
			return fmt.Errorf("vals lists %q", got)
		}
		for _, in := range l.Instances {
			if in.Address != valid[in.ID] || in.LeaseID != leaseID || in.TTL != 2 {
				return fmt.Errorf("%s listed as %+v", in.ID, in)
			}
		}
		return nil
	})
	if n := serviceCount(e.services(t), "vals"); n != 2 {
		t.Fatalf("vals counted %d instances, want 2", n)
	}
	for id := range values {
		code, _, b := regdtest.Do(t, http.MethodGet, instanceURL(e, "vals", id), nil)
		if valid[id] != "" {
			var in registry.Instance
			regdtest.MustJSON(t, b, &in)
			if code != http.StatusOK || in.Address != valid[id] {
				t.Errorf("GET %s: %d %s", id, code, b)
			}
			continue
		}
		if code != http.StatusNotFound || errorCode(b) != registry.CodeNotFound {
			t.Errorf("GET %s (value %q): %d %s, want 404", id, values[id], code, b)
		}
		if code, errc := e.heartbeat(t, "vals", id); code != http.StatusNotFound {
			t.Errorf("heartbeat %s: %d %s, want 404", id, code, errc)
		}
	}
	gauge := func() string {
		_, _, body := regdtest.Do(t, http.MethodGet, e.m.URL("/metrics"), nil)
		if m := invalidGauge.FindSubmatch(body); m != nil {
			return string(m[1])
		}
		return "absent"
	}
	if g := gauge(); g != "4" {
		t.Fatalf("regd_invalid_instance_values %s, want 4", g)
	}
	for _, id := range []string{"empty", "garbage", "bad-addr", "delete-op"} {
		if n := len(c.LogLines(`"key": "/service/vals/` + id + `"`)); n != 1 {
			t.Errorf("%s logged %d times, want once", id, n)
		}
	}

	// All six keys go when the lease ends; only the two instances are
	// reported. A later expiry is the marker that the rest were seen.
	barrier := e.register(t, "vals-barrier", "b", `{"address":"10.0.0.10:80","ttl":3}`, http.StatusCreated)
	c.WaitExpiries(t, 15*time.Second, ledgertest.Expected{Want: map[ledgertest.Expiry]string{
		{Service: "vals", ID: "naming", Lease: leaseID}:            "10.0.0.7:50051",
		{Service: "vals", ID: "newline", Lease: leaseID}:           "10.0.0.9:80",
		{Service: "vals-barrier", ID: "b", Lease: barrier.LeaseID}: "10.0.0.10:80",
	}})
	if g := gauge(); g != "0" {
		t.Fatalf("regd_invalid_instance_values %s after the keys went, want 0", g)
	}
}
