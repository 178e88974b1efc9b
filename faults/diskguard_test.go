//go:build e2e

package faults

import (
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regd/regd/internal/e2e"
	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/node"
)

// TestE2EFaultDiskShort runs a three-member in-process cluster whose m2
// reports its disk short of space (the free space is played; everything
// else is real). Every member refuses writes with 503 storage_full at once,
// because m2 raises etcd's NOSPACE alarm; reads, heartbeats and readiness
// keep working; an instance that runs out meanwhile is reported once space
// is back; and writes resume everywhere without a restart.
func TestE2EFaultDiskShort(t *testing.T) {
	const minFree = 4 << 20
	var (
		mu    sync.Mutex
		short = map[string]bool{}
	)
	stat := func(dir string) (node.DiskUsage, error) {
		mu.Lock()
		defer mu.Unlock()
		if short[dir] {
			return node.DiskUsage{Free: minFree / 2}, nil
		}
		return node.DiskUsage{Free: 100 * minFree}, nil
	}
	c := regdtest.StartCluster(t, 3, regdtest.Options{MinFreeBytes: minFree, DiskStat: stat})
	base := func(i int) string { return c.Members[i].URL("") }

	want := map[string]instance{}
	for i := range 10 {
		in, err := register(base(i%3), "kept", fmt.Sprintf("k%02d", i), 3600, nil)
		if err != nil {
			t.Fatal(err)
		}
		want[in.ID] = in
	}
	brief, err := register(base(0), "brief", "b0", 2, nil)
	if err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	short[c.Members[2].DataDir()] = true
	mu.Unlock()
	began := time.Now()
	var refused time.Duration
	attempt := 0
	poll.Until(t, 10*time.Second, "writes refused on every member", func() error {
		for i := range c.Members {
			// Until m2's alarm has gone through raft, the others still
			// take writes; those are acknowledged and must be kept.
			attempt++
			id := fmt.Sprintf("during%03d", attempt)
			code, body, err := call(t.Context(), client, http.MethodPut, base(i)+"/v1/services/kept/instances/"+id, registerBody("10.6.0.1:80", 3600, nil))
			if err != nil {
				return err
			}
			if code == http.StatusCreated {
				want[id] = instance{ID: id}
			}
			if code != http.StatusServiceUnavailable || errorCode(body) != "storage_full" {
				return fmt.Errorf("m%d: register answered %d %s", i, code, body)
			}
		}
		refused = time.Since(began)
		return nil
	})
	for i := range c.Members {
		code, body, err := call(t.Context(), client, http.MethodDelete, base(i)+"/v1/services/kept/instances/k00", "")
		if err != nil || code != http.StatusServiceUnavailable || errorCode(body) != "storage_full" {
			t.Errorf("m%d: deregister while short: %d %s %v, want 503 storage_full", i, code, body, err)
		}
		code, body, err = call(t.Context(), client, http.MethodPut, base(i)+"/v1/services/kept/instances/k01/heartbeat", "")
		if err != nil || code != http.StatusOK {
			t.Errorf("m%d: heartbeat while short: %d %s %v, want 200", i, code, body, err)
		}
		got, err := list(base(i), "kept")
		if err != nil || !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))) {
			t.Errorf("m%d: list while short: %v %v", i, slices.Sorted(maps.Keys(got)), err)
		}
		if ok, why := ready(base(i)); !ok {
			t.Errorf("m%d: not ready while short: %s", i, why)
		}
	}
	if lines := c.LogLines("data dir is short of space"); len(lines) != 1 {
		t.Errorf("%d log lines say the disk is short, want 1 (m2's): %q", len(lines), lines)
	}
	// brief's TTL runs out while writes are refused: etcd revokes an
	// expired lease even under the NOSPACE alarm, so brief goes from
	// every member's list while the disk is still short.
	poll.Until(t, 15*time.Second, "brief's lease runs out while writes are refused", func() error {
		for i := range c.Members {
			got, err := list(base(i), "brief")
			if err != nil {
				return err
			}
			if len(got) != 0 {
				return fmt.Errorf("m%d still lists brief", i)
			}
		}
		return nil
	})
	if code, body, err := call(t.Context(), client, http.MethodPut, base(0)+"/v1/services/kept/instances/late", registerBody("10.6.0.1:80", 3600, nil)); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("a write after brief ran out: %d %s %v, want still refused", code, body, err)
	}

	mu.Lock()
	short[c.Members[2].DataDir()] = false
	mu.Unlock()
	freed := time.Now()
	var resumed time.Duration
	poll.Until(t, 10*time.Second, "writes accepted on every member", func() error {
		for i := range c.Members {
			if _, err := register(base(i), "kept", fmt.Sprintf("after%d", i), 3600, nil); err != nil {
				return fmt.Errorf("m%d: %v", i, err)
			}
		}
		resumed = time.Since(freed)
		return nil
	})
	c.WaitExpiries(t, 20*time.Second, ledgertest.Expected{
		Want: map[ledgertest.Expiry]string{{Service: "brief", ID: "b0", Lease: brief.LeaseID}: brief.Address},
	})
	for i := range c.Members {
		got, err := list(base(i), "kept")
		if err != nil {
			t.Fatal(err)
		}
		for id, w := range want {
			if g, ok := got[id]; !ok || (w.LeaseID != "" && g.LeaseID != w.LeaseID) {
				t.Errorf("m%d: %s lost or changed: %+v", i, id, g)
			}
		}
	}
	figure(t, "one member's disk short of space (played): writes refused with 503 storage_full on all three members after %s; heartbeats, lists, readiness 200; writes accepted again %s after space came back, no restart; the expiry that fell in between reported once",
		ms(refused), ms(resumed))
}

// TestE2EFaultDiskUnwritable takes away a real regd's right to create files
// in its data dir, first while it runs and then across a restart. Running,
// it refuses writes (503 storage_unwritable) and keeps serving reads; on a
// restart it does not exit (a supervisor would loop) but waits, answering
// 503, and starts by itself once the data dir works again.
func TestE2EFaultDiskUnwritable(t *testing.T) {
	bin := e2e.Build(t)
	dir := t.TempDir()
	p, n := e2e.StartNode(t, bin, dir, e2e.CleanEnv(), "--min-free-bytes", "1048576")
	base := n.URL()
	kept, err := register(base, "disk", "kept", 3600, nil)
	if err != nil {
		t.Fatal(err)
	}

	undo := e2e.LockDir(t, n.DataDir)
	began := time.Now()
	var refused time.Duration
	poll.Until(t, 10*time.Second, "writes refused", func() error {
		code, body, err := call(t.Context(), client, http.MethodPut, base+"/v1/services/disk/instances/x", registerBody("10.7.0.1:80", 60, nil))
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || errorCode(body) != "storage_unwritable" {
			return fmt.Errorf("register answered %d %s", code, body)
		}
		refused = time.Since(began)
		return nil
	})
	if got, err := list(base, "disk"); err != nil || got["kept"].LeaseID != kept.LeaseID {
		t.Errorf("list on an unwritable data dir: %v %v", got, err)
	}
	if code, body, err := call(t.Context(), client, http.MethodPut, base+"/v1/services/disk/instances/kept/heartbeat", ""); err != nil || code != http.StatusOK {
		t.Errorf("heartbeat on an unwritable data dir: %d %s %v", code, body, err)
	}
	if !strings.Contains(p.Stderr(), "data dir is not writable") {
		t.Errorf("no log line says the data dir is not writable:\n%s", tail(p.Stderr(), 2000))
	}
	undo()
	poll.Until(t, 10*time.Second, "writes accepted again", func() error {
		_, err := register(base, "disk", "x", 60, nil)
		return err
	})

	// Across a restart.
	p.Signal(os.Interrupt)
	if code, ok := p.WaitExit(15 * time.Second); !ok || code != 0 {
		t.Fatalf("regd did not stop cleanly: %d %v", code, ok)
	}
	undo = e2e.LockDir(t, n.DataDir)
	p = e2e.StartEnv(t, bin, dir, e2e.CleanEnv(), append(n.Args(), "--min-free-bytes", "1048576")...)
	poll.Until(t, 15*time.Second, "the waiting node answers", func() error {
		code, _, err := get(base + "/healthz")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/healthz %d", code)
		}
		return err
	})
	// It keeps waiting: for 3 s (the span is the scenario: a node that
	// gave up would exit and leave a supervisor looping), it stays up,
	// unready, and refuses writes.
	poll.Throughout(t, 3*time.Second, "regd waits on an unwritable data dir", func() error {
		if p.Exited() {
			return fmt.Errorf("regd exited on an unwritable data dir:\n%s", tail(p.Stderr(), 2000))
		}
		if ok, why := ready(base); ok {
			return fmt.Errorf("/readyz 200 on an unwritable data dir: %s", why)
		}
		code, body, err := call(t.Context(), client, http.MethodPut, base+"/v1/services/disk/instances/y", registerBody("10.7.0.2:80", 60, nil))
		if err != nil || code != http.StatusServiceUnavailable || errorCode(body) != "storage_unwritable" {
			return fmt.Errorf("register while waiting: %d %s %v, want 503 storage_unwritable", code, body, err)
		}
		return nil
	})
	if !strings.Contains(p.Stderr(), "waiting for it before starting the member") {
		t.Errorf("no log line says regd waits for the data dir:\n%s", tail(p.Stderr(), 2000))
	}
	undo()
	repaired := time.Now()
	p.WaitReady(base, 30*time.Second)
	started := time.Since(repaired)
	if got, err := list(base, "disk"); err != nil || got["kept"].LeaseID != kept.LeaseID || got["x"].ID == "" {
		t.Errorf("after the wait: %v %v, want kept and x", got, err)
	}
	if _, err := register(base, "disk", "y", 60, nil); err != nil {
		t.Errorf("register after the wait: %v", err)
	}
	if _, err := os.Stat(filepath.Join(n.DataDir, node.ReserveFile)); err != nil {
		t.Errorf("no reserve file: %v", err)
	}
	figure(t, "data dir made unwritable under a running node: writes 503 storage_unwritable after %s, reads and heartbeats 200; restarted on it, regd waited answering 503 (healthz 200) and was ready %s after the repair",
		ms(refused), ms(started))
}
