package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"slices"
	"sort"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/registry"
)

// fakeEtcd is the part of an etcd client that a View uses, over a fixed
// set of keys: Get of a key or a range, one watch stream
// that delivers canned events, and lease lookups (even lease IDs are alive,
// odd ones are gone). Any other call panics through the nil interfaces.
type fakeEtcd struct {
	clientv3.KV
	clientv3.Watcher
	clientv3.Lease

	rev    int64
	kvs    map[string]*mvccpb.KeyValue
	events []*clientv3.Event // delivered at rev+1
}

func (f *fakeEtcd) Get(_ context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	op := clientv3.OpGet(key, opts...)
	end := string(op.RangeBytes())
	var out []*mvccpb.KeyValue
	for k, kv := range f.kvs {
		if k == key || end != "" && k >= key && (end == "\x00" || k < end) {
			out = append(out, kv)
		}
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].Key, out[j].Key) < 0 })
	resp := &clientv3.GetResponse{Header: &pb.ResponseHeader{Revision: f.rev}, Count: int64(len(out))}
	if !op.IsCountOnly() {
		resp.Kvs = out
	}
	return resp, nil
}

// Put accepts the drain handshake's acks a foreign observe request makes
// the view write.
func (f *fakeEtcd) Put(context.Context, string, string, ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	return &clientv3.PutResponse{Header: &pb.ResponseHeader{Revision: f.rev}}, nil
}

func (f *fakeEtcd) Watch(ctx context.Context, _ string, _ ...clientv3.OpOption) clientv3.WatchChan {
	ch := make(chan clientv3.WatchResponse, 1)
	ch <- clientv3.WatchResponse{Header: &pb.ResponseHeader{Revision: f.rev + 1}, Events: f.events}
	go func() {
		<-ctx.Done()
		close(ch)
	}()
	return ch
}

func (f *fakeEtcd) RequestProgress(context.Context) error { return nil }

// Close is both the watcher's and the lease client's.
func (f *fakeEtcd) Close() error { return nil }

func (f *fakeEtcd) TimeToLive(_ context.Context, id clientv3.LeaseID, _ ...clientv3.LeaseOption) (*clientv3.LeaseTimeToLiveResponse, error) {
	resp := &clientv3.LeaseTimeToLiveResponse{ResponseHeader: &pb.ResponseHeader{Revision: f.rev}, ID: id, TTL: -1}
	if id%2 == 0 {
		resp.TTL, resp.GrantedTTL = 5, 10
	}
	return resp, nil
}

// Where a fuzzed key goes: under the registry prefix, among regd's meta
// records or lease markers, or anywhere.
var fuzzRoots = []string{"/service/", "/_regd/meta/", "/_regd/lease/", "", "/_regd/observe/"}

// FuzzViewForeignKeys feeds a View keys and values as any etcd client can
// write them: arbitrary names under the prefix, arbitrary bytes as address
// and as meta record, any lease ID; first in the initial snapshot, then as
// watch events (a put, a delete, or both in one revision). The view must
// never panic, must list exactly the keys whose names follow the layout and
// whose values are instance values (registry.ParseValue), each with its
// address and lease, render valid JSON, and publish events only for such
// keys: a deletion of a listed one is a deregister (no lease marker went
// with it).
func FuzzViewForeignKeys(f *testing.F) {
	for _, seed := range []struct {
		keyA   string
		valA   []byte
		leaseA int64
		rootA  uint8
		keyB   string
		valB   []byte
		leaseB int64
		rootB  uint8
		op     uint8
	}{
		{"user/u1", []byte("10.0.0.1:80"), 2, 0, "user/u1", []byte(`{"address":"x","metadata":{"a":"b"},"ttl":10,"lease":2,"registered_at":"2026-01-01T00:00:00Z"}`), 0, 1, 0},
		{"user/u1", []byte("10.0.0.1:80"), 3, 0, "", nil, 0, 0, 1},
		{"user/u1", []byte("\xff\xfe"), -1, 0, "user/u2", []byte("a:1"), 0, 0, 2},
		{"a/b/c", []byte("x"), 4, 0, "web", []byte("y"), 5, 0, 0},
		{"bad name/x", nil, 0, 0, "../x", nil, 0, 0, 2},
		{"0000000000000003/user/u1", nil, 0, 2, "user/u1", []byte("1.2.3.4:5"), 3, 0, 2},
		{"user/u1", []byte(`{"lease":6,"registered_at":"0000-01-01T00:00:00+23:59","metadata":{"\u0000":"\ud800"}}`), 0, 1, "user/u1", []byte("h:1"), 6, 0, 0},
		{"/service/x/y", []byte("z:1"), 8, 3, "/servicf", nil, 0, 3, 1},
		{"user/u1", []byte("10.0.0.1:80"), 2, 0, "user/u1", []byte(`{"address":"x","ttl":10,"lease":2,"registered_at":"2026-01-01T00:00:00Z","status":"draining","weight":0}`), 0, 1, 0},
		{"user/u1", []byte("10.0.0.1:80"), 2, 0, "n1", []byte(`{"service":"user","id":"u1","wait_ms":50,"deadline_ms":1}`), 2, 4, 0},
		{"user/u1", []byte("10.0.0.1:80"), 2, 0, "n1/zz", []byte(`{"delivered":1}`), 2, 4, 0},
	} {
		f.Add(seed.keyA, seed.valA, seed.leaseA, seed.rootA, seed.keyB, seed.valB, seed.leaseB, seed.rootB, seed.op)
	}
	keys := registry.Keys{Prefix: "/service/"}
	f.Fuzz(func(t *testing.T, keyA string, valA []byte, leaseA int64, rootA uint8, keyB string, valB []byte, leaseB int64, rootB uint8, op uint8) {
		fullA := fuzzRoots[int(rootA)%len(fuzzRoots)] + keyA
		fullB := fuzzRoots[int(rootB)%len(fuzzRoots)] + keyB
		// The view watches one contiguous range; etcd never hands it keys
		// outside, so neither does the fake.
		lo, hi := keys.HistoryRange()
		inRange := func(k string) bool { return k >= lo && k < hi }
		if !inRange(fullA) || !inRange(fullB) {
			return
		}
		const rev = 10
		a := &mvccpb.KeyValue{Key: []byte(fullA), Value: valA, Lease: leaseA, CreateRevision: rev - 1, ModRevision: rev - 1, Version: 1}
		b := &mvccpb.KeyValue{Key: []byte(fullB), Value: valB, Lease: leaseB, CreateRevision: rev + 1, ModRevision: rev + 1, Version: 1}
		fe := &fakeEtcd{rev: rev, kvs: map[string]*mvccpb.KeyValue{fullA: a}}
		// The store after the watch events, and the events themselves.
		after := map[string]*mvccpb.KeyValue{fullA: a}
		switch op % 3 {
		case 0:
			fe.events = []*clientv3.Event{{Type: clientv3.EventTypePut, Kv: b}}
			after[fullB] = b
		case 1:
			fe.events = []*clientv3.Event{{Type: clientv3.EventTypeDelete, Kv: &mvccpb.KeyValue{Key: []byte(fullA), ModRevision: rev + 1}, PrevKv: a}}
			delete(after, fullA)
		case 2:
			if fullA == fullB {
				return // one key cannot be put and deleted in one revision
			}
			fe.events = []*clientv3.Event{
				{Type: clientv3.EventTypePut, Kv: b},
				{Type: clientv3.EventTypeDelete, Kv: &mvccpb.KeyValue{Key: []byte(fullA), ModRevision: rev + 1}, PrevKv: a},
			}
			after[fullB] = b
			delete(after, fullA)
		}

		cli := clientv3.NewCtxClient(context.Background())
		cli.KV, cli.Watcher, cli.Lease = fe, fe, fe
		st := registry.NewStore(cli, registry.Options{Prefix: keys.Prefix})
		v := registry.NewView(st, registry.ViewOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			v.Run(ctx)
		}()
		defer func() {
			cancel()
			<-done
		}()
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		defer wcancel()
		if err := v.WaitRev(wctx, rev+1); err != nil {
			t.Fatalf("view never applied the events: %v", err)
		}
		// Exactly the keys that follow the layout and hold instance values
		// are listed, each as stored.
		isInstance := func(kv *mvccpb.KeyValue) bool {
			_, _, named := keys.ParseInstance(string(kv.Key))
			_, valid := registry.ParseValue(kv.Value)
			return named && valid
		}
		want := map[string]*mvccpb.KeyValue{}
		for k, kv := range after {
			if isInstance(kv) {
				want[k] = kv
			}
		}
		all := v.List("", registry.AllInstances)
		got := map[string]registry.Instance{}
		for _, in := range all.Instances {
			if registry.ValidateService(in.Service) != nil || registry.ValidateID(in.ID) != nil {
				t.Fatalf("listed invalid names %q/%q", in.Service, in.ID)
			}
			got[keys.Instance(in.Service, in.ID)] = in
		}
		if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))) {
			t.Fatalf("view lists %q, the store holds instances %q", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
		for k, in := range got {
			kv := want[k]
			addr, _ := registry.ParseValue(kv.Value)
			// The revision is the key's, or its meta record's when that
			// describes the key and was written later (an update).
			wantRev := kv.ModRevision
			if mkv := after[svcMeta(keys, k)]; mkv != nil && describes(mkv, kv.Lease) {
				wantRev = max(wantRev, mkv.ModRevision)
			}
			if in.Address != addr || in.LeaseID != registry.FormatLease(kv.Lease) || in.Revision != wantRev {
				t.Fatalf("%s listed as %+v, stored as value %q lease %d rev %d", k, in, kv.Value, kv.Lease, kv.ModRevision)
			}
			if in.Metadata == nil {
				t.Fatalf("%s listed with nil metadata", k)
			}
		}
		services := map[string]int{}
		for _, in := range got {
			services[in.Service]++
		}
		for _, s := range v.Services().Services {
			if services[s.Name] != s.Instances {
				t.Fatalf("service %q counted %d, listed %d", s.Name, s.Instances, services[s.Name])
			}
			delete(services, s.Name)
			body, _, _ := v.InstancesJSON(s.Name, registry.AllInstances)
			var l []registry.Instance
			if err := json.Unmarshal(body, &l); err != nil || len(l) != s.Instances {
				t.Fatalf("InstancesJSON(%q) = %s: %v", s.Name, body, err)
			}
		}
		if len(services) != 0 {
			t.Fatalf("services listed but not counted: %v", services)
		}

		// Events: only for instances; A's deletion, if A was one, is a
		// deregister.
		sub, err := v.Subscribe(ctx, "", registry.AllInstances, registry.AfterRevision(rev))
		if err != nil {
			t.Fatalf("Subscribe(after %d): %v", rev, err)
		}
		defer sub.Close()
		evs, err := sub.Drain()
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
		deletedA := isInstance(a) && (op%3 != 0 || fullB == fullA && !isInstance(b))
		sawA := false
		for _, e := range evs {
			k := keys.Instance(e.Instance.Service, e.Instance.ID)
			switch {
			case e.Revision != rev+1:
				t.Fatalf("event %+v at revision %d, the events were at %d", e, e.Revision, rev+1)
			case k == fullA && deletedA:
				sawA = true
				if e.Type != registry.EventDeregister {
					t.Fatalf("deletion of %q published as %s", fullA, e.Type)
				}
			case k == fullB && e.Type == registry.EventRegister && isInstance(b):
			case e.Type == registry.EventUpdate && k == fullA && isInstance(a) && op%3 == 0 &&
				svcMeta(keys, fullA) == fullB && describes(b, a.Lease):
				// B is A's meta record, written after A: an update.
			default:
				t.Fatalf("unexpected event %s %+v (A %q deleted %v, B %q)", e.Type, e.Instance, fullA, deletedA, fullB)
			}
		}
		if deletedA && !sawA {
			t.Fatalf("deletion of instance %q published no event: %+v", fullA, evs)
		}
	})
}

// describes reports whether mkv decodes as a meta record of a key on lease
// (what the view requires of a record before it joins it to its key).
func describes(mkv *mvccpb.KeyValue, lease int64) bool {
	var m struct {
		Address      string            `json:"address"`
		Metadata     map[string]string `json:"metadata"`
		TTL          int64             `json:"ttl"`
		Lease        int64             `json:"lease"`
		RegisteredAt time.Time         `json:"registered_at"`
		Status       string            `json:"status"`
		Weight       *int64            `json:"weight"`
	}
	return json.Unmarshal(mkv.Value, &m) == nil && lease != 0 && m.Lease == lease
}

// svcMeta is the meta record key of an instance key, "" for other keys.
func svcMeta(keys registry.Keys, key string) string {
	svc, id, ok := keys.ParseInstance(key)
	if !ok {
		return ""
	}
	return keys.Meta(svc, id)
}
