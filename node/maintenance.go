package node

import (
	"context"
	"fmt"
	"io"
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/storage"
)

// DBSize is the size of this member's backend database in bytes: bbolt's
// high-water mark of pages, free ones included. etcd's quota compares this
// number (plus the request's size) against --quota-backend-bytes; only a
// defragmentation lowers it.
func (n *Node) DBSize() int64 { return n.etcd.Server.Backend().Size() }

// DBSizeInUse is the part of DBSize that holds data: what compaction
// lowers (the freed pages are reused before the file grows).
func (n *Node) DBSizeInUse() int64 { return n.etcd.Server.Backend().SizeInUse() }

// Quota is the backend quota in bytes (--quota-backend-bytes, or etcd's
// default of 2 GiB).
func (n *Node) Quota() int64 {
	if q := n.etcd.Server.Cfg.QuotaBackendBytes; q > 0 {
		return q
	}
	return storage.DefaultQuotaBytes
}

// Alarm is one raised etcd alarm: its type (NOSPACE, CORRUPT) and the
// member it was raised for.
type Alarm struct {
	Type     string
	MemberID uint64
}

// Alarms lists the cluster's raised alarms, as this member has applied
// them, sorted by type then member.
func (n *Node) Alarms() []Alarm {
	var out []Alarm
	for _, a := range n.etcd.Server.Alarms() {
		if a.Alarm == pb.AlarmType_NONE {
			continue
		}
		out = append(out, Alarm{Type: a.Alarm.String(), MemberID: a.MemberID})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Type != out[j].Type {
			return out[i].Type < out[j].Type
		}
		return out[i].MemberID < out[j].MemberID
	})
	return out
}

// AlarmTypes are the alarm types etcd raises, for metrics that show each
// one, raised or not.
var AlarmTypes = []string{pb.AlarmType_NOSPACE.String(), pb.AlarmType_CORRUPT.String()}

// Snapshot streams a consistent snapshot of this member's backend, in the
// format of `etcdctl snapshot save` (the bbolt file followed by its
// SHA-256, which `etcdutl snapshot restore` checks). The caller closes it.
func (n *Node) Snapshot(ctx context.Context) (io.ReadCloser, error) {
	return n.client.Snapshot(ctx)
}

// Defragment rewrites this member's backend without its free pages, as
// `etcdctl defrag` makes etcd do. The member serves no request while it
// runs; it cannot be interrupted.
func (n *Node) Defragment() error { return n.etcd.Server.Defragment() }

// MoveLeader hands leadership to member to; it must be called on the
// leader.
func (n *Node) MoveLeader(ctx context.Context, to uint64) error {
	if err := n.etcd.Server.MoveLeader(ctx, n.Leader(), to); err != nil {
		return fmt.Errorf("move leadership to %x: %w", to, err)
	}
	return nil
}
