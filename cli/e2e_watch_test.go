//go:build e2e

package cli_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regd/regd/internal/e2e"
)

// execScript is the --exec command of TestE2EWatchExec: it numbers its
// runs, logs when each starts and ends (nanoseconds), keeps the list it got
// on stdin, and while the file "block" exists, waits for "release" before
// it ends.
const execScript = `n=$(( $(cat count 2>/dev/null || echo 0) + 1 )); echo $n > count
echo "start $n $(date +%s%N)" >> runs.log
cat > run-$n.json
if [ -e block ]; then while [ ! -e release ]; do sleep 0.02; done; fi
echo "end $n $(date +%s%N)" >> runs.log`

// execRun is one run of execScript.
type execRun struct {
	n          int
	start, end int64 // Unix nanoseconds; end 0 while it runs
	ids        []string
	leases     map[string]string // id → lease_id
	weights    map[string]int
	revision   int64
}

// execRuns reads the runs so far. A run that starts before the previous
// one ended (two at a time) fails the test at once.
func execRuns(t *testing.T, dir string) []execRun {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(dir, "runs.log"))
	var runs []execRun
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue // empty log, or a line being written
		}
		n, _ := strconv.Atoi(f[1])
		at, _ := strconv.ParseInt(f[2], 10, 64)
		switch {
		case f[0] == "start" && n == len(runs)+1 && (n == 1 || runs[n-2].end != 0):
			runs = append(runs, execRun{n: n, start: at})
		case f[0] == "end" && n == len(runs) && runs[n-1].end == 0:
			runs[n-1].end = at
		default:
			t.Fatalf("runs.log: %q out of order: the command ran twice at a time, or a run was lost:\n%s", line, b)
		}
	}
	for i := range runs {
		if runs[i].end == 0 {
			continue
		}
		var l struct {
			Instances []struct {
				ID      string `json:"id"`
				LeaseID string `json:"lease_id"`
				Weight  int    `json:"weight"`
			} `json:"instances"`
			Revision int64 `json:"revision"`
		}
		raw, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("run-%d.json", runs[i].n)))
		if err != nil || json.Unmarshal(raw, &l) != nil {
			t.Fatalf("run %d's stdin: %v %q", runs[i].n, err, raw)
		}
		runs[i].leases, runs[i].weights, runs[i].revision = map[string]string{}, map[string]int{}, l.Revision
		for _, in := range l.Instances {
			runs[i].ids = append(runs[i].ids, in.ID)
			runs[i].leases[in.ID] = in.LeaseID
			runs[i].weights[in.ID] = in.Weight
		}
	}
	return runs
}

// waitRun waits until run n has ended and returns it.
func waitRun(t *testing.T, dir string, n int) execRun {
	t.Helper()
	var runs []execRun
	e2e.Eventually(t, 40*time.Second, fmt.Sprintf("run %d of the --exec command", n), func() error {
		runs = execRuns(t, dir)
		if len(runs) < n || runs[n-1].end == 0 {
			return fmt.Errorf("%d runs", len(runs))
		}
		return nil
	})
	return runs[n-1]
}

// TestE2EWatchExec: `regd watch SERVICE --exec CMD` on a 3-member cluster.
// CMD runs once at the start and once per change, never two at a time
// (runs.log alternates start and end), with the list as JSON on stdin; a
// burst of changes while CMD runs (the handshake of the burst's last
// change is the marker that the watch's stream was sent them all) is one
// more run with the latest list. The leader the watch streams from is
// killed: the watch resumes on a follower by event id (no reset, no run
// without a change). That member comes back; the follower the watch
// moved to is killed, and the watch moves to the restarted member, whose
// history starts after the watch's last event: a reset, one run with the
// full list. Each step's next change is the marker that no run came in
// between. Meanwhile `regd run` keeps an instance alive through both
// kills (the same lease in every list) and deregisters it at the end.
func TestE2EWatchExec(t *testing.T) {
	bin := e2e.Build(t)
	c := e2e.StartCluster(t, bin, e2e.ClusterOptions{})
	lead := c.Leader(30 * time.Second)
	f1, f2 := (lead+1)%3, (lead+2)%3
	dir := t.TempDir()
	// The watch streams from the leader first, then the follower f1, then
	// the leader's URL again: after f1 dies it can only go back there.
	watch := e2e.StartEnv(t, bin, dir, e2e.CleanEnv(), "watch", "svc", "--exec", execScript,
		"--endpoints", c.URL(lead)+","+c.URL(f1)+","+c.URL(lead))
	if r := waitRun(t, dir, 1); len(r.ids) != 0 {
		t.Fatalf("first run got %v, want the empty list", r.ids)
	}
	keeper := e2e.StartEnv(t, bin, t.TempDir(), e2e.CleanEnv(), "run", "--service", "svc", "--id", "keeper", "--address", "10.0.0.1:80",
		"--ttl", "3", "--endpoints", c.URL(0)+","+c.URL(1)+","+c.URL(2), "--", "sleep", "600")
	r := waitRun(t, dir, 2)
	if !slices.Equal(r.ids, []string{"keeper"}) {
		t.Fatalf("run 2 got %v, want [keeper]", r.ids)
	}
	keeperLease := r.leases["keeper"]

	want := []string{"keeper"}
	next := 3
	// change registers id through endpoints and checks that the next run
	// has exactly the list it makes.
	change := func(id string, endpoints ...int) {
		t.Helper()
		var eps []string
		for _, i := range endpoints {
			eps = append(eps, c.URL(i))
		}
		code, _, errOut := regd(t, bin, "", "register", "svc", id, "10.0.0.2:80", "--ttl", "60",
			"--endpoints", strings.Join(eps, ","), "--command-timeout", "30s")
		if code != 0 {
			t.Fatalf("register %s: %s", id, errOut)
		}
		want = append(want, id)
		slices.Sort(want)
		if r := waitRun(t, dir, next); !slices.Equal(r.ids, want) {
			t.Fatalf("run %d got %v, want %v", next, r.ids, want)
		}
		next++
	}
	// Once per change: each change's run has exactly it added, so no run
	// came in between.
	change("a1", f2)
	change("a2", f2)

	// Coalescing: b0's run blocks; b1..b5 and a patch of b5 arrive
	// meanwhile; the patch's handshake says the watch's stream was sent
	// them all. One more run follows, with all of them.
	if err := os.WriteFile(filepath.Join(dir, "block"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := regd(t, bin, "", "register", "svc", "b0", "10.0.0.3:80", "--ttl", "60", "--endpoints", c.URL(f2))
	if code != 0 {
		t.Fatalf("register b0: %s", errOut)
	}
	e2e.Eventually(t, 20*time.Second, "b0's run starts", func() error {
		if runs := execRuns(t, dir); len(runs) < next {
			return fmt.Errorf("%d runs", len(runs))
		}
		return nil
	})
	for i := 1; i <= 5; i++ {
		if r := e2e.Do(t, http.MethodPut, fmt.Sprintf("%s/v1/services/svc/instances/b%d", c.URL(f2), i), `{"address":"10.0.0.3:80","ttl":60}`); r.Status != http.StatusCreated {
			t.Fatalf("register b%d: %d %s", i, r.Status, r.Body)
		}
	}
	p := e2e.Do(t, http.MethodPatch, c.URL(f2)+"/v1/services/svc/instances/b5?wait_observed=10s", `{"weight":7}`)
	if obs := p.Header.Get("X-Regd-Observed"); p.Status != http.StatusOK || obs != "1/1" {
		t.Fatalf("patch b5: %d, observed %q %s; want 200 and the watch's stream as the one subscriber, sent it", p.Status, obs, p.Body)
	}
	os.Remove(filepath.Join(dir, "block"))
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := waitRun(t, dir, next); !slices.Equal(r.ids, []string{"a1", "a2", "b0", "keeper"}) {
		t.Fatalf("b0's run got %v", r.ids)
	}
	next++
	want = []string{"a1", "a2", "b0", "b1", "b2", "b3", "b4", "b5", "keeper"}
	if r := waitRun(t, dir, next); !slices.Equal(r.ids, want) || r.weights["b5"] != 7 {
		t.Fatalf("the run after the burst got %v (b5's weight %d), want %v with weight 7", r.ids, r.weights["b5"], want)
	}
	next++
	change("c1", f2) // the marker: the burst was one run

	// The leader dies; the watch resumes on f1 where it left off.
	c.Kill(lead)
	change("d1", f1, f2)
	if strings.Contains(watch.Stderr(), "reset") {
		t.Fatalf("the watch had a reset after moving to a follower with the history:\n%s", watch.Stderr())
	}

	// History f1's successor cannot replay: a write elsewhere moves the
	// revision past the watch's last event, then the old leader restarts
	// (its history starts there) and f1 dies.
	code, _, errOut = regd(t, bin, "", "register", "other", "o1", "10.0.0.4:80", "--ttl", "60",
		"--endpoints", c.URL(f1)+","+c.URL(f2), "--command-timeout", "30s")
	if code != 0 {
		t.Fatalf("register other/o1: %s", errOut)
	}
	c.Restart(lead, 30*time.Second)
	c.Kill(f1)
	e2e.Eventually(t, 40*time.Second, "the watch's reset on the restarted member", func() error {
		if !strings.Contains(watch.Stderr(), "reset to the full list") {
			return fmt.Errorf("stderr:\n%s", watch.Stderr())
		}
		return nil
	})
	if r := waitRun(t, dir, next); !slices.Equal(r.ids, want) {
		t.Fatalf("the reset's run got %v, want the full list %v", r.ids, want)
	}
	next++
	change("e1", lead, f2) // the marker: the reset was one run

	// regd run kept its instance through both kills: the same lease in
	// every list since it registered.
	for _, r := range execRuns(t, dir)[1:] {
		if r.leases["keeper"] != keeperLease {
			t.Fatalf("run %d: keeper's lease %q, registered with %q: it expired or was registered again", r.n, r.leases["keeper"], keeperLease)
		}
	}
	keeper.Signal(syscall.SIGTERM)
	if code := keeper.Wait(30 * time.Second); code != 128+int(syscall.SIGTERM) {
		t.Errorf("regd run after SIGTERM: exit %d, want 143; stderr:\n%s", code, keeper.Stderr())
	}
	want = slices.DeleteFunc(want, func(id string) bool { return id == "keeper" })
	if r := waitRun(t, dir, next); !slices.Equal(r.ids, want) {
		t.Fatalf("run %d after regd run ended got %v, want %v", next, r.ids, want)
	}
	watch.Signal(syscall.SIGINT)
	if code := watch.Wait(20 * time.Second); code != 0 {
		t.Errorf("watch after SIGINT: exit %d", code)
	}
	runs := execRuns(t, dir)
	var longest time.Duration
	for _, r := range runs {
		longest = max(longest, time.Duration(r.end-r.start))
	}
	t.Logf("%d runs, one at a time (the longest %v, the blocked one)", len(runs), longest.Round(time.Millisecond))
	if len(runs) != next {
		t.Errorf("%d runs, want %d", len(runs), next)
	}
	for _, x := range expirations(t, c.URL(f2)) {
		if x.Service == "svc" {
			t.Errorf("expiry reported for svc/%s", x.ID)
		}
	}
}
