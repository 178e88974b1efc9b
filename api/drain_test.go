package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// observed sends method to url with ?wait_observed=wait and returns the
// status, the two handshake headers and when the answer was read.
func observed(t *testing.T, method, url, body string, wait time.Duration) (code int, obs, members string, rev int64, at time.Time) {
	t.Helper()
	c, hdr, out := sendTyped(t, method, url+"?wait_observed="+wait.String(), "application/merge-patch+json", body)
	at = time.Now()
	if c != http.StatusOK && c != http.StatusNoContent {
		t.Fatalf("%s %s: %d %s", method, url, c, out)
	}
	return c, hdr.Get(api.HeaderObserved), hdr.Get(api.HeaderObservedMembers), headerRev(t, hdr), at
}

// waitWaiting waits until member m's view holds n blocking queries of
// service: they were open when the change committed.
func waitWaiting(t *testing.T, m *regdtest.Member, service string, n int) {
	t.Helper()
	poll.Until(t, 10*time.Second, m.Name+" holds the blocking queries", func() error {
		if got := m.Server().View().Waiting(service); got != n {
			return fmt.Errorf("%s holds %d blocking queries of %s, want %d", m.Name, got, service, n)
		}
		return nil
	})
}

// TestDrainHandshake (issue 12, contract v2 "Drain handshake"): a PATCH
// with ?wait_observed answers only after every subscriber of the service on
// every member that the change concerns (20 watch streams of several
// kinds spread over three members, six blocking queries) has been written
// the change: each of them has it before the answer arrives, and the
// answer counts them all. Subscribers the change does not concern (another
// zone, another service) are not counted and see nothing. A DELETE of the
// drained instance concerns only the streams that still show it.
func TestDrainHandshake(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	t.Parallel()
	c := regdtest.StartCluster(t, 3)
	m0 := c.Members[0]
	registerWith(t, m0, "drain", "target", map[string]any{"address": "10.8.0.1:80", "ttl": 60, "metadata": map[string]string{"zone": "main"}})
	registerWith(t, m0, "drain", "other", map[string]any{"address": "10.8.0.2:80", "ttl": 60, "metadata": map[string]string{"zone": "other"}})
	last := registerWith(t, m0, "elsewhere", "e1", map[string]any{"address": "10.8.0.3:80", "ttl": 60})
	after := fmt.Sprint(last.Revision)

	// 20 streams the drain concerns, over the three members.
	kinds := []struct {
		path string
		n    int
	}{
		{"/v1/services/drain/watch", 8},                // up instances: target leaves
		{"/v1/services/drain/watch?status=any", 5},     // every instance
		{"/v1/watch", 4},                               // every service
		{"/v1/services/drain/watch?meta.zone=main", 3}, // target's zone
	}
	type sub struct {
		name string
		s    *sseStream
	}
	var subs []sub
	for _, k := range kinds {
		for i := range k.n {
			m := c.Members[len(subs)%3]
			subs = append(subs, sub{fmt.Sprintf("%s #%d on %s", k.path, i, m.Name), openSSE(t, m.URL(k.path), after)})
		}
	}
	if len(subs) != 20 {
		t.Fatalf("%d streams", len(subs))
	}
	// Two it does not concern.
	zoneOther := openSSE(t, c.Members[1].URL("/v1/services/drain/watch?meta.zone=other"), after)
	elsewhere := openSSE(t, c.Members[2].URL("/v1/services/elsewhere/watch"), after)

	// Six blocking queries it concerns (two per member), one it does not.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var queries []<-chan asyncResult
	for _, m := range c.Members {
		queries = append(queries,
			asyncGet(ctx, m.URL(fmt.Sprintf("/v1/services/drain/instances?index=%d&wait=30s", last.Revision))),
			asyncGet(ctx, m.URL(fmt.Sprintf("/v1/services/drain/instances?meta.zone=main&index=%d&wait=30s", last.Revision))))
	}
	unconcerned := asyncGet(ctx, m0.URL(fmt.Sprintf("/v1/services/drain/instances?meta.zone=other&index=%d&wait=30s", last.Revision)))
	waitWaiting(t, c.Members[0], "drain", 3)
	waitWaiting(t, c.Members[1], "drain", 2)
	waitWaiting(t, c.Members[2], "drain", 2)

	code, obs, members, rev, answered := observed(t, http.MethodPatch, c.Members[1].URL("/v1/services/drain/instances/target"), `{"status":"draining"}`, 20*time.Second)
	if code != http.StatusOK || obs != "26/26" || members != "3/3" {
		t.Fatalf("drain answered %d, %s %q, %s %q; want 26/26 and 3/3", code, api.HeaderObserved, obs, api.HeaderObservedMembers, members)
	}
	for _, s := range subs {
		e := s.s.next(t, 5*time.Second)
		in := e.instance(t)
		if e.Event != registry.EventUpdate || in.ID != "target" || in.Status != registry.StatusDraining || e.rev(t) != rev {
			t.Fatalf("%s: %s, want the drain at %d", s.name, e, rev)
		}
		if !e.At.Before(answered) {
			t.Fatalf("%s read the drain at %s, after the answer at %s", s.name, e.At.Format(time.StampMicro), answered.Format(time.StampMicro))
		}
	}
	for i, q := range queries {
		r := <-q
		if r.err != nil || r.code != http.StatusOK {
			t.Fatalf("blocking query %d: %d %v %s", i, r.code, r.err, r.body)
		}
		var l registry.InstanceList
		if err := json.Unmarshal(r.body, &l); err != nil || l.Revision < rev || strings.Contains(ids(l), "target") {
			t.Fatalf("blocking query %d answered %s at %d, want the drain at %d", i, r.body, l.Revision, rev)
		}
		if !r.at.Before(answered) {
			t.Fatalf("blocking query %d read its answer at %s, after the drain's answer at %s", i, r.at.Format(time.StampMicro), answered.Format(time.StampMicro))
		}
	}

	// Deregistering the drained instance concerns only the 5 streams
	// that show every status: the others do not show it any more.
	code, obs, members, drev, _ := observed(t, http.MethodDelete, c.Members[2].URL("/v1/services/drain/instances/target"), "", 20*time.Second)
	if code != http.StatusNoContent || obs != "5/5" || members != "3/3" {
		t.Fatalf("deregistration answered %d, %q, %q; want 5/5 and 3/3", code, obs, members)
	}
	for _, s := range subs {
		if !strings.Contains(s.name, "status=any") {
			continue
		}
		if e := s.s.next(t, 5*time.Second); e.Event != registry.EventDeregister || e.rev(t) != drev {
			t.Fatalf("%s: %s, want the deregistration at %d", s.name, e, drev)
		}
	}
	// The unconcerned ones saw nothing: their first event is a marker
	// written now, and the unconcerned query wakes with it.
	marker := registerWith(t, m0, "drain", "other2", map[string]any{"address": "10.8.0.4:80", "metadata": map[string]string{"zone": "other"}})
	if e := zoneOther.next(t, 5*time.Second); e.instance(t).ID != "other2" {
		t.Fatalf("zone-other stream: %s first, want the marker", e)
	}
	r := <-unconcerned
	var l registry.InstanceList
	if err := json.Unmarshal(r.body, &l); err != nil || l.Revision < marker.Revision {
		t.Fatalf("zone-other query answered %s, want the marker at %d", r.body, marker.Revision)
	}
	e2 := registerWith(t, m0, "elsewhere", "e2", map[string]any{"address": "10.8.0.5:80"})
	if e := elsewhere.next(t, 5*time.Second); e.instance(t).ID != "e2" || e.rev(t) != e2.Revision {
		t.Fatalf("elsewhere stream: %s first, want the marker", e)
	}
}

// TestDrainHandshakeStalledSubscriber: a subscriber that stops reading
// (its TCP window closed, the server's write to it blocked) does not hold
// the answer past the wait: it comes at the deadline, N-1 of N.
func TestDrainHandshakeStalledSubscriber(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	t.Parallel()
	c := regdtest.StartCluster(t, 3)
	m1 := c.Members[1]
	last := registerWith(t, m1, "stall", "target", map[string]any{"address": "10.9.0.1:80", "ttl": 60})
	after := fmt.Sprint(last.Revision)
	var healthy []*sseStream
	for _, m := range c.Members {
		healthy = append(healthy, openSSE(t, m.URL("/v1/services/stall/watch"), after))
	}

	// The stalled subscriber: a raw connection with a tiny receive
	// buffer that never reads, watching every service on m1.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", m1.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := fmt.Fprintf(conn, "GET /v1/watch HTTP/1.1\r\nHost: %s\r\nLast-Event-ID: %s\r\n\r\n", m1.HTTPAddr, after); err != nil {
		t.Fatal(err)
	}
	// Fill its pipe: 1,400 events of 4 KiB of metadata each (about 6 MB,
	// more than the kernel buffers on both ends hold), written by a
	// plain client, 64 instances per transaction on one lease.
	cli := c.EtcdClient(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lease, err := cli.Grant(ctx, 120)
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("p", 4000)
	filling := time.Now()
	fills := make(chan int64, 22)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for b := w; b < 22; b += 4 {
				var ops []clientv3.Op
				for i := range 64 {
					id := fmt.Sprintf("f%02d-%02d", b, i)
					meta, _ := json.Marshal(map[string]any{"address": "10.9.1.1:80", "ttl": 120, "lease": int64(lease.ID),
						"registered_at": time.Now().UTC(), "metadata": map[string]string{"pad": pad}})
					ops = append(ops,
						clientv3.OpPut("/service/fill/"+id, "10.9.1.1:80", clientv3.WithLease(lease.ID)),
						clientv3.OpPut(registry.Keys{}.Meta("fill", id), string(meta)))
				}
				resp, err := cli.Txn(ctx).Then(ops...).Commit()
				if err != nil {
					t.Error(err)
					return
				}
				fills <- resp.Header.Revision
			}
		})
	}
	wg.Wait()
	close(fills)
	if t.Failed() {
		t.FailNow()
	}
	var fill int64
	for r := range fills {
		fill = max(fill, r)
	}
	t.Logf("filled in %s", time.Since(filling))
	// m1 has applied (and pushed to the stalled stream) all of it.
	listInstances(t, m1, "fill", fmt.Sprintf("?min_revision=%d", fill))
	t.Logf("applied on m1 after %s", time.Since(filling))

	const wait = 3 * time.Second
	start := time.Now()
	code, obs, members, rev, answered := observed(t, http.MethodPatch, m1.URL("/v1/services/stall/instances/target"), `{"status":"draining"}`, wait)
	took := answered.Sub(start)
	t.Logf("drain answered after %s: %s, members %s", took, obs, members)
	if code != http.StatusOK || obs != "3/4" || members != "3/3" {
		t.Fatalf("drain with a stalled subscriber answered %d %q %q after %s; want 3/4 and 3/3", code, obs, members, took)
	}
	// At the deadline: each member acks no later than its share of the
	// wait less a margin for the ack's write (a fifth of the wait), and
	// the one with the stalled stream no sooner.
	if margin := wait / 5; took < wait-margin-100*time.Millisecond || took > wait+2*time.Second {
		t.Fatalf("answered after %s, want about %s (the deadline less the ack margin %s)", took, wait, margin)
	}
	for i, s := range healthy {
		e := s.next(t, 5*time.Second)
		if e.Event != registry.EventUpdate || e.rev(t) != rev || !e.At.Before(answered) {
			t.Fatalf("healthy stream %d: %s at %s (answer at %s)", i, e, e.At.Format(time.StampMicro), answered.Format(time.StampMicro))
		}
	}
}
