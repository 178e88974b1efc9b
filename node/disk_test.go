package node_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/regd/regd/internal/freeport"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/node"
)

// These tests run a real embedded member and play only the file system's
// free space (DiskStat): filling a real disk needs root and a mount, which
// faults/disk_test.go does when it can.

const minFree = 2 << 20 // the reserve is half: 1 MiB of real blocks

// fakeDisk is the free space and mount state the guard reads. It counts
// the guard's looks, so that a test can wait for looks instead of time.
type fakeDisk struct {
	mu    sync.Mutex
	free  int64
	ro    bool
	err   error
	looks int
}

func (d *fakeDisk) set(free int64, ro bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.free, d.ro, d.err = free, ro, err
}

func (d *fakeDisk) stat(string) (node.DiskUsage, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.looks++
	return node.DiskUsage{Free: d.free, ReadOnly: d.ro}, d.err
}

// waitLooks waits until the guard has taken n whole looks at the disk as it
// is now: the positive marker after which "the guard did not act" can be
// asserted. The guard looks (statfs) at the start of each step and steps
// one at a time, so the look after the n-th one begins only once the n-th
// step, with whatever it did, is over.
func (d *fakeDisk) waitLooks(t *testing.T, n int) {
	t.Helper()
	d.mu.Lock()
	from := d.looks
	d.mu.Unlock()
	poll.Until(t, 10*time.Second, fmt.Sprintf("%d looks at the disk", n), func() error {
		d.mu.Lock()
		defer d.mu.Unlock()
		if done := d.looks - from - 1; done < n {
			return fmt.Errorf("%d whole looks so far", max(done, 0))
		}
		return nil
	})
}

type member struct {
	*node.Node
	dir       string
	clientURL string
	logs      *observer.ObservedLogs
}

func startMember(t *testing.T, disk *fakeDisk, dir string, quota int64) *member {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	client, peer := "http://"+freeport.Addr(t), "http://"+freeport.Addr(t)
	urls := func(s string) []url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return []url.URL{*u}
	}
	core, logs := observer.New(zap.InfoLevel)
	n, err := node.Start(t.Context(), node.Config{
		Name:                "m",
		DataDir:             dir,
		ListenClientURLs:    urls(client),
		AdvertiseClientURLs: urls(client),
		ListenPeerURLs:      urls(peer),
		AdvertisePeerURLs:   urls(peer),
		InitialCluster:      "m=" + peer,
		ClusterState:        "new",
		ClusterToken:        fmt.Sprintf("disk-%d", time.Now().UnixNano()),
		TickMs:              20,
		ElectionMs:          200,
		ReadyTimeout:        30 * time.Second,
		QuotaBackendBytes:   quota,
		MinFreeBytes:        minFree,
		DiskCheckInterval:   20 * time.Millisecond,
		DiskStat:            disk.stat,
		EventLogger:         zap.New(core),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return &member{Node: n, dir: dir, clientURL: client, logs: logs}
}

func (m *member) alarmed(t *testing.T) bool {
	t.Helper()
	resp, err := m.Client().AlarmList(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range resp.Alarms {
		if a.MemberID == m.ID() && a.Alarm == etcdserverpb.AlarmType_NOSPACE {
			return true
		}
	}
	return false
}

func (m *member) put(t *testing.T, key string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := m.Client().Put(ctx, key, "v")
	return err
}

func (m *member) hasReserve() bool {
	fi, err := os.Stat(filepath.Join(m.dir, node.ReserveFile))
	return err == nil && fi.Size() == minFree/2
}

func storageErr(n *node.Node) *node.StorageError {
	var se *node.StorageError
	if errors.As(n.StorageErr(), &se) {
		return se
	}
	return nil
}

func (m *member) logged(msg string) int { return m.logs.FilterMessageSnippet(msg).Len() }

// A disk running short raises etcd's NOSPACE alarm, so that plain etcd
// clients are refused too, and gives etcd the reserve's room; when space is
// back, the alarm goes and the reserve returns, with no restart.
func TestDiskGuardShortOfSpace(t *testing.T) {
	disk := &fakeDisk{free: 100 * minFree}
	m := startMember(t, disk, "", 0)
	if err := m.StorageErr(); err != nil {
		t.Fatalf("StorageErr with room: %v", err)
	}
	if !m.hasReserve() {
		t.Fatal("no reserve file on a disk with room")
	}
	if err := m.put(t, "/before"); err != nil {
		t.Fatal(err)
	}

	disk.set(minFree-1, false, nil)
	poll.Until(t, 10*time.Second, "the guard sees the short disk", func() error {
		if se := storageErr(m.Node); se == nil || !se.Full || se.Free != minFree-1 || se.Min != minFree {
			return fmt.Errorf("StorageErr = %v", m.StorageErr())
		}
		return nil
	})
	poll.Until(t, 10*time.Second, "the NOSPACE alarm", func() error {
		if !m.alarmed(t) {
			return errors.New("not raised")
		}
		return nil
	})
	if err := m.put(t, "/during"); !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Errorf("a plain put under the alarm: %v, want %v", err, rpctypes.ErrNoSpace)
	}
	if m.hasReserve() {
		t.Error("the reserve is still there on a short disk")
	}
	// What keeps instances alive and lets them go still works.
	lease, err := m.Client().Grant(t.Context(), 30)
	if !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Errorf("lease grant under the alarm: %v %v, want %v", lease, err, rpctypes.ErrNoSpace)
	}
	if _, err := m.Client().Delete(t.Context(), "/before"); err != nil {
		t.Errorf("delete under the alarm: %v", err)
	}

	// Just over the minimum is not enough to resume: the guard wants a
	// margin and room for the reserve, so that it does not flap.
	// Once resumed it would stay so at this level, so one check after ten
	// looks covers them all.
	disk.set(minFree+1, false, nil)
	disk.waitLooks(t, 10)
	if se := storageErr(m.Node); se == nil || !se.Full {
		t.Fatalf("resumed at the threshold: %v", m.StorageErr())
	}

	disk.set(100*minFree, false, nil)
	poll.Until(t, 10*time.Second, "writes resume", func() error {
		if err := m.StorageErr(); err != nil {
			return err
		}
		if m.alarmed(t) {
			return errors.New("the alarm is still raised")
		}
		return m.put(t, "/after")
	})
	if !m.hasReserve() {
		t.Error("the reserve did not come back")
	}
	for msg, want := range map[string]int{
		"short of space; refusing writes": 1,
		"raised etcd's NOSPACE alarm":     1,
		"released the disk reserve":       1,
		"has space again":                 1,
		"disarmed this member's NOSPACE":  1,
		"NOSPACE alarm is raised":         1,
		"NOSPACE alarm is cleared":        1,
	} {
		// The guard logs after etcd has applied the change the test saw.
		poll.Until(t, 10*time.Second, "log line "+msg, func() error {
			if got := m.logged(msg); got != want {
				return fmt.Errorf("%d lines, want %d", got, want)
			}
			return nil
		})
	}
}

// A member restarting on a disk that something else filled releases its
// reserve before etcd starts, so that etcd has room, and starts refusing.
func TestDiskGuardStartsShort(t *testing.T) {
	dir := t.TempDir()
	disk := &fakeDisk{free: 100 * minFree}
	m := startMember(t, disk, dir, 0)
	if !m.hasReserve() {
		t.Fatal("no reserve file")
	}
	m.Close()

	disk.set(minFree/4, false, nil)
	m = startMember(t, disk, dir, 0)
	if m.hasReserve() {
		t.Error("the reserve survived a start on a short disk")
	}
	if se := storageErr(m.Node); se == nil || !se.Full {
		t.Errorf("StorageErr right after the start: %v, want short of space", m.StorageErr())
	}
	if !m.alarmed(t) {
		t.Error("no NOSPACE alarm right after the start")
	}
	m.Close()

	// Space freed while the member was down: the alarm it raised before
	// the restart is cleared by the member once it is back.
	disk.set(100*minFree, false, nil)
	m = startMember(t, disk, dir, 0)
	poll.Until(t, 10*time.Second, "the old alarm cleared", func() error {
		if m.alarmed(t) {
			return errors.New("still raised")
		}
		return m.put(t, "/after")
	})
}

// A read-only or failing file system takes no WAL write: the guard refuses
// writes but raises no alarm, because raising it would be a write that
// stops this member and leaves the alarm behind for the others.
func TestDiskGuardReadOnly(t *testing.T) {
	for name, set := range map[string]func(*fakeDisk){
		"read-only": func(d *fakeDisk) { d.set(100*minFree, true, nil) },
		"EIO":       func(d *fakeDisk) { d.set(0, false, &os.PathError{Op: "statfs", Path: "x", Err: syscall.EIO}) },
	} {
		t.Run(name, func(t *testing.T) {
			disk := &fakeDisk{free: 100 * minFree}
			m := startMember(t, disk, "", 0)
			set(disk)
			poll.Until(t, 10*time.Second, "the guard sees the failed disk", func() error {
				if se := storageErr(m.Node); se == nil || !se.Failed || se.Full {
					return fmt.Errorf("StorageErr = %v", m.StorageErr())
				}
				return nil
			})
			disk.waitLooks(t, 5)
			if m.alarmed(t) {
				t.Error("a NOSPACE alarm for a read-only disk")
			}
			if got := m.logged("read-only or failing"); got != 1 {
				t.Errorf("%d log lines about the failed disk, want 1", got)
			}
			disk.set(100*minFree, false, nil)
			poll.Until(t, 10*time.Second, "the guard sees the repaired disk", func() error { return m.StorageErr() })
		})
	}
}

// etcd's own quota alarm is cleared by the guard only once the database is
// under the quota again (after the operator's compact and defragment), not
// merely because the disk has room.
func TestDiskGuardLeavesQuotaAlarm(t *testing.T) {
	const quota = 16 << 20
	disk := &fakeDisk{free: 100 * minFree}
	m := startMember(t, disk, "", quota)
	value := strings.Repeat("x", 512<<10)
	for i := 0; ; i++ {
		_, err := m.Client().Put(t.Context(), fmt.Sprintf("/filler/%04d", i), value)
		if errors.Is(err, rpctypes.ErrNoSpace) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// etcd raises the alarm when a put would take the database over the
	// quota, so the database is then just under it: the guard must not
	// take that for room.
	// Nothing writes meanwhile, so an alarm disarmed in any of these looks
	// would still be gone after them.
	disk.waitLooks(t, 15)
	if !m.alarmed(t) || m.logged("disarmed this member's NOSPACE") != 0 {
		t.Fatal("the guard disarmed the quota alarm of a database at its quota")
	}
	if err := m.put(t, "/refused"); !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("a put at the quota: %v", err)
	}
	if got := m.logged("NOSPACE alarm is raised"); got != 1 {
		t.Errorf("%d log lines about etcd's alarm, want 1", got)
	}
	resp, err := m.Client().Delete(t.Context(), "/filler/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Client().Compact(t.Context(), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	// Over gRPC: the in-process client cannot defragment.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.clientURL}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Defragment(t.Context(), m.clientURL); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the guard disarms the quota alarm after the defragment", func() error {
		if m.alarmed(t) {
			return errors.New("still raised")
		}
		return m.put(t, "/after")
	})
}
