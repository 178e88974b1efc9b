//go:build e2e

// Package scripts_test runs scripts/cluster3.sh end to end: real regd
// processes, real signals. The script builds regd itself.
package scripts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regd/regd/internal/freeport"
	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
)

// cluster is a cluster3.sh cluster in a temporary directory on free ports.
type cluster struct {
	t      *testing.T
	script string
	dir    string
	env    []string
	rest   map[string]string // member name -> REST base URL
	names  []string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	script, err := filepath.Abs("cluster3.sh")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, script: script, dir: t.TempDir(), rest: map[string]string{}}
	ports := freePorts(t, 9)
	spec := fmt.Sprintf("%d,%d,%d %d,%d,%d %d,%d,%d", ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6], ports[7], ports[8])
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGD_") {
			c.env = append(c.env, kv)
		}
	}
	c.env = append(c.env, "REGD_CLUSTER_PORTS="+spec)
	// Registered after TempDir, so it runs before the directory goes.
	t.Cleanup(c.cleanup)
	return c
}

// run runs the script with args and --dir, and returns its output and
// exit code.
func (c *cluster) run(timeout time.Duration, args ...string) (string, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.script, append(args, "--dir", c.dir)...)
	cmd.Env = c.env
	cmd.WaitDelay = 5 * time.Second // members must not hold the output pipe
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok || ctx.Err() != nil {
			c.t.Fatalf("cluster3.sh %s: %v (output %q)", strings.Join(args, " "), err, out)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

// cleanup stops the cluster, and kills what the script left running.
func (c *cluster) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.script, "stop", "--dir", c.dir)
	cmd.Env = c.env
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Logf("cleanup: cluster3.sh stop: %v\n%s", err, out)
	}
	for _, name := range []string{"m1", "m2", "m3", "m4"} {
		if pid := c.pid(name); pid > 0 && alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if c.t.Failed() {
		for _, name := range []string{"m1", "m2", "m3", "m4"} {
			b, _ := os.ReadFile(filepath.Join(c.dir, name+".log"))
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			c.t.Logf("%s.log (tail):\n%s", name, b)
		}
	}
}

func (c *cluster) pid(name string) int {
	b, err := os.ReadFile(filepath.Join(c.dir, name+".pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

var (
	memberLine = regexp.MustCompile(`(?m)^cluster3: (m[123]) pid (\d+) rest (http://127\.0\.0\.1:\d+) client (http://127\.0\.0\.1:\d+)$`)
	leaderLine = regexp.MustCompile(`(?m)^cluster3: leader (m[123])$`)
	dataLine   = regexp.MustCompile(`(?m)^cluster3: (m[123]) data (\S+) log (\S+)$`)
)

// checkWhere checks start's lines that say where each member's data and
// log are: one per member, and each names the member's etcd data dir and
// the file its output went to.
func (c *cluster) checkWhere(out string) {
	c.t.Helper()
	ms := dataLine.FindAllStringSubmatch(out, -1)
	if len(ms) != 3 {
		c.t.Fatalf("cluster3.sh start printed %d data lines, want 3:\n%s", len(ms), out)
	}
	for _, m := range ms {
		name, data, log := m[1], m[2], m[3]
		if data != filepath.Join(c.dir, name+".regd") || log != filepath.Join(c.dir, name+".log") {
			c.t.Errorf("%s: data %s log %s, want them in %s", name, data, log, c.dir)
		}
		if fi, err := os.Stat(filepath.Join(data, "member")); err != nil || !fi.IsDir() {
			c.t.Errorf("%s: the printed data dir %s holds no etcd member: %v", name, data, err)
		}
		if b, err := os.ReadFile(log); err != nil || !strings.Contains(string(b), `"regd node started"`) {
			c.t.Errorf("%s: the printed log %s does not hold the member's start line: %v", name, log, err)
		}
	}
}

// checkNotRunning asserts that status reports no member running, with
// systemctl's exit code for an inactive unit.
func (c *cluster) checkNotRunning(when string) {
	c.t.Helper()
	out, code := c.run(30*time.Second, "status")
	if code != 3 || !strings.Contains(out, "cluster3: not running") || strings.Contains(out, " running pid ") {
		c.t.Fatalf("status %s: exit %d, want 3 and \"not running\":\n%s", when, code, out)
	}
}

// start runs `start` and checks what it printed; it returns the leader.
func (c *cluster) start() string {
	c.t.Helper()
	out, code := c.run(75*time.Second, "start")
	if code != 0 {
		c.t.Fatalf("cluster3.sh start: exit %d\n%s", code, out)
	}
	ms := memberLine.FindAllStringSubmatch(out, -1)
	if len(ms) != 3 {
		c.t.Fatalf("cluster3.sh start printed %d member lines, want 3:\n%s", len(ms), out)
	}
	c.names = nil
	for _, m := range ms {
		c.rest[m[1]] = m[3]
		c.names = append(c.names, m[1])
		if pid, _ := strconv.Atoi(m[2]); pid != c.pid(m[1]) || !alive(pid) {
			c.t.Fatalf("%s: printed pid %s, pid file %d", m[1], m[2], c.pid(m[1]))
		}
	}
	l := leaderLine.FindStringSubmatch(out)
	if l == nil {
		c.t.Fatalf("cluster3.sh start printed no leader:\n%s", out)
	}
	c.checkWhere(out)
	return l[1]
}

func do(method, url, body string) (int, []byte, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

type instance struct {
	Service, ID, Address string
	LeaseID              string `json:"lease_id"`
}

func register(base, service, id string, ttl int) (instance, int, error) {
	code, body, err := do(http.MethodPut, base+"/v1/services/"+service+"/instances/"+id, fmt.Sprintf(`{"address":"10.9.0.1:80","ttl":%d}`, ttl))
	var in instance
	if err == nil && (code == 200 || code == 201) {
		err = json.Unmarshal(body, &in)
	}
	return in, code, err
}

func leaderOf(base string) (string, error) {
	code, body, err := do(http.MethodGet, base+"/v1/cluster", "")
	if err != nil {
		return "", err
	}
	var st struct{ Leader string }
	if code != 200 || json.Unmarshal(body, &st) != nil {
		return "", fmt.Errorf("/v1/cluster: %d %s", code, body)
	}
	return st.Leader, nil
}

// ledgerMembers names the members to read the expiry ledger on.
func (c *cluster) ledgerMembers(names ...string) []ledgertest.Member {
	var out []ledgertest.Member
	for _, n := range names {
		out = append(out, ledgertest.Member{Name: n, URL: c.rest[n]})
	}
	return out
}

func (c *cluster) memberNames() map[string]bool {
	out := map[string]bool{}
	for _, n := range c.names {
		out[n] = true
	}
	return out
}

func TestE2ECluster3(t *testing.T) {
	began := time.Now()
	c := newCluster(t)
	c.checkNotRunning("before the first start")
	c.start()
	m1, m2, m3 := c.rest["m1"], c.rest["m2"], c.rest["m3"]

	// Register through node 1, see it on nodes 2 and 3.
	a, code, err := register(m1, "e2e", "a", 3)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("register through m1: %d %v", code, err)
	}
	for _, base := range []string{m2, m3} {
		poll.Until(t, 5*time.Second, "instance listed on "+base, func() error {
			code, body, err := do(http.MethodGet, base+"/v1/services/e2e/instances", "")
			if err != nil || code != 200 || !strings.Contains(string(body), `"id":"a"`) {
				return fmt.Errorf("%d %s %v", code, body, err)
			}
			return nil
		})
	}

	// Kill the leader's process.
	leader, err := leaderOf(m1)
	if err != nil || c.rest[leader] == "" {
		t.Fatalf("leader from /v1/cluster: %q %v", leader, err)
	}
	pid := c.pid(leader)
	if pid <= 0 || !alive(pid) {
		t.Fatalf("no live pid for the leader %s: %d", leader, pid)
	}
	killedAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var survivors []string
	for _, n := range c.names {
		if n != leader {
			survivors = append(survivors, n)
		}
	}
	var newLeader string
	poll.Until(t, 15*time.Second, "survivors agree on a new leader", func() error {
		l0, err0 := leaderOf(c.rest[survivors[0]])
		l1, err1 := leaderOf(c.rest[survivors[1]])
		if err0 != nil || err1 != nil || l0 == "" || l0 != l1 || l0 == leader {
			return fmt.Errorf("%s sees %q (%v), %s sees %q (%v)", survivors[0], l0, err0, survivors[1], l1, err1)
		}
		newLeader = l0
		return nil
	})
	elected := time.Since(killedAt)
	var b instance
	poll.Until(t, 15*time.Second, "a write accepted after the kill", func() error {
		var code int
		var err error
		b, code, err = register(c.rest[survivors[0]], "e2e", "b", 2)
		if err != nil || code != http.StatusCreated {
			return fmt.Errorf("%d %v", code, err)
		}
		return nil
	})
	writable := time.Since(killedAt)
	if alive(pid) {
		t.Fatalf("killed leader %d still alive", pid)
	}

	// Both instances expire (no heartbeats) and are reported exactly once,
	// as every survivor sees it.
	es := ledgertest.Wait(t, 20*time.Second, c.ledgerMembers(survivors...), ledgertest.Expected{
		Service:   "e2e",
		Want:      map[ledgertest.Expiry]string{{Service: "e2e", ID: "a", Lease: a.LeaseID}: a.Address, {Service: "e2e", ID: "b", Lease: b.LeaseID}: b.Address},
		Reporters: c.memberNames(),
	})
	var worst time.Duration
	for _, e := range es {
		worst = max(worst, e.ExpiredAt.Sub(killedAt))
	}
	t.Logf("SIGKILL of leader %s: survivors agreed on %s after %s; first write accepted after %s; both expiries reported by %s after the kill",
		leader, newLeader, elected.Round(time.Millisecond), writable.Round(time.Millisecond), worst.Round(time.Millisecond))

	// status: exit 0, the killed member shows as stopped, the leader is known.
	out, code := c.run(30*time.Second, "status")
	if code != 0 || !regexp.MustCompile(`(?m)^`+leader+` stopped `).MatchString(out) || !strings.Contains(out, "leader "+newLeader) {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	for _, n := range survivors {
		if !regexp.MustCompile(`(?m)^` + n + ` running pid \d+ `).MatchString(out) {
			t.Fatalf("status does not show %s running:\n%s", n, out)
		}
	}
	pids := []int{pid, c.pid(survivors[0]), c.pid(survivors[1])}

	out, code = c.run(40*time.Second, "stop")
	if code != 0 {
		t.Fatalf("stop: exit %d\n%s", code, out)
	}
	for _, p := range pids {
		if alive(p) {
			t.Fatalf("pid %d still running after stop:\n%s", p, out)
		}
	}
	for _, n := range c.names {
		if _, err := os.Stat(filepath.Join(c.dir, n+".pid")); err == nil {
			t.Fatalf("%s.pid left behind", n)
		}
	}
	c.checkNotRunning("after stop")
	out, code = c.run(10*time.Second, "stop")
	if code != 0 || !strings.Contains(out, "cluster3: not running") {
		t.Fatalf("stop again: exit %d\n%s", code, out)
	}
	if took := time.Since(began); took > 90*time.Second {
		t.Errorf("the test took %s, over its 90 s budget", took)
	}
}

// TestE2EFailoverTimings measures, with the real binary and etcd's default
// raft timers, how long writes are refused around a graceful stop and a
// SIGKILL of the leader, and how late expiries are reported. It takes about
// a minute and runs only with REGD_MEASURE=1:
//
//	REGD_MEASURE=1 go test -tags e2e -run TestE2EFailoverTimings -v ./scripts/
func TestE2EFailoverTimings(t *testing.T) {
	if os.Getenv("REGD_MEASURE") != "1" {
		t.Skip("set REGD_MEASURE=1 to measure failover timings")
	}
	c := newCluster(t)
	c.start()
	const rounds = 3
	for _, kill := range []bool{false, true} {
		how := map[bool]string{false: "SIGTERM", true: "SIGKILL"}[kill]
		var gaps []time.Duration
		for round := range rounds {
			leader, err := leaderOf(c.rest[c.names[0]])
			if err != nil || leader == "" {
				t.Fatalf("leader: %q %v", leader, err)
			}
			var survivor string
			for _, n := range c.names {
				if n != leader {
					survivor = n
					break
				}
			}
			mon := regdtest.StartWriteMonitor(c.rest[survivor], fmt.Sprintf("%s-%d", how, round))
			poll.Until(t, 10*time.Second, "probe writes accepted", func() error {
				if mon.Accepted() == 0 {
					return fmt.Errorf("none yet")
				}
				return nil
			})
			sig := syscall.SIGTERM
			if kill {
				sig = syscall.SIGKILL
			}
			pid := c.pid(leader)
			if err := syscall.Kill(pid, sig); err != nil {
				t.Fatal(err)
			}
			poll.Until(t, 20*time.Second, "leader process gone", func() error {
				if alive(pid) {
					return fmt.Errorf("pid %d alive", pid)
				}
				return nil
			})
			poll.Until(t, 20*time.Second, "a new leader", func() error {
				l, err := leaderOf(c.rest[survivor])
				if err != nil || l == "" || l == leader {
					return fmt.Errorf("%q %v", l, err)
				}
				return nil
			})
			gaps = append(gaps, mon.Finish(t, 20*time.Second))
			c.start() // restarts the stopped member only
		}
		t.Logf("%s of the leader: longest gap between accepted writes per round: %v", how, gaps)
	}
	// Steady-state expiry report delay: TTL 2 s, no heartbeats.
	var ins []instance
	regAt := map[string]time.Time{}
	for i := range 10 {
		id := fmt.Sprintf("x%d", i)
		in, code, err := register(c.rest[c.names[i%3]], "delay", id, 2)
		if err != nil || code != 201 {
			t.Fatalf("register: %d %v", code, err)
		}
		regAt[id] = time.Now()
		ins = append(ins, in)
	}
	want := map[ledgertest.Expiry]string{}
	for _, in := range ins {
		want[ledgertest.Expiry{Service: in.Service, ID: in.ID, Lease: in.LeaseID}] = in.Address
	}
	es := ledgertest.Wait(t, 20*time.Second, c.ledgerMembers(c.names...), ledgertest.Expected{Service: "delay", Want: want, Reporters: c.memberNames()})
	var worst time.Duration
	for _, e := range es {
		worst = max(worst, e.ExpiredAt.Sub(regAt[e.ID].Add(2*time.Second)))
	}
	t.Logf("steady state: worst expiry report %s after the TTL ended (TTL 2 s, from the client's registration time)", worst.Round(time.Millisecond))
}

// alive reports whether pid is a running process (a zombie is not).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc: trust the signal
	}
	s := string(b)
	if i := strings.LastIndex(s, ") "); i >= 0 && len(s) > i+2 {
		return s[i+2] != 'Z'
	}
	return true
}

// freePorts picks n distinct free loopback ports (see internal/freeport).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	out := make([]int, n)
	for i := range out {
		out[i] = freeport.Port(t)
	}
	return out
}

// TestE2ECluster3ReplaceDeadMember is docs/operations.md's procedure for a
// dead member, with the script: m3 is killed, `remove m3` takes it out of
// the cluster, `add m4` joins a new member the safe way (learner, start,
// promote). The cluster then has m1, m2 and m4, serves writes through m4,
// and starts again with them after a stop.
func TestE2ECluster3ReplaceDeadMember(t *testing.T) {
	c := newCluster(t)
	c.start()
	if err := syscall.Kill(c.pid("m3"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "m3 gone", func() error {
		if alive(c.pid("m3")) {
			return fmt.Errorf("pid %d still runs", c.pid("m3"))
		}
		return nil
	})
	out, code := c.run(60*time.Second, "remove", "m3")
	if code != 0 || !strings.Contains(out, "removed m3") {
		t.Fatalf("cluster3.sh remove m3: exit %d\n%s", code, out)
	}
	ports := freePorts(t, 3)
	out, code = c.run(75*time.Second, "add", "m4", "--ports", fmt.Sprintf("%d,%d,%d", ports[0], ports[1], ports[2]))
	if code != 0 || !strings.Contains(out, "promoted to a voting member") {
		t.Fatalf("cluster3.sh add m4: exit %d\n%s", code, out)
	}
	m4 := fmt.Sprintf("http://127.0.0.1:%d", ports[2])
	if _, code, err := register(m4, "after", "a1", 60); err != nil || code != http.StatusCreated {
		t.Fatalf("register through m4: %d %v", code, err)
	}
	out, code = c.run(30*time.Second, "status")
	if code != 0 || !strings.Contains(out, "m4 running pid") || strings.Contains(out, "m3 ") {
		t.Fatalf("status after the replacement: exit %d\n%s", code, out)
	}
	// The new membership survives a stop and a start.
	if out, code := c.run(60*time.Second, "stop"); code != 0 {
		t.Fatalf("stop: exit %d\n%s", code, out)
	}
	out, code = c.run(75*time.Second, "start")
	if code != 0 || !strings.Contains(out, "cluster3: m4 pid") || strings.Contains(out, "cluster3: m3 pid") {
		t.Fatalf("start after the replacement: exit %d\n%s", code, out)
	}
}
