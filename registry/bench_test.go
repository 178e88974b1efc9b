package registry

// Micro-benchmarks of the registry's hot paths that run without etcd: the
// validation every registration goes through, key parsing (every watch
// event), and the view's apply + fan-out of one watch event to N
// subscribers, fed with hand-made etcd events. They live in package
// registry because the view's apply is unexported; nothing here talks to
// an etcd server.

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var benchSink any

// BenchmarkValidateRegistration is what Store.Register checks before it
// touches etcd: both names, the address, the TTL and the metadata.
func BenchmarkValidateRegistration(b *testing.B) {
	ttl := int64(30)
	for _, tc := range []struct {
		name string
		addr string
		md   map[string]string
	}{
		{"ipv4", "10.0.0.5:8080", nil},
		{"dns", "user-7.eu-west-1.svc.cluster.local:8080", nil},
		{"ipv6", "[2001:db8::1]:8080", nil},
		{"ipv4+metadata8", "10.0.0.5:8080", map[string]string{
			"zone": "eu-west-1a", "version": "1.42.7", "env": "production", "team": "identity",
			"protocol": "http", "weight": "100", "canary": "false", "build": "7f3c2a1",
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := validateNames("user-service", "user-service-7d9f8b6c5-x2k4q"); err != nil {
					b.Fatal(err)
				}
				if err := ValidateAddress(tc.addr); err != nil {
					b.Fatal(err)
				}
				if _, err := ResolveTTL(&ttl); err != nil {
					b.Fatal(err)
				}
				if err := ValidateMetadata(tc.md); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseInstanceKey runs for every instance key the view loads or
// sees in a watch event.
func BenchmarkParseInstanceKey(b *testing.B) {
	k := Keys{Prefix: "/service/"}
	key := k.Instance("user-service", "user-service-7d9f8b6c5-x2k4q")
	b.ReportAllocs()
	for b.Loop() {
		svc, id, ok := k.ParseInstance(key)
		if !ok || svc == "" || id == "" {
			b.Fatal("not parsed")
		}
	}
}

// benchView is a ready view over no etcd: only paths that never call the
// client (apply of puts whose meta record comes in the same revision, List,
// subscriptions) may be used on it.
func benchView(b *testing.B, opts ViewOptions) *View {
	b.Helper()
	v := NewView(NewStore(nil, Options{Prefix: "/service/"}), opts)
	v.load(context.Background(), 1, nil)
	return v
}

// registration builds the two events of one REST registration as etcd
// delivers them to the view: the instance key on its lease and the meta
// record, in one revision.
func registration(b *testing.B, k Keys, service, id string, lease, rev int64) []*clientv3.Event {
	b.Helper()
	m := meta{Address: "10.0.0.5:8080", Metadata: map[string]string{"zone": "a"}, TTL: 30, Lease: lease, RegisteredAt: time.Unix(1700000000, 0).UTC()}
	buf, err := json.Marshal(m)
	if err != nil {
		b.Fatal(err)
	}
	return []*clientv3.Event{
		{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(k.Instance(service, id)), Value: []byte(m.Address), Lease: lease, ModRevision: rev, CreateRevision: rev, Version: 1}},
		{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(k.Meta(service, id)), Value: buf, ModRevision: rev, CreateRevision: rev, Version: 1}},
	}
}

// BenchmarkViewApplyFanout is one registration's watch event through the
// view: parse, meta decode, state update, history append, and a push to
// each of N subscribers of the service, whose consumers drain concurrently
// (as SSE streams do, without the HTTP writes). One op is one registration
// delivered to all N subscribers. It stays below the history size, so the
// history ring never trims (see BenchmarkViewPublishHistoryFull).
func BenchmarkViewApplyFanout(b *testing.B) {
	for _, n := range []int{0, 1, 64, 1024} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			v := benchView(b, ViewOptions{QueueLimit: 1 << 30, History: 1 << 30})
			k := v.st.keys
			ctx := context.Background()
			// Pre-build the events: the benchmark is the view, not JSON
			// encoding of meta records.
			const ring = 1000
			evs := make([][]*clientv3.Event, ring)
			for i := range evs {
				evs[i] = registration(b, k, "user", "u"+strconv.Itoa(i), int64(1000+i), 0)
			}
			subs := make([]*Subscription, n)
			done := make(chan int, n)
			for i := range subs {
				_, s, err := v.SubscribeFromList(ctx, "user", Filter{})
				if err != nil {
					b.Fatal(err)
				}
				subs[i] = s
			}
			start := make(chan int)
			for _, s := range subs {
				go func() {
					want := <-start
					got := 0
					for got < want {
						<-s.Notify()
						evs, err := s.Drain()
						if err != nil {
							break
						}
						got += len(evs)
					}
					done <- got
				}()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range subs {
				start <- b.N
			}
			for i := 0; i < b.N; i++ {
				rev := int64(i + 2)
				e := evs[i%ring]
				e[0].Kv.ModRevision, e[1].Kv.ModRevision = rev, rev
				v.apply(ctx, v.st.keys.decodeChanges(rev, e))
			}
			total := 0
			for range subs {
				total += <-done
			}
			b.StopTimer()
			if total != b.N*n {
				b.Fatalf("subscribers got %d events, want %d", total, b.N*n)
			}
			for _, s := range subs {
				s.Close()
			}
		})
	}
}

// BenchmarkViewPublishHistoryFull is publish to no subscribers once the
// history ring is full (the default 65536 events), as it is on any node
// that has seen that many changes since it started: every publish then
// trims the oldest event.
func BenchmarkViewPublishHistoryFull(b *testing.B) {
	for _, size := range []int{1024, 65536} {
		b.Run(fmt.Sprintf("history=%d", size), func(b *testing.B) {
			v := benchView(b, ViewOptions{History: size})
			inst := Instance{Service: "user", ID: "u1", Address: "10.0.0.5:8080", Metadata: map[string]string{}, TTL: 30, LeaseID: "1"}
			rev := int64(2)
			v.mu.Lock()
			for range size {
				v.publish(Event{Type: EventRegister, Instance: inst, Revision: rev})
				rev++
			}
			v.mu.Unlock()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				v.mu.Lock()
				v.publish(Event{Type: EventRegister, Instance: inst, Revision: rev})
				v.mu.Unlock()
				rev++
			}
		})
	}
}

// BenchmarkViewList1000 is the view's List of a 1000-instance service:
// cached (no change since the last list) and right after a change, when the
// sorted slice is rebuilt.
func BenchmarkViewList1000(b *testing.B) {
	v := benchView(b, ViewOptions{})
	k := v.st.keys
	ctx := context.Background()
	rev := int64(2)
	for i := range 1000 {
		v.apply(ctx, v.st.keys.decodeChanges(rev, registration(b, k, "user", fmt.Sprintf("u%04d", i), int64(1000+i), rev)))
		rev++
	}
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			benchSink = v.List("user", Filter{})
		}
	})
	b.Run("after-change", func(b *testing.B) {
		e := registration(b, k, "user", "u0001", 5000, rev)
		b.ReportAllocs()
		for b.Loop() {
			e[0].Kv.ModRevision, e[1].Kv.ModRevision = rev, rev
			v.apply(ctx, v.st.keys.decodeChanges(rev, e))
			rev++
			benchSink = v.List("user", Filter{})
		}
	})
}
