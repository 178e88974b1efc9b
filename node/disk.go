package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/storage"
	"go.uber.org/zap"
)

// The disk guard keeps a member from running its disk full. etcd cannot
// survive a write it has already accepted failing: a WAL append or a bbolt
// commit that hits ENOSPC or EROFS ends the process. So the guard acts
// before that point. Below MinFreeBytes it raises etcd's own NOSPACE
// alarm, which makes every member refuse puts, transactions with puts and
// lease grants (plain etcd clients included), and regd refuses REST writes
// on this member at once, before the alarm has gone through raft. Deletes,
// lease renewals, revocations and reads keep working, so instances keep
// heartbeating and expiring. When space is back the guard disarms the
// alarm it owns, and writes resume without a restart.
//
// A reserve file of half MinFreeBytes (at most 64 MiB) sits in the data dir while the disk
// has room. The guard deletes it the moment the disk runs low, and before
// the member starts, so that etcd has room to finish what it is doing and to
// start at all on a disk that something else filled to the last byte.

// DefaultMinFreeBytes leaves room for one more 64 MB WAL segment, which etcd
// allocates ahead, with as much again to spare.
const DefaultMinFreeBytes = 128 << 20

// DefaultDiskCheckInterval is how often the guard looks at the disk.
const DefaultDiskCheckInterval = 500 * time.Millisecond

// maxReserve caps the reserve: one WAL segment is what etcd needs to go on.
const maxReserve = 64 << 20

// ReserveFile is the reserve's name in the data dir.
const ReserveFile = "regd.reserve"

// DiskUsage is what the guard reads of the data dir's file system.
type DiskUsage struct {
	Free     int64 // bytes an unprivileged writer can still use
	ReadOnly bool  // the file system is mounted read-only
}

// StorageError says why this member refuses writes.
type StorageError struct {
	Dir string
	// Full: free space is under the minimum (Free, Min). Otherwise the data
	// dir cannot be written (Err).
	Full      bool
	Free, Min int64
	// Failed: the file system is read-only or failing (EROFS, EIO). etcd
	// stops at its next WAL write, and the member is not ready.
	Failed bool
	Err    error
}

func (e *StorageError) Error() string {
	if e.Full {
		return fmt.Sprintf("data dir %s has %s free, under the %s regd keeps free", e.Dir, mib(e.Free), mib(e.Min))
	}
	return fmt.Sprintf("data dir %s is not writable: %v", e.Dir, e.Err)
}

func (e *StorageError) Unwrap() error { return e.Err }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// StatDisk reads the file system usage of dir; it is statfs where there is
// one (see statfs_*.go).
func StatDisk(dir string) (DiskUsage, error) { return statDisk(dir) }

// ProbeDataDir writes and removes a one-byte file in dir: the cheapest
// write that fails the way etcd's would (EACCES, EROFS, EIO, and ENOSPC on a
// file system full to the last block).
func ProbeDataDir(dir string) error {
	f, err := os.CreateTemp(dir, ".regd-probe-*")
	if err != nil {
		return err
	}
	_, err = f.Write([]byte{0})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := os.Remove(f.Name()); err == nil {
		err = rerr
	}
	return err
}

// ReleaseReserve deletes the reserve file in dataDir and reports whether
// there was one.
func ReleaseReserve(dataDir string) bool {
	return os.Remove(filepath.Join(dataDir, ReserveFile)) == nil
}

// failedFS reports errors after which the file system takes no writes at
// all, open files included.
func failedFS(err error) bool {
	return errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EIO)
}

// guard is the disk guard of one member.
type guard struct {
	dir      string
	min      int64
	reserve  int64
	interval time.Duration
	stat     func(string) (DiskUsage, error)
	lg       *zap.Logger

	problem atomic.Pointer[StorageError]

	// Used by step only, one goroutine at a time.
	raised bool            // this guard raised this member's NOSPACE alarm
	alarms map[uint64]bool // the NOSPACE alarms last seen, by member
}

func newGuard(cfg Config) *guard {
	g := &guard{
		dir:      cfg.DataDir,
		min:      cfg.MinFreeBytes,
		interval: cfg.DiskCheckInterval,
		stat:     cfg.DiskStat,
		lg:       cfg.EventLogger,
	}
	if g.min == 0 {
		g.min = DefaultMinFreeBytes
	}
	g.reserve = min(g.min/2, maxReserve)
	if g.interval == 0 {
		g.interval = DefaultDiskCheckInterval
	}
	if g.stat == nil {
		g.stat = statDisk
	}
	if g.lg == nil {
		g.lg = zap.NewNop()
	}
	return g
}

func (g *guard) reservePath() string { return filepath.Join(g.dir, ReserveFile) }

func (g *guard) hasReserve() bool {
	fi, err := os.Stat(g.reservePath())
	return err == nil && fi.Size() >= g.reserve
}

// releaseReserve deletes the reserve file, if there is one.
func (g *guard) releaseReserve(why string) {
	err := os.Remove(g.reservePath())
	switch {
	case err == nil:
		g.lg.Warn("released the disk reserve so that etcd has room", zap.String("file", g.reservePath()), zap.String("size", mib(g.reserve)), zap.String("why", why))
	case !errors.Is(err, os.ErrNotExist):
		g.lg.Warn("could not delete the disk reserve", zap.String("file", g.reservePath()), zap.Error(err))
	}
}

// makeReserve allocates the reserve file's blocks (a sparse file would free
// nothing when deleted). On any error it leaves no partial file.
func (g *guard) makeReserve() error {
	tmp := g.reservePath() + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = allocate(f, g.reserve)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, g.reservePath())
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// check reads the disk and classifies it. A member that was short of space
// stays so until it has the minimum, a margin, and room to rebuild its
// reserve, so that it does not flap at the threshold.
// It also returns the usage it read, for the caller's reserve decision.
func (g *guard) check() (*StorageError, DiskUsage) {
	u, err := g.stat(g.dir)
	if err != nil {
		return &StorageError{Dir: g.dir, Err: err, Failed: failedFS(err)}, u
	}
	if u.ReadOnly {
		return &StorageError{Dir: g.dir, Err: syscall.EROFS, Failed: true}, u
	}
	if err := ProbeDataDir(g.dir); err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return &StorageError{Dir: g.dir, Full: true, Free: u.Free, Min: g.min, Err: err}, u
		}
		return &StorageError{Dir: g.dir, Err: err, Failed: failedFS(err)}, u
	}
	need := g.min
	if prev := g.problem.Load(); prev != nil && prev.Full {
		need += g.min/8 + g.reserve
	}
	if u.Free < need {
		return &StorageError{Dir: g.dir, Full: true, Free: u.Free, Min: g.min}, u
	}
	return nil, u
}

// prepare runs before etcd starts: a member restarting on a disk that is
// short of space gets the reserve's room to start in; one with room gets its
// reserve (again).
func (g *guard) prepare() {
	u, err := g.stat(g.dir)
	if err != nil {
		return
	}
	if u.Free < g.min {
		g.releaseReserve("the disk is short of space at start")
		return
	}
	if !g.hasReserve() && u.Free >= g.min+g.reserve {
		if err := g.makeReserve(); err != nil {
			g.lg.Info("no disk reserve", zap.String("file", g.reservePath()), zap.Error(err))
		}
	}
}

// run polls the disk until ctx ends; Start has taken the first look.
func (g *guard) run(ctx context.Context, n *Node) {
	t := time.NewTicker(g.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.step(ctx, n)
	}
}

// step is one look at the disk: log the transition, move the reserve, and
// bring this member's NOSPACE alarm in line.
func (g *guard) step(ctx context.Context, n *Node) {
	now, usage := g.check()
	prev := g.problem.Swap(now)
	switch {
	case now != nil && now.Full && (prev == nil || !prev.Full):
		g.releaseReserve("the disk is short of space")
		g.lg.Warn("data dir is short of space; refusing writes until space is freed",
			zap.String("data-dir", g.dir), zap.String("free", mib(now.Free)), zap.String("min-free", mib(g.min)))
	case now != nil && !now.Full && (prev == nil || prev.Full || prev.Failed != now.Failed):
		if now.Failed {
			g.lg.Error("data dir is read-only or failing; refusing writes, and etcd will stop at its next write to it",
				zap.String("data-dir", g.dir), zap.Error(now.Err))
		} else {
			g.lg.Error("data dir is not writable; refusing writes until it is", zap.String("data-dir", g.dir), zap.Error(now.Err))
		}
	case now == nil && prev != nil:
		g.lg.Info("data dir is writable and has space again; accepting writes", zap.String("data-dir", g.dir))
	}
	if now == nil && usage.Free >= g.min+g.reserve && !g.hasReserve() {
		if err := g.makeReserve(); err != nil {
			g.lg.Debug("could not write the disk reserve", zap.Error(err))
		}
	}
	switch {
	case now == nil:
		g.disarm(ctx, n)
	case !now.Failed:
		// A failed file system takes no WAL write, and raising the alarm
		// would be one: the member would stop on it and leave the alarm
		// behind for the rest of the cluster.
		g.raise(ctx, n)
	}
	g.watchAlarms(n)
}

// ownAlarm reports whether this member has a NOSPACE alarm in the cluster.
func ownAlarm(n *Node) bool {
	id := n.ID()
	for _, a := range n.etcd.Server.Alarms() {
		if a.MemberID == id && a.Alarm == pb.AlarmType_NOSPACE {
			return true
		}
	}
	return false
}

// setAlarm raises or clears this member's NOSPACE alarm through raft,
// bounded so that a member without a quorum keeps looking at its disk.
func setAlarm(ctx context.Context, n *Node, action pb.AlarmRequest_AlarmAction) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err := n.etcd.Server.Alarm(ctx, &pb.AlarmRequest{Action: action, MemberID: n.ID(), Alarm: pb.AlarmType_NOSPACE})
	return err
}

func (g *guard) raise(ctx context.Context, n *Node) {
	if ownAlarm(n) {
		// etcd's for its quota, or this guard's from before a restart:
		// not known to be ours, so disarm checks the quota first.
		return
	}
	if err := setAlarm(ctx, n, pb.AlarmRequest_ACTIVATE); err != nil {
		// No quorum, most likely; REST writes here are refused anyway, and
		// the next step tries again.
		g.lg.Debug("could not raise the NOSPACE alarm", zap.Error(err))
		return
	}
	g.raised = true
	g.lg.Warn("raised etcd's NOSPACE alarm: every member refuses writes until this member's disk is usable again",
		zap.String("member-id", fmt.Sprintf("%x", n.ID())))
}

// disarm clears this member's NOSPACE alarm once its disk has room again.
// An alarm this guard raised is cleared at once. Any other one of this
// member's is etcd's quota alarm, or this guard's from before a restart:
// it is cleared only when the database is clearly under the quota (etcd
// raises it when a request would take the database over, so the database
// is then within a request's size of the quota), that is after the
// operator's compact and defragment. If that was not enough, etcd raises
// it again at the next write.
func (g *guard) disarm(ctx context.Context, n *Node) {
	if !ownAlarm(n) {
		g.raised = false
		return
	}
	if !g.raised {
		quota := n.etcd.Server.Cfg.QuotaBackendBytes
		if quota == 0 {
			quota = storage.DefaultQuotaBytes
		}
		if quota > 0 && n.etcd.Server.Backend().Size() >= quota-max(quota/8, quotaMargin) {
			return
		}
	}
	if err := setAlarm(ctx, n, pb.AlarmRequest_DEACTIVATE); err != nil {
		g.lg.Debug("could not disarm the NOSPACE alarm", zap.Error(err))
		return
	}
	g.raised = false
	g.lg.Info("disarmed this member's NOSPACE alarm; writes resume", zap.String("member-id", fmt.Sprintf("%x", n.ID())))
}

// quotaMargin is more than the largest request etcd takes (1.5 MiB by
// default), so that a database refused for the quota is never under
// quota-quotaMargin.
const quotaMargin = 4 << 20

// watchAlarms logs each NOSPACE alarm in the cluster when it appears and
// when it goes, whichever member it is for and whoever raised it: etcd
// raises its quota alarm without a log line of its own, and a refused
// write's 503 storage_full points here.
func (g *guard) watchAlarms(n *Node) {
	now := map[uint64]bool{}
	for _, a := range n.etcd.Server.Alarms() {
		if a.Alarm == pb.AlarmType_NOSPACE {
			now[a.MemberID] = true
		}
	}
	for id := range now {
		if !g.alarms[id] {
			g.lg.Warn("etcd's NOSPACE alarm is raised: every member refuses writes (503 storage_full) until it is cleared",
				zap.String("for-member", n.MemberName(id)), zap.String("member-id", fmt.Sprintf("%x", id)))
		}
	}
	for id := range g.alarms {
		if !now[id] {
			g.lg.Info("etcd's NOSPACE alarm is cleared", zap.String("for-member", n.MemberName(id)), zap.String("member-id", fmt.Sprintf("%x", id)))
		}
	}
	g.alarms = now
}
