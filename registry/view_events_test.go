package registry_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// TestViewEventTypes: the view labels each removal with Classify, from the
// removal's own revision: expire when the instance's lease ended there,
// deregister otherwise; values that are no instance make no event at all.
// The member's reporter attaches the markers of plain clients' leases; the
// test waits for each before the lease ends, as the history needs it.
func TestViewEventTypes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	st := c.Members[0].Server().Store()
	cli := c.EtcdClient(t, 0)
	f := startView(t, st, registry.ViewOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sub, err := f.v.Subscribe(ctx, "", registry.Filter{}, registry.AfterRevision(f.v.Rev()))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	keys := st.Keys()
	put := func(k, v string, lease clientv3.LeaseID) int64 {
		t.Helper()
		resp, err := cli.Put(ctx, k, v, clientv3.WithLease(lease))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	grantMarked := func(ttl int64, key, value string) clientv3.LeaseID {
		t.Helper()
		l, err := cli.Grant(ctx, ttl)
		if err != nil {
			t.Fatal(err)
		}
		put(key, value, l.ID)
		regdtest.WaitLeaseMarker(t, cli, int64(l.ID))
		return l.ID
	}
	type ev struct{ typ, id, addr string }
	var want []ev

	ttl := int64(30)
	if _, _, err := st.Register(ctx, "ev", "rest-dereg", registry.Registration{Address: "10.7.0.1:80", TTL: &ttl}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Deregister(ctx, "ev", "rest-dereg"); err != nil {
		t.Fatal(err)
	}
	want = append(want, ev{registry.EventRegister, "rest-dereg", "10.7.0.1:80"}, ev{registry.EventDeregister, "rest-dereg", "10.7.0.1:80"})

	short := int64(2)
	if _, _, err := st.Register(ctx, "ev", "rest-exp", registry.Registration{Address: "10.7.0.2:80", TTL: &short}); err != nil {
		t.Fatal(err)
	}
	want = append(want, ev{registry.EventRegister, "rest-exp", "10.7.0.2:80"})

	pDel := grantMarked(30, keys.Instance("ev", "plain-del"), "10.7.0.3:80")
	if _, err := cli.Delete(ctx, keys.Instance("ev", "plain-del")); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(ctx, pDel); err != nil { // holds nothing now
		t.Fatal(err)
	}
	want = append(want, ev{registry.EventRegister, "plain-del", "10.7.0.3:80"}, ev{registry.EventDeregister, "plain-del", "10.7.0.3:80"})

	pRevoke := grantMarked(30, keys.Instance("ev", "plain-revoke"), "10.7.0.4:80\n")
	if _, err := cli.Revoke(ctx, pRevoke); err != nil {
		t.Fatal(err)
	}
	want = append(want, ev{registry.EventRegister, "plain-revoke", "10.7.0.4:80"}, ev{registry.EventExpire, "plain-revoke", "10.7.0.4:80"})

	put(keys.Instance("ev", "nolease"), "10.7.0.5:80", 0)
	if _, err := cli.Delete(ctx, keys.Instance("ev", "nolease")); err != nil {
		t.Fatal(err)
	}
	want = append(want, ev{registry.EventRegister, "nolease", "10.7.0.5:80"}, ev{registry.EventDeregister, "nolease", "10.7.0.5:80"})

	put(keys.Instance("ev", "to-garbage"), "10.7.0.6:80", 0)
	put(keys.Instance("ev", "to-garbage"), "garbage", 0)
	if _, err := cli.Delete(ctx, keys.Instance("ev", "to-garbage")); err != nil {
		t.Fatal(err)
	}
	want = append(want, ev{registry.EventRegister, "to-garbage", "10.7.0.6:80"}, ev{registry.EventDeregister, "to-garbage", "10.7.0.6:80"})

	// No instance, no marker, no event, whatever happens to it.
	garbage, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	put(keys.Instance("ev", "garbage"), `{"Op":1,"Addr":"10.7.0.7:80"}`, garbage.ID)
	if _, err := cli.Revoke(ctx, garbage.ID); err != nil {
		t.Fatal(err)
	}

	em, err := endpoints.NewManager(cli, keys.Prefix+"ev")
	if err != nil {
		t.Fatal(err)
	}
	naming, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if err := em.AddEndpoint(ctx, keys.Instance("ev", "naming"), endpoints.Endpoint{Addr: "10.7.0.8:50051"}, clientv3.WithLease(naming.ID)); err != nil {
		t.Fatal(err)
	}
	if err := em.DeleteEndpoint(ctx, keys.Instance("ev", "naming")); err != nil {
		t.Fatal(err)
	}
	want = append(want, ev{registry.EventRegister, "naming", "10.7.0.8:50051"}, ev{registry.EventDeregister, "naming", "10.7.0.8:50051"})

	// rest-exp's expiry comes after all of the above.
	want = append(want, ev{registry.EventExpire, "rest-exp", "10.7.0.2:80"})
	var got []ev
	poll.Until(t, 15*time.Second, "every event up to rest-exp's expiry", func() error {
		evs, err := sub.Drain()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			got = append(got, ev{e.Type, e.Instance.ID, e.Instance.Address})
		}
		if len(got) < len(want) {
			return fmt.Errorf("%d of %d events so far: %v", len(got), len(want), got)
		}
		return nil
	})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events\n got %v\nwant %v", got, want)
	}
	if n := f.v.InvalidValues(); n != 0 {
		t.Fatalf("InvalidValues() = %d after every such key went", n)
	}
}
