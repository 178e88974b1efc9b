package registry_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// TestViewRecordOfRewrittenKey: when a plain client rewrites a REST
// instance's key without its meta record, the view builds the instance
// from the record it knows, as a point read (Store.Get) does from etcd.
// The view keeps most records only inside the instances built from them
// (View.record), so each step here is one where it must find the record
// there, or remember it apart, or remember that it is gone: the key
// rewritten on its lease; the record deleted alone, then the key rewritten
// (a plain instance now); a record written before its key, then the key on
// the record's lease. (A key moved to another lease is not a step: the
// leader's expiry consumer then removes the record and revokes the lease.)
// A second view, loaded from etcd afterwards, must agree too.
func TestViewRecordOfRewrittenKey(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	st := c.Members[0].Server().Store()
	cli := c.EtcdClient(t, 0)
	f := startView(t, st, registry.ViewOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	keys := st.Keys()
	all := registry.Filter{Status: registry.StatusAny}

	ttl, weight, status := int64(60), int64(7), registry.StatusDraining
	inst, _, err := st.Register(ctx, "rec", "a", registry.Registration{Address: "10.8.0.1:80", TTL: &ttl, Weight: &weight, Status: &status,
		Metadata: map[string]string{"zone": "eu-1a"}})
	if err != nil {
		t.Fatal(err)
	}
	lease, err := strconv.ParseInt(inst.LeaseID, 10, 64)
	if err != nil {
		t.Fatal(err)
	}

	// same checks that the view's instance id is what etcd holds at rev,
	// and whether that is a REST instance (built from its record) or a
	// plain one.
	same := func(step, id string, rev int64, fromRecord bool) {
		t.Helper()
		f.waitRev(rev)
		want, err := st.Get(ctx, "rec", id)
		if err != nil {
			t.Fatalf("%s: Get: %v", step, err)
		}
		if (want.RegisteredAt != nil) != fromRecord {
			t.Fatalf("%s: Get says registered_at %v, want the record: %v", step, want.RegisteredAt, fromRecord)
		}
		var got *registry.Instance
		for _, in := range f.v.List("rec", all).Instances {
			if in.ID == id {
				got = &in
			}
		}
		if got == nil {
			t.Fatalf("%s: %s not in the view", step, id)
		}
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		if string(g) != string(w) {
			t.Fatalf("%s: view has\n%s\nGet has\n%s", step, g, w)
		}
	}
	put := func(key, value string, l clientv3.LeaseID) int64 {
		t.Helper()
		resp, err := cli.Put(ctx, key, value, clientv3.WithLease(l))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}

	same("registered", "a", inst.Revision, true)
	same("rewritten on its lease", "a", put(keys.Instance("rec", "a"), "10.8.0.2:80", clientv3.LeaseID(lease)), true)

	rec, err := cli.Get(ctx, keys.Meta("rec", "a"))
	if err != nil || len(rec.Kvs) != 1 {
		t.Fatalf("record of a: %v, %v", rec, err)
	}
	del, err := cli.Delete(ctx, keys.Meta("rec", "a"))
	if err != nil {
		t.Fatal(err)
	}
	f.waitRev(del.Header.Revision)
	// The record's deletion alone changes nothing the view shows (no
	// event); the next write of the key shows it gone.
	if l := f.v.List("rec", all); len(l.Instances) != 1 || l.Instances[0].RegisteredAt == nil {
		t.Fatalf("after the record's deletion alone: %+v", l.Instances)
	}
	same("rewritten without a record", "a", put(keys.Instance("rec", "a"), "10.8.0.3:80", clientv3.LeaseID(lease)), false)

	// b's record (a's, on another lease) comes first, then its key.
	other, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(rec.Kvs[0].Value, &m); err != nil {
		t.Fatal(err)
	}
	m["lease"] = int64(other.ID)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	put(keys.Meta("rec", "b"), string(b), clientv3.NoLease)
	same("b's key after its record", "b", put(keys.Instance("rec", "b"), "10.8.0.4:80", other.ID), true)
	same("b rewritten on its lease", "b", put(keys.Instance("rec", "b"), "10.8.0.5:80", other.ID), true)

	// A view loaded from etcd now agrees with the one that followed.
	g := startView(t, st, registry.ViewOptions{})
	g.waitRev(f.v.Rev())
	followed, _ := json.Marshal(f.v.List("rec", all).Instances)
	loaded, _ := json.Marshal(g.v.List("rec", all).Instances)
	if string(followed) != string(loaded) {
		t.Fatalf("followed view\n%s\nloaded view\n%s", followed, loaded)
	}
}
