package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/regd/regd/api"
	"github.com/regd/regd/cluster"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

func TestWatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	var lastID string // of the web stream, for the resume subtest

	t.Run("EventsInRevisionOrder", func(t *testing.T) {
		web := openSSE(t, m.URL("/v1/services/web/watch"), "")
		all := openSSE(t, m.URL("/v1/watch"), "")
		start := headerRev(t, web.Resp.Header)
		headerRev(t, all.Resp.Header)
		if cc := web.Resp.Header.Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("Cache-Control %q, want no-cache", cc)
		}

		w1 := wRegister(t, m, "web", "w1", "10.0.0.1:80", 30)
		o1 := wRegister(t, m, "other", "o1", "10.0.0.9:80", 30)
		if code, _, body := regdtest.Do(t, http.MethodPut, m.URL("/v1/services/web/instances/w1/heartbeat"), nil); code != http.StatusOK {
			t.Fatalf("heartbeat: %d %s", code, body)
		}
		w1b := wRegister(t, m, "web", "w1", "10.0.0.2:80", 30) // re-register: a register event
		del := wDeregister(t, m, "web", "w1")
		w2 := wRegister(t, m, "web", "w2", "10.0.0.3:80", 2) // left to expire

		if w1.Revision <= start {
			t.Fatalf("stream started at %d, after the first registration (%d)", start, w1.Revision)
		}
		// The heartbeat between w1 and w1b and o1 (another service)
		// produce nothing here: the next event after w1 is w1b.
		e := web.expect(t, registry.EventRegister, "web", "w1", w1.Revision)
		if inst := e.instance(t); inst.Address != "10.0.0.1:80" || inst.Revision != w1.Revision || inst.TTL != 30 {
			t.Fatalf("register data %+v", inst)
		}
		e = web.expect(t, registry.EventRegister, "web", "w1", w1b.Revision)
		if inst := e.instance(t); inst.Address != "10.0.0.2:80" {
			t.Fatalf("re-register data %+v", inst)
		}
		e = web.expect(t, registry.EventDeregister, "web", "w1", del)
		if inst := e.instance(t); inst.Address != "10.0.0.2:80" || inst.Revision != w1b.Revision {
			t.Fatalf("deregister data %+v: want the instance as it was", inst)
		}
		web.expect(t, registry.EventRegister, "web", "w2", w2.Revision)
		exp := web.expect(t, registry.EventExpire, "web", "w2", 0)
		if exp.rev(t) <= w2.Revision {
			t.Fatalf("expire at %d, not after the registration at %d", exp.rev(t), w2.Revision)
		}
		lastID = exp.ID

		// /v1/watch sees both services, in revision order.
		want := []struct {
			typ, svc, id string
			rev          int64
		}{
			{registry.EventRegister, "web", "w1", w1.Revision},
			{registry.EventRegister, "other", "o1", o1.Revision},
			{registry.EventRegister, "web", "w1", w1b.Revision},
			{registry.EventDeregister, "web", "w1", del},
			{registry.EventRegister, "web", "w2", w2.Revision},
			{registry.EventExpire, "web", "w2", exp.rev(t)},
		}
		for _, w := range want {
			all.expect(t, w.typ, w.svc, w.id, w.rev)
		}
	})

	t.Run("ResumeWithLastEventID", func(t *testing.T) {
		if lastID == "" {
			t.Skip("needs EventsInRevisionOrder")
		}
		var revs []int64
		for i := range 20 {
			revs = append(revs, wRegister(t, m, "web", fmt.Sprintf("r%02d", i), "10.0.1.1:80", 60).Revision)
		}
		s := openSSE(t, m.URL("/v1/services/web/watch"), lastID)
		if got := s.Resp.Header.Get(api.HeaderRevision); got != lastID {
			t.Errorf("resumed stream: X-Regd-Revision %q, want %s", got, lastID)
		}
		for i, rev := range revs {
			s.expect(t, registry.EventRegister, "web", fmt.Sprintf("r%02d", i), rev)
		}
		// Nothing after the 20 but what happens next.
		marker := wRegister(t, m, "web", "zz-marker", "10.0.1.2:80", 60)
		s.expect(t, registry.EventRegister, "web", "zz-marker", marker.Revision)

		// ?after= is the same for clients that cannot set headers.
		a := openSSE(t, m.URL("/v1/services/web/watch?after="+strconv.FormatInt(revs[18], 10)), "")
		a.expect(t, registry.EventRegister, "web", "r19", revs[19])
		a.expect(t, registry.EventRegister, "web", "zz-marker", marker.Revision)

		for _, bad := range []string{"abc", "-1"} {
			resp, cancel := dialSSE(t, m.URL("/v1/services/web/watch"), bad)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			cancel()
			if resp.StatusCode != http.StatusBadRequest || wErrorCode(body) != "invalid_parameter" {
				t.Errorf("Last-Event-ID %q: %d %s, want 400 invalid_parameter", bad, resp.StatusCode, body)
			}
		}
	})

	t.Run("ResetOnRequest", func(t *testing.T) {
		s := openSSE(t, m.URL("/v1/services/other/watch?reset=1"), "")
		e := s.next(t, 5*time.Second)
		var list registry.InstanceList
		if err := json.Unmarshal([]byte(e.Data), &list); err != nil || e.Event != "reset" {
			t.Fatalf("first event %s, want reset with a list (%v)", e, err)
		}
		if list.Service != "other" || len(list.Instances) != 1 || list.Instances[0].ID != "o1" || strconv.FormatInt(list.Revision, 10) != e.ID {
			t.Fatalf("reset data %s", e.Data)
		}
		if s.Resp.Header.Get(api.HeaderRevision) != e.ID {
			t.Fatalf("X-Regd-Revision %q, reset id %s", s.Resp.Header.Get(api.HeaderRevision), e.ID)
		}
	})

	// The default per-client cap is 64 streams on one node.
	t.Run("MaxWatchesPerClient", func(t *testing.T) {
		url := m.URL("/v1/watch")
		var open []*sseStream
		defer func() {
			for _, s := range open {
				s.Close()
			}
		}()
		for len(open) < api.DefaultMaxWatchesPerClient {
			// Streams of earlier subtests are released when the
			// server notices their connections closed: retry a 429
			// until then.
			var s *sseStream
			poll.Until(t, 5*time.Second, fmt.Sprintf("stream %d accepted", len(open)+1), func() error {
				resp, cancel := dialSSE(t, url, "")
				if resp.StatusCode == http.StatusTooManyRequests {
					resp.Body.Close()
					cancel()
					return fmt.Errorf("stream %d refused", len(open)+1)
				}
				s = startSSE(t, url, resp, cancel)
				return nil
			})
			open = append(open, s)
		}
		resp, cancel := dialSSE(t, url, "")
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("stream %d: %d %s, want 429", len(open)+1, resp.StatusCode, body)
		}
		if code := wErrorCode(body); code != "too_many_streams" {
			t.Fatalf("429 body %s, want code too_many_streams", body)
		}
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
			t.Fatalf("Retry-After %q, want seconds", resp.Header.Get("Retry-After"))
		}
		// Closing one frees its slot.
		open[0].Close()
		open = open[1:]
		poll.Until(t, 5*time.Second, "a freed slot serves a new stream", func() error {
			resp, cancel := dialSSE(t, url, "")
			if resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				cancel()
				return fmt.Errorf("status %d after a stream was closed", resp.StatusCode)
			}
			open = append(open, startSSE(t, url, resp, cancel))
			return nil
		})
	})

	// KeepAlive and MaxWatchesPerClient cannot be set through regdtest: an
	// api.Server of our own over this member's store and etcd does.
	t.Run("KeepAliveAndConfiguredCap", func(t *testing.T) {
		srv := m.Server()
		view := registry.NewView(srv.Store(), registry.ViewOptions{})
		ctx, stop := context.WithCancel(context.Background())
		viewDone := make(chan struct{})
		go func() { defer close(viewDone); view.Run(ctx) }()
		defer func() { stop(); <-viewDone }()
		a := api.New(api.Config{
			Registry:            registry.NewLocal(srv.Store(), view),
			View:                view,
			Cluster:             cluster.NewInfo(srv.Node()),
			MaxWatchesPerClient: 2,
			KeepAlive:           100 * time.Millisecond,
		})
		ts := httptest.NewServer(a.Handler())
		defer ts.Close()

		s1 := openSSE(t, ts.URL+"/v1/services/ka/watch", "")
		if e := s1.nextAny(t, 5*time.Second); e.Comment != "keepalive" {
			t.Fatalf("first thing on an idle stream: %s, want a keepalive comment", e)
		}
		s2 := openSSE(t, ts.URL+"/v1/watch", "")
		resp, cancel := dialSSE(t, ts.URL+"/v1/watch", "")
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if resp.StatusCode != http.StatusTooManyRequests || wErrorCode(body) != "too_many_streams" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("third stream with MaxWatchesPerClient 2: %d %v %s", resp.StatusCode, resp.Header, body)
		}
		// Events and keep-alives interleave on a stream.
		inst := wRegister(t, m, "ka", "k1", "10.0.2.1:80", 60)
		s1.expect(t, registry.EventRegister, "ka", "k1", inst.Revision)
		if e := s1.nextAny(t, 5*time.Second); e.Comment != "keepalive" {
			t.Fatalf("after the event: %s, want a keepalive comment", e)
		}
		// Close ends every stream at once (what a shutdown does first).
		a.Close()
		for i, s := range []*sseStream{s1, s2} {
			if !s.ended(5 * time.Second) {
				t.Fatalf("stream %d still open 5s after Server.Close", i+1)
			}
		}
	})
}

// TestWatchReset covers resets: after a restart (the node's history starts
// at its startup revision), before etcd's compaction point, and for an id
// this cluster never reached; and that a stream goes on after a compaction.
func TestWatchReset(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	a1 := wRegister(t, m, "rs", "a1", "10.0.3.1:80", 120)
	a2 := wRegister(t, m, "rs", "a2", "10.0.3.2:80", 120)

	c.Stop(0)
	c.Restart(0)
	poll.Until(t, 15*time.Second, "the restarted member ready", func() error {
		if code, _, body := regdtest.Do(t, http.MethodGet, m.URL("/readyz"), nil); code != http.StatusOK {
			return fmt.Errorf("readyz %d %s", code, body)
		}
		return nil
	})

	checkReset := func(s *sseStream, ids ...string) registry.InstanceList {
		t.Helper()
		e := s.next(t, 10*time.Second)
		var list registry.InstanceList
		if e.Event != "reset" {
			t.Fatalf("first event %s, want reset", e)
		}
		if err := json.Unmarshal([]byte(e.Data), &list); err != nil {
			t.Fatalf("reset data: %v", err)
		}
		var got []string
		for _, inst := range list.Instances {
			got = append(got, inst.ID)
		}
		if list.Service != "rs" || strings.Join(got, ",") != strings.Join(ids, ",") || !sort.StringsAreSorted(got) {
			t.Fatalf("reset list %s, want instances %v", e.Data, ids)
		}
		if e.ID != strconv.FormatInt(list.Revision, 10) || s.Resp.Header.Get(api.HeaderRevision) != e.ID {
			t.Fatalf("reset id %s, list revision %d, X-Regd-Revision %s", e.ID, list.Revision, s.Resp.Header.Get(api.HeaderRevision))
		}
		return list
	}

	// Revision 1 is older than the restarted node's history.
	s := openSSE(t, m.URL("/v1/services/rs/watch"), "1")
	list := checkReset(s, "a1", "a2")
	if list.Instances[0].Revision != a1.Revision || list.Instances[1].Revision != a2.Revision {
		t.Fatalf("reset list %+v", list)
	}
	a3 := wRegister(t, m, "rs", "a3", "10.0.3.3:80", 120)
	s.expect(t, registry.EventRegister, "rs", "a3", a3.Revision)

	// A real etcd compaction through a plain client.
	cli := c.EtcdClient(t, 0)
	x := wRegister(t, m, "rs", "x", "10.0.3.4:80", 120)
	s.expect(t, registry.EventRegister, "rs", "x", x.Revision)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Compact(ctx, x.Revision); err != nil {
		t.Fatalf("compact: %v", err)
	}
	y := wRegister(t, m, "rs", "y", "10.0.3.5:80", 120)
	s.expect(t, registry.EventRegister, "rs", "y", y.Revision) // the open stream goes on

	// Older than the compaction point: reset, even though this node
	// still holds the events in memory.
	checkReset(openSSE(t, m.URL("/v1/services/rs/watch"), strconv.FormatInt(x.Revision-1, 10)), "a1", "a2", "a3", "x", "y")
	// At the compaction point: resumed, nothing missed.
	r := openSSE(t, m.URL("/v1/services/rs/watch"), strconv.FormatInt(x.Revision, 10))
	r.expect(t, registry.EventRegister, "rs", "y", y.Revision)
	// An id this cluster never reached (another cluster's): reset.
	checkReset(openSSE(t, m.URL("/v1/services/rs/watch"), strconv.FormatInt(y.Revision+1_000_000, 10)), "a1", "a2", "a3", "x", "y")

	z := wRegister(t, m, "rs", "z", "10.0.3.6:80", 120)
	r.expect(t, registry.EventRegister, "rs", "z", z.Revision)
	s.expect(t, registry.EventRegister, "rs", "z", z.Revision)
}

// TestWatchAcrossMembers: a write through one member reaches a watcher on
// another; a watcher resumes on a third; a stream on a member that loses
// its leader is closed.
func TestWatchAcrossMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member cluster")
	}
	c := regdtest.StartCluster(t, 3)
	m0, m1, m2 := c.Members[0], c.Members[1], c.Members[2]
	s2 := openSSE(t, m2.URL("/v1/services/x/watch"), "")

	i1 := wRegister(t, m0, "x", "i1", "10.0.4.1:80", 60)
	e := s2.expect(t, registry.EventRegister, "x", "i1", i1.Revision)

	// Resume on member 1 from the id member 2 sent.
	i2 := wRegister(t, m0, "x", "i2", "10.0.4.2:80", 60)
	s1 := openSSE(t, m1.URL("/v1/services/x/watch"), e.ID)
	s1.expect(t, registry.EventRegister, "x", "i2", i2.Revision)
	s2.expect(t, registry.EventRegister, "x", "i2", i2.Revision)
	s1.Close()

	// Member 2 loses its leader: its stream ends so the client moves on.
	c.Kill(0)
	c.Kill(1)
	begin := time.Now()
	for {
		select {
		case <-s2.done:
			t.Logf("stream closed %s after the quorum was lost", time.Since(begin).Round(time.Millisecond))
			resp, cancel := dialSSE(t, m2.URL("/v1/services/x/watch"), "")
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			cancel()
			if resp.StatusCode != http.StatusServiceUnavailable || wErrorCode(body) != "unavailable" {
				t.Fatalf("new stream on a leaderless member: %d %s, want 503 unavailable", resp.StatusCode, body)
			}
			return
		case ev := <-s2.events:
			if ev.Comment == "" {
				t.Fatalf("unexpected event after the kill: %s", ev)
			}
		case <-time.After(time.Until(begin.Add(8 * time.Second))):
			t.Fatal("stream on a member without a leader still open 8s after the quorum was lost")
		}
	}
}

// BenchmarkNotifyAcrossMembers measures the delay from a registration's
// response on member 0 to an SSE subscriber on member 2 reading its event
// (negative delays, the event read first, count as 0), and from sending
// the registration to that event (e2e). docs/watch.md has the numbers and
// the command:
//
//	go test -run '^$' -bench NotifyAcrossMembers -benchtime 200x ./api/
func BenchmarkNotifyAcrossMembers(b *testing.B) {
	c := regdtest.StartCluster(b, 3)
	m0, m2 := c.Members[0], c.Members[2]
	s := openSSE(b, m2.URL("/v1/services/bench/watch"), "")
	delays := make([]time.Duration, 0, b.N)
	e2e := make([]time.Duration, 0, b.N)
	early := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sent := time.Now()
		inst := wRegister(b, m0, "bench", fmt.Sprintf("b%d", i), "10.9.0.1:80", 60)
		answered := time.Now()
		e := s.next(b, 10*time.Second)
		if e.rev(b) != inst.Revision || e.Event != registry.EventRegister {
			b.Fatalf("event %s, want the register at %d", e, inst.Revision)
		}
		d := e.At.Sub(answered)
		if d < 0 {
			d, early = 0, early+1
		}
		delays = append(delays, d)
		e2e = append(e2e, e.At.Sub(sent))
	}
	b.StopTimer()
	pct := func(ds []time.Duration, p float64) time.Duration {
		ds = slices.Clone(ds)
		slices.Sort(ds)
		return ds[min(len(ds)-1, int(p*float64(len(ds))))]
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(pct(delays, 0.50)), "p50-ms")
	b.ReportMetric(ms(pct(delays, 0.99)), "p99-ms")
	b.ReportMetric(ms(pct(delays, 1)), "max-ms")
	b.ReportMetric(ms(pct(e2e, 0.50)), "e2e-p50-ms")
	b.ReportMetric(ms(pct(e2e, 0.99)), "e2e-p99-ms")
	b.Logf("%d registrations on m0, subscriber on m2: after the response p50 %s, p99 %s, max %s (%d events read before the response); after the request p50 %s, p99 %s",
		len(delays), pct(delays, 0.50), pct(delays, 0.99), pct(delays, 1), early, pct(e2e, 0.50), pct(e2e, 0.99))
}
