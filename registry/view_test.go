package registry_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// viewFixture is a View of its own over a real one-member cluster's store,
// run until the test ends.
type viewFixture struct {
	t    *testing.T
	st   *registry.Store
	v    *registry.View
	done chan struct{}
	stop context.CancelFunc
}

func startView(t *testing.T, st *registry.Store, opts registry.ViewOptions) *viewFixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &viewFixture{t: t, st: st, v: registry.NewView(st, opts), done: make(chan struct{}), stop: cancel}
	go func() {
		defer close(f.done)
		f.v.Run(ctx)
	}()
	t.Cleanup(f.close)
	select {
	case <-f.v.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("view not ready within 10s")
	}
	return f
}

// close stops the view and waits for Run to return.
func (f *viewFixture) close() {
	f.stop()
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		f.t.Error("View.Run did not return within 10s of its context ending")
	}
}

// register registers service/id through the store and returns its revision.
func (f *viewFixture) register(service, id string) int64 {
	f.t.Helper()
	ttl := int64(60)
	inst, _, err := f.st.Register(context.Background(), service, id, registry.Registration{Address: "10.0.0.1:80", TTL: &ttl})
	if err != nil {
		f.t.Fatalf("register %s/%s: %v", service, id, err)
	}
	return inst.Revision
}

// waitRev waits (with a deadline) until the view has applied rev.
func (f *viewFixture) waitRev(rev int64) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.v.WaitRev(ctx, rev); err != nil {
		f.t.Fatalf("WaitRev(%d): %v (view at %d)", rev, err, f.v.Rev())
	}
}

// drainUntil drains sub until it has delivered an event at revision >= rev,
// and returns every event it delivered.
func drainUntil(t *testing.T, sub *registry.Subscription, rev int64) []registry.Event {
	t.Helper()
	var out []registry.Event
	deadline := time.After(5 * time.Second)
	for {
		evs, err := sub.Drain()
		out = append(out, evs...)
		if len(out) > 0 && out[len(out)-1].Revision >= rev {
			return out
		}
		if err != nil {
			t.Fatalf("subscription ended with %v after %v; waiting for revision %d", err, revs(out), rev)
		}
		select {
		case <-sub.Notify():
		case <-deadline:
			t.Fatalf("no event at revision %d within 5s; got %v", rev, revs(out))
		}
	}
}

func revs(evs []registry.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%d:%s:%s/%s", e.Revision, e.Type, e.Instance.Service, e.Instance.ID)
	}
	return out
}

func TestView(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	st := c.Members[0].Server().Store()
	etcd := c.Members[0].Server().Node().Client()
	opts := registry.ViewOptions{History: 8, QueueLimit: 4}

	t.Run("WaitRevThenList", func(t *testing.T) {
		f := startView(t, st, opts)
		rev := f.register("wait", "w1")
		f.waitRev(rev)
		if got := f.v.Rev(); got < rev {
			t.Fatalf("Rev() = %d after WaitRev(%d)", got, rev)
		}
		list := f.v.List("wait", registry.Filter{})
		if len(list.Instances) != 1 || list.Instances[0].ID != "w1" || list.Instances[0].Revision != rev || list.Revision < rev {
			t.Fatalf("List after WaitRev(%d): %+v", rev, list)
		}
		if list.Instances[0].Address != "10.0.0.1:80" || list.Instances[0].TTL != 60 {
			t.Fatalf("instance in the view: %+v", list.Instances[0])
		}
		found := false
		for _, s := range f.v.Services().Services {
			found = found || s.Name == "wait" && s.Instances == 1
		}
		if !found {
			t.Fatalf("Services() lacks wait=1: %+v", f.v.Services())
		}
		// A revision the cluster has not reached: WaitRev honours ctx.
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if err := f.v.WaitRev(ctx, rev+1000); err == nil {
			t.Fatal("WaitRev of a future revision returned nil")
		}
	})

	t.Run("HistoryFloor", func(t *testing.T) {
		f := startView(t, st, opts)
		start := f.v.Rev()
		var rs []int64
		for i := range 20 {
			rs = append(rs, f.register("ring", fmt.Sprintf("r%02d", i)))
		}
		f.waitRev(rs[19])
		// History 8 keeps at least the 8 newest events (trimming is
		// amortized, so sometimes a few more). Resuming from before the
		// oldest kept event is compacted; from it on, the replay is
		// exactly the events after the resume point.
		if _, err := f.v.Subscribe(context.Background(), "ring", registry.Filter{}, registry.AfterRevision(start)); !errors.Is(err, registry.ErrCompacted) {
			t.Fatalf("Subscribe(after %d), far before the floor: err %v, want ErrCompacted", start, err)
		}
		first := -1 // index of the oldest resume point that is not compacted
		for i, r := range rs {
			sub, err := f.v.Subscribe(context.Background(), "ring", registry.Filter{}, registry.AfterRevision(r))
			if errors.Is(err, registry.ErrCompacted) {
				if first >= 0 {
					t.Fatalf("Subscribe(after %d) compacted, but after %d was not", r, rs[first])
				}
				continue
			}
			if err != nil {
				t.Fatalf("Subscribe(after %d): %v", r, err)
			}
			if first < 0 {
				first = i
			}
			if i == len(rs)-1 {
				sub.Close()
				continue
			}
			got := drainUntil(t, sub, rs[19])
			sub.Close()
			if len(got) != len(rs)-1-i {
				t.Fatalf("replay after %d: %v, want %v", r, revs(got), rs[i+1:])
			}
			for k, e := range got {
				if e.Revision != rs[i+1+k] || e.Type != registry.EventRegister || e.Instance.ID != fmt.Sprintf("r%02d", i+1+k) {
					t.Fatalf("replay after %d, event %d: %v, want register r%02d at %d", r, k, revs(got), i+1+k, rs[i+1+k])
				}
			}
		}
		if first < 0 || len(rs)-1-first < 8 {
			t.Fatalf("only %d events are replayable; History 8 must keep at least 8", len(rs)-1-first)
		}
	})

	t.Run("SlowSubscriber", func(t *testing.T) {
		f := startView(t, st, opts)
		sub, err := f.v.Subscribe(context.Background(), "slow", registry.Filter{}, registry.AfterRevision(f.v.Rev()))
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		var last int64
		for i := range 6 { // QueueLimit 4: the fifth pending event drops it
			last = f.register("slow", fmt.Sprintf("s%d", i))
		}
		f.waitRev(last)
		select {
		case <-sub.Notify():
		default:
			t.Fatal("Notify has no value after events were pushed")
		}
		evs, err := sub.Drain()
		if !errors.Is(err, registry.ErrSlowSubscriber) || len(evs) != 0 {
			t.Fatalf("Drain of an undrained subscription: %v, %v; want no events and ErrSlowSubscriber", revs(evs), err)
		}
		// A consumer that keeps up is not dropped.
		fast, err := f.v.Subscribe(context.Background(), "slow", registry.Filter{}, registry.AfterRevision(f.v.Rev()))
		if err != nil {
			t.Fatal(err)
		}
		defer fast.Close()
		for i := range 6 {
			r := f.register("slow", fmt.Sprintf("f%d", i))
			if evs := drainUntil(t, fast, r); len(evs) != 1 || evs[0].Instance.ID != fmt.Sprintf("f%d", i) {
				t.Fatalf("fast consumer got %v", revs(evs))
			}
		}
	})

	t.Run("ChangedWakesOnlyItsService", func(t *testing.T) {
		f := startView(t, st, opts)
		revA, wakeA := f.v.Changed("cha")
		_, wakeB := f.v.Changed("chb")
		_, wakeAll := f.v.Changed("")
		rb := f.register("chb", "b1")
		select {
		case <-wakeB:
		case <-time.After(5 * time.Second):
			t.Fatal("Changed(chb) did not wake on a chb registration")
		}
		select {
		case <-wakeAll:
		case <-time.After(5 * time.Second):
			t.Fatal("Changed(\"\") did not wake on a new service")
		}
		// The view has applied rb (wakeB fired under the same lock), so
		// a wake of cha would have happened by now.
		f.waitRev(rb)
		select {
		case <-wakeA:
			t.Fatal("Changed(cha) woke on a change to chb")
		default:
		}
		if r, _ := f.v.Changed("cha"); r != revA {
			t.Fatalf("Changed(cha) moved from %d to %d on a chb change", revA, r)
		}
		if r, _ := f.v.Changed("chb"); r != rb {
			t.Fatalf("Changed(chb) = %d, want %d", r, rb)
		}
		ra := f.register("cha", "a1")
		select {
		case <-wakeA:
		case <-time.After(5 * time.Second):
			t.Fatal("Changed(cha) did not wake on a cha registration")
		}
		if r, _ := f.v.Changed("cha"); r != ra {
			t.Fatalf("Changed(cha) = %d, want %d", r, ra)
		}
	})

	// A subscriber may resume from a revision this view has not applied
	// yet (its last event came from a member that is ahead). It must not
	// get the events up to that revision a second time.
	t.Run("ResumeAfterFutureRevision", func(t *testing.T) {
		f := startView(t, st, opts)
		now := f.v.Rev()
		type result struct {
			sub *registry.Subscription
			err error
		}
		subscribed := make(chan result, 1)
		go func() {
			sub, err := f.v.Subscribe(context.Background(), "future", registry.Filter{}, registry.AfterRevision(now+2))
			subscribed <- result{sub, err}
		}()
		// Register until a revision is past now+2; the expiry reporter's
		// cursor may take a revision in between, so the expected events
		// are computed.
		var rs []int64
		ids := map[int64]string{}
		for i := 0; len(rs) == 0 || rs[len(rs)-1] <= now+2; i++ {
			if i == 10 {
				t.Fatal("10 registrations did not pass revision now+2")
			}
			r := f.register("future", fmt.Sprintf("x%d", i))
			rs = append(rs, r)
			ids[r] = fmt.Sprintf("x%d", i)
		}
		var res result
		select {
		case res = <-subscribed:
		case <-time.After(5 * time.Second):
			t.Fatal("Subscribe of a revision the cluster reached did not return within 5s")
		}
		if res.err != nil {
			t.Fatalf("Subscribe(after %d): %v", now+2, res.err)
		}
		defer res.sub.Close()
		if rs[0] > now+2 {
			t.Skipf("other writes moved the cluster past %d before the first registration", now+2)
		}
		last := rs[len(rs)-1]
		got := drainUntil(t, res.sub, last)
		if len(got) != 1 || got[0].Revision != last || got[0].Instance.ID != ids[last] {
			t.Fatalf("Subscribe(after %d) delivered %v; want only %s at %d (registrations at %v)", now+2, revs(got), ids[last], last, rs)
		}

		// A revision this cluster never reaches is not one of its own:
		// start over from a list.
		begin := time.Now()
		if _, err := f.v.Subscribe(context.Background(), "future", registry.Filter{}, registry.AfterRevision(last+1_000_000)); !errors.Is(err, registry.ErrCompacted) {
			t.Fatalf("Subscribe(after a revision the cluster never reached): %v, want ErrCompacted", err)
		}
		if d := time.Since(begin); d > 5*time.Second {
			t.Fatalf("Subscribe of an unreachable revision took %s", d)
		}
	})

	// Resuming from before etcd's compaction point is a reset even when
	// the view still holds the events: the contract says so.
	t.Run("ResumeBeforeStoreCompaction", func(t *testing.T) {
		f := startView(t, st, registry.ViewOptions{})
		r1 := f.register("cmp", "c1")
		r2 := f.register("cmp", "c2")
		f.waitRev(r2)
		sub, err := f.v.Subscribe(context.Background(), "cmp", registry.Filter{}, registry.AfterRevision(r1-1))
		if err != nil {
			t.Fatalf("Subscribe before compaction: %v", err)
		}
		sub.Close()
		if _, err := etcd.Compact(context.Background(), r2); err != nil {
			t.Fatalf("compact: %v", err)
		}
		if _, err := f.v.Subscribe(context.Background(), "cmp", registry.Filter{}, registry.AfterRevision(r1)); !errors.Is(err, registry.ErrCompacted) {
			t.Fatalf("Subscribe(after %d) with etcd compacted at %d: %v, want ErrCompacted", r1, r2, err)
		}
		sub, err = f.v.Subscribe(context.Background(), "cmp", registry.Filter{}, registry.AfterRevision(r2))
		if err != nil {
			t.Fatalf("Subscribe at the compaction point: %v", err)
		}
		defer sub.Close()
		// The view keeps following after the compaction.
		r3 := f.register("cmp", "c3")
		if got := drainUntil(t, sub, r3); len(got) != 1 || got[0].Instance.ID != "c3" {
			t.Fatalf("after compaction: %v, want c3 at %d", revs(got), r3)
		}
	})

	// With more than 4096 services, the view drops the state of a
	// service whose last instance went. A blocking query that arrives
	// after that with an index from before must still see the change.
	t.Run("ChangedAfterPrunedService", func(t *testing.T) {
		f := startView(t, st, opts)
		ctx := context.Background()
		cli := etcd
		const n = 4100
		for i := 0; i < n; i += 128 {
			var ops []clientv3.Op
			for j := i; j < min(i+128, n); j++ {
				ops = append(ops, clientv3.OpPut(st.Keys().Instance(fmt.Sprintf("pruned%04d", j), "i"), "10.4.0.1:80"))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				t.Fatal(err)
			}
		}
		// The keys stay: deleting thousands right before the cluster
		// stops can crash etcd (a watch's prevKV lookup on the closed
		// backend, etcd v3.7.3).
		now, err := st.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f.waitRev(now)
		index, _ := f.v.Changed("pruned0000") // what a client's last answer said
		del, err := cli.Delete(ctx, st.Keys().Instance("pruned0000", "i"))
		if err != nil || del.Deleted != 1 {
			t.Fatalf("delete: %v %+v", err, del)
		}
		f.waitRev(del.Header.Revision)
		if len(f.v.List("pruned0000", registry.Filter{}).Instances) != 0 {
			t.Fatal("deleted instance still listed")
		}
		if changed, _ := f.v.Changed("pruned0000"); changed <= index {
			t.Fatalf("Changed(pruned0000) = %d after a deletion at %d; a waiter with index %d would sleep through it", changed, del.Header.Revision, index)
		}
	})

	t.Run("CloseEndsSubscriptions", func(t *testing.T) {
		f := startView(t, st, opts)
		sub, err := f.v.Subscribe(context.Background(), "", registry.Filter{}, registry.AfterRevision(f.v.Rev()))
		if err != nil {
			t.Fatal(err)
		}
		f.close()
		select {
		case <-sub.Notify():
		case <-time.After(5 * time.Second):
			t.Fatal("no notification when the view stopped")
		}
		if _, err := sub.Drain(); !errors.Is(err, registry.ErrViewClosed) {
			t.Fatalf("Drain after the view stopped: %v, want ErrViewClosed", err)
		}
		if _, err := f.v.Subscribe(context.Background(), "", registry.Filter{}, registry.AfterRevision(f.v.Rev())); !errors.Is(err, registry.ErrViewClosed) {
			t.Fatalf("Subscribe on a stopped view: %v, want ErrViewClosed", err)
		}
	})
}
