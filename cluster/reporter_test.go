package cluster_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/regd/regd/cluster"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// ---- helpers shared by the tests of this package ----

func needsCluster(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts embedded etcd members")
	}
}

// startCluster starts n members and, when the test ends, stops them one by
// one, the current leader first. regdtest's own cleanup stops all members
// concurrently, and a stopping leader then waits up to etcd's request
// timeout (6.5 s with the test timers) to hand leadership to a member that
// is itself stopping; in order, each stop takes about a second (etcd drains
// its peer connections for up to 1 s).
func startCluster(t *testing.T, n int, opts ...regdtest.Options) *regdtest.Cluster {
	t.Helper()
	c := regdtest.StartCluster(t, n, opts...)
	t.Cleanup(func() {
		for running := c.Running(); len(running) > 0; running = c.Running() {
			i := c.Leader()
			if i < 0 {
				i = running[0]
			}
			c.Stop(i)
		}
	})
	return c
}

func instanceURL(m *regdtest.Member, service, id string) string {
	return m.URL("/v1/services/" + service + "/instances/" + id)
}

// register registers service/id through m with the given TTL and returns
// the instance the API answered.
func register(t *testing.T, m *regdtest.Member, service, id, addr string, ttl int) registry.Instance {
	t.Helper()
	code, _, body := regdtest.Do(t, http.MethodPut, instanceURL(m, service, id), map[string]any{"address": addr, "ttl": ttl})
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("register %s/%s on %s: %d %s", service, id, m.Name, code, body)
	}
	var inst registry.Instance
	regdtest.MustJSON(t, body, &inst)
	if inst.LeaseID == "" || inst.LeaseID == "0" || inst.TTL != int64(ttl) || inst.RegisteredAt == nil {
		t.Fatalf("register %s/%s returned %s", service, id, body)
	}
	return inst
}

func deregister(t *testing.T, m *regdtest.Member, service, id string) {
	t.Helper()
	code, _, body := regdtest.Do(t, http.MethodDelete, instanceURL(m, service, id), nil)
	if code != http.StatusNoContent {
		t.Fatalf("deregister %s/%s on %s: %d %s", service, id, m.Name, code, body)
	}
}

// ledger reads m's GET /v1/expirations with the query.
func ledger(t *testing.T, m *regdtest.Member, query url.Values) []registry.Expiration {
	t.Helper()
	return m.Ledger(t, query)
}

// key identifies one expiry: an instance under one lease.
type key = regdtest.Expiry

func keyOf(e registry.Expiration) key { return regdtest.ExpiryOf(e) }

func keyOfInstance(in registry.Instance) key { return regdtest.ExpiryOfInstance(in) }

// expect is what every ledger must hold: want, each once, with the
// addresses registered, and never any of forbidden (service/id).
func expect(want map[key]registry.Instance, forbidden map[string]bool) regdtest.Expected {
	x := regdtest.Expected{Want: make(map[key]string), Forbidden: forbidden}
	for k, in := range want {
		x.Want[k] = in.Address
	}
	return x
}

// countReported is how many of want m's ledger holds.
func countReported(t *testing.T, m *regdtest.Member, want map[key]registry.Instance) int {
	t.Helper()
	n := 0
	for _, e := range ledger(t, m, nil) {
		if _, ok := want[keyOf(e)]; ok {
			n++
		}
	}
	return n
}

// expiryDelay is how late an instance's expiry was reported: from the end
// of its TTL (counted from registration, no heartbeats) to the report.
func expiryDelay(e registry.Expiration, in registry.Instance) time.Duration {
	return e.ExpiredAt.Sub(in.RegisteredAt.Add(time.Duration(in.TTL) * time.Second))
}

// ---- exactly once across leader failure ----

func TestExactlyOnceLeaderKilled(t *testing.T) { testExactlyOnceFailover(t, true) }

func TestExactlyOnceLeaderStopped(t *testing.T) { testExactlyOnceFailover(t, false) }

// testExactlyOnceFailover registers 30 instances in two batches (TTL 2 s,
// then 4 s); once some of the first batch are reported it registers the
// second and at once kills (or gracefully stops) the leader, so the second batch expires
// only under the new leader. Every member must then show each expiry once,
// no deregistered instance, and the same ledger; so must the old leader
// after it restarts.
func testExactlyOnceFailover(t *testing.T, kill bool) {
	needsCluster(t)
	t.Parallel()
	c := startCluster(t, 3)
	leader := c.WaitLeader(t)
	want := make(map[key]registry.Instance)
	forbidden := make(map[string]bool)
	batchA := make(map[key]registry.Instance)

	// Deregistered instances, through every member: never reported.
	for i := range 5 {
		m := c.Members[i%3]
		id := fmt.Sprintf("gone-%d", i)
		register(t, m, "fo", id, "10.0.1.1:80", 2)
		deregister(t, m, "fo", id)
		forbidden["fo/"+id] = true
	}
	for i := range 15 {
		in := register(t, c.Members[i%3], "fo", fmt.Sprintf("a-%02d", i), fmt.Sprintf("10.0.0.%d:80", i+1), 2)
		want[keyOfInstance(in)] = in
		batchA[keyOfInstance(in)] = in
	}
	regdtest.Eventually(t, 10*time.Second, func() error {
		if n := countReported(t, c.Members[leader], batchA); n < 3 {
			return fmt.Errorf("%d reported", n)
		}
		return nil
	})
	before := ledger(t, c.Members[leader], nil)
	old := c.Members[leader].Name
	survivor := (leader + 1) % 3
	mon := regdtest.StartWriteMonitor("http://"+c.Members[survivor].HTTPAddr, "failover")
	regdtest.Eventually(t, 15*time.Second, func() error {
		if mon.Accepted() == 0 {
			return fmt.Errorf("probe writes not accepted yet")
		}
		return nil
	})
	// The second batch is registered last, right before the failure: its
	// TTL must outlast these registrations under load (-race, parallel
	// clusters) for it to expire only under the new leader.
	const ttlB = 4
	batchB := make(map[key]registry.Instance)
	registeredB := time.Now()
	for i := range 15 {
		in := register(t, c.Members[i%3], "fo", fmt.Sprintf("b-%02d", i), fmt.Sprintf("10.0.2.%d:80", i+1), ttlB)
		want[keyOfInstance(in)] = in
		batchB[keyOfInstance(in)] = in
	}
	if took := time.Since(registeredB); took > ttlB*time.Second/2 {
		t.Logf("registering the second batch took %s of its %d s TTL", took.Round(time.Millisecond), ttlB)
	}

	failedAt := time.Now()
	if kill {
		c.Kill(leader)
	} else {
		c.Stop(leader)
	}
	newLeader := c.WaitLeader(t)
	if newLeader == leader {
		t.Fatalf("member %d still leads after it was stopped", leader)
	}
	gap := mon.Finish(t, 15*time.Second)
	deregister(t, c.Members[survivor], "probe", "failover")
	forbidden["probe/failover"] = true
	t.Logf("%s of leader %s: longest gap between accepted writes %s; new leader %s; %d of 30 reported before",
		map[bool]string{true: "kill", false: "graceful stop"}[kill], old, gap.Round(time.Millisecond), c.Members[newLeader].Name, len(before))
	if gap > 8*time.Second {
		t.Errorf("writes were refused for %s around the failover", gap)
	}

	final := c.WaitExpiries(t, 20*time.Second, expect(want, forbidden))

	// What the old leader reported before it went away is still there,
	// unchanged, and nothing of the second batch was reported by it.
	for _, e := range before {
		if e.ReportedBy != old {
			t.Errorf("report %s before the failover is by %s, not the leader %s", keyOf(e), e.ReportedBy, old)
		}
	}
	var steady, afterFailover time.Duration
	for _, e := range final {
		in := want[keyOf(e)]
		d := expiryDelay(e, in)
		if _, ok := batchB[keyOf(e)]; ok {
			if e.ReportedBy == old {
				t.Errorf("%s of the second batch was reported by the old leader %s", keyOf(e), old)
			}
			// Measured from the failure: the new leader's lessor restarts
			// every lease's TTL when it takes over.
			afterFailover = max(afterFailover, e.ExpiredAt.Sub(failedAt))
		} else if e.ReportedBy == old {
			steady = max(steady, d)
		}
	}
	t.Logf("worst expiry report delay: steady state %s after TTL end; second batch reported by %s after the failure (TTL %d s)",
		steady.Round(time.Millisecond), afterFailover.Round(time.Millisecond), ttlB)
	if steady > 3*time.Second { // TTL end + 500 ms lessor granularity, with room for -race and parallel clusters
		t.Errorf("steady-state expiry reported %s after the TTL ended", steady)
	}
	if afterFailover > (ttlB+10)*time.Second {
		t.Errorf("expiries after the failover reported only %s after it", afterFailover)
	}

	// The old leader rejoins and serves the same ledger.
	c.Restart(leader)
	regdtest.Eventually(t, 15*time.Second, func() error {
		return regdtest.SameLedger(final, ledger(t, c.Members[leader], nil))
	})
	c.WaitExpiries(t, 5*time.Second, expect(want, forbidden))
}

// ---- full cluster restart ----

func TestExactlyOnceFullRestart(t *testing.T) {
	needsCluster(t)
	t.Parallel()
	c := startCluster(t, 3)
	leader := c.WaitLeader(t)
	want := make(map[key]registry.Instance)
	for i := range 10 {
		in := register(t, c.Members[i%3], "fr", fmt.Sprintf("a-%02d", i), fmt.Sprintf("10.1.0.%d:80", i+1), 2)
		want[keyOfInstance(in)] = in
	}
	regdtest.Eventually(t, 10*time.Second, func() error {
		if n := countReported(t, c.Members[leader], want); n < 3 {
			return fmt.Errorf("%d reported", n)
		}
		return nil
	})
	for i := range 10 {
		in := register(t, c.Members[i%3], "fr", fmt.Sprintf("b-%02d", i), fmt.Sprintf("10.1.1.%d:80", i+1), 2)
		want[keyOfInstance(in)] = in
	}
	before := countReported(t, c.Members[leader], want)
	// Leader first, so that it hands over; then the rest.
	c.Stop(leader)
	for _, i := range c.Running() {
		c.Stop(i)
	}
	if len(c.Running()) != 0 {
		t.Fatalf("members still running: %v", c.Running())
	}
	c.RestartAll(0, 1, 2)
	newLeader := c.WaitLeader(t)
	t.Logf("%d of 20 reported before the full stop; leader after restart %s", before, c.Members[newLeader].Name)
	c.WaitExpiries(t, 20*time.Second, expect(want, nil))
}

// ---- expire vs delete for plain etcd clients, and re-registration ----

func TestPlainClientsAndReregistration(t *testing.T) {
	needsCluster(t)
	t.Parallel()
	c := startCluster(t, 3)
	leader := c.WaitLeader(t)
	follower := (leader + 1) % 3
	cli := c.EtcdClient(t, follower)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	forbidden := map[string]bool{}
	want := map[key]registry.Instance{}

	// 1. A plain client's key deleted while its lease is alive.
	l1, err := cli.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/service/plain/deleted", "10.2.0.1:80", clientv3.WithLease(l1.ID)); err != nil {
		t.Fatal(err)
	}
	if resp, err := cli.Delete(ctx, "/service/plain/deleted"); err != nil || resp.Deleted != 1 {
		t.Fatalf("delete: %v %+v", err, resp)
	}
	forbidden["plain/deleted"] = true

	// 2. The same in the lease's last second: etcd reports TTL 0 then,
	// but the lease is alive, so it is still an explicit delete.
	deleteInLastSecond(t, ctx, cli, "/service/plain/late")
	forbidden["plain/late"] = true

	// 3. A key without a lease, deleted.
	if _, err := cli.Put(ctx, "/service/plain/nolease", "10.2.0.3:80"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "/service/plain/nolease"); err != nil {
		t.Fatal(err)
	}
	forbidden["plain/nolease"] = true

	// 4. A REST instance re-registered: the first lease is never reported.
	first := register(t, c.Members[0], "rereg", "r1", "10.2.1.1:80", 2)
	second := register(t, c.Members[1], "rereg", "r1", "10.2.1.2:80", 2)
	if first.LeaseID == second.LeaseID {
		t.Fatalf("re-registration kept lease %s", first.LeaseID)
	}
	want[keyOfInstance(second)] = second

	// 5. A plain client's key taken over by a REST registration: the
	// plain lease lapses holding nothing and is never reported.
	l5, err := cli.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/service/mixed/x", "10.2.2.1:80", clientv3.WithLease(l5.ID)); err != nil {
		t.Fatal(err)
	}
	taken := register(t, c.Members[2], "mixed", "x", "10.2.2.2:80", 3)
	want[keyOfInstance(taken)] = taken

	// 6. A plain client's key left to expire: reported like any other.
	l6, err := cli.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/service/plain/expiring", "10.2.0.6:80", clientv3.WithLease(l6.ID)); err != nil {
		t.Fatal(err)
	}
	plainKey := key{Service: "plain", ID: "expiring", Lease: registry.FormatLease(int64(l6.ID))}
	want[plainKey] = registry.Instance{Service: "plain", ID: "expiring", Address: "10.2.0.6:80", LeaseID: plainKey.Lease}

	// The expiries come after every delete above in revision order, so once
	// they are reported the reporter has classified the deletes too. The
	// plain lease l5 lapses before the REST lease that replaced it.
	es := c.WaitExpiries(t, 15*time.Second, expect(want, forbidden))
	for _, e := range es {
		if e.LeaseID == first.LeaseID || e.LeaseID == registry.FormatLease(int64(l5.ID)) || e.LeaseID == registry.FormatLease(int64(l1.ID)) {
			t.Fatalf("a lease that held no key when it ended was reported: %+v", e)
		}
	}
	// The plain lease l1 is still alive and holds nothing; revoking it
	// deletes nothing and reports nothing.
	if _, err := cli.Revoke(ctx, l1.ID); err != nil {
		t.Fatal(err)
	}
	register(t, c.Members[0], "barrier", "b", "10.2.9.9:80", 2) // a later expiry as a barrier
	regdtest.Eventually(t, 10*time.Second, func() error {
		if n := len(ledger(t, c.Members[leader], url.Values{"service": {"barrier"}})); n != 1 {
			return fmt.Errorf("barrier reported %d times", n)
		}
		return nil
	})
	if got := len(ledger(t, c.Members[follower], nil)); got != len(want)+1 {
		t.Fatalf("ledger holds %d entries, want %d", got, len(want)+1)
	}
}

// deleteInLastSecond puts key with a 3 s lease and deletes it once etcd
// reports the lease's TTL as 0 while the lease still exists.
func deleteInLastSecond(t *testing.T, ctx context.Context, cli *clientv3.Client, k string) {
	t.Helper()
	for attempt := 0; attempt < 3; attempt++ {
		l, err := cli.Grant(ctx, 3)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, k, "10.2.0.2:80", clientv3.WithLease(l.ID)); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(6 * time.Second)
		for time.Now().Before(deadline) {
			ttl, err := cli.TimeToLive(ctx, l.ID)
			if err != nil {
				t.Fatal(err)
			}
			if ttl.GrantedTTL == 0 {
				break // lease gone before we caught its last second; retry
			}
			if ttl.TTL <= 0 {
				resp, err := cli.Delete(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				if resp.Deleted == 1 {
					return
				}
				break
			}
			time.Sleep(20 * time.Millisecond) // polling pace, not synchronisation
		}
	}
	t.Fatalf("could not delete %s during its lease's last second", k)
}

// ---- ledger queries and retention ----

func TestLedgerOrderFilterLimit(t *testing.T) {
	needsCluster(t)
	t.Parallel()
	c := startCluster(t, 1)
	m := c.Members[0]
	want := map[key]registry.Instance{}
	for i := range 4 {
		in := register(t, m, "svc-a", fmt.Sprintf("a%d", i), fmt.Sprintf("10.3.0.%d:80", i+1), 2)
		want[keyOfInstance(in)] = in
	}
	for i := range 3 {
		in := register(t, m, "svc-b", fmt.Sprintf("b%d", i), fmt.Sprintf("10.3.1.%d:80", i+1), 2)
		want[keyOfInstance(in)] = in
	}
	all := c.WaitExpiries(t, 15*time.Second, expect(want, nil))
	for i := 1; i < len(all); i++ {
		if all[i-1].Revision <= all[i].Revision {
			t.Fatalf("not strictly newest first at %d: %d then %d", i, all[i-1].Revision, all[i].Revision)
		}
	}
	filter := func(service string) []registry.Expiration {
		var out []registry.Expiration
		for _, e := range all {
			if e.Service == service {
				out = append(out, e)
			}
		}
		return out
	}
	if err := regdtest.SameLedger(filter("svc-a"), ledger(t, m, url.Values{"service": {"svc-a"}})); err != nil || len(filter("svc-a")) != 4 {
		t.Fatalf("?service=svc-a: %v", err)
	}
	if err := regdtest.SameLedger(all[:3], ledger(t, m, url.Values{"limit": {"3"}})); err != nil {
		t.Fatalf("?limit=3: %v", err)
	}
	if err := regdtest.SameLedger(filter("svc-b")[:2], ledger(t, m, url.Values{"service": {"svc-b"}, "limit": {"2"}})); err != nil {
		t.Fatalf("?service=svc-b&limit=2: %v", err)
	}
	if n := len(ledger(t, m, url.Values{"service": {"unknown"}})); n != 0 {
		t.Fatalf("?service=unknown: %d entries", n)
	}
	// Above the maximum, ?limit= is clamped (contract v2), not refused.
	if err := regdtest.SameLedger(all, ledger(t, m, url.Values{"limit": {"10001"}})); err != nil {
		t.Fatalf("?limit=10001: %v", err)
	}
	for _, q := range []string{"limit=0", "limit=x", "limit=-1", "service=a%20b"} {
		if code, _, body := regdtest.Do(t, http.MethodGet, m.URL("/v1/expirations?"+q), nil); code != http.StatusBadRequest {
			t.Errorf("?%s: %d %s", q, code, body)
		}
	}
}

var expiredTotal = regexp.MustCompile(`(?m)^regd_expirations_total\{service="ret"\} (\d+)$`)

func TestLedgerRetention(t *testing.T) {
	needsCluster(t)
	t.Cleanup(cluster.SetTrimEvery(200 * time.Millisecond)) // runs after the cluster stopped
	c := startCluster(t, 1, regdtest.Options{ExpiryRetention: 5})
	m := c.Members[0]
	for i := range 10 {
		register(t, m, "ret", fmt.Sprintf("r%d", i), "10.4.0.1:80", 2)
	}
	regdtest.Eventually(t, 20*time.Second, func() error {
		_, _, body := regdtest.Do(t, http.MethodGet, m.URL("/metrics"), nil)
		got := expiredTotal.FindSubmatch(body)
		if got == nil || string(got[1]) != "10" {
			return fmt.Errorf("regd_expirations_total{service=\"ret\"}: %q", got)
		}
		if n := len(ledger(t, m, nil)); n != 5 {
			return fmt.Errorf("ledger holds %d entries", n)
		}
		return nil
	})
	es := ledger(t, m, nil)
	ids := map[string]bool{}
	for i, e := range es {
		ids[e.ID] = true
		if i > 0 && es[i-1].Revision <= e.Revision {
			t.Fatalf("not newest first after trim: %+v", es)
		}
	}
	if len(ids) != 5 {
		t.Fatalf("trimmed ledger has duplicates: %+v", es)
	}
}

// ---- two reporters at once ----

// TestTwoReportersAtOnce runs a second reporter on a follower beside the
// leader's, as happens for a moment when a deposed leader has not noticed
// yet: the cursor's compare lets exactly one of them commit each batch.
func TestTwoReportersAtOnce(t *testing.T) {
	needsCluster(t)
	t.Parallel()
	c := startCluster(t, 3)
	leader := c.WaitLeader(t)
	follower := c.Members[(leader+1)%3].Server()
	rogue := cluster.NewReporter(cluster.ReporterConfig{Ledger: registry.NewLedger(follower.Store()), Node: follower.Node(), Logger: zap.NewNop()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rogue.Run(ctx)
	}()
	stopRogue := func() {
		cancel()
		<-done
	}
	t.Cleanup(stopRogue) // before the cluster stops, should the test fail early
	want := map[key]registry.Instance{}
	forbidden := map[string]bool{}
	for i := range 24 {
		m := c.Members[i%3]
		if i%4 == 3 {
			id := fmt.Sprintf("gone-%d", i)
			register(t, m, "two", id, "10.8.1.1:80", 2)
			deregister(t, m, "two", id)
			forbidden["two/"+id] = true
			continue
		}
		in := register(t, m, "two", fmt.Sprintf("i-%02d", i), fmt.Sprintf("10.8.0.%d:80", i+1), 2)
		want[keyOfInstance(in)] = in
	}
	c.WaitExpiries(t, 15*time.Second, expect(want, forbidden))
	stopRogue()
	es := c.WaitExpiries(t, 5*time.Second, expect(want, forbidden))
	by := map[string]int{}
	for _, e := range es {
		by[e.ReportedBy]++
	}
	t.Logf("reports by member: %v (leader %s, second reporter on %s)", by, c.Members[leader].Name, follower.Node().Name())
}
