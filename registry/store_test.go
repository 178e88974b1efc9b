package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// TestStorageContract proves the storage layout of the contract both ways:
// what REST writes, a plain etcd client sees, and what a plain client
// writes, REST serves. One member serves every case; each case uses its own
// services.
func TestStorageContract(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	e := contractEnv{m: c.Members[0], cli: c.EtcdClient(t, 0), keys: registry.Keys{Prefix: "/service/"}}

	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"REST register is one plain key on its own lease", func(t *testing.T) {
			before := e.keysUnder(t, "/service/")
			inst := e.register(t, "store-reg", "i1", `{"address":"10.0.0.5:8080","ttl":300,"metadata":{"zone":"a"}}`, http.StatusCreated)
			key := e.keys.Instance("store-reg", "i1")
			if key != "/service/store-reg/i1" {
				t.Fatalf("instance key %q", key)
			}

			added := slices.DeleteFunc(e.keysUnder(t, "/service/"), func(k string) bool { return slices.Contains(before, k) })
			if !slices.Equal(added, []string{key}) {
				t.Fatalf("register added %q under /service/, want only %q", added, key)
			}
			resp, err := e.cli.Get(opCtx(t), key)
			if err != nil || len(resp.Kvs) != 1 {
				t.Fatalf("get %s: %v %v", key, resp, err)
			}
			kv := resp.Kvs[0]
			if string(kv.Value) != "10.0.0.5:8080" {
				t.Fatalf("value %q, want the plain address", kv.Value)
			}
			if kv.Lease == 0 || registry.FormatLease(kv.Lease) != inst.LeaseID {
				t.Fatalf("key lease %d, REST lease_id %q", kv.Lease, inst.LeaseID)
			}
			ttl := e.leaseTTL(t, kv.Lease)
			if ttl.GrantedTTL != 300 || ttl.TTL <= 0 {
				t.Fatalf("lease granted %d s, %d s left; want 300 granted", ttl.GrantedTTL, ttl.TTL)
			}
			// The lease holds the instance key and regd's marker of the
			// lease (outside the prefix), nothing else.
			var held []string
			for _, k := range ttl.Keys {
				held = append(held, string(k))
			}
			slices.Sort(held)
			if want := []string{e.keys.LeaseMarker(kv.Lease), key}; !slices.Equal(held, want) {
				t.Fatalf("lease holds %q, want %q", held, want)
			}
			metaKeys := e.keysUnder(t, e.keys.Meta("store-reg", "i1"))
			if !slices.Contains(metaKeys, e.keys.Meta("store-reg", "i1")) || !strings.HasPrefix(e.keys.Meta("store-reg", "i1"), registry.InternalPrefix) {
				t.Fatalf("metadata record not under %s: %q", registry.InternalPrefix, metaKeys)
			}
		}},

		{"heartbeat creates no revision", func(t *testing.T) {
			e.register(t, "store-hb", "i1", `{"address":"10.0.0.6:80","ttl":300}`, http.StatusCreated)
			// Only the expiry reporter writes on its own (its cursor,
			// every few seconds after registry changes). An attempt that
			// overlaps one of its writes is retried; any other change
			// seen during heartbeats fails the test.
			background := func(k string) bool {
				return strings.HasPrefix(k, e.keys.ExpiryCursor()) || strings.HasPrefix(k, e.keys.ExpiryLog()) || strings.HasPrefix(k, e.keys.LeaseMarkers()) ||
					(strings.HasPrefix(k, "/service/") && k != e.keys.Instance("store-hb", "i1"))
			}
			for attempt := 1; ; attempt++ {
				rev0 := e.revision(t)
				for i := range 5 {
					if code, errc := e.heartbeat(t, "store-hb", "i1"); code != http.StatusOK {
						t.Fatalf("heartbeat %d: %d %s", i, code, errc)
					}
				}
				rev1 := e.revision(t)
				if rev1 == rev0 {
					return
				}
				for _, ev := range regdtest.History(t, e.cli, rev0+1, rev1) {
					if !background(string(ev.Kv.Key)) {
						t.Fatalf("revision moved %d -> %d during heartbeats: %s %q", rev0, rev1, ev.Type, ev.Kv.Key)
					}
				}
				if attempt == 10 {
					t.Fatalf("revision moved during heartbeats in %d attempts (last %d -> %d)", attempt, rev0, rev1)
				}
			}
		}},

		{"plain watcher sees REST register and deregister", func(t *testing.T) {
			wctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			wch := e.cli.Watch(wctx, "/service/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
			if created := <-wch; !created.Created {
				t.Fatalf("first watch response is not the creation: %+v", created)
			}
			key := e.keys.Instance("store-watch", "i1")
			inst := e.register(t, "store-watch", "i1", `{"address":"10.0.0.7:9000","ttl":300}`, http.StatusCreated)
			ev := nextEvent(t, wch, key)
			if ev.Type != clientv3.EventTypePut || string(ev.Kv.Value) != "10.0.0.7:9000" || registry.FormatLease(ev.Kv.Lease) != inst.LeaseID {
				t.Fatalf("register seen as %s %q=%q lease %d", ev.Type, ev.Kv.Key, ev.Kv.Value, ev.Kv.Lease)
			}
			if code, _, b := regdtest.Do(t, http.MethodDelete, instanceURL(e, "store-watch", "i1"), nil); code != http.StatusNoContent {
				t.Fatalf("deregister: %d %s", code, b)
			}
			if ev := nextEvent(t, wch, key); ev.Type != clientv3.EventTypeDelete {
				t.Fatalf("deregister seen as %s", ev.Type)
			}
		}},

		{"plain leased key is served like any instance", func(t *testing.T) {
			ctx := opCtx(t)
			grant, err := e.cli.Grant(ctx, 5)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.cli.Put(ctx, "/service/web/w1", "10.1.1.1:80", clientv3.WithLease(grant.ID)); err != nil {
				t.Fatal(err)
			}
			lease := registry.FormatLease(int64(grant.ID))

			code, _, b := regdtest.Do(t, http.MethodGet, instanceURL(e, "web", "w1"), nil)
			if code != http.StatusOK {
				t.Fatalf("get: %d %s", code, b)
			}
			var raw map[string]json.RawMessage
			regdtest.MustJSON(t, b, &raw)
			if string(raw["metadata"]) != "{}" {
				t.Fatalf("metadata %s, want {}", raw["metadata"])
			}
			var inst registry.Instance
			regdtest.MustJSON(t, b, &inst)
			if inst.Address != "10.1.1.1:80" || inst.TTL != 5 || inst.LeaseID != lease {
				t.Fatalf("get: %s; want ttl 5, lease_id %s", b, lease)
			}

			poll.Until(t, 5*time.Second, "web lists the registered instance", func() error {
				l := e.list(t, "web")
				if len(l.Instances) != 1 {
					return fmt.Errorf("list web: %+v", l)
				}
				in := l.Instances[0]
				if in.ID != "w1" || in.Address != "10.1.1.1:80" || in.TTL != 5 || in.LeaseID != lease || in.Metadata == nil || len(in.Metadata) != 0 {
					return fmt.Errorf("listed as %+v", in)
				}
				return nil
			})
			if code, errc := e.heartbeat(t, "web", "w1"); code != http.StatusOK {
				t.Fatalf("heartbeat: %d %s", code, errc)
			}
		}},

		{"plain key without a lease is listed but cannot be renewed", func(t *testing.T) {
			if _, err := e.cli.Put(opCtx(t), "/service/store-static/static", "10.1.1.2:80"); err != nil {
				t.Fatal(err)
			}
			poll.Until(t, 5*time.Second, "a plain key listed", func() error {
				l := e.list(t, "store-static")
				if len(l.Instances) != 1 {
					return fmt.Errorf("list: %+v", l)
				}
				if in := l.Instances[0]; in.ID != "static" || in.Address != "10.1.1.2:80" || in.TTL != 0 || in.LeaseID != "0" {
					return fmt.Errorf("listed as %+v", in)
				}
				return nil
			})
			if code, errc := e.heartbeat(t, "store-static", "static"); code != http.StatusConflict || errc != registry.CodeNoLease {
				t.Fatalf("heartbeat: %d %s, want 409 %s", code, errc, registry.CodeNoLease)
			}
		}},

		{"keys breaking the layout are not instances", func(t *testing.T) {
			ctx := opCtx(t)
			for _, k := range []string{"/service/store-lay", "/service/store-lay/a/b", "/service/store-lay/", "/service/bad name/x", "/service//x", "/service/store-lay/ok"} {
				if _, err := e.cli.Put(ctx, k, "10.1.1.3:80"); err != nil {
					t.Fatal(err)
				}
			}
			poll.Until(t, 5*time.Second, "store-lay lists only ok", func() error {
				if got := ids(e.list(t, "store-lay")); !slices.Equal(got, []string{"ok"}) {
					return fmt.Errorf("store-lay lists %q, want only ok", got)
				}
				return nil
			})
			svcs := e.services(t)
			for _, s := range svcs.Services {
				if registry.ValidateService(s.Name) != nil {
					t.Fatalf("services list has %q", s.Name)
				}
			}
			if n := serviceCount(svcs, "store-lay"); n != 1 {
				t.Fatalf("store-lay counted %d instances, want 1", n)
			}
			if code, _, b := regdtest.Do(t, http.MethodGet, e.m.URL("/readyz"), nil); code != http.StatusOK {
				t.Fatalf("readyz after odd keys: %d %s", code, b)
			}
		}},

		{"user-b is not part of user", func(t *testing.T) {
			e.register(t, "user", "u1", `{"address":"10.2.0.1:80","ttl":300}`, http.StatusCreated)
			e.register(t, "user-b", "u1", `{"address":"10.2.0.2:80","ttl":300}`, http.StatusCreated)
			e.register(t, "user-b", "x", `{"address":"10.2.0.3:80","ttl":300}`, http.StatusCreated)
			poll.Until(t, 5*time.Second, "user and user-b each list their own", func() error {
				u, ub := e.list(t, "user"), e.list(t, "user-b")
				if !slices.Equal(ids(u), []string{"u1"}) || u.Instances[0].Address != "10.2.0.1:80" {
					return fmt.Errorf("user lists %+v", u.Instances)
				}
				if !slices.Equal(ids(ub), []string{"u1", "x"}) {
					return fmt.Errorf("user-b lists %q", ids(ub))
				}
				svcs := e.services(t)
				if serviceCount(svcs, "user") != 1 || serviceCount(svcs, "user-b") != 2 {
					return fmt.Errorf("services %+v", svcs.Services)
				}
				return nil
			})
		}},

		{"re-register replaces the key and its lease", func(t *testing.T) {
			first := e.register(t, "store-rr", "i1", `{"address":"10.3.0.1:80","ttl":300}`, http.StatusCreated)
			second := e.register(t, "store-rr", "i1", `{"address":"10.3.0.2:80","ttl":300}`, http.StatusOK)
			if second.LeaseID == first.LeaseID {
				t.Fatalf("re-register kept lease %s", first.LeaseID)
			}
			poll.Until(t, 5*time.Second, "store-rr lists the re-registration", func() error {
				l := e.list(t, "store-rr")
				if len(l.Instances) != 1 || l.Instances[0].Address != "10.3.0.2:80" || l.Instances[0].LeaseID != second.LeaseID {
					return fmt.Errorf("list %+v", l.Instances)
				}
				return nil
			})
			resp, err := e.cli.Get(opCtx(t), e.keys.Instance("store-rr", "i1"))
			if err != nil || len(resp.Kvs) != 1 {
				t.Fatalf("get: %v %v", resp, err)
			}
			if kv := resp.Kvs[0]; string(kv.Value) != "10.3.0.2:80" || registry.FormatLease(kv.Lease) != second.LeaseID {
				t.Fatalf("key %q on lease %d, want the new address on lease %s", kv.Value, kv.Lease, second.LeaseID)
			}
			old := parseLease(t, first.LeaseID)
			poll.Until(t, 5*time.Second, "the old lease revoked", func() error {
				if ttl := e.leaseTTL(t, old).TTL; ttl != -1 {
					return fmt.Errorf("old lease %d still has %d s", old, ttl)
				}
				return nil
			})
		}},

		{"deregister deletes the key and revokes the lease", func(t *testing.T) {
			inst := e.register(t, "store-dr", "i1", `{"address":"10.4.0.1:80","ttl":300}`, http.StatusCreated)
			url := instanceURL(e, "store-dr", "i1")
			if code, _, b := regdtest.Do(t, http.MethodDelete, url, nil); code != http.StatusNoContent || len(b) != 0 {
				t.Fatalf("deregister: %d %q", code, b)
			}
			if left := e.keysUnder(t, e.keys.Service("store-dr")); len(left) != 0 {
				t.Fatalf("keys left under the service: %q", left)
			}
			if left := e.keysUnder(t, e.keys.Meta("store-dr", "i1")); len(left) != 0 {
				t.Fatalf("metadata left: %q", left)
			}
			lease := parseLease(t, inst.LeaseID)
			poll.Until(t, 5*time.Second, "the deregistered instance's lease revoked", func() error {
				if ttl := e.leaseTTL(t, lease).TTL; ttl != -1 {
					return fmt.Errorf("lease %d still has %d s", lease, ttl)
				}
				return nil
			})
			code, _, b := regdtest.Do(t, http.MethodDelete, url, nil)
			if code != http.StatusNotFound || errorCode(b) != registry.CodeNotFound {
				t.Fatalf("second deregister: %d %s", code, b)
			}
		}},

		{"unrenewed instance expires", func(t *testing.T) {
			inst := e.register(t, "store-exp", "i1", `{"address":"10.5.0.1:80","ttl":2}`, http.StatusCreated)
			if inst.TTL != 2 {
				t.Fatalf("granted ttl %d, want 2", inst.TTL)
			}
			// 2 s of TTL, plus etcd's expiry check and the watch.
			poll.Until(t, 6*time.Second, "the expired instance no longer listed", func() error {
				if l := e.list(t, "store-exp"); len(l.Instances) != 0 {
					return fmt.Errorf("still listed: %+v", l.Instances)
				}
				return nil
			})
			if code, errc := e.heartbeat(t, "store-exp", "i1"); code != http.StatusNotFound || errc != registry.CodeNotFound {
				t.Fatalf("heartbeat after expiry: %d %s, want 404 %s", code, errc, registry.CodeNotFound)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.run)
	}
}
