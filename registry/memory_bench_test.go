package registry

// BenchmarkViewMemory: what the view keeps per registered instance (issue
// 17, target 4: a million instances on a member within 3 GiB of RSS).
// Nothing here talks to an etcd server: the view is fed what etcd would
// deliver, built the way Store.Register writes it.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// memWorkload is what each registration of a BenchmarkViewMemory run
// carries.
type memWorkload struct {
	name     string
	metadata func(seq int) map[string]string // nil: none
}

var memWorkloads = []memWorkload{
	// What regd-bench's million workload registers: an address and a TTL
	// (cmd/regd-bench: regBody, address).
	{name: "bench", metadata: nil},
	// Typical metadata of a deployment: keys and most values repeat
	// across instances, one value per instance does not.
	{name: "metadata", metadata: func(seq int) map[string]string {
		return map[string]string{
			"zone":    "eu-west-1" + string(rune('a'+seq%3)),
			"version": "1.42." + strconv.Itoa(seq%4),
			"pod":     "pod-" + strconv.Itoa(seq),
		}
	}},
}

// memRegistration is the keys one REST registration of instance seq
// writes in one transaction (Store.Register: the key on its lease, the
// meta record, the lease's marker), as etcd hands them to a watcher or a
// range read at rev.
func memRegistration(b *testing.B, k Keys, w memWorkload, services, seq int, rev int64) []*mvccpb.KeyValue {
	svc := "bench-pop-" + strconv.Itoa(seq%services)
	id := "p" + strconv.Itoa(seq)
	addr := fmt.Sprintf("10.%d.%d.%d:8080", (seq>>16)&255, (seq>>8)&255, seq&255)
	lease := int64(0x694d9a3c00000000) + int64(seq)
	m := meta{Address: addr, TTL: 3600, Lease: lease, RegisteredAt: time.Unix(1700000000, int64(seq)*1e6).UTC()}
	if w.metadata != nil {
		m.Metadata = w.metadata(seq)
	}
	buf, err := json.Marshal(m)
	if err != nil {
		b.Fatal(err)
	}
	return []*mvccpb.KeyValue{
		{Key: []byte(k.Instance(svc, id)), Value: []byte(addr), Lease: lease, ModRevision: rev, CreateRevision: rev, Version: 1},
		{Key: []byte(k.Meta(svc, id)), Value: buf, ModRevision: rev, CreateRevision: rev, Version: 1},
		{Key: []byte(k.LeaseMarker(lease)), Lease: lease, ModRevision: rev, CreateRevision: rev, Version: 1},
	}
}

// heapNow is the live heap after a full collection.
func heapNow() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkViewMemory fills a view with 50,000 instances in 500 services
// and reports the live heap it holds per instance (HeapAlloc after a
// collection, minus the same before the view was made):
//
//   - path=apply: the registrations arrive one revision each through the
//     watch (View.apply), as on a running member;
//   - path=load: the view loads them all at once (View.load), as after a
//     restart or a resync.
//
// B/instance is everything the view holds; index-B/instance leaves out the
// event history (a ring of the last DefaultViewHistory events, which holds
// every event here but is a fixed ~65,536 events at a million), whose cost
// per event is history-B/event. listed-B/instance is what every service's
// list adds once it has been asked for (View.List, cached per service until
// it changes). Run it alone, once:
//
//	go test -run '^$' -bench ViewMemory -benchtime 1x ./registry/
//
// With VIEWMEM_PROFILE=<file> each run writes a heap profile while its view
// is full (go test's -memprofile is taken after the view is gone); read it
// with go tool pprof -sample_index=inuse_space, after -memprofilerate 1.
func BenchmarkViewMemory(b *testing.B) {
	const n, services = 50000, 500
	for _, w := range memWorkloads {
		for _, path := range []string{"apply", "load"} {
			b.Run(fmt.Sprintf("workload=%s/path=%s", w.name, path), func(b *testing.B) {
				var total, index, history, listed float64
				for b.Loop() {
					before := heapNow()
					v := NewView(NewStore(nil, Options{Prefix: "/service/"}), ViewOptions{})
					k := v.st.keys
					ctx := context.Background()
					if path == "apply" {
						v.load(ctx, 1, nil)
						for seq := range n {
							rev := int64(seq + 2)
							kvs := memRegistration(b, k, w, services, seq, rev)
							evs := make([]*clientv3.Event, len(kvs))
							for i, kv := range kvs {
								evs[i] = &clientv3.Event{Type: mvccpb.PUT, Kv: kv}
							}
							v.apply(ctx, k.decodeChanges(rev, evs))
						}
					} else {
						kvs := make([]*mvccpb.KeyValue, 0, 3*n)
						for seq := range n {
							kvs = append(kvs, memRegistration(b, k, w, services, seq, int64(seq+2))...)
						}
						v.load(ctx, int64(n+1), kvs)
						kvs = nil
					}
					if got := len(v.Services().Services); got != services {
						b.Fatalf("%d services, want %d", got, services)
					}
					full := heapNow()
					if f := os.Getenv("VIEWMEM_PROFILE"); f != "" {
						if err := writeHeapProfile(f); err != nil {
							b.Fatal(err)
						}
					}
					events := len(v.history)
					v.mu.Lock()
					v.history = nil
					v.mu.Unlock()
					bare := heapNow()
					// Every service listed once (the default filter, up
					// instances), as the API's lists, DNS and Prometheus
					// discovery cache them until the service changes.
					for _, s := range v.Services().Services {
						benchSink = v.List(s.Name, Filter{})
					}
					benchSink = nil
					listed = float64(heapNow()-bare) / n
					runtime.KeepAlive(v)
					total = float64(full-before) / n
					index = float64(bare-before) / n
					if events > 0 {
						history = float64(full-bare) / float64(events)
					}
				}
				b.ReportMetric(total, "B/instance")
				b.ReportMetric(index, "index-B/instance")
				b.ReportMetric(history, "history-B/event")
				b.ReportMetric(listed, "listed-B/instance")
			})
		}
	}
}

func writeHeapProfile(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
