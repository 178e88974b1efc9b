//go:build e2e

package faults

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/e2e"
	"github.com/regd/regd/internal/regdtest"
)

// TestE2EFaultStorageQuota fills etcd's backend quota (in-process members,
// a 16 MiB --quota-backend-bytes; the regd binary has no flag for it) with
// a plain etcd client, the way a runaway writer would. Writes then answer
// 503 storage_full with a log line saying why, reads and heartbeats keep
// working, nothing acknowledged is lost and no expiry is missed; after the
// operator's usual remedy (delete, compact, defragment, disarm the alarm)
// writes work again.
func TestE2EFaultStorageQuota(t *testing.T) {
	const quota = 16 << 20
	c := regdtest.StartCluster(t, 3, regdtest.Options{QuotaBackendBytes: quota})
	leader := c.WaitLeader(t)
	follower := c.Members[(leader+1)%3]
	base := "http://" + follower.HTTPAddr

	want := map[string]instance{}
	for i := range 20 {
		in, err := register(base, "kept", fmt.Sprintf("k%02d", i), 3600, map[string]string{"i": strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		want[in.ID] = in
	}
	shortLease := map[string]string{}
	for i := range 3 {
		in, err := register(base, "brief", fmt.Sprintf("b%d", i), 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		shortLease[in.ID] = in.LeaseID
	}

	// Fill the quota: 512 KiB values until etcd refuses.
	cli := c.EtcdClient(t, leader)
	value := strings.Repeat("x", 512<<10)
	filled := 0
	for ; ; filled++ {
		_, err := cli.Put(t.Context(), fmt.Sprintf("/filler/%04d", filled), value)
		if err == nil {
			continue
		}
		if !errors.Is(err, rpctypes.ErrNoSpace) {
			t.Fatalf("filling the quota: put %d: %v", filled, err)
		}
		break
	}

	// Writes: 503 storage_full on every member, at once.
	for i := range c.Members {
		began := time.Now()
		code, body, err := call(t.Context(), client, http.MethodPut, c.Members[i].URL("/v1/services/kept/instances/new"), registerBody("10.4.0.1:80", 3600, nil))
		if err != nil || code != http.StatusServiceUnavailable || errorCode(body) != "storage_full" {
			t.Errorf("register on %s with the quota full: %d %s %v, want 503 storage_full", c.Members[i].Name, code, body, err)
		}
		if took := time.Since(began); took > time.Second {
			t.Errorf("register on %s took %v to be refused", c.Members[i].Name, took)
		}
	}
	code, body, err := call(t.Context(), client, http.MethodDelete, base+"/v1/services/kept/instances/k00", "")
	if err != nil || code != http.StatusServiceUnavailable || errorCode(body) != "storage_full" {
		t.Errorf("deregister with the quota full: %d %s %v, want 503 storage_full", code, body, err)
	}
	// Reads, heartbeats and readiness keep working.
	got, err := list(base, "kept")
	if err != nil || !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))) {
		t.Errorf("list with the quota full: %v %v", slices.Sorted(maps.Keys(got)), err)
	}
	code, body, err = call(t.Context(), client, http.MethodPut, base+"/v1/services/kept/instances/k01/heartbeat", "")
	if err != nil || code != http.StatusOK {
		t.Errorf("heartbeat with the quota full: %d %s %v, want 200", code, body, err)
	}
	if ok, why := ready(base); !ok {
		t.Errorf("/readyz with the quota full: %s", why)
	}
	if lines := c.LogLines("database space exceeded"); len(lines) == 0 {
		t.Error("no log line says the database space is exceeded")
	} else {
		t.Logf("log: %s", lines[0])
	}
	// The short instances run out while the store is full; their reports
	// have to wait (the ledger is a write) but are not lost.
	time.Sleep(4 * time.Second)
	if es, err := expirations(base, "brief"); err != nil || len(es) != 0 {
		t.Logf("reported while full (unexpected but harmless): %v %v", es, err)
	}

	// The remedy etcd documents: delete, compact, defragment, disarm.
	freed := time.Now()
	if _, err := cli.Delete(t.Context(), "/filler/", clientv3.WithPrefix()); err != nil {
		t.Fatalf("delete the filler: %v", err)
	}
	rev, err := cli.Get(t.Context(), "/filler/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(t.Context(), rev.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
	for i, m := range c.Members {
		if _, err := c.EtcdClient(t, i).Defragment(t.Context(), m.ClientURL); err != nil {
			t.Fatalf("defragment %s: %v", m.Name, err)
		}
	}
	alarms, err := cli.AlarmList(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alarms.Alarms {
		if _, err := cli.AlarmDisarm(t.Context(), (*clientv3.AlarmMember)(a)); err != nil {
			t.Fatalf("disarm: %v", err)
		}
	}
	var writable time.Duration
	eventually(t, 10*time.Second, "a write after freeing space", func() error {
		_, err := register(base, "kept", "new", 3600, nil)
		writable = time.Since(freed)
		return err
	})
	for i := range c.Members {
		got, err := list(c.Members[i].URL(""), "kept")
		if err != nil {
			t.Fatal(err)
		}
		for id, w := range want {
			if g, ok := got[id]; !ok || g.LeaseID != w.LeaseID {
				t.Errorf("%s: %s lost or changed: %+v", c.Members[i].Name, id, g)
			}
		}
	}
	eventually(t, 20*time.Second, "the short instances reported after the space was freed", func() error {
		es, err := expirations(base, "brief")
		if err == nil && len(es) < len(shortLease) {
			err = fmt.Errorf("%d of %d", len(es), len(shortLease))
		}
		return err
	})
	for i := range c.Members {
		es, err := expirations(c.Members[i].URL(""), "")
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, e := range es {
			seen[e.ID]++
			if e.Service != "brief" || e.LeaseID != shortLease[e.ID] {
				t.Errorf("%s: unexpected report %+v", c.Members[i].Name, e)
			}
		}
		for id := range shortLease {
			if seen[id] != 1 {
				t.Errorf("%s: %s reported %d times, want once", c.Members[i].Name, id, seen[id])
			}
		}
	}
	figure(t, "quota %d MiB filled by %d puts of 512 KiB: writes answered 503 storage_full at once, reads/heartbeats 200; after delete+compact+defrag+disarm a write was accepted after %s; %d expiries that fell in the full period reported once each",
		quota>>20, filled, ms(writable), len(shortLease))
}

// TestE2EFaultDisk gives one member of a three-node cluster of real
// processes a data dir that fills up (a small tmpfs) or turns read-only
// (ext4 on a loop device, errors=remount-ro, and an injected fs error). It
// needs root and mount; elsewhere it is skipped.
//
// What it asserts holds whatever regd does about it: the member never
// answers a 5xx but 503, says in its log what is wrong, the other two keep
// taking writes, and no acknowledged write is lost once the disk is
// repaired and the member restarted. What the member does (exits, or
// refuses writes) and what a restart on the broken disk does are measured
// and printed.
func TestE2EFaultDisk(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root to mount a small or read-only file system for the data dir")
	}
	t.Run("full", func(t *testing.T) {
		dir := t.TempDir()
		// etcd preallocates two 64 MB WAL segments; leave ~70 MiB.
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=200m", "regd-faults", dir).CombinedOutput(); err != nil {
			t.Skipf("cannot mount a tmpfs: %v %s", err, out)
		}
		t.Cleanup(func() { unmount(t, dir) })
		filler := filepath.Join(dir, "filler")
		diskFault(t, dir, "no space left on device",
			func() error { return fill(filler) },
			func() error { return os.Remove(filler) })
	})
	t.Run("read-only", func(t *testing.T) {
		dir := t.TempDir()
		img := filepath.Join(t.TempDir(), "ext4.img")
		for _, cmd := range [][]string{
			{"truncate", "-s", "300M", img},
			{"mkfs.ext4", "-q", "-F", img},
			{"mount", "-o", "loop,errors=remount-ro", img, dir},
		} {
			if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
				t.Skipf("cannot set up an ext4 loop mount (%s): %v %s", cmd[0], err, out)
			}
		}
		t.Cleanup(func() { unmount(t, dir) })
		trigger, err := ext4Trigger(dir)
		if err != nil {
			t.Skipf("cannot inject an ext4 error: %v", err)
		}
		diskFault(t, dir, "read-only file system",
			func() error { return os.WriteFile(trigger, []byte("regd fault test\n"), 0o200) },
			func() error {
				// What an operator does: unmount, check, mount again.
				for _, cmd := range [][]string{
					{"umount", dir},
					{"e2fsck", "-fy", img},
					{"mount", "-o", "loop,errors=remount-ro", img, dir},
				} {
					out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
					var ee *exec.ExitError
					if err != nil && !(cmd[0] == "e2fsck" && errors.As(err, &ee) && ee.ExitCode() <= 2) {
						return fmt.Errorf("%s: %v %s", strings.Join(cmd, " "), err, out)
					}
				}
				return nil
			})
	})
}

// diskFault runs one disk fault against member m3, whose data dir lives
// under mnt: break_ breaks the disk, repair repairs it (with m3 stopped).
func diskFault(t *testing.T, mnt, symptom string, break_, repair func() error) {
	bin := e2e.Build(t)
	c := e2e.StartCluster(t, bin, e2e.ClusterOptions{DataDir: func(i int) string {
		if i == 2 {
			return filepath.Join(mnt, "m3.regd")
		}
		return filepath.Join(t.TempDir(), fmt.Sprintf("m%d.regd", i+1))
	}})
	c.Leader(leaderWait)
	const victim = 2
	vURL := c.URL(victim)

	acked := map[string]bool{} // every instance a 2xx acknowledged
	for i := range 20 {
		id := fmt.Sprintf("before%02d", i)
		if _, err := register(vURL, "disk", id, 3600, nil); err != nil {
			t.Fatal(err)
		}
		acked[id] = true
	}

	// The survivors' writes while m3's disk breaks.
	survivors := &counter{}
	var (
		survMu     sync.Mutex
		survAcked  []string
		survMaxGap time.Duration
	)
	survCtx, stopSurv := context.WithCancel(context.Background())
	var survWG sync.WaitGroup
	survWG.Go(func() {
		hc := &http.Client{Timeout: 10 * time.Second}
		last := time.Now()
		for i := 0; survCtx.Err() == nil; i++ {
			id := fmt.Sprintf("survivor%03d", i)
			code, body, err := call(context.Background(), hc, http.MethodPut, c.URL(i%2)+"/v1/services/disk/instances/"+id, registerBody("10.5.0.2:80", 3600, nil))
			switch {
			case err != nil:
				survivors.add("transport")
			case code == http.StatusOK || code == http.StatusCreated:
				survivors.add(strconv.Itoa(code))
				survMu.Lock()
				survAcked = append(survAcked, id)
				survMaxGap = max(survMaxGap, time.Since(last))
				survMu.Unlock()
				last = time.Now()
			default:
				survivors.add(outcome(code, body))
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	if err := break_(); err != nil {
		t.Fatalf("break the disk: %v", err)
	}
	broken := time.Now()

	// Keep writing through the broken member for a while.
	statuses := &counter{}
	var exited time.Duration
	for i := 0; time.Since(broken) < 5*time.Second; i++ {
		id := fmt.Sprintf("during%03d", i)
		hc := &http.Client{Timeout: 10 * time.Second}
		code, body, err := call(context.Background(), hc, http.MethodPut, vURL+"/v1/services/disk/instances/"+id, registerBody("10.5.0.1:80", 3600, nil))
		switch {
		case err != nil:
			statuses.add("transport")
		default:
			statuses.add(outcome(code, body))
			if code == http.StatusOK || code == http.StatusCreated {
				acked[id] = true
			} else if code >= 500 && code != http.StatusServiceUnavailable {
				t.Errorf("write on the broken member answered %d %s", code, body)
			}
		}
		if exited == 0 && c.Members[victim].Proc().Exited() {
			exited = time.Since(broken)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopSurv()
	survWG.Wait()
	for _, id := range survAcked {
		acked[id] = true
	}
	for _, k := range survivors.keys() {
		if code, _ := strconv.Atoi(strings.Fields(k)[0]); code >= 500 && code != http.StatusServiceUnavailable {
			t.Errorf("%d writes on the survivors answered %s", survivors.get(k), k)
		}
	}
	if len(survAcked) == 0 {
		t.Error("the survivors took no write while m3's disk was broken")
	}
	p := c.Members[victim].Proc()
	if !strings.Contains(p.Stderr(), symptom) {
		t.Errorf("m3's log does not say %q:\n%s", symptom, tail(p.Stderr(), 3000))
	}
	behaviour := "kept running"
	if p.Exited() {
		code, _ := p.WaitExit(time.Second)
		behaviour = fmt.Sprintf("exited (%s) %s after the fault", e2e.ExitCodeString(code), ms(exited))
	}
	line := logLine(p.Stderr(), symptom)

	// A restart on the still broken disk.
	restartOnBroken := "not tried (still running)"
	if p.Exited() {
		began := time.Now()
		rp := c.Start(victim)
		code, done := rp.WaitExit(15 * time.Second)
		if done {
			restartOnBroken = fmt.Sprintf("exited again (%s) after %s", e2e.ExitCodeString(code), ms(time.Since(began)))
		} else {
			restartOnBroken = "still running after 15 s"
			if ok, _ := ready(vURL); ok {
				restartOnBroken += ", ready"
			}
		}
	}

	// Repair with m3 stopped, start it, and it catches up with nothing lost.
	c.Kill(victim)
	if err := repair(); err != nil {
		t.Fatalf("repair the disk: %v", err)
	}
	repaired := time.Now()
	c.Restart(victim, readyTimeout)
	leader := c.Leader(leaderWait)
	var caughtUp time.Duration
	eventually(t, 20*time.Second, "m3 caught up", func() error {
		want, err := list(c.URL(leader), "disk")
		if err != nil {
			return err
		}
		got, err := list(vURL, "disk")
		if err != nil {
			return err
		}
		if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))) {
			return fmt.Errorf("m3 lists %d, the leader %d", len(got), len(want))
		}
		caughtUp = time.Since(repaired)
		return nil
	})
	for i := range c.Members {
		got, err := list(c.URL(i), "disk")
		if err != nil {
			t.Fatal(err)
		}
		for id := range acked {
			if _, ok := got[id]; !ok {
				t.Errorf("%s: acknowledged %s lost", c.Members[i].Name, id)
			}
		}
	}
	figure(t, "m3's data dir broken (%s): m3 %s; its writes: %s; log: %s", symptom, behaviour, statuses.String(), line)
	figure(t, "writes on m1/m2 meanwhile: %s, longest gap between accepted ones %s; restart of m3 on the broken disk: %s; after repair m3 was ready and caught up after %s, all %d acknowledged writes present on every member",
		survivors.String(), ms(survMaxGap), restartOnBroken, ms(caughtUp), len(acked))
}

// fill writes a file until the file system is full.
func fill(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil
			}
			return err
		}
	}
}

// ext4Trigger is the sysfs file that injects an error into the ext4 file
// system mounted at dir.
func ext4Trigger(dir string) (string, error) {
	out, err := exec.Command("findmnt", "-n", "-o", "SOURCE", dir).Output()
	if err != nil {
		return "", fmt.Errorf("findmnt: %v", err)
	}
	dev := filepath.Base(strings.TrimSpace(string(out)))
	p := filepath.Join("/sys/fs/ext4", dev, "trigger_fs_error")
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

func unmount(t *testing.T, dir string) {
	if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
		if out2, err2 := exec.Command("umount", "-l", dir).CombinedOutput(); err2 != nil {
			t.Errorf("umount %s: %v %s; %v %s", dir, err, out, err2, out2)
		}
	}
}

// logLine is the most severe stderr line that mentions s, shortened.
func logLine(stderr, s string) string {
	found := "(none)"
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, s) {
			if strings.Contains(l, `"level":"fatal"`) {
				return tail(l, 300)
			}
			if found == "(none)" {
				found = tail(l, 300)
			}
		}
	}
	return found
}

// outcome names an answer for the counters: "503 storage_full".
func outcome(code int, body []byte) string {
	if c := errorCode(body); c != "" {
		return strconv.Itoa(code) + " " + c
	}
	return strconv.Itoa(code)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
