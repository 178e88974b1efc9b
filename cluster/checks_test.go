package cluster_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regd/regd/cluster"
	"github.com/regd/regd/internal/checktest"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/internal/server"
	"github.com/regd/regd/registry"
)

// ---- health checks run by the registry (issue 13) ----

// checkInterval is the interval of the checks in these tests: the
// contract's minimum, so that failures are found quickly.
const checkInterval = time.Second

// registerChecked registers service/id with check (a map such as
// {"http": url}), interval 1s, timeout 900ms (a loaded test machine can
// take half a second to answer) and the given failures, through m; extra
// adds to the body or replaces.
func registerChecked(t *testing.T, m *regdtest.Member, service, id, addr string, check map[string]any, failures int, extra map[string]any) registry.Instance {
	t.Helper()
	body := map[string]any{"address": addr, "check": check, "interval": "1s", "timeout": "900ms", "failures": failures}
	for k, v := range extra {
		body[k] = v
	}
	code, _, resp := regdtest.Do(t, http.MethodPut, instanceURL(m, service, id), body)
	if code != http.StatusCreated {
		t.Fatalf("register %s/%s with a check: %d %s", service, id, code, resp)
	}
	var in registry.Instance
	regdtest.MustJSON(t, resp, &in)
	if in.Check == nil || in.Health != nil {
		t.Fatalf("register %s/%s: check %+v health %+v, want the check and no health yet", service, id, in.Check, in.Health)
	}
	return in
}

// getInstance reads service/id on m; ok is false on 404.
func getInstance(t *testing.T, m *regdtest.Member, service, id string) (registry.Instance, bool) {
	t.Helper()
	code, _, body := regdtest.Do(t, http.MethodGet, instanceURL(m, service, id), nil)
	if code == http.StatusNotFound {
		return registry.Instance{}, false
	}
	if code != http.StatusOK {
		t.Fatalf("GET %s/%s on %s: %d %s", service, id, m.Name, code, body)
	}
	var in registry.Instance
	regdtest.MustJSON(t, body, &in)
	return in, true
}

// waitHealth waits until every running member shows service/id's health
// as ok says.
func waitHealth(t *testing.T, c *regdtest.Cluster, service, id string, timeout time.Duration, ok func(h registry.Health) bool) registry.Health {
	t.Helper()
	var h registry.Health
	regdtest.Eventually(t, timeout, func() error {
		for _, i := range c.Running() {
			in, found := getInstance(t, c.Members[i], service, id)
			if !found {
				return fmt.Errorf("%s/%s is not registered on %s", service, id, c.Members[i].Name)
			}
			if in.Health == nil || !ok(*in.Health) {
				return fmt.Errorf("%s/%s on %s has health %+v", service, id, c.Members[i].Name, in.Health)
			}
			h = *in.Health
		}
		return nil
	})
	return h
}

func passing(h registry.Health) bool { return h.Status == registry.HealthPassing }

// checkedExpected is what the ledgers must hold: the instances of failed,
// each once with cause check_failed; those of ttl, with cause ttl;
// nothing of the services/ids in healthy.
func waitCheckExpiries(t *testing.T, c *regdtest.Cluster, failed, ttl []registry.Instance, healthy []string, outputs map[string]string) {
	t.Helper()
	x := regdtest.Expected{Want: map[regdtest.Expiry]string{}, Forbidden: map[string]bool{}}
	causes := map[regdtest.Expiry]string{}
	for _, in := range failed {
		x.Want[regdtest.ExpiryOfInstance(in)] = in.Address
		causes[regdtest.ExpiryOfInstance(in)] = registry.ExpiryCauseCheckFailed
	}
	for _, in := range ttl {
		x.Want[regdtest.ExpiryOfInstance(in)] = in.Address
		causes[regdtest.ExpiryOfInstance(in)] = registry.ExpiryCauseTTL
	}
	for _, h := range healthy {
		x.Forbidden[h] = true
	}
	for _, e := range c.WaitExpiries(t, 30*time.Second, x) {
		k := regdtest.ExpiryOf(e)
		if e.Cause != causes[k] {
			t.Errorf("%s reported with cause %q, want %q", k, e.Cause, causes[k])
		}
		if want := outputs[e.Service+"/"+e.ID]; e.Cause == registry.ExpiryCauseCheckFailed && !strings.Contains(e.Output, want) {
			t.Errorf("%s reported with output %q, want it to contain %q", k, e.Output, want)
		}
	}
}

// TestChecks: HTTP, TCP and gRPC checks against local backends flipped
// between healthy and failing, on a three-member cluster. While they pass,
// no heartbeats are needed; each member shows the health; a failing check
// that recovers stays; one that fails its allowed number of times in a row
// is removed and reported once, everywhere, with cause check_failed and
// the last check's output.
func TestChecks(t *testing.T) {
	needsCluster(t)
	t.Parallel()
	c := startCluster(t, 3)
	web, tcp, rpc := checktest.NewHTTP(t), checktest.NewTCP(t), checktest.NewGRPC(t)
	m := c.Members[0]

	h := registerChecked(t, m, "db", "web", "127.0.0.1:5432", map[string]any{"http": web.URL("web")}, 3, nil)
	tc := registerChecked(t, m, "db", "tcp", tcp.Addr(), map[string]any{"tcp": tcp.Addr()}, 2, nil)
	g := registerChecked(t, m, "db", "grpc", rpc.Addr(), map[string]any{"grpc": rpc.Addr()}, 2, nil)
	registerChecked(t, m, "db", "flood", web.Addr(), map[string]any{"http": web.URL("flood")}, 3, nil)
	web.Set("flood", checktest.Flood)
	// The TTL of a checked instance covers three intervals, a timeout
	// and a change of owner (registry.CheckTTL): 3 × 1 s + 0.9 s + 2 ×
	// 750 ms + 1 s with the test clusters' election timeout, so 7 s; a
	// larger TTL asked for is kept.
	if h.TTL != registry.DefaultTTL {
		t.Errorf("granted TTL %d, want the default %d (above the minimum)", h.TTL, registry.DefaultTTL)
	}
	short := registerChecked(t, m, "db", "short", "127.0.0.1:1", map[string]any{"tcp": tcp.Addr()}, 2, map[string]any{"ttl": 2})
	if short.TTL != 7 {
		t.Errorf("ttl 2 with a 1s check: granted %d, want 7 (3 intervals + timeout + 2 election timeouts + 1s)", short.TTL)
	}
	if want := (registry.Check{HTTP: web.URL("web"), Interval: registry.Duration(time.Second), Timeout: registry.Duration(900 * time.Millisecond), Failures: 3}); *h.Check != want {
		t.Errorf("check %+v, want %+v", *h.Check, want)
	}

	for _, in := range []registry.Instance{h, tc, g, short} {
		hl := waitHealth(t, c, "db", in.ID, 20*time.Second, passing)
		if hl.ConsecutiveFailures != 0 || hl.CheckedAt.IsZero() || hl.Output == "" {
			t.Errorf("%s: health %+v", in.ID, hl)
		}
	}
	if hl := waitHealth(t, c, "db", "flood", 20*time.Second, passing); len(hl.Output) > registry.MaxCheckOutput || !strings.Contains(hl.Output, "flood flood") {
		t.Errorf("flooding target: %d bytes of output, want at most %d", len(hl.Output), registry.MaxCheckOutput)
	}
	// Heartbeats are still accepted.
	if code, _, body := regdtest.Do(t, http.MethodPut, instanceURL(c.Members[1], "db", "web")+"/heartbeat", nil); code != http.StatusOK {
		t.Errorf("heartbeat of a checked instance: %d %s", code, body)
	}

	// Failing, then passing again before the third failure: the
	// instance stays, and every member shows each state.
	web.Set("web", checktest.Failing)
	hl := waitHealth(t, c, "db", "web", 20*time.Second, func(h registry.Health) bool { return h.Status == registry.HealthFailing })
	if hl.ConsecutiveFailures < 1 || !strings.Contains(hl.Output, "503 Service Unavailable\ninstance web is down") {
		t.Errorf("failing health %+v", hl)
	}
	web.Set("web", checktest.Healthy)
	hl = waitHealth(t, c, "db", "web", 20*time.Second, passing)
	if hl.ConsecutiveFailures != 0 {
		t.Errorf("health after recovery %+v", hl)
	}

	// Now for good: each removed after its failures, reported once.
	web.Set("web", checktest.Failing)
	tcp.Down()
	rpc.Set("", false)
	waitCheckExpiries(t, c, []registry.Instance{h, tc, g, short}, nil, []string{"db/flood"}, map[string]string{
		"db/web":   "HTTP GET " + web.URL("web") + ": 503 Service Unavailable\ninstance web is down",
		"db/tcp":   "connection refused",
		"db/grpc":  "NOT_SERVING",
		"db/short": "connection refused",
	})
	for _, i := range c.Running() {
		if _, found := getInstance(t, c.Members[i], "db", "web"); found {
			t.Errorf("db/web still registered on %s after its report", c.Members[i].Name)
		}
	}
	// The web instance was removed after exactly its 3 failures in a
	// row: the probes since the last healthy answer.
	ps := web.Probes("web")
	failing := 0
	for i := len(ps) - 1; i >= 0 && ps[i].Mode == checktest.Failing; i-- {
		failing++
	}
	if failing != 3 {
		t.Errorf("db/web was probed %d times while failing before its removal, want its 3 failures", failing)
	}
}

// TestChecksFailover: the check owner (the leader) is killed, stopped
// gracefully, or loses leadership (etcd's move-leader) while some checked
// instances are healthy and others are failing. No healthy one expires;
// each failing one is reported exactly once on every member, with cause
// check_failed and its output; after the new owner's first probe of an
// instance, only it probes.
func TestChecksFailover(t *testing.T) {
	needsCluster(t)
	for _, how := range []string{"kill", "stop", "move"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			testChecksFailover(t, how)
		})
	}
}

func testChecksFailover(t *testing.T, how string) {
	began := time.Now()
	c := startCluster(t, 3)
	web := checktest.NewHTTP(t)
	owner := c.WaitLeader(t)
	t.Logf("cluster started in %s", time.Since(began))
	other := (owner + 1) % 3
	m := c.Members[other]
	var healthy, doomed []registry.Instance
	var healthyIDs []string
	for i := range 4 {
		id := fmt.Sprintf("ok%d", i)
		healthy = append(healthy, registerChecked(t, m, "svc", id, "127.0.0.1:1", map[string]any{"http": web.URL(id)}, 3, nil))
		healthyIDs = append(healthyIDs, "svc/"+id)
	}
	for i := range 3 {
		id := fmt.Sprintf("bad%d", i)
		doomed = append(doomed, registerChecked(t, m, "svc", id, "127.0.0.1:1", map[string]any{"http": web.URL(id)}, 5, nil))
	}
	for _, in := range append(slices.Clone(healthy), doomed...) {
		waitHealth(t, c, "svc", in.ID, 20*time.Second, passing)
	}
	// The doomed ones (5 failures allowed) fail once or more under the
	// first owner...
	for _, in := range doomed {
		web.Set(in.ID, checktest.Failing)
	}
	regdtest.Eventually(t, 20*time.Second, func() error {
		for _, in := range doomed {
			if got, _ := getInstance(t, m, "svc", in.ID); got.Health == nil || got.Health.Status != registry.HealthFailing {
				return fmt.Errorf("%s: health %+v", in.ID, got.Health)
			}
		}
		return nil
	})
	// ...and the owner goes away.
	failedAt := time.Now()
	t.Logf("instances failing %s after the start", failedAt.Sub(began))
	switch how {
	case "kill":
		c.Kill(owner)
	case "stop":
		c.Stop(owner)
	case "move":
		c.MoveLeader(t, other)
	}
	newOwner := c.WaitLeader(t)
	if newOwner == owner {
		t.Fatalf("member %d still leads after %s", owner, how)
	}
	leading := time.Now() // the new leader leads at the latest now
	// A positive marker: an instance without a check and without
	// heartbeats, registered now, whose TTL (9 s) outlasts what any
	// checked lease left unrenewed would have had after the failover
	// (election timeout + its full 7 s TTL from the new leader's
	// promotion). Its report comes after any false expiry would have.
	marker := register(t, c.Members[newOwner], "svc", "marker", "127.0.0.1:2", 9)
	waitCheckExpiries(t, c, doomed, []registry.Instance{marker}, healthyIDs, map[string]string{
		"svc/bad0": "503 Service Unavailable", "svc/bad1": "503 Service Unavailable", "svc/bad2": "503 Service Unavailable",
	})
	t.Logf("expiries reported %s after the failover", time.Since(failedAt))
	for _, in := range healthy {
		got, ok := getInstance(t, c.Members[newOwner], "svc", in.ID)
		if !ok || got.LeaseID != in.LeaseID {
			t.Errorf("healthy %s: found %v, lease %s (registered with %s)", in.ID, ok, got.LeaseID, in.LeaseID)
		}
	}

	// One prober at a time: after the new owner's first probe of an
	// instance, no other member probes it; and the new owner probes each
	// at its interval, so at most one probe per interval (and one more
	// for the first).
	oldName, newName := c.Members[owner].Name, c.Members[newOwner].Name
	for _, in := range healthy {
		ps := web.Probes(in.ID)
		first := slices.IndexFunc(ps, func(p checktest.Probe) bool { return p.Member == newName })
		if first < 0 {
			t.Fatalf("%s: no probe by the new owner %s: %+v", in.ID, newName, ps)
		}
		// Checks resume within one interval of the new leader's start
		// (plus its claim, a write; a second of slack for a loaded
		// machine).
		if resumed := ps[first].At.Sub(leading); resumed > checkInterval+time.Second {
			t.Errorf("%s: the new owner's first probe came %s after it was seen leading; want within one interval", in.ID, resumed)
		}
		after := ps[first:]
		overlap := 0
		for _, p := range after {
			if p.Member == newName {
				continue
			}
			// A deposed owner that still runs stops its probes within
			// cluster.Backstop of learning it lost leadership: at most
			// one of its probes may come after the new owner's first
			// (a second of slack for a loaded machine). A killed or
			// stopped one ended its checks before the new one began.
			if how == "move" && p.At.Sub(ps[first].At) < cluster.Backstop+time.Second {
				overlap++
				t.Logf("%s: the old owner %s probed %s after the new owner's first probe", in.ID, p.Member, p.At.Sub(ps[first].At))
				continue
			}
			t.Errorf("%s: probe by %s at %s after the new owner %s took over at %s", in.ID, p.Member, p.At.Format(time.StampMilli), newName, ps[first].At.Format(time.StampMilli))
		}
		if overlap > 1 {
			t.Errorf("%s: %d probes by the deposed owner after the new owner's first; want at most one", in.ID, overlap)
		}
		span := after[len(after)-1].At.Sub(after[0].At)
		if limit := int(span/checkInterval) + 2 + overlap; len(after) > limit || len(after) < 3 {
			t.Errorf("%s: %d probes in %s by the new owner; want one per interval", in.ID, len(after), span)
		}
		for _, p := range ps[:first] {
			if p.At.After(failedAt) && p.Member == oldName {
				t.Logf("%s: the old owner probed %s after the %s began, before the new owner's first probe", in.ID, p.At.Sub(failedAt), how)
			}
		}
	}
}

// TestChecksHangingTarget: a target that never answers holds one probe
// slot for its timeout, no more: with two slots, every other check is
// probed while its probe hangs, and the API answers; it is removed after
// its failures with a timeout as its output.
func TestChecksHangingTarget(t *testing.T) {
	needsCluster(t)
	t.Parallel()
	c := startCluster(t, 1, regdtest.Options{Checks: server.ChecksConfig{MaxConcurrent: 2}})
	web := checktest.NewHTTP(t)
	m := c.Members[0]
	web.Set("hang", checktest.Hanging)
	// Its probe hangs 2.9 s of every 3 s: every 1 s check has probes
	// due while it does.
	hang := registerChecked(t, m, "svc", "hang", "127.0.0.1:1", map[string]any{"http": web.URL("hang")}, 3, map[string]any{"interval": "3s", "timeout": "2900ms"})
	var ids, healthy []string
	for i := range 4 {
		id := fmt.Sprintf("ok%d", i)
		registerChecked(t, m, "svc", id, "127.0.0.1:1", map[string]any{"http": web.URL(id)}, 3, nil)
		ids, healthy = append(ids, id), append(healthy, "svc/"+id)
	}
	regdtest.Eventually(t, 20*time.Second, func() error {
		for _, id := range ids {
			if !slices.ContainsFunc(web.Probes(id), func(p checktest.Probe) bool { return p.Hanging > 0 }) {
				return fmt.Errorf("no probe of %s arrived while the hanging target's probe was open", id)
			}
		}
		if web.Hung("hang") == 0 {
			return fmt.Errorf("no probe of the hanging target is open")
		}
		// The API answers while it is.
		if code, _, body := regdtest.Do(t, http.MethodGet, m.URL("/v1/services/svc/instances"), nil); code != http.StatusOK {
			t.Fatalf("list while a probe hangs: %d %s", code, body)
		}
		return nil
	})
	waitCheckExpiries(t, c, []registry.Instance{hang}, nil, healthy, map[string]string{"svc/hang": "timed out"})
}
