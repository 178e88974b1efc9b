package registry_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// TestViewResyncAfterCompaction breaks the view's watch for real: the view
// reaches etcd through a plain client and a TCP proxy; the proxy cuts it
// off, the registry changes and etcd compacts past the view's revision
// meanwhile. When the proxy lets it back, the watch cannot resume
// (compacted), the view reloads, and a subscriber gets the difference as
// events instead of missing it.
func TestViewResyncAfterCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	st0 := c.Members[0].Server().Store()
	px := startProxy(t, strings.TrimPrefix(c.Members[0].ClientURL, "http://"))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + px.addr()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	core, logs := observer.New(zap.WarnLevel)
	st := registry.NewStore(cli, registry.Options{Prefix: st0.Keys().Prefix, Logger: zap.New(core)})
	f := startView(t, st, registry.ViewOptions{})
	ctx := context.Background()
	ttl := int64(120)
	reg := func(service, id, addr string) int64 {
		t.Helper()
		inst, _, err := st0.Register(ctx, service, id, registry.Registration{Address: addr, TTL: &ttl})
		if err != nil {
			t.Fatalf("register %s/%s: %v", service, id, err)
		}
		return inst.Revision
	}
	reg("rsync", "gone", "10.3.0.1:80")
	reg("rsync", "keep", "10.3.0.2:80")
	// Two plain clients' keys whose leases carry markers (the member's
	// reporter attaches them).
	plain := c.EtcdClient(t, 0)
	var plainLeases []clientv3.LeaseID
	for _, id := range []string{"deleted", "revoked"} {
		l, err := plain.Grant(ctx, 120)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := plain.Put(ctx, st0.Keys().Instance("rsync", id), "10.3.1.1:80", clientv3.WithLease(l.ID)); err != nil {
			t.Fatal(err)
		}
		regdtest.WaitLeaseMarker(t, plain, int64(l.ID))
		plainLeases = append(plainLeases, l.ID)
	}
	before := reg("rsync", "moved", "10.3.0.3:80")
	f.waitRev(before)
	sub, err := f.v.Subscribe(ctx, "rsync", registry.Filter{}, registry.AfterRevision(before))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	px.cut(true)
	if _, err := st0.Deregister(ctx, "rsync", "gone"); err != nil {
		t.Fatal(err)
	}
	reg("rsync", "moved", "10.3.0.4:80")
	if _, err := plain.Delete(ctx, st0.Keys().Instance("rsync", "deleted")); err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Revoke(ctx, plainLeases[1]); err != nil {
		t.Fatal(err)
	}
	last := reg("rsync", "new", "10.3.0.5:80")
	if _, err := c.Members[0].Server().Node().Client().Compact(ctx, last); err != nil {
		t.Fatalf("compact: %v", err)
	}
	if evs, err := sub.Drain(); len(evs) != 0 || err != nil {
		t.Fatalf("events while cut off: %v %v", revs(evs), err)
	}
	px.cut(false)

	got := drainUntil(t, sub, last)
	byID := map[string]registry.Event{}
	for _, e := range got {
		if e.Revision < last {
			t.Fatalf("resync events %v: older than the reload (>= %d)", revs(got), last)
		}
		if _, dup := byID[e.Instance.ID]; dup {
			t.Fatalf("two events for %s: %v", e.Instance.ID, revs(got))
		}
		byID[e.Instance.ID] = e
	}
	resyncs := logs.FilterMessage("registry view resyncing").All()
	if len(resyncs) == 0 || !strings.Contains(fmt.Sprint(resyncs[len(resyncs)-1].ContextMap()["error"]), "compacted") {
		t.Errorf("view log %v, want a resync after a compacted watch", logs.All())
	}
	// The history of the gap is gone: a resync labels a vanished instance
	// by its lease's marker. Still there: the lease lives, the key was
	// deleted (deregister). Gone: the lease ended (expire), which is also
	// what a REST deregistration looks like once its lease is revoked
	// (the live watch would have said deregister; the ledger, not the
	// watch, is the authority on expiries).
	if e, ok := byID["deleted"]; !ok || e.Type != registry.EventDeregister {
		t.Errorf("deleted: %v, want a deregister event", revs(got))
	}
	if e, ok := byID["revoked"]; !ok || e.Type != registry.EventExpire {
		t.Errorf("revoked: %v, want an expire event", revs(got))
	}
	if e, ok := byID["gone"]; !ok || e.Type != registry.EventExpire {
		t.Errorf("gone: %v, want an expire event", revs(got))
	}
	if e, ok := byID["moved"]; !ok || e.Type != registry.EventRegister || e.Instance.Address != "10.3.0.4:80" {
		t.Errorf("moved: %v, want a register event with the new address", revs(got))
	}
	if e, ok := byID["new"]; !ok || e.Type != registry.EventRegister || e.Instance.Revision != last {
		t.Errorf("new: %v, want a register event", revs(got))
	}
	if _, ok := byID["keep"]; ok || len(byID) != 5 {
		t.Errorf("resync events %v, want exactly deleted, gone, moved, new and revoked", revs(got))
	}
	list := f.v.List("rsync", registry.Filter{})
	var ids []string
	for _, inst := range list.Instances {
		ids = append(ids, inst.ID+"="+inst.Address)
	}
	if fmt.Sprint(ids) != "[keep=10.3.0.2:80 moved=10.3.0.4:80 new=10.3.0.5:80]" {
		t.Fatalf("list after the resync: %v", ids)
	}
	// The view follows the live watch again.
	after := reg("rsync", "later", "10.3.0.6:80")
	if evs := drainUntil(t, sub, after); len(evs) != 1 || evs[0].Instance.ID != "later" {
		t.Fatalf("after the resync: %v, want later at %d", revs(evs), after)
	}
}

// tcpProxy forwards connections to target; cut(true) drops every
// connection and refuses new ones until cut(false).
type tcpProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.cut(true)
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		if !p.track(in, out) {
			in.Close()
			out.Close()
			continue
		}
		p.wg.Add(2)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

func (p *tcpProxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *tcpProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

func (p *tcpProxy) cut(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]struct{}{}
	}
}
