package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// plainWatch records what a plain etcd client watching a prefix sees: every
// event, in order, by key.
type plainWatch struct {
	t      *testing.T
	cli    *clientv3.Client
	mu     sync.Mutex
	events map[string][]string // key -> "PUT@lease" / "DELETE"
	seen   int64               // highest header revision received
}

func watchPlain(t *testing.T, cli *clientv3.Client, prefix string) *plainWatch {
	t.Helper()
	w := &plainWatch{t: t, cli: cli, events: map[string][]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	head, err := cli.Get(opCtx(t), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	wch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(head.Header.Revision+1))
	go func() {
		for resp := range wch {
			w.mu.Lock()
			for _, ev := range resp.Events {
				k := string(ev.Kv.Key)
				if ev.Type == clientv3.EventTypePut {
					w.events[k] = append(w.events[k], fmt.Sprintf("PUT@%d", ev.Kv.Lease))
				} else {
					w.events[k] = append(w.events[k], "DELETE")
				}
			}
			w.seen = max(w.seen, resp.Header.Revision)
			w.mu.Unlock()
		}
	}()
	return w
}

// upTo waits until the watch has delivered everything up to the cluster's
// current revision, and returns the events by key.
func (w *plainWatch) upTo() map[string][]string {
	w.t.Helper()
	head, err := w.cli.Get(opCtx(w.t), "/", clientv3.WithCountOnly())
	if err != nil {
		w.t.Fatal(err)
	}
	poll.Until(w.t, 10*time.Second, "the plain watch catches up", func() error {
		// A progress notification comes once the watch is synced.
		_ = w.cli.RequestProgress(opCtx(w.t))
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.seen < head.Header.Revision {
			return fmt.Errorf("watch at revision %d of %d", w.seen, head.Header.Revision)
		}
		return nil
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string][]string{}
	for k, v := range w.events {
		out[k] = slices.Clone(v)
	}
	return out
}

func restInstance(t *testing.T, body []byte) registry.Instance {
	t.Helper()
	var in registry.Instance
	if err := json.Unmarshal(body, &in); err != nil {
		t.Fatalf("instance %s: %v", body, err)
	}
	return in
}

func leaseGone(t *testing.T, cli *clientv3.Client, lease string) bool {
	t.Helper()
	var id int64
	fmt.Sscan(lease, &id)
	resp, err := cli.TimeToLive(opCtx(t), clientv3.LeaseID(id))
	if err != nil {
		t.Fatal(err)
	}
	return resp.TTL == -1
}

// TestRetryAfterLostReplies: every etcd call of the member's store is
// applied and then has its reply "lost" once (the first attempt of each
// answers etcd's "request timed out, possibly due to previous leader
// failure", as a proposal overtaken by a leader change does), so every
// call is made a second time after an attempt that was in fact applied.
// Register, re-register, heartbeat, get, list and deregister still answer
// exactly as without the loss (201, 200, 200, 200, 200, 204, then 404),
// and a plain etcd watcher sees one PUT per registration and one DELETE,
// nothing twice; the replaced and the deregistered leases are revoked; the
// leases the repeated grants left behind hold nothing; nothing of this is
// reported as an expiry, while an abandoned instance is, once.
func TestRetryAfterLostReplies(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	cli := c.EtcdClient(t, 0)
	w := watchPlain(t, cli, "/service/")
	var lost atomic.Int64
	registry.SetAttemptHook(m.Server().Store(), func(attempt int) error {
		if attempt == 0 {
			lost.Add(1)
			return rpctypes.ErrTimeoutDueToLeaderFail
		}
		return nil
	})
	retriesBefore := m.Server().Store().Retries()
	url := m.URL("/v1/services/retry/instances/a")

	code, _, body := regdtest.Do(t, http.MethodPut, url, `{"address":"10.0.0.1:80","ttl":30}`)
	if code != http.StatusCreated {
		t.Fatalf("register: %d %s, want 201", code, body)
	}
	first := restInstance(t, body)
	code, _, body = regdtest.Do(t, http.MethodPut, url, `{"address":"10.0.0.2:80","ttl":30,"metadata":{"v":"2"}}`)
	if code != http.StatusOK {
		t.Fatalf("re-register: %d %s, want 200", code, body)
	}
	second := restInstance(t, body)
	if second.LeaseID == first.LeaseID || second.Revision <= first.Revision {
		t.Fatalf("re-registration %+v after %+v: want a new lease and a later revision", second, first)
	}
	if !leaseGone(t, cli, first.LeaseID) {
		t.Errorf("the replaced lease %s was not revoked", first.LeaseID)
	}
	if code, _, body = regdtest.Do(t, http.MethodPut, url+"/heartbeat", nil); code != http.StatusOK {
		t.Errorf("heartbeat: %d %s", code, body)
	}
	if code, _, body = regdtest.Do(t, http.MethodGet, url, nil); code != http.StatusOK || restInstance(t, body).Address != "10.0.0.2:80" {
		t.Errorf("get: %d %s", code, body)
	}
	if code, _, body = regdtest.Do(t, http.MethodGet, m.URL("/v1/services/retry/instances"), nil); code != http.StatusOK || !strings.Contains(string(body), `"10.0.0.2:80"`) {
		t.Errorf("list: %d %s", code, body)
	}
	if code, _, body = regdtest.Do(t, http.MethodDelete, url, nil); code != http.StatusNoContent {
		t.Fatalf("deregister: %d %s, want 204", code, body)
	}
	if !leaseGone(t, cli, second.LeaseID) {
		t.Errorf("the deregistered lease %s was not revoked", second.LeaseID)
	}
	if code, _, body = regdtest.Do(t, http.MethodDelete, url, nil); code != http.StatusNotFound {
		t.Errorf("second deregister: %d %s, want 404", code, body)
	}
	// An instance left to expire, registered the same way.
	code, _, body = regdtest.Do(t, http.MethodPut, m.URL("/v1/services/retry/instances/gone"), `{"address":"10.0.0.3:80","ttl":2}`)
	if code != http.StatusCreated {
		t.Fatalf("register gone: %d %s", code, body)
	}
	gone := restInstance(t, body)
	registry.SetAttemptHook(m.Server().Store(), nil)

	if lost.Load() == 0 || m.Server().Store().Retries()-retriesBefore < lost.Load() {
		t.Fatalf("%d replies lost, %d retries: the test did not exercise the retries", lost.Load(), m.Server().Store().Retries()-retriesBefore)
	}
	c.WaitExpiries(t, 20*time.Second, ledgertest.Expected{
		Want:      map[ledgertest.Expiry]string{regdtest.ExpiryOfInstance(gone): "10.0.0.3:80"},
		Forbidden: map[string]bool{"retry/a": true},
	})
	events := w.upTo()
	want := []string{"PUT@" + first.LeaseID, "PUT@" + second.LeaseID, "DELETE"}
	if got := events["/service/retry/a"]; !slices.Equal(got, want) {
		t.Errorf("a plain watcher saw %q for retry/a, want %q", got, want)
	}
	if got := events["/service/retry/gone"]; !slices.Equal(got, []string{"PUT@" + gone.LeaseID, "DELETE"}) {
		t.Errorf("a plain watcher saw %q for retry/gone", got)
	}
	// The grants that were made twice left leases with nothing on them.
	leases, err := cli.Leases(opCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases.Leases {
		ttl, err := cli.TimeToLive(opCtx(t), l.ID, clientv3.WithAttachedKeys())
		if err != nil {
			t.Fatal(err)
		}
		if len(ttl.Keys) > 0 {
			t.Errorf("lease %d still holds %q", l.ID, ttl.Keys)
		}
	}
}

// TestRetryAfterLostReplyAcrossCompaction: a registration whose applied
// attempt lost its reply, when the history before it has been compacted
// meanwhile, still answers 201 for a new instance and 200 for a
// replacement (judged from the key's create revision); the replaced lease
// is then left to run out instead of revoked, holding only its marker, and
// a plain watcher still sees one PUT per registration.
func TestRetryAfterLostReplyAcrossCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	cli := c.EtcdClient(t, 0)
	w := watchPlain(t, cli, "/service/")
	url := m.URL("/v1/services/compacted/instances/a")
	// Every first attempt: compact all history, then lose the reply.
	registry.SetAttemptHook(m.Server().Store(), func(attempt int) error {
		if attempt > 0 {
			return nil
		}
		head, err := cli.Get(context.Background(), "/", clientv3.WithCountOnly())
		if err == nil {
			_, err = cli.Compact(context.Background(), head.Header.Revision)
		}
		if err != nil && !strings.Contains(err.Error(), "compacted") {
			t.Errorf("compact: %v", err)
		}
		return rpctypes.ErrTimeoutDueToLeaderFail
	})
	code, _, body := regdtest.Do(t, http.MethodPut, url, `{"address":"10.0.0.1:80","ttl":30}`)
	if code != http.StatusCreated {
		t.Fatalf("register: %d %s, want 201", code, body)
	}
	first := restInstance(t, body)
	code, _, body = regdtest.Do(t, http.MethodPut, url, `{"address":"10.0.0.2:80","ttl":30}`)
	if code != http.StatusOK {
		t.Fatalf("re-register: %d %s, want 200", code, body)
	}
	second := restInstance(t, body)
	registry.SetAttemptHook(m.Server().Store(), nil)

	var id int64
	fmt.Sscan(first.LeaseID, &id)
	ttl, err := cli.TimeToLive(opCtx(t), clientv3.LeaseID(id), clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL > 0 && (len(ttl.Keys) != 1 || !strings.HasPrefix(string(ttl.Keys[0]), registry.InternalPrefix)) {
		t.Errorf("the replaced lease holds %q, want only its marker", ttl.Keys)
	}
	events := w.upTo()
	if got, want := events["/service/compacted/a"], []string{"PUT@" + first.LeaseID, "PUT@" + second.LeaseID}; !slices.Equal(got, want) {
		t.Errorf("a plain watcher saw %q, want %q", got, want)
	}
}

// TestRetryAcrossLeaderMoves: writers register and deregister through the
// followers while leadership moves between the members again and again
// (etcd's MoveLeader: the old leader drops the proposals it gets during
// the transfer, and followers' reads fail with "leader changed"). Every
// request is answered 2xx, none waits for the store's timeout, and a plain
// etcd watcher sees exactly one PUT per acknowledged registration and one
// DELETE per acknowledged deregistration.
func TestRetryAcrossLeaderMoves(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three etcd members")
	}
	c := regdtest.StartCluster(t, 3)
	cli := c.EtcdClientAll(t)
	w := watchPlain(t, cli, "/service/")

	type writer struct {
		puts, dels map[string]int
		failures   []string
		worst      time.Duration
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	writers := make([]*writer, 4)
	for n := range writers {
		wr := &writer{puts: map[string]int{}, dels: map[string]int{}}
		writers[n] = wr
		wg.Go(func() {
			client := &http.Client{Timeout: 10 * time.Second}
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				// Through a member that does not lead now (the leader
				// moves, so this is a guess; both kinds are exercised).
				l := c.Leader()
				target := c.Members[(max(l, 0)+1+n%2)%3]
				id := fmt.Sprintf("w%d-%d", n, k%8)
				key := "/service/moves/" + id
				url := target.URL("/v1/services/moves/instances/" + id)
				// Each id is registered (new: 201), then deregistered
				// (204), in turns of eight.
				method, body, want := http.MethodPut, `{"address":"10.9.0.1:80","ttl":30}`, http.StatusCreated
				if k%16 >= 8 {
					method, body, want = http.MethodDelete, "", http.StatusNoContent
				}
				req, _ := http.NewRequest(method, url, strings.NewReader(body))
				began := time.Now()
				resp, err := client.Do(req)
				d := time.Since(began)
				wr.worst = max(wr.worst, d)
				if err != nil {
					wr.failures = append(wr.failures, fmt.Sprintf("%s %s: %v", method, id, err))
					continue
				}
				answer, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					wr.failures = append(wr.failures, fmt.Sprintf("%s %s on %s after %v: %d %s, want %d", method, id, target.Name, d.Round(time.Millisecond), resp.StatusCode, answer, want))
				}
				if resp.StatusCode/100 == 2 {
					if method == http.MethodPut {
						wr.puts[key]++
					} else {
						wr.dels[key]++
					}
				}
			}
		})
	}
	// Move the leader around until the followers' stores have retried
	// something (a positive marker that the moves caught requests in
	// flight), at least four times.
	retries := func() int64 {
		var n int64
		for _, m := range c.Members {
			n += m.Server().Store().Retries()
		}
		return n
	}
	moves := 0
	for moves < 4 || (retries() == 0 && moves < 20) {
		c.MoveLeader(t, (c.WaitLeader(t)+1)%3)
		moves++
	}
	close(stop)
	wg.Wait()
	t.Logf("%d leader moves; %d etcd calls retried", moves, retries())

	puts, dels := map[string]int{}, map[string]int{}
	for _, wr := range writers {
		for _, f := range wr.failures {
			t.Error(f)
		}
		if wr.worst >= registry.DefaultTimeout {
			t.Errorf("a request took %v: it waited for the store's timeout", wr.worst)
		}
		for k, n := range wr.puts {
			puts[k] += n
		}
		for k, n := range wr.dels {
			dels[k] += n
		}
	}
	events := w.upTo()
	for k, evs := range events {
		var p, d int
		for _, e := range evs {
			if e == "DELETE" {
				d++
			} else {
				p++
			}
		}
		if p != puts[k] || d != dels[k] {
			t.Errorf("%s: a plain watcher saw %d PUTs and %d DELETEs, %d registrations and %d deregistrations were acknowledged", k, p, d, puts[k], dels[k])
		}
	}
	if retries() == 0 {
		t.Errorf("%d leader moves, and no request was caught by one: the test exercised nothing", moves)
	}
}

// countingLeadership is a member's real leadership, counting how often the
// store asked for the leader.
type countingLeadership struct {
	registry.Leadership
	asked atomic.Int64
}

func (c *countingLeadership) Leader() uint64 {
	c.asked.Add(1)
	return c.Leadership.Leader()
}

// TestShutdownAnswersAtOnce: a request waiting for a leader on a member
// that has none (the other two are down) answers 503 unavailable "this
// node is shutting down" as soon as the store is told to shut down,
// instead of waiting for its deadline.
func TestShutdownAnswersAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three etcd members")
	}
	c := regdtest.StartCluster(t, 3)
	c.Kill(1)
	c.Kill(2)
	n := c.Members[0].Server().Node()
	poll.Until(t, 10*time.Second, "member 0 sees no leader", func() error {
		if l := n.Leader(); l != 0 {
			return fmt.Errorf("member 0 still follows %x", l)
		}
		return nil
	})
	lead := &countingLeadership{Leadership: n}
	st := registry.NewStore(n.Client(), registry.Options{Prefix: "/service/", Leadership: lead, Timeout: time.Minute})
	errc := make(chan error, 1)
	go func() {
		_, _, err := st.Register(context.Background(), "shut", "a", registry.Registration{Address: "10.0.0.1:80"})
		errc <- err
	}()
	// Waiting: it has looked for a leader more than once.
	poll.Until(t, 10*time.Second, "the store asks for a leader again", func() error {
		if n := lead.asked.Load(); n < 2 {
			return fmt.Errorf("asked %d times", n)
		}
		return nil
	})
	select {
	case err := <-errc:
		t.Fatalf("answered before the shutdown: %v", err)
	default:
	}
	st.Shutdown()
	select {
	case err := <-errc:
		e := registry.AsError(err)
		if e.Kind != registry.KindUnavailable || e.Code != registry.CodeUnavailable || !strings.Contains(e.Message, "shutting down") {
			t.Fatalf("after Shutdown: %v, want 503 unavailable, shutting down", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no answer 30 s after Shutdown (the request's deadline is a minute)")
	}
}
