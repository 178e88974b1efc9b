package registry

import (
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// KeyState is an instance key as it stood at one revision.
type KeyState struct {
	Address     string // the address ParseValue read; "" when Valid is false
	Valid       bool   // the value is an instance value (ParseValue)
	Lease       int64  // 0: no lease
	ModRevision int64
}

// InstanceChange is one change, at one revision, to a key under the prefix
// that is named like an instance (Keys.ParseInstance).
type InstanceChange struct {
	Service, ID string
	Deleted     bool
	Now         KeyState // after a put; zero after a delete
	// Prev is the key before the change: nil when it did not exist, or
	// when etcd's history no longer holds it (a compaction passed it).
	Prev *KeyState

	pos int // the change's place among the revision's events, as etcd applied them
}

// Changes is what one etcd revision did to the keys the registry watches
// (Keys.HistoryRange): its instance changes in the order etcd applied
// them, the lease markers deleted and written, and the meta records.
type Changes struct {
	Revision  int64
	Instances []InstanceChange
	// EndedLeases are the leases whose marker was deleted at Revision:
	// etcd deletes a lease's keys, marker included, in one revision when
	// the lease expires or is revoked.
	EndedLeases map[int64]bool
	// MarkedLeases are the leases whose marker was written at Revision.
	MarkedLeases map[int64]bool
	// EndCauses says why an ended lease ended, when the marker said so
	// before it was deleted (Store.EndLease: a failed health check);
	// absent: its TTL ran out (ExpiryCauseTTL).
	EndCauses map[int64]LeaseEnd

	metaPut map[string]meta // "service/id" → record written at Revision
	metaDel map[string]bool // "service/id" → record deleted at Revision
	// metaOrder are the keys of metaPut in the order etcd applied them,
	// with their places among the revision's events: the order of
	// update events (never a map's).
	metaOrder []metaWrite

	// The drain handshake's requests and acks written at Revision
	// (observe.go); no change to the registry.
	observeReqs []observeRequest
	observeAcks []observeAck
}

// metaWrite is one meta record written at a revision.
type metaWrite struct {
	key string // "service/id"
	pos int
}

// relevant reports whether the revision touched anything of the registry's:
// instance keys, lease markers, meta records. Other keys that sort into the
// watched range (other programs', and, for prefixes below /_regd/, the
// ledger's own) do not count.
func (c Changes) relevant() bool {
	return len(c.Instances) > 0 || len(c.EndedLeases) > 0 || len(c.MarkedLeases) > 0 || len(c.metaPut) > 0 || len(c.metaDel) > 0
}

// Cause says why an instance left the registry.
type Cause int

// The causes. Only CauseExpired is reported in the expiry ledger.
const (
	// CauseDeleted: the key was deleted explicitly (a REST deregistration,
	// a plain client's delete), or overwritten with a value that is no
	// instance.
	CauseDeleted Cause = iota + 1
	// CauseExpired: the instance's lease ended at this revision: it ran
	// out, or a plain client revoked it (the two look the same in etcd).
	CauseExpired
)

func (c Cause) String() string {
	switch c {
	case CauseDeleted:
		return "deleted"
	case CauseExpired:
		return "expired"
	}
	return "unknown"
}

// Removal is an instance that left the registry at a revision, and why.
type Removal struct {
	Service, ID string
	Address     string // its address before it left
	Lease       int64  // its lease before it left; 0: none
	Cause       Cause
	// End is why the lease ended, for CauseExpired.
	End LeaseEnd
}

// Classify is the deletion rule, the one place that decides why instances
// left the registry at one revision, from that revision's events alone:
//
//   - an instance key deleted at revision R whose lease L ended at R (the
//     marker of L is deleted at R too) expired;
//   - any other deletion of an instance key is explicit: its lease was not
//     touched at R (REST deregistrations revoke the lease afterwards, in a
//     later revision), or it had none;
//   - an instance key overwritten with a value that is no instance left the
//     registry explicitly too; one overwritten with another instance value
//     (another address, another lease) did not leave.
//
// Keys that were not instances before (no Prev, or a Prev whose value is
// no instance) left nothing. Classify reads nothing: the view and the
// expiry ledger call it with the revision's Changes, Prev filled from
// history (or, in the view, from what it last published).
func Classify(c Changes) []Removal {
	var out []Removal
	for _, ic := range c.Instances {
		if ic.Prev == nil || !ic.Prev.Valid {
			continue
		}
		if !ic.Deleted && ic.Now.Valid {
			continue
		}
		r := Removal{Service: ic.Service, ID: ic.ID, Address: ic.Prev.Address, Lease: ic.Prev.Lease, Cause: CauseDeleted}
		if ic.Deleted && ic.Prev.Lease != 0 && c.EndedLeases[ic.Prev.Lease] {
			r.Cause = CauseExpired
			r.End = c.EndCauses[ic.Prev.Lease]
			if r.End.Cause == "" {
				r.End.Cause = ExpiryCauseTTL
			}
		}
		out = append(out, r)
	}
	return out
}

// keyState reads an etcd key-value as an instance key.
func keyState(kv *mvccpb.KeyValue) KeyState {
	addr, ok := ParseValue(kv.Value)
	return KeyState{Address: addr, Valid: ok, Lease: kv.Lease, ModRevision: kv.ModRevision}
}

// decodeChanges turns one revision's watch events into Changes. Events of
// keys outside the registry's layout (other programs' keys that sort into
// the watched range, badly named keys under the prefix) are dropped.
func (k Keys) decodeChanges(rev int64, evs []*clientv3.Event) Changes {
	c := Changes{Revision: rev}
	for pos, ev := range evs {
		key := string(ev.Kv.Key)
		del := ev.Type == clientv3.EventTypeDelete
		if lease, ok := parseLeaseMarker(key); ok {
			if del {
				c.EndedLeases = setAdd(c.EndedLeases, lease)
				if end, ok := decodeLeaseEnd(ev.PrevKv); ok {
					if c.EndCauses == nil {
						c.EndCauses = make(map[int64]LeaseEnd)
					}
					c.EndCauses[lease] = end
				}
			} else {
				c.MarkedLeases = setAdd(c.MarkedLeases, lease)
			}
			continue
		}
		if rest, ok := strings.CutPrefix(key, observeRoot); ok {
			if !del {
				c.decodeObserve(rest, ev.Kv)
			}
			continue
		}
		if rest, ok := strings.CutPrefix(key, metaRoot); ok {
			if del {
				c.metaDel = setAdd(c.metaDel, rest)
			} else if m, ok := decodeMeta(ev.Kv); ok {
				if c.metaPut == nil {
					c.metaPut = make(map[string]meta)
				}
				c.metaPut[rest] = m
				c.metaOrder = append(c.metaOrder, metaWrite{key: rest, pos: pos})
			}
			continue
		}
		svc, id, ok := k.ParseInstance(key)
		if !ok {
			continue
		}
		ic := InstanceChange{Service: svc, ID: id, Deleted: del, pos: pos}
		if !del {
			ic.Now = keyState(ev.Kv)
		}
		if ev.PrevKv != nil {
			prev := keyState(ev.PrevKv)
			ic.Prev = &prev
		}
		c.Instances = append(c.Instances, ic)
	}
	return c
}

func setAdd[K comparable](m map[K]bool, k K) map[K]bool {
	if m == nil {
		m = make(map[K]bool)
	}
	m[k] = true
	return m
}

// splitRevisions calls f for each revision's events in evs, in order. A
// watch response never splits a revision (etcd batches whole revisions).
func splitRevisions(evs []*clientv3.Event, f func(rev int64, evs []*clientv3.Event)) {
	for i := 0; i < len(evs); {
		j := i
		for j < len(evs) && evs[j].Kv.ModRevision == evs[i].Kv.ModRevision {
			j++
		}
		f(evs[i].Kv.ModRevision, evs[i:j])
		i = j
	}
}
