//go:build e2e

package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regd/regd/internal/e2e"
	"github.com/regd/regd/internal/ledgertest"
)

// The load of TestE2EFaultLoadWhileFailing.
const (
	loadClients   = 32
	loadInstances = 4  // per client
	loadTTL       = 10 // seconds: longer than a failover
	loadHeartbeat = loadTTL * time.Second / 3
	loadPace      = 100 * time.Millisecond  // between one client's operations
	loadAttempt   = 5 * time.Second         // one HTTP attempt; above the store's 3 s
	loadGiveUp    = 8 * time.Second         // an operation retried this long is a failure
	loadSlack     = 1500 * time.Millisecond // clock and lease granularity
	// loadAbandon is when every client stops heartbeating its last instance:
	// those expire around the leader's kill and must be reported once each.
	loadAbandon = 4 * time.Second
)

// The fault schedule, from the start of the load.
var loadSchedule = struct {
	killFollower, restartFollower, killLeader, restartLeader, end time.Duration
}{5 * time.Second, 8 * time.Second, 11 * time.Second, 14 * time.Second, 20 * time.Second}

// loadStats is what every client records.
type loadStats struct {
	attempts counter // every HTTP attempt by outcome: status code or "transport"
	ops      counter // completed operations by kind

	mu         sync.Mutex
	okAt       []time.Duration // every successful attempt, since the start
	writeOKAt  []time.Duration // successful registrations
	violations []string
	unresolved []string
	maxGap     time.Duration // longest time a client went without a success
}

func (s *loadStats) violation(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violations = append(s.violations, fmt.Sprintf(format, args...))
}

type loadInstance struct {
	id    string
	acked time.Time // send time of its last acknowledged register or heartbeat
	lease string    // of its last acknowledged registration
	addr  string    // of its last acknowledged registration
}

// loadClient owns loadInstances instances of its own service, registers
// them, heartbeats each every TTL/3, and in between lists its service and
// re-registers its instances. On a transport error or a 503 it moves on to
// the next node and retries, the way a client with a list of nodes does.
type loadClient struct {
	n     int
	svc   string
	urls  []string
	cur   int
	http  *http.Client
	inst  []*loadInstance
	st    *loadStats
	start time.Time

	lastOK  time.Time
	maxGap  time.Duration
	nextReg int
	step    int
}

type attempt struct {
	status int
	body   []byte
	sent   time.Time
}

// do runs one operation: attempts on the current node, moving to the next
// on a transport error or a 503, until an answer or loadGiveUp. ok is false
// when the load ended meanwhile or the operation never got an answer.
func (c *loadClient) do(ctx context.Context, kind, method, path, body string) (attempt, bool) {
	began := time.Now()
	for {
		sent := time.Now()
		actx, cancel := context.WithTimeout(ctx, loadAttempt)
		status, b, err := call(actx, c.http, method, c.urls[c.cur]+path, body)
		cancel()
		if ctx.Err() != nil {
			return attempt{}, false // the load ended; not the cluster's fault
		}
		switch {
		case err != nil:
			c.st.attempts.add("transport")
		default:
			c.st.attempts.add(strconv.Itoa(status))
		}
		if err == nil && status != http.StatusServiceUnavailable {
			if status >= 500 {
				c.st.violation("client %d: %s %s answered %d: %s", c.n, method, path, status, b)
			}
			c.ok(sent, kind, status)
			return attempt{status: status, body: b, sent: sent}, true
		}
		if time.Since(began) > loadGiveUp {
			c.st.mu.Lock()
			c.st.unresolved = append(c.st.unresolved, fmt.Sprintf("client %d: %s %s: no answer but 503 or transport errors for %v (last: %d %v)", c.n, method, path, loadGiveUp, status, err))
			c.st.mu.Unlock()
			return attempt{}, false
		}
		c.cur = (c.cur + 1) % len(c.urls)
		select {
		case <-ctx.Done():
			return attempt{}, false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *loadClient) ok(sent time.Time, kind string, status int) {
	now := time.Now()
	if !c.lastOK.IsZero() {
		c.maxGap = max(c.maxGap, now.Sub(c.lastOK))
	}
	c.lastOK = now
	c.st.ops.add(kind)
	c.st.mu.Lock()
	c.st.okAt = append(c.st.okAt, now.Sub(c.start))
	if kind == "register" && status < 300 {
		c.st.writeOKAt = append(c.st.writeOKAt, now.Sub(c.start))
	}
	c.st.mu.Unlock()
}

func (c *loadClient) register(ctx context.Context, in *loadInstance) {
	a, ok := c.do(ctx, "register", http.MethodPut, "/v1/services/"+c.svc+"/instances/"+in.id, registerBody(fmt.Sprintf("10.2.%d.%d:80", c.n, c.nextReg%250+1), loadTTL, map[string]string{"client": strconv.Itoa(c.n)}))
	if !ok {
		return
	}
	var got instance
	if (a.status != http.StatusOK && a.status != http.StatusCreated) || json.Unmarshal(a.body, &got) != nil {
		c.st.violation("client %d: register %s: %d %s", c.n, in.id, a.status, a.body)
		return
	}
	in.acked, in.lease, in.addr = a.sent, got.LeaseID, got.Address
}

func (c *loadClient) heartbeat(ctx context.Context, in *loadInstance) {
	a, ok := c.do(ctx, "heartbeat", http.MethodPut, "/v1/services/"+c.svc+"/instances/"+in.id+"/heartbeat", "")
	if !ok {
		return
	}
	switch a.status {
	case http.StatusOK:
		in.acked = a.sent
	case http.StatusNotFound:
		if !in.acked.IsZero() && a.sent.Before(in.acked.Add(loadTTL*time.Second-loadSlack)) {
			c.st.violation("client %d: %s lost: heartbeat answered 404 %v after the last acknowledged one (TTL %ds)", c.n, in.id, a.sent.Sub(in.acked).Round(time.Millisecond), loadTTL)
		}
		c.register(ctx, in) // what a client does on 404
	default:
		c.st.violation("client %d: heartbeat %s: %d %s", c.n, in.id, a.status, a.body)
	}
}

// list checks that every instance acknowledged recently enough is listed.
func (c *loadClient) list(ctx context.Context) {
	a, ok := c.do(ctx, "list", http.MethodGet, "/v1/services/"+c.svc+"/instances", "")
	if !ok {
		return
	}
	if a.status != http.StatusOK {
		c.st.violation("client %d: list: %d %s", c.n, a.status, a.body)
		return
	}
	var l struct{ Instances []instance }
	if err := json.Unmarshal(a.body, &l); err != nil {
		c.st.violation("client %d: list: %v", c.n, err)
		return
	}
	listed := map[string]bool{}
	for _, in := range l.Instances {
		listed[in.ID] = true
	}
	for _, in := range c.inst {
		if !in.acked.IsZero() && !listed[in.id] && a.sent.Before(in.acked.Add(loadTTL*time.Second-loadSlack)) {
			c.st.violation("client %d: %s missing from a list sent %v after its last acknowledged heartbeat", c.n, in.id, a.sent.Sub(in.acked).Round(time.Millisecond))
		}
	}
}

func (c *loadClient) run(ctx context.Context) {
	for _, in := range c.inst {
		c.register(ctx, in)
	}
	tick := time.NewTicker(loadPace)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		live := c.live()
		oldest := live[0]
		for _, in := range live[1:] {
			if in.acked.Before(oldest.acked) {
				oldest = in
			}
		}
		c.step++
		switch {
		case time.Since(oldest.acked) >= loadHeartbeat:
			c.heartbeat(ctx, oldest)
		case c.step%10 == 0:
			c.nextReg++
			c.register(ctx, live[c.nextReg%len(live)])
		case c.step%10 <= 4:
			c.heartbeat(ctx, live[c.step%len(live)])
		default:
			c.list(ctx)
		}
	}
}

// live is the instances the client still keeps alive: the last one is
// abandoned (no more heartbeats) once the load passes loadAbandon.
func (c *loadClient) live() []*loadInstance {
	if time.Since(c.start) >= loadAbandon {
		return c.inst[:len(c.inst)-1]
	}
	return c.inst
}

// TestE2EFaultLoadWhileFailing: 32 clients register and heartbeat against
// a three-node cluster for 20 s while a follower, then the leader, is killed
// with SIGKILL and restarted. Every instance whose heartbeats were
// acknowledged in time stays registered (checked continuously by the
// clients' own lists and on every node at the end), no 5xx but 503 is ever
// answered, and every operation succeeds after moving to another node.
func TestE2EFaultLoadWhileFailing(t *testing.T) {
	bin := e2e.Build(t)
	c := e2e.StartCluster(t, bin, e2e.ClusterOptions{})
	c.Leader(leaderWait)
	var urls []string
	for i := range c.Members {
		urls = append(urls, c.URL(i))
	}

	st := &loadStats{}
	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	start := time.Now()
	clients := make([]*loadClient, loadClients)
	var wg sync.WaitGroup
	for n := range clients {
		cl := &loadClient{
			n: n, svc: fmt.Sprintf("load%02d", n), urls: urls, cur: n % len(urls),
			http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}},
			st:   st, start: start,
		}
		for k := range loadInstances {
			cl.inst = append(cl.inst, &loadInstance{id: fmt.Sprintf("i%d", k)})
		}
		clients[n] = cl
		wg.Go(func() {
			// Spread the clients over one pace interval (pacing).
			time.Sleep(time.Duration(rand.Int64N(int64(loadPace))))
			cl.run(ctx)
		})
	}

	// The faults' timeline is the scenario: each comes at its time into
	// the load, whatever the load is doing then.
	at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }
	type event struct {
		what string
		at   time.Duration
	}
	var events []event
	mark := func(what string) { events = append(events, event{what, time.Since(start)}) }
	readyAfter := map[string]time.Duration{}
	var readyMu sync.Mutex
	var restarts sync.WaitGroup
	restart := func(i int) {
		began := time.Now()
		c.Start(i)
		restarts.Go(func() {
			c.WaitReady(i, readyTimeout)
			readyMu.Lock()
			readyAfter[c.Members[i].Name] = time.Since(began)
			readyMu.Unlock()
		})
	}

	at(loadSchedule.killFollower)
	leader := c.Leader(leaderWait)
	follower := (leader + 1) % len(c.Members)
	c.Kill(follower)
	mark("SIGKILL follower " + c.Members[follower].Name)
	at(loadSchedule.restartFollower)
	restart(follower)
	mark("restart follower " + c.Members[follower].Name)

	at(loadSchedule.killLeader)
	leader = c.LeaderAmong(leaderWait, 0, 1, 2)
	c.Kill(leader)
	killedLeaderAt := time.Since(start)
	mark("SIGKILL leader " + c.Members[leader].Name)
	var survivors []int
	for i := range c.Members {
		if i != leader {
			survivors = append(survivors, i)
		}
	}
	successor := c.LeaderAmong(leaderWait, survivors...)
	election := time.Since(start) - killedLeaderAt
	mark("survivors agree on leader " + c.Members[successor].Name)
	at(loadSchedule.restartLeader)
	restart(leader)
	mark("restart leader " + c.Members[leader].Name)

	at(loadSchedule.end)
	stopLoad()
	wg.Wait()
	elapsed := time.Since(start)
	restarts.Wait()
	newLeader := c.Leader(leaderWait)
	if t.Failed() {
		return
	}

	// Every instance acknowledged within its TTL is listed on every node.
	for i := range c.Members {
		for _, cl := range clients {
			sent := time.Now()
			got, err := list(c.URL(i), cl.svc)
			if err != nil {
				t.Fatalf("final list: %v", err)
			}
			for _, in := range cl.inst {
				if _, ok := got[in.id]; !ok && !in.acked.IsZero() && sent.Before(in.acked.Add(loadTTL*time.Second-loadSlack)) {
					t.Errorf("%s: %s/%s not listed %v after its last acknowledged heartbeat", c.Members[i].Name, cl.svc, in.id, sent.Sub(in.acked).Round(time.Millisecond))
				}
			}
		}
	}
	// The abandoned instances, and only they, expire: each is reported
	// exactly once, as every node's ledger shows.
	abandoned := map[string]*loadInstance{}
	wantExpired := map[ledgertest.Expiry]string{}
	for _, cl := range clients {
		in := cl.inst[len(cl.inst)-1]
		abandoned[cl.svc+"/"+in.id] = in
		wantExpired[ledgertest.Expiry{Service: cl.svc, ID: in.id, Lease: in.lease}] = in.addr
	}
	var worstDelay time.Duration
	for _, e := range exactlyOnce(t, c, 30*time.Second, ledgertest.Expected{Want: wantExpired}) {
		in := abandoned[e.Service+"/"+e.ID]
		worstDelay = max(worstDelay, e.ExpiredAt.Sub(in.acked.Add(loadTTL*time.Second)))
	}
	// The bound of cluster/DESIGN.md: a failover delays an expiry by at
	// most one TTL, the election and one election timeout (1 s).
	if bound := loadTTL*time.Second + election + time.Second + loadSlack; worstDelay > bound {
		t.Errorf("an expiry was reported %v after its TTL ran out, over the bound %v (TTL + election %v + 1 s + %v)", worstDelay, bound, election, loadSlack)
	}

	for _, cl := range clients {
		st.maxGap = max(st.maxGap, cl.maxGap)
	}
	total := len(st.okAt)
	rate := func(from, to time.Duration) float64 {
		n := 0
		for _, d := range st.okAt {
			if d >= from && d < to {
				n++
			}
		}
		return float64(n) / (to - from).Seconds()
	}
	sch := loadSchedule
	figure(t, "%d clients, %d instances (TTL %d s), %v of load: %d successful requests, %.0f ops/s overall",
		loadClients, loadClients*loadInstances, loadTTL, elapsed.Round(100*time.Millisecond), total, float64(total)/elapsed.Seconds())
	figure(t, "ops/s by phase: all up %.0f, follower down %.0f, all up %.0f, leader down %.0f, all up %.0f",
		rate(time.Second, sch.killFollower), rate(sch.killFollower, sch.restartFollower), rate(sch.restartFollower, sch.killLeader),
		rate(sch.killLeader, sch.restartLeader), rate(sch.restartLeader, sch.end))
	figure(t, "operations: %s", st.ops.String())
	figure(t, "HTTP attempts by outcome: %s (a 503 or transport error is retried on the next node)", st.attempts.String())
	figure(t, "leader SIGKILL: survivors agreed on a new leader after %s (polled); longest gap between accepted registrations %s; longest time any client went without a success: %s",
		ms(election), ms(longestGap(st.writeOKAt, killedLeaderAt, killedLeaderAt+3*time.Second)), ms(st.maxGap))
	figure(t, "%d instances abandoned at %v, each reported expired exactly once on every node; latest report %s after its TTL ran out (a leader SIGKILL in between; bound TTL + election + 1 s)",
		len(abandoned), loadAbandon, ms(worstDelay))
	readyMu.Lock()
	var ready []string
	for _, name := range slices.Sorted(maps.Keys(readyAfter)) {
		ready = append(ready, name+" "+ms(readyAfter[name]))
	}
	readyMu.Unlock()
	figure(t, "restarted members ready after: %s; leader after the test: %s", strings.Join(ready, ", "), c.Members[newLeader].Name)
	for _, e := range events {
		t.Logf("%6s %s", ms(e.at), e.what)
	}

	for _, k := range st.attempts.keys() {
		if code, err := strconv.Atoi(k); err == nil && code >= 500 && code != http.StatusServiceUnavailable {
			t.Errorf("%d requests answered %d", st.attempts.get(k), code)
		}
	}
	for _, v := range st.violations {
		t.Error(v)
	}
	for _, u := range st.unresolved {
		t.Error(u)
	}
	if st.maxGap > loadGiveUp {
		t.Errorf("a client went %v without a successful request", st.maxGap)
	}
}

// longestGap is the longest time between consecutive times in ts (sorted
// here) that overlaps [from, to].
func longestGap(ts []time.Duration, from, to time.Duration) time.Duration {
	s := append([]time.Duration(nil), ts...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var gap time.Duration
	for i := 1; i < len(s); i++ {
		if s[i] >= from && s[i-1] <= to {
			gap = max(gap, s[i]-s[i-1])
		}
	}
	return gap
}
