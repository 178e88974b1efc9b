//go:build e2e

package faults

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
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
	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/node"
)

// TestE2EFaultStorageQuota fills etcd's backend quota (in-process members,
// a 16 MiB backend quota, as --quota-backend-bytes sets it) with
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
	// The brief instances are to run out while the store is full, so
	// they are registered now (writes are refused once it is) and kept
	// alive by heartbeats, which a full store allows, until it is full.
	shortLease := map[string]string{}
	wantExpired := map[ledgertest.Expiry]string{}
	var briefIDs []string
	for i := range 3 {
		in, err := register(base, "brief", fmt.Sprintf("b%d", i), 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		shortLease[in.ID] = in.LeaseID
		wantExpired[ledgertest.Expiry{Service: in.Service, ID: in.ID, Lease: in.LeaseID}] = in.Address
		briefIDs = append(briefIDs, in.ID)
	}
	stopBeats := keepAlive(base, "brief", briefIDs, 400*time.Millisecond)

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
	// etcd raises its quota alarm without a line of its own when its
	// pre-check refuses the put; regd's guard logs every NOSPACE alarm.
	poll.Until(t, 5*time.Second, "a log line saying etcd's NOSPACE alarm is raised", func() error {
		if len(c.LogLines("NOSPACE alarm is raised")) == 0 {
			return errors.New("none yet")
		}
		return nil
	})
	// The short instances run out while the store is full: their
	// heartbeats stop only now, and the store must still be full after
	// their keys are gone. Otherwise the scenario (expiries that fall in
	// the full period) did not happen, whatever is reported later.
	if lost := stopBeats(); len(lost) > 0 {
		t.Fatalf("%v expired before the quota was full (heartbeat answered %v): no expiry fell in the full period", slices.Sorted(maps.Keys(lost)), lost)
	}
	if got, err := list(base, "brief"); err != nil || len(got) != len(shortLease) {
		t.Fatalf("the brief instances with the quota full: %v %v, want all %d listed", slices.Sorted(maps.Keys(got)), err, len(shortLease))
	}
	poll.Until(t, 15*time.Second, "the brief instances' leases ended with the quota full", func() error {
		got, err := list(base, "brief")
		if err == nil && len(got) > 0 {
			err = fmt.Errorf("still listed: %v", slices.Sorted(maps.Keys(got)))
		}
		return err
	})
	code, body, err = call(t.Context(), client, http.MethodPut, base+"/v1/services/kept/instances/new", registerBody("10.4.0.1:80", 3600, nil))
	if err != nil || code != http.StatusServiceUnavailable || errorCode(body) != "storage_full" {
		t.Fatalf("a write after the brief instances expired: %d %s %v, want 503 storage_full: the store was no longer full", code, body, err)
	}
	// Their reports may wait for space (the ledger is a write); what
	// matters is that each comes once, checked below.
	reportedWhileFull := 0
	if es, err := ledgertest.Read(base, url.Values{"service": {"brief"}}); err == nil {
		reportedWhileFull = len(es)
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
	poll.Until(t, 10*time.Second, "a write after freeing space", func() error {
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
	c.WaitExpiries(t, 20*time.Second, ledgertest.Expected{Want: wantExpired})
	figure(t, "quota %d MiB filled by %d puts of 512 KiB: writes answered 503 storage_full at once, reads/heartbeats 200; after delete+compact+defrag+disarm a write was accepted after %s; %d expiries that fell in the full period reported once each (%d of them while still full)",
		quota>>20, filled, ms(writable), len(shortLease), reportedWhileFull)
}

// keepAlive heartbeats service's ids through base every interval until the
// returned stop is called. stop returns the ids whose heartbeat answered
// 404 (the lease had ended), with that answer; a 503 or a failed request
// is retried at the next beat.
func keepAlive(base, service string, ids []string, interval time.Duration) (stop func() map[string]string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	lost := map[string]string{}
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			for _, id := range ids {
				code, body, err := call(ctx, client, http.MethodPut, base+"/v1/services/"+service+"/instances/"+id+"/heartbeat", "")
				if err == nil && code == http.StatusNotFound {
					if _, ok := lost[id]; !ok {
						lost[id] = outcome(code, body)
					}
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() map[string]string {
		cancel()
		<-done
		return lost
	}
}

// TestE2EFaultDisk gives member m3 of a three-node cluster of real processes
// a data dir that fills up (a tmpfs filled from outside) or turns read-only
// (ext4 on a loop device, errors=remount-ro, and an injected fs error). The
// members run with the binary's defaults: 128 MiB kept free, a 64 MiB
// reserve. It needs root and mount; elsewhere it is skipped.
//
// Full: m3's file system is filled from outside until diskShortLeave is
// free: under the minimum, so the guard must act, and still room for what
// etcd writes meanwhile, so it can. Every member answers writes 503
// storage_full within seconds (m3 raises etcd's NOSPACE alarm) and nothing
// else but 2xx; m3 keeps running (an exit fails the test: the guard did not
// act in time); reads, heartbeats and readiness stay 200; once the filler is
// deleted, writes resume on every member without a restart.
//
// Full-crash: filled to the last byte in one go, where etcd can hit ENOSPC
// before the guard looks and exit. m3 is killed if it did not exit by
// itself, and started again on the full disk, as a supervisor would: it
// must keep running and answer 503, and recover when the filler is deleted.
//
// Read-only: m3 answers writes 503 storage_unwritable until etcd stops at
// its next WAL write; the others keep taking writes (a read-only member
// raises no alarm). A restart on the read-only disk waits instead of exiting
// (healthz 200, readyz and writes 503 storage_unwritable) and starts the
// member by itself once the disk is repaired under it.
//
// Either way m3 catches up and no acknowledged write is lost.
func TestE2EFaultDisk(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root to mount a small or read-only file system for the data dir")
	}
	// m3 starts with etcd's two preallocated 64 MB WAL segments and its
	// 64 MiB reserve: 400 MiB leaves it about 210 MiB free, above the
	// 128 MiB minimum and the 208 MiB a full member needs to resume.
	for _, tc := range []struct {
		name  string
		crash bool
	}{{"full", false}, {"full-crash", true}} {
		name, crash := tc.name, tc.crash
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=400m", "regd-faults", dir).CombinedOutput(); err != nil {
				t.Skipf("cannot mount a tmpfs: %v %s", err, out)
			}
			t.Cleanup(func() { unmount(t, dir) })
			diskFull(t, dir, filepath.Join(dir, "filler"), crash)
		})
	}
	t.Run("read-only", func(t *testing.T) {
		dir := t.TempDir()
		img := filepath.Join(t.TempDir(), "ext4.img")
		// 512 MiB: room for the WAL, the reserve and the minimum, so that
		// m3 is not short of space before the fault.
		for _, cmd := range [][]string{
			{"truncate", "-s", "512M", img},
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
		diskReadOnly(t, dir, img, trigger)
	})
}

// diskFull fills m3's file system (mounted at mnt) from outside with the
// file filler, and repairs it by deleting the file, m3 left running.
// Without crash the fill leaves diskShortLeave free and m3 must stay up;
// with crash it goes to the last byte, and m3 is killed once every member
// refuses writes, unless it exited by itself, and started again on the full
// disk before the repair.
func diskFull(t *testing.T, mnt, filler string, crash bool) {
	r := newDiskRig(t, mnt)
	c := r.c
	if fi, err := os.Stat(filepath.Join(r.dataDir, node.ReserveFile)); err != nil || fi.Size() < diskReserve {
		t.Errorf("m3 has no %s MiB reserve while its disk has room: %v", strconv.Itoa(diskReserve>>20), err)
	}
	others := r.startWriter()
	leave, how := int64(diskShortLeave), fmt.Sprintf("left with %d MiB free", diskShortLeave>>20)
	if crash {
		leave, how = 0, "filled to the last byte"
	}
	free, err := fill(filler, leave)
	if err != nil {
		t.Fatalf("fill m3's disk: %v", err)
	}
	broken := time.Now()
	// The fill made the state the rest checks: m3 short of space, with or
	// without a byte left.
	if crash && free >= 1<<20 || !crash && (free > leave || free == 0) {
		t.Fatalf("m3's file system has %d bytes free after the fill, want it %s", free, how)
	}

	// Write through m3, and through the others once m3 refuses, until every
	// member refuses (m3's alarm has gone through raft) or m3 exits.
	m3 := &counter{}
	p := r.proc()
	var refusedAfter, exitedAfter time.Duration
	round := 0
	poll.Until(t, 10*time.Second, "every member refuses writes after m3's disk filled, or m3 exits", func() error {
		round++
		code, body, err := r.write(diskVictim, fmt.Sprintf("during%03d", round))
		m3.add(answer(code, body, err))
		r.checkM3Write(p, code, body, err, "storage_full")
		if p.Exited() {
			exitedAfter = time.Since(broken)
			return nil
		}
		if err == nil && code == http.StatusServiceUnavailable && r.refusedBy([]int{0, 1}, "storage_full", others.probes, round) {
			refusedAfter = time.Since(broken)
			return nil
		}
		return fmt.Errorf("m3 answered %s; m1/m2 %s", m3, others.probes)
	})
	if !crash && p.Exited() {
		t.Fatalf("m3 exited %s after its disk was %s (under the %d MiB minimum, not full): the guard did not refuse writes before etcd failed: %s",
			ms(exitedAfter), how, node.DefaultMinFreeBytes>>20, lastWords(p.Stderr()))
	}
	// The refusal holds for 2 s (the span is the scenario): m3 stays up
	// (or, filled to the last byte, may exit) and every member keeps
	// answering 503.
	if refusedAfter > 0 {
		round := 0
		poll.Throughout(t, 2*time.Second, "the refusal holds while m3's disk is full", func() error {
			if p.Exited() {
				return nil
			}
			round++
			code, body, err := r.write(diskVictim, fmt.Sprintf("held%03d", round))
			m3.add(answer(code, body, err))
			r.checkM3Write(p, code, body, err, "storage_full")
			if !p.Exited() && (err != nil || code != http.StatusServiceUnavailable || !r.refusedBy([]int{0, 1}, "storage_full", others.probes, round)) {
				return fmt.Errorf("with m3's disk still full a write was accepted somewhere: m3 %s; m1/m2 %s", answer(code, body, err), others.probes)
			}
			return nil
		})
	}
	behaviour := "kept running"
	refused := "m3 exited before every member refused writes"
	if refusedAfter > 0 {
		refused = fmt.Sprintf("writes answered 503 storage_full on every member %s after the fill", ms(refusedAfter))
	}
	if !p.Exited() {
		if _, err := os.Stat(filepath.Join(r.dataDir, node.ReserveFile)); err == nil {
			t.Errorf("m3 kept its reserve with its disk full")
		}
	}
	restart := "not needed"
	waiting := false
	if crash && !p.Exited() {
		c.Kill(diskVictim)
		behaviour = "kept running, then was killed by the test (SIGKILL) to play a crash"
	} else if p.Exited() {
		if exitedAfter == 0 {
			exitedAfter = time.Since(broken)
		}
		code, _ := p.WaitExit(time.Second)
		behaviour = fmt.Sprintf("EXITED (%s) about %s after the fill: %s", e2e.ExitCodeString(code), ms(exitedAfter), lastWords(p.Stderr()))
		t.Logf("m3 exited on the full disk: %s", behaviour)
	}
	if p.Exited() {
		// A supervisor starts it again on the still full disk: it must
		// keep running and refuse writes, whether its member runs (the
		// reserve gives it room) or it waits for the disk.
		// Watch it for 10 s; once its member is up, every member must
		// refuse writes again (its alarm).
		began := time.Now()
		rp := r.restart()
		var after time.Duration
		poll.Throughout(t, 10*time.Second, "m3 restarted on the full disk keeps running", func() error {
			if rp.Exited() {
				code, _ := rp.WaitExit(time.Second)
				return fmt.Errorf("m3 exited again (%s) after %s: %s", e2e.ExitCodeString(code), ms(time.Since(began)), lastWords(rp.Stderr()))
			}
			if ok, _ := ready(c.URL(diskVictim)); after == 0 && ok && r.refusedBy([]int{0, 1, 2}, "storage_full", others.probes, -1) {
				after = time.Since(began)
			}
			return nil
		})
		if code, body, err := get(c.URL(diskVictim) + "/healthz"); err != nil || code != http.StatusOK {
			t.Errorf("/healthz of m3 restarted on the full disk: %s, want 200", answer(code, body, err))
		}
		code, body, err := r.write(diskVictim, "restarted")
		if err != nil || code != http.StatusServiceUnavailable || (errorCode(body) != "storage_full" && errorCode(body) != "storage_unwritable") {
			t.Errorf("a write on m3 restarted on the full disk: %s, want 503 storage_full or storage_unwritable", answer(code, body, err))
		}
		waiting = strings.Contains(rp.Stderr(), waitingLine)
		switch {
		case waiting:
			// Outside the cluster m3 cannot raise (or disarm) an alarm;
			// one it raised before it stopped stays.
			meanwhile := &counter{}
			r.refusedBy([]int{0, 1}, "storage_full", meanwhile, -1)
			for _, k := range meanwhile.keys() {
				others.probes.add(k)
			}
			restart = fmt.Sprintf("kept running 10 s waiting for the disk (a write %s; on m1/m2 %s)", answer(code, body, err), meanwhile)
		case after == 0:
			t.Errorf("m3 restarted on the full disk runs its member, but within 10 s not every member refused writes; m1/m2 answered %s", others.probes)
		default:
			restart = fmt.Sprintf("kept running 10 s with its member up (%s)", answer(code, body, err))
			refused = fmt.Sprintf("writes answered 503 storage_full on every member %s after m3's restart", ms(after))
		}
	}

	// Reads, heartbeats and readiness keep working on every member whose
	// member runs.
	running := []int{0, 1}
	if !waiting {
		running = append(running, diskVictim)
	}
	for _, i := range running {
		got, err := list(c.URL(i), "disk")
		if err != nil {
			t.Errorf("a read on %s with m3's disk full: %v", c.Members[i].Name, err)
		}
		for j := range 20 {
			if id := fmt.Sprintf("before%02d", j); err == nil && got[id].ID != id {
				t.Errorf("a read on %s with m3's disk full lacks %s", c.Members[i].Name, id)
			}
		}
		code, body, err := call(context.Background(), r.hc, http.MethodPut, c.URL(i)+"/v1/services/disk/instances/before00/heartbeat", "")
		if err != nil || code != http.StatusOK {
			t.Errorf("a heartbeat on %s with m3's disk full: %s, want 200", c.Members[i].Name, answer(code, body, err))
		}
		if ok, why := ready(c.URL(i)); !ok {
			t.Errorf("/readyz on %s with m3's disk full: %s, want 200", c.Members[i].Name, why)
		}
	}
	if log := r.log(); !strings.Contains(log, "short of space") && !(waiting && strings.Contains(log, "no space left on device")) {
		t.Errorf("m3's log does not say it is short of space:\n%s", tail(log, 3000))
	}
	line := logLine(r.log(), "data dir is short of space")

	// Repair: delete the filler and leave m3 running.
	rp := r.proc()
	if err := os.Remove(filler); err != nil {
		t.Fatalf("delete the filler: %v", err)
	}
	repaired := time.Now()
	var writable time.Duration
	accepted := map[int]bool{}
	poll.Until(t, 15*time.Second, "writes accepted on every member after the filler was deleted", func() error {
		for i := range c.Members {
			if accepted[i] {
				continue
			}
			code, body, err := r.write(i, fmt.Sprintf("after-%s-%d", c.Members[i].Name, time.Since(repaired).Milliseconds()))
			switch {
			case err == nil && isAccepted(code):
				accepted[i] = true
			case i == diskVictim:
				r.checkM3Write(rp, code, body, err, "storage_full", "storage_unwritable")
			default:
				others.probes.add(answer(code, body, err))
			}
		}
		if len(accepted) < len(c.Members) {
			return fmt.Errorf("accepted by %d of %d members; m1/m2 answered %s", len(accepted), len(c.Members), others.probes)
		}
		writable = time.Since(repaired)
		return nil
	})
	r.waitReady(rp, readyTimeout)
	poll.Until(t, 10*time.Second, "m3's reserve made again", func() error {
		fi, err := os.Stat(filepath.Join(r.dataDir, node.ReserveFile))
		if err == nil && fi.Size() < diskReserve {
			err = fmt.Errorf("%d bytes", fi.Size())
		}
		return err
	})
	others.halt()
	allowed := []string{"200", "201", "503 storage_full"}
	if p.Exited() {
		// m3 may have been the leader: an election.
		allowed = append(allowed, "503 unavailable")
	}
	checkOutcomes(t, "m1/m2", &others.outcomes, allowed...)
	checkOutcomes(t, "m1/m2", others.probes, allowed...)
	caughtUp := r.settle(repaired)
	if r.proc() != rp || rp.Exited() {
		t.Errorf("m3 was restarted or exited after the repair")
	}
	figure(t, "m3's tmpfs %s from outside (regd's defaults: 128 MiB kept free, 64 MiB reserve): %s; m3 %s; m3's writes %s; m1/m2's writes %s; reads, heartbeats and /readyz 200; log: %s",
		how, refused, behaviour, m3, &others.outcomes, line)
	figure(t, "restart of m3 on the still full disk: %s; after the filler was deleted (m3 left running) writes were accepted on every member after %s, m3 caught up after %s; all %d acknowledged writes present on every member",
		restart, ms(writable), ms(caughtUp), r.ackedCount())
}

// diskReadOnly turns m3's ext4 file system (img, mounted at mnt) read-only
// by writing to its error trigger, lets the restarted m3 wait on it, and
// repairs it under the waiting m3 the way an operator does.
func diskReadOnly(t *testing.T, mnt, img, trigger string) {
	r := newDiskRig(t, mnt)
	c := r.c
	vURL := c.URL(diskVictim)
	others := r.startWriter()
	if err := os.WriteFile(trigger, []byte("regd fault test\n"), 0o200); err != nil {
		t.Fatalf("inject the ext4 error: %v", err)
	}
	broken := time.Now()

	// Write through m3 until etcd stops at its next WAL write.
	m3 := &counter{}
	p := r.proc()
	var exitedAfter time.Duration
	round := 0
	// Either outcome is allowed and checked below: m3 exits (etcd stops at
	// its WAL write), or it keeps running unready for the 15 s.
	_ = poll.Wait(15*time.Second, func() error {
		round++
		code, body, err := r.write(diskVictim, fmt.Sprintf("during%03d", round))
		m3.add(answer(code, body, err))
		r.checkM3Write(p, code, body, err, "storage_unwritable")
		if p.Exited() {
			exitedAfter = time.Since(broken)
			return nil
		}
		return errors.New("m3 still runs")
	})
	var behaviour string
	if p.Exited() {
		code, _ := p.WaitExit(time.Second)
		behaviour = fmt.Sprintf("exited (%s) %s after the fault", e2e.ExitCodeString(code), ms(exitedAfter))
	} else {
		if ok, why := ready(vURL); ok {
			t.Errorf("m3 is ready 15 s after its disk turned read-only: %s", why)
		}
		behaviour = "kept running 15 s (not ready), then killed by the test"
		c.Kill(diskVictim)
	}
	if log := r.log(); !strings.Contains(log, "read-only") {
		t.Errorf("m3's log does not say its disk is read-only:\n%s", tail(log, 3000))
	}
	line := logLine(r.log(), "read-only")

	// The others keep taking writes: a read-only member raises no alarm.
	for _, i := range []int{0, 1} {
		poll.Until(t, 10*time.Second, "a write on "+c.Members[i].Name+" with m3 gone", func() error {
			code, body, err := r.write(i, fmt.Sprintf("gone-%s-%d", c.Members[i].Name, time.Since(broken).Milliseconds()))
			if err == nil && isAccepted(code) {
				return nil
			}
			others.probes.add(answer(code, body, err))
			return fmt.Errorf("%s", answer(code, body, err))
		})
	}

	// A supervisor starts m3 again on the read-only disk: it waits.
	rp := r.restart()
	if code, done := rp.WaitExit(5 * time.Second); done {
		t.Fatalf("m3 restarted on the read-only disk exited (%s): %s", e2e.ExitCodeString(code), lastWords(rp.Stderr()))
	}
	if code, body, err := get(vURL + "/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("/healthz of m3 waiting for its disk: %s, want 200", answer(code, body, err))
	}
	if ok, why := ready(vURL); ok || why != "503" {
		t.Errorf("/readyz of m3 waiting for its disk: %s, want 503", why)
	}
	code, body, err := r.write(diskVictim, "waiting")
	if err != nil || code != http.StatusServiceUnavailable || errorCode(body) != "storage_unwritable" {
		t.Errorf("a write on m3 waiting for its disk: %s, want 503 storage_unwritable", answer(code, body, err))
	}
	waitAnswer := answer(code, body, err)
	if code, body, err := get(vURL + "/v1/services/disk/instances"); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("a read on m3 waiting for its disk: %s, want 503", answer(code, body, err))
	}
	if !strings.Contains(rp.Stderr(), waitingLine) {
		t.Errorf("m3's log does not say it waits for its data dir:\n%s", tail(rp.Stderr(), 3000))
	}

	// Repair under the waiting m3: unmount, check, mount again.
	if err := repairExt4(mnt, img); err != nil {
		t.Fatalf("repair m3's disk: %v", err)
	}
	repaired := time.Now()
	r.waitReady(rp, readyTimeout)
	readyAfter := time.Since(repaired)
	if !strings.Contains(rp.Stderr(), startingLine) {
		t.Errorf("m3's log does not say it starts the member once the disk works:\n%s", tail(rp.Stderr(), 3000))
	}
	if n, off, err := filesOffDisk(rp.Pid(), r.dataDir, mnt); err != nil {
		t.Errorf("m3's open files: %v", err)
	} else if n == 0 || len(off) > 0 {
		t.Errorf("m3 started its member beside the repaired disk: of %d files it has open in its data dir, these are not on the file system mounted at %s: %v", n, mnt, off)
	}
	poll.Until(t, 10*time.Second, "a write on m3 after the repair", func() error {
		code, body, err := r.write(diskVictim, fmt.Sprintf("repaired-%d", time.Since(repaired).Milliseconds()))
		if err == nil && isAccepted(code) {
			return nil
		}
		return fmt.Errorf("%s", answer(code, body, err))
	})
	others.halt()
	gap := others.maxGap()
	// m3 may have been the leader: an election, and writes forwarded to it
	// time out.
	checkOutcomes(t, "m1/m2", &others.outcomes, "200", "201", "503 unavailable")
	checkOutcomes(t, "m1/m2", others.probes, "200", "201", "503 unavailable")
	caughtUp := r.settle(repaired)
	if r.proc() != rp || rp.Exited() {
		t.Errorf("m3 was restarted or exited after the repair")
	}
	figure(t, "m3's ext4 turned read-only: m3 %s; its writes %s; log: %s; m1/m2's writes meanwhile %s, longest gap between accepted ones %s",
		behaviour, m3, line, &others.outcomes, ms(gap))
	figure(t, "restart of m3 on the read-only disk: kept waiting (healthz 200, readyz 503, a write %s); after umount+e2fsck+mount under it (no restart) m3 started its member and was ready after %s, caught up after %s; all %d acknowledged writes present on every member",
		waitAnswer, ms(readyAfter), ms(caughtUp), r.ackedCount())
}

const (
	diskVictim  = 2                            // m3, whose data dir is on the file system that breaks
	diskReserve = node.DefaultMinFreeBytes / 2 // the reserve with the default --min-free-bytes
	// diskShortLeave is what the full (not crash) fill leaves free: with
	// the reserve released, still under the minimum; and room for the
	// WAL and bbolt writes before the guard's next look.
	diskShortLeave = 32 << 20
	waitingLine    = "waiting for it before starting the member"
	startingLine   = "data dir is writable again; starting the member"
)

// diskRig is a cluster of real processes whose m3 has its data dir under a
// mount point, and the writes it acknowledged.
type diskRig struct {
	t       *testing.T
	c       *e2e.Cluster
	dataDir string       // m3's
	hc      *http.Client // no keep-alive: a member's restart breaks no reused connection

	mu    sync.Mutex
	acked map[string]bool // every instance a 2xx acknowledged
	procs []*e2e.Proc     // m3's processes, first to last
}

// newDiskRig starts the cluster and registers 20 instances through m3.
func newDiskRig(t *testing.T, mnt string) *diskRig {
	bin := e2e.Build(t)
	dataDir := filepath.Join(mnt, "m3.regd")
	c := e2e.StartCluster(t, bin, e2e.ClusterOptions{DataDir: func(i int) string {
		if i == diskVictim {
			return dataDir
		}
		return filepath.Join(t.TempDir(), fmt.Sprintf("m%d.regd", i+1))
	}})
	c.Leader(leaderWait)
	r := &diskRig{
		t:       t,
		c:       c,
		dataDir: dataDir,
		hc:      &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		acked:   map[string]bool{},
		procs:   []*e2e.Proc{c.Members[diskVictim].Proc()},
	}
	for i := range 20 {
		if code, body, err := r.write(diskVictim, fmt.Sprintf("before%02d", i)); err != nil || !isAccepted(code) {
			t.Fatalf("register through m3 before the fault: %s", answer(code, body, err))
		}
	}
	return r
}

// write registers id through member i; a 2xx makes it acknowledged.
func (r *diskRig) write(i int, id string) (int, []byte, error) {
	code, body, err := call(context.Background(), r.hc, http.MethodPut, r.c.URL(i)+"/v1/services/disk/instances/"+id, registerBody("10.5.0.1:80", 3600, nil))
	if err == nil && isAccepted(code) {
		r.mu.Lock()
		r.acked[id] = true
		r.mu.Unlock()
	}
	return code, body, err
}

func (r *diskRig) ackedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.acked)
}

// proc is m3's current process.
func (r *diskRig) proc() *e2e.Proc { return r.c.Members[diskVictim].Proc() }

// restart starts m3 again and does not wait for it.
func (r *diskRig) restart() *e2e.Proc {
	p := r.c.Start(diskVictim)
	r.procs = append(r.procs, p)
	return p
}

// waitReady waits until m3's process p answers /readyz 200, and fails the
// test at once, with the reason, if p exits instead.
func (r *diskRig) waitReady(p *e2e.Proc, timeout time.Duration) {
	r.t.Helper()
	err := p.WaitReadyWith(&http.Client{Timeout: time.Second}, r.c.URL(diskVictim), timeout)
	var exited *e2e.ExitedError
	switch {
	case errors.As(err, &exited):
		r.t.Fatalf("m3 exited (%s) instead of becoming ready: %s", e2e.ExitCodeString(exited.Code), lastWords(exited.Stderr))
	case err != nil:
		r.t.Fatalf("m3 not ready: %v\n%s", err, tail(p.Stderr(), 3000))
	}
}

// log is the stderr of every m3 process so far.
func (r *diskRig) log() string {
	var b strings.Builder
	for _, p := range r.procs {
		b.WriteString(p.Stderr())
	}
	return b.String()
}

// checkM3Write fails the test unless a write on m3 answered 2xx, 503 with
// one of codes, or failed to connect because m3's process p exited.
func (r *diskRig) checkM3Write(p *e2e.Proc, code int, body []byte, err error, codes ...string) {
	r.t.Helper()
	switch {
	case err != nil:
		if _, done := p.WaitExit(3 * time.Second); !done {
			r.t.Errorf("a write on m3 failed while m3 runs: %v", err)
		}
	case isAccepted(code):
	case code == http.StatusServiceUnavailable && slices.Contains(codes, errorCode(body)):
	default:
		r.t.Errorf("a write on m3 answered %d %s, want 2xx or 503 %s", code, body, strings.Join(codes, " or "))
	}
}

// refusedBy writes once through every member in idx and reports whether all
// of them answered 503 with code; the answers are counted in seen, except
// m3's.
func (r *diskRig) refusedBy(idx []int, code string, seen *counter, round int) bool {
	all := true
	for _, i := range idx {
		c, body, err := r.write(i, fmt.Sprintf("probe-%s-%d-%d", r.c.Members[i].Name, round, time.Now().UnixNano()))
		if i != diskVictim {
			seen.add(answer(c, body, err))
		}
		if err != nil || c != http.StatusServiceUnavailable || errorCode(body) != code {
			all = false
		}
	}
	return all
}

// settle waits until m3 lists what the leader lists, and checks that every
// acknowledged write is on every member; it returns how long m3 took to
// catch up after since.
func (r *diskRig) settle(since time.Time) time.Duration {
	t := r.t
	t.Helper()
	leader := r.c.Leader(leaderWait)
	var caughtUp time.Duration
	poll.Until(t, 30*time.Second, "m3 caught up", func() error {
		want, err := list(r.c.URL(leader), "disk")
		if err != nil {
			return err
		}
		got, err := list(r.c.URL(diskVictim), "disk")
		if err != nil {
			return err
		}
		if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))) {
			return fmt.Errorf("m3 lists %d, the leader %d", len(got), len(want))
		}
		caughtUp = time.Since(since)
		return nil
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, m := range r.c.Members {
		got, err := list(r.c.URL(i), "disk")
		if err != nil {
			t.Fatal(err)
		}
		for id := range r.acked {
			if _, ok := got[id]; !ok {
				t.Errorf("%s: acknowledged %s lost", m.Name, id)
			}
		}
	}
	return caughtUp
}

// diskWriter writes through m1 and m2, in turn, every 50 ms; probes counts
// the test's own writes through them.
type diskWriter struct {
	outcomes counter
	probes   *counter
	stop     context.CancelFunc
	done     chan struct{}

	mu   sync.Mutex
	last time.Time // of the last accepted write
	gap  time.Duration
}

func (r *diskRig) startWriter() *diskWriter {
	ctx, stop := context.WithCancel(context.Background())
	w := &diskWriter{probes: &counter{}, stop: stop, done: make(chan struct{}), last: time.Now()}
	go func() {
		defer close(w.done)
		for i := 0; ctx.Err() == nil; i++ {
			code, body, err := r.write(i%2, fmt.Sprintf("survivor%04d", i))
			w.outcomes.add(answer(code, body, err))
			if err == nil && isAccepted(code) {
				w.mu.Lock()
				w.gap = max(w.gap, time.Since(w.last))
				w.last = time.Now()
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

// halt stops the writer and waits for its last write.
func (w *diskWriter) halt() {
	w.stop()
	<-w.done
}

// maxGap is the longest time between two accepted writes.
func (w *diskWriter) maxGap() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gap
}

// checkOutcomes fails the test for every outcome in c that is not allowed.
func checkOutcomes(t *testing.T, who string, c *counter, allowed ...string) {
	t.Helper()
	for _, k := range c.keys() {
		if !slices.Contains(allowed, k) {
			t.Errorf("%d writes on %s answered %s; allowed: %s", c.get(k), who, k, strings.Join(allowed, ", "))
		}
	}
}

func isAccepted(code int) bool { return code == http.StatusOK || code == http.StatusCreated }

// answer names the result of a request for counters and messages.
func answer(code int, body []byte, err error) string {
	if err != nil {
		return "transport"
	}
	return outcome(code, body)
}

// lastWords is the line of stderr that says why a process stopped: a
// fatal or panic log line, Go's panic message, or the last line.
func lastWords(stderr string) string {
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	for _, l := range lines {
		if strings.Contains(l, `"level":"fatal"`) || strings.Contains(l, `"level":"panic"`) || strings.HasPrefix(l, "panic:") {
			return tail(l, 400)
		}
	}
	return tail(lines[len(lines)-1], 400)
}

// repairExt4 is what an operator does to a file system that went
// read-only: unmount it (retrying while it is busy), check it, mount it
// again.
func repairExt4(mnt, img string) error {
	err := poll.Wait(10*time.Second, func() error {
		out, err := exec.Command("umount", mnt).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("umount %s: %v %s", mnt, err, out)
			if !strings.Contains(string(out), "busy") {
				return poll.Stop(err) // only a busy mount is worth retrying
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	out, err := exec.Command("e2fsck", "-fy", img).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() <= 2) { // 1, 2: errors corrected
		return fmt.Errorf("e2fsck -fy %s: %v %s", img, err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop,errors=remount-ro", img, mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("mount %s: %v %s", mnt, err, out)
	}
	return nil
}

// filesOffDisk looks at the files under dataDir that process pid has open
// and returns how many there are and those that are not on the file system
// mounted at mnt (they would be on the directory under the mount point).
func filesOffDisk(pid int, dataDir, mnt string) (int, []string, error) {
	var fs syscall.Stat_t
	if err := syscall.Stat(mnt, &fs); err != nil {
		return 0, nil, err
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return 0, nil, err
	}
	n := 0
	var off []string
	for _, fd := range fds {
		p := filepath.Join(fdDir, fd.Name())
		target, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(target, dataDir+"/") {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			continue
		}
		n++
		if st.Dev != fs.Dev {
			off = append(off, target)
		}
	}
	return n, off, nil
}

// fill writes the file path until the file system it is on has at most
// leave bytes free (0: until it is full), and returns the bytes then free.
func fill(path string, leave int64) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	dir := filepath.Dir(path)
	buf := make([]byte, 1<<20)
	for {
		u, err := node.StatDisk(dir)
		if err != nil {
			return 0, err
		}
		n := int64(len(buf))
		if leave > 0 {
			if u.Free <= leave {
				return u.Free, nil
			}
			n = min(n, u.Free-leave)
		}
		if _, err := f.Write(buf[:n]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				u, err := node.StatDisk(dir)
				return u.Free, err
			}
			return 0, err
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
