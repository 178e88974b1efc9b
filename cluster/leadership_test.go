package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/regd/regd/cluster"
	"github.com/regd/regd/internal/freeport"
	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/internal/server"
	"github.com/regd/regd/node"
	"github.com/regd/regd/registry"
)

// ---- Leadership against a fake member ----

// fakeNode is a member whose leadership the test flips. A change either
// fires LeaderChanged (as etcd does for most changes) or not (as when the
// leader becomes none), which only the backstop ticker notices.
type fakeNode struct {
	mu     sync.Mutex
	id     uint64
	leader uint64
	term   uint64
	ch     chan struct{}
	armed  int // LeaderChanged calls: the loop arms it once per wake
}

func newFakeNode(id, leader uint64) *fakeNode {
	return &fakeNode{id: id, leader: leader, term: 1, ch: make(chan struct{})}
}

func (f *fakeNode) setLeader(id uint64, notify bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leader = id
	f.term++
	if notify {
		close(f.ch)
		f.ch = make(chan struct{})
	}
}

func (f *fakeNode) Name() string { return "fake" }
func (f *fakeNode) ID() uint64   { return f.id }
func (f *fakeNode) Leader() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader
}
func (f *fakeNode) Term() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.term
}
func (f *fakeNode) LeaderChanged() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed++
	return f.ch
}

func (f *fakeNode) armedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.armed
}
func (f *fakeNode) Members() []node.Member   { return nil }
func (f *fakeNode) MemberName(uint64) string { return "" }
func (f *fakeNode) Revision() int64          { return 0 }
func (f *fakeNode) StorageErr() error        { return nil }
func (f *fakeNode) Alarms() []node.Alarm     { return nil }

var _ cluster.Node = (*fakeNode)(nil)

// recv waits for one value on ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(3 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func TestLeadershipFollowsLeader(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	f := newFakeNode(1, 2)
	l := cluster.NewLeadership(f, zap.NewNop())
	var running, runs atomic.Int32
	started := make(chan string, 16)
	stopped := make(chan string, 16)
	for _, name := range []string{"reporter", "compactor"} {
		l.OnLead(func(ctx context.Context) {
			runs.Add(1)
			if running.Add(1) > 2 {
				t.Errorf("more than one instance of each task running")
			}
			started <- name
			<-ctx.Done()
			running.Add(-1)
			stopped <- name
		})
	}
	l.Start()
	waitTasks := func(ch <-chan string, what string) {
		t.Helper()
		got := map[string]bool{recv(t, ch, what): true}
		got[recv(t, ch, what)] = true
		if !got["reporter"] || !got["compactor"] {
			t.Fatalf("%s: got %v", what, got)
		}
	}
	waitLeading := func(want bool) {
		t.Helper()
		poll.Until(t, 3*time.Second, "IsLeader follows the fake member", func() error {
			if l.IsLeader() != want {
				return fmt.Errorf("IsLeader() = %v", !want)
			}
			return nil
		})
	}

	// Notified gain and loss.
	f.setLeader(1, true)
	waitTasks(started, "tasks to start on notified leadership")
	waitLeading(true)
	f.setLeader(3, true)
	waitTasks(stopped, "tasks to stop on notified loss")
	waitLeading(false)

	// Unnotified gain and loss (leader becomes none): the backstop.
	f.setLeader(1, false)
	waitTasks(started, "tasks to start through the backstop")
	waitLeading(true)
	f.setLeader(0, false)
	waitTasks(stopped, "tasks to stop through the backstop when the leader becomes none")
	waitLeading(false)

	// A change of term that keeps this member leading does not restart
	// the work; Stop ends it.
	f.setLeader(1, true)
	waitTasks(started, "tasks to start again")
	// The positive marker that the loop has handled the change: an
	// iteration that armed LeaderChanged after it (and so read the new
	// state) has finished, which the next arm shows. A stop would have
	// been sent before that.
	f.setLeader(1, true)
	armed := f.armedCount()
	poll.Until(t, 3*time.Second, "the loop goes round after the change", func() error {
		if f.armedCount() < armed+2 {
			return fmt.Errorf("the loop has not gone round since the change")
		}
		return nil
	})
	select {
	case name := <-stopped:
		t.Fatalf("task %s stopped on a notification that kept this member leading", name)
	default:
	}
	l.Stop()
	l.Stop() // idempotent
	if l.IsLeader() {
		t.Fatal("IsLeader after Stop")
	}
	waitTasks(stopped, "tasks to stop on Stop")
	if n := runs.Load(); n != 6 {
		t.Fatalf("tasks ran %d times, want 6 (3 terms x 2 tasks)", n)
	}
	if n := running.Load(); n != 0 {
		t.Fatalf("%d tasks still running after Stop", n)
	}
	select {
	case name := <-started:
		t.Fatalf("task %s started after Stop", name)
	default:
	}
	goleak.VerifyNone(t, ignore)
}

func TestLeadershipStopWaitsForTasks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	f := newFakeNode(1, 1)
	l := cluster.NewLeadership(f, zap.NewNop())
	began, cancelled, release, returned := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	var finished atomic.Bool
	l.OnLead(func(ctx context.Context) {
		close(began)
		<-ctx.Done()
		close(cancelled)
		<-release // cleanup that outlives the cancellation
		finished.Store(true)
	})
	l.Start()
	recv(t, began, "the task to start")
	var finishedAtStop atomic.Bool
	go func() {
		l.Stop()
		finishedAtStop.Store(finished.Load())
		close(returned)
	}()
	recv(t, cancelled, "the task's context to end")
	// Stop must still be waiting: finishedAtStop, read when Stop returned,
	// proves it waited for the task's cleanup.
	close(release)
	recv(t, returned, "Stop to return")
	if !finishedAtStop.Load() {
		t.Fatal("Stop returned before the task finished")
	}
	goleak.VerifyNone(t, ignore)
}

// ---- Leadership in a real cluster, observed through the logs ----

var memberField = regexp.MustCompile(`"member": "([^"]+)"`)

// activeWork is, per member, how many times leader-only work started minus
// how many times it stopped, from the logs.
func activeWork(c *regdtest.Cluster) map[string]int {
	out := map[string]int{}
	for _, l := range c.LogLines("became leader; starting leader-only work") {
		if m := memberField.FindStringSubmatch(l); m != nil {
			out[m[1]]++
		}
	}
	for _, l := range c.LogLines("leader-only work stopped") {
		if m := memberField.FindStringSubmatch(l); m != nil {
			out[m[1]]--
		}
	}
	return out
}

func workOnlyOn(c *regdtest.Cluster, name string) error {
	active := activeWork(c)
	for m, n := range active {
		if (m == name && n != 1) || (m != name && n != 0) {
			return fmt.Errorf("leader-only work per member (started-stopped): %v; want it on %s only", active, name)
		}
	}
	if active[name] != 1 {
		return fmt.Errorf("leader-only work per member: %v; want it on %s", active, name)
	}
	return nil
}

func TestLeaderOnlyWorkFollowsLeader(t *testing.T) {
	needsCluster(t)
	t.Parallel()
	c := startCluster(t, 3)
	leader := c.WaitLeader(t)
	poll.Until(t, 5*time.Second, "leader-only work on the leader only", func() error { return workOnlyOn(c, c.Members[leader].Name) })

	c.Kill(leader)
	newLeader := c.WaitLeader(t)
	poll.Until(t, 5*time.Second, "leader-only work on the new leader only", func() error { return workOnlyOn(c, c.Members[newLeader].Name) })

	// The work that runs there is the reporter: a new expiry is reported
	// by the new leader.
	in := register(t, c.Members[newLeader], "lw", "x", "10.5.0.1:80", 2)
	c.WaitExpiries(t, 10*time.Second, ledgertest.Expected{
		Want: map[key]string{keyOfInstance(in): in.Address},
		Each: func(e ledgertest.Entry) error {
			if e.ReportedBy != c.Members[newLeader].Name {
				return fmt.Errorf("reported by %s, not the leader %s", e.ReportedBy, c.Members[newLeader].Name)
			}
			return nil
		},
	})

	// The killed member rejoins as a follower; the work stays where it is
	// unless leadership moves, and is never on two members.
	c.Restart(leader)
	now := c.WaitLeader(t)
	poll.Until(t, 5*time.Second, "leader-only work on the leader only after the restart", func() error { return workOnlyOn(c, c.Members[now].Name) })
}

// ---- /v1/cluster and readiness ----

func TestClusterStatusAndReadiness(t *testing.T) {
	needsCluster(t)
	t.Parallel()
	c := startCluster(t, 3)
	leader := c.WaitLeader(t)
	leaderName := c.Members[leader].Name
	for _, m := range c.Members {
		code, hdr, body := regdtest.Do(t, http.MethodGet, m.URL("/v1/cluster"), nil)
		if code != http.StatusOK || hdr.Get("X-Regd-Revision") == "" {
			t.Fatalf("/v1/cluster on %s: %d %s", m.Name, code, body)
		}
		var st registry.ClusterStatus
		regdtest.MustJSON(t, body, &st)
		if st.Node != m.Name || st.Leader != leaderName || st.Term == 0 || st.Revision <= 0 || len(st.Members) != 3 {
			t.Fatalf("/v1/cluster on %s: %s (leader is %s)", m.Name, body, leaderName)
		}
		leaders := 0
		for j, ms := range st.Members {
			want := c.Members[j] // sorted by name: m0, m1, m2
			if ms.Name != want.Name || ms.ID == "" || len(ms.PeerURLs) != 1 || len(ms.ClientURLs) != 1 || ms.ClientURLs[0] != want.ClientURL {
				t.Fatalf("/v1/cluster on %s: member %d is %+v", m.Name, j, ms)
			}
			if ms.IsLeader {
				leaders++
				if ms.Name != st.Leader {
					t.Fatalf("/v1/cluster on %s: %s is_leader but leader is %s", m.Name, ms.Name, st.Leader)
				}
			}
		}
		if leaders != 1 {
			t.Fatalf("/v1/cluster on %s: %d members flagged is_leader", m.Name, leaders)
		}
		if code, _, body := regdtest.Do(t, http.MethodGet, m.URL("/readyz"), nil); code != http.StatusOK {
			t.Fatalf("/readyz on %s: %d %s", m.Name, code, body)
		}
	}

	// Lose the quorum: kill the leader and one follower.
	last := (leader + 1) % 3
	killed := time.Now()
	c.Kill(leader)
	c.Kill((leader + 2) % 3)
	m := c.Members[last]
	poll.Until(t, 5*time.Second, "/readyz 503 without a quorum", func() error {
		if code, _, _ := regdtest.Do(t, http.MethodGet, m.URL("/readyz"), nil); code != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz %d", code)
		}
		return nil
	})
	notReady := time.Since(killed)
	var st registry.ClusterStatus
	code, _, body := regdtest.Do(t, http.MethodGet, m.URL("/v1/cluster"), nil)
	regdtest.MustJSON(t, body, &st)
	if code != http.StatusOK || st.Leader != "" || st.Node != m.Name {
		t.Fatalf("/v1/cluster without quorum: %d %s", code, body)
	}

	start := time.Now()
	code, _, body = regdtest.Do(t, http.MethodPut, instanceURL(m, "noquorum", "x"), `{"address":"10.6.0.1:80","ttl":5}`)
	took := time.Since(start)
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), `"code"`) {
		t.Fatalf("write without quorum: %d %s", code, body)
	}
	if took > 8*time.Second {
		t.Fatalf("write without quorum took %s", took)
	}
	t.Logf("without quorum: /readyz 503 after %s; write answered 503 in %s", notReady.Round(time.Millisecond), took.Round(time.Millisecond))
}

// ---- joining a running cluster ----

func TestJoinExistingCluster(t *testing.T) {
	needsCluster(t)
	t.Parallel()
	c := startCluster(t, 3)
	c.WaitLeader(t)
	cli := c.EtcdClient(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	peerURL := "http://" + freeAddr(t)
	clientURL := "http://" + freeAddr(t)
	// etcd refuses to add a voting member until every member has been
	// connected for its health interval (5 s): "unhealthy cluster".
	var added *clientv3.MemberAddResponse
	poll.Until(t, 15*time.Second, "etcd takes the new member", func() error {
		var err error
		added, err = cli.MemberAdd(ctx, []string{peerURL})
		if err != nil && !errors.Is(err, rpctypes.ErrUnhealthy) {
			t.Fatalf("member add: %v", err)
		}
		return err
	})
	// The new member asks the others for the membership when it starts;
	// one that has not applied the addition yet answers without it, and
	// the start fails ("member count is unequal"). Wait until each has.
	for i, m := range c.Members {
		mcli := c.EtcdClient(t, i)
		poll.Until(t, 10*time.Second, m.Name+" applies the new member", func() error {
			list, err := mcli.MemberList(ctx, clientv3.WithSerializable())
			if err != nil {
				return err
			}
			if len(list.Members) != len(added.Members) {
				return fmt.Errorf("%s lists %d members, want %d", m.Name, len(list.Members), len(added.Members))
			}
			return nil
		})
	}
	var initial []string
	for _, m := range added.Members {
		name := m.Name
		if m.ID == added.Member.ID {
			name = "m3"
		}
		if name == "" || len(m.PeerURLs) == 0 {
			t.Fatalf("member list after add: %+v", added.Members)
		}
		initial = append(initial, name+"="+m.PeerURLs[0])
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.Start(ctx, server.Config{
		Node: node.Config{
			Name:                "m3",
			DataDir:             t.TempDir(),
			ListenClientURLs:    mustURLs(t, clientURL),
			AdvertiseClientURLs: mustURLs(t, clientURL),
			ListenPeerURLs:      mustURLs(t, peerURL),
			AdvertisePeerURLs:   mustURLs(t, peerURL),
			InitialCluster:      strings.Join(initial, ","),
			ClusterState:        "existing",
			ClusterToken:        "ignored-when-joining",
			TickMs:              50,
			ElectionMs:          750,
			ReadyTimeout:        20 * time.Second,
		},
		Listener: ln,
		Prefix:   "/service/",
	})
	if err != nil {
		t.Fatalf("start the fourth member: %v", err)
	}
	t.Cleanup(func() { // before the cluster's own cleanup
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	m3 := "http://" + srv.HTTPAddr()

	// Everyone sees four named members and agrees on the leader.
	poll.Until(t, 10*time.Second, "four members and one leader seen everywhere", func() error {
		var leaders []string
		for _, u := range []string{c.Members[0].URL(""), c.Members[2].URL(""), m3} {
			_, _, body := regdtest.Do(t, http.MethodGet, u+"/v1/cluster", nil)
			var st registry.ClusterStatus
			regdtest.MustJSON(t, body, &st)
			names := []string{}
			for _, ms := range st.Members {
				names = append(names, ms.Name)
			}
			if strings.Join(names, ",") != "m0,m1,m2,m3" || st.Leader == "" {
				return fmt.Errorf("%s sees members %v, leader %q", u, names, st.Leader)
			}
			leaders = append(leaders, st.Leader)
		}
		if leaders[0] != leaders[1] || leaders[1] != leaders[2] {
			return fmt.Errorf("leaders disagree: %v", leaders)
		}
		return nil
	})
	if code, _, body := regdtest.Do(t, http.MethodGet, m3+"/readyz", nil); code != http.StatusOK {
		t.Fatalf("/readyz on the new member: %d %s", code, body)
	}
	// It serves the registry: a registration through it is seen elsewhere,
	// and its expiry reaches its ledger.
	code, _, body := regdtest.Do(t, http.MethodPut, m3+"/v1/services/joined/instances/j1", `{"address":"10.7.0.1:80","ttl":2}`)
	if code != http.StatusCreated {
		t.Fatalf("register through the new member: %d %s", code, body)
	}
	var in registry.Instance
	regdtest.MustJSON(t, body, &in)
	code, _, body = regdtest.Do(t, http.MethodGet, instanceURL(c.Members[1], "joined", "j1"), nil)
	if code != http.StatusOK {
		t.Fatalf("instance registered through m3, read on m1: %d %s", code, body)
	}
	members := []ledgertest.Member{{Name: "m3", URL: m3}}
	reporters := map[string]bool{"m3": true}
	for _, m := range c.Members {
		members = append(members, ledgertest.Member{Name: m.Name, URL: m.URL("")})
		reporters[m.Name] = true
	}
	ledgertest.Wait(t, 10*time.Second, members, ledgertest.Expected{
		Want:      map[key]string{keyOfInstance(in): in.Address},
		Reporters: reporters,
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return freeport.Addr(t)
}

func mustURLs(t *testing.T, s string) []url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return []url.URL{*u}
}
