package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// Automatic defragmentation. Compaction (cluster/compactor.go) frees pages
// inside the bbolt file, which bbolt reuses before it grows the file; but
// the file, and with it the size etcd's quota is checked against
// (DBSize), only shrinks when the member defragments. So every member runs
// a Maintenance loop that defragments itself when that is worth it, under
// rules that keep it off the hot path:
//
//   - Worth it: the free pages are at least an eighth of the quota
//     (DefragFreeFraction). Then a defragmentation gives back at least that
//     much room under the quota; less is not worth a pause.
//   - One member at a time: a member takes the cluster-wide lock
//     /_regd/defrag/lock (an etcd mutex on a session lease, so a member
//     that dies releases it within the session TTL) before it starts, and
//     releases it when done. A defragmenting member answers no request
//     until it is done (etcd blocks its backend), so two at once could take
//     a quorum away.
//   - The leader last, and not as the leader: a leader that holds the lock
//     first hands leadership to a started voting member (etcd's
//     move-leader, no election), then defragments as a follower. Holding
//     the lock while it moves leadership keeps two members from handing
//     leadership back and forth. A single-member cluster defragments in
//     place.
//   - Under a NOSPACE alarm the lock cannot be taken (etcd refuses lease
//     grants and puts), yet that is when a defragmentation is needed to get
//     under the quota again. Members then take turns by the clock instead:
//     member k of n (by ID) may start only in the 10 s slots where
//     unix-seconds/10 mod n == k. A defragmentation of a database of a few
//     hundred MiB takes well under a slot.

// Defaults of MaintenanceConfig.
const (
	DefaultMaintenanceInterval = 5 * time.Second
	// DefragFreeFraction: a member defragments when its free pages are
	// at least quota/DefragFreeFraction bytes.
	DefragFreeFraction = 8
	defragLockKey      = "/_regd/defrag/lock"
	defragSessionTTL   = 30 // seconds
	defragSlot         = 10 * time.Second
)

// MaintenanceConfig configures RunMaintenance.
type MaintenanceConfig struct {
	// Interval is how often the member looks at its database and the
	// alarms; 0: DefaultMaintenanceInterval.
	Interval time.Duration
	// MinFree is the free space (bytes) that makes a defragmentation
	// worth it; 0: Quota()/DefragFreeFraction.
	MinFree int64
	Logger  *zap.Logger
	// OnDefrag is told about every defragmentation that finished, for
	// metrics.
	OnDefrag func(took time.Duration, before, after int64)
}

// RunMaintenance defragments this member when it is worth it (see above)
// and logs every alarm other than NOSPACE (the disk guard logs that one)
// when it appears and goes, until ctx ends.
func (n *Node) RunMaintenance(ctx context.Context, cfg MaintenanceConfig) {
	if cfg.Interval == 0 {
		cfg.Interval = DefaultMaintenanceInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	m := &maintainer{n: n, cfg: cfg, lg: cfg.Logger, alarms: map[Alarm]bool{}}
	defer m.closeSession()
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		m.logAlarms()
		m.maybeDefrag(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type maintainer struct {
	n       *Node
	cfg     MaintenanceConfig
	lg      *zap.Logger
	session *concurrency.Session
	alarms  map[Alarm]bool
}

func (m *maintainer) minFree() int64 {
	if m.cfg.MinFree > 0 {
		return m.cfg.MinFree
	}
	return m.n.Quota() / DefragFreeFraction
}

// logAlarms logs alarms as they appear and go. NOSPACE is the disk guard's
// to log when there is a guard.
func (m *maintainer) logAlarms() {
	now := map[Alarm]bool{}
	for _, a := range m.n.Alarms() {
		if a.Type == pb.AlarmType_NOSPACE.String() && m.n.guard != nil {
			continue
		}
		now[a] = true
		if !m.alarms[a] {
			m.lg.Error("etcd alarm raised", zap.String("alarm", a.Type), zap.String("for-member", m.n.MemberName(a.MemberID)), zap.String("member-id", fmt.Sprintf("%x", a.MemberID)))
		}
	}
	for a := range m.alarms {
		if !now[a] {
			m.lg.Info("etcd alarm cleared", zap.String("alarm", a.Type), zap.String("for-member", m.n.MemberName(a.MemberID)), zap.String("member-id", fmt.Sprintf("%x", a.MemberID)))
		}
	}
	m.alarms = now
}

func (m *maintainer) worth() bool {
	return m.n.DBSize()-m.n.DBSizeInUse() >= m.minFree()
}

func (m *maintainer) maybeDefrag(ctx context.Context) {
	if !m.worth() || m.n.Leader() == 0 {
		return
	}
	if m.spaceAlarm() {
		if m.mySlot(time.Now()) {
			m.defrag(ctx, "in this member's turn under a NOSPACE alarm")
		}
		return
	}
	unlock, err := m.lock(ctx)
	if err != nil {
		if ctx.Err() == nil {
			m.lg.Debug("defragmentation lock not taken", zap.Error(err))
		}
		return
	}
	defer unlock()
	if m.n.IsLeader() {
		if to, ok := m.transferee(); ok {
			mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := m.n.MoveLeader(mctx, to)
			cancel()
			if err != nil {
				m.lg.Warn("could not hand leadership over before defragmenting; trying again later", zap.Error(err))
				return
			}
			m.lg.Info("handed leadership over to defragment as a follower", zap.String("to", fmt.Sprintf("%x", to)))
		}
	}
	m.defrag(ctx, "holding the cluster's defragmentation lock")
}

func (m *maintainer) spaceAlarm() bool {
	for _, a := range m.n.Alarms() {
		if a.Type == pb.AlarmType_NOSPACE.String() {
			return true
		}
	}
	return false
}

// mySlot reports whether now is in this member's turn: members take 10 s
// turns in the order of their IDs.
func (m *maintainer) mySlot(now time.Time) bool {
	var ids []uint64
	for _, mem := range m.n.Members() {
		ids = append(ids, mem.ID)
	}
	slices.Sort(ids)
	k := slices.Index(ids, m.n.ID())
	if k < 0 || len(ids) == 0 {
		return false
	}
	return int(now.Unix()/int64(defragSlot/time.Second))%len(ids) == k
}

// transferee is a started voting member other than this one.
func (m *maintainer) transferee() (uint64, bool) {
	for _, mem := range m.n.Members() {
		if mem.ID != m.n.ID() && !mem.IsLearner && mem.Started() {
			return mem.ID, true
		}
	}
	return 0, false
}

func (m *maintainer) lock(ctx context.Context) (func(), error) {
	if m.session != nil {
		select {
		case <-m.session.Done():
			m.session = nil
		default:
		}
	}
	if m.session == nil {
		s, err := concurrency.NewSession(m.n.client, concurrency.WithTTL(defragSessionTTL), concurrency.WithContext(ctx))
		if err != nil {
			return nil, err
		}
		m.session = s
	}
	mu := concurrency.NewMutex(m.session, defragLockKey)
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := mu.TryLock(lctx); err != nil {
		if errors.Is(err, concurrency.ErrLocked) {
			return nil, errors.New("another member is defragmenting")
		}
		return nil, err
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = mu.Unlock(uctx) // the session's lease releases it otherwise
	}, nil
}

func (m *maintainer) closeSession() {
	if m.session != nil {
		m.session.Orphan() // the lease runs out; revoking could outlive the member
		m.session = nil
	}
}

func (m *maintainer) defrag(ctx context.Context, why string) {
	before, inUse := m.n.DBSize(), m.n.DBSizeInUse()
	began := time.Now()
	if err := m.n.Defragment(); err != nil {
		if ctx.Err() == nil {
			m.lg.Warn("defragmentation failed", zap.Error(err))
		}
		return
	}
	took := time.Since(began)
	after := m.n.DBSize()
	m.lg.Info("defragmented the backend database",
		zap.String("why", why),
		zap.Int64("size-before-bytes", before), zap.Int64("in-use-before-bytes", inUse),
		zap.Int64("size-after-bytes", after), zap.Duration("took", took))
	if m.cfg.OnDefrag != nil {
		m.cfg.OnDefrag(took, before, after)
	}
}
