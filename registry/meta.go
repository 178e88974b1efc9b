package registry

import (
	"encoding/json"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// meta is the bookkeeping record stored beside each REST-registered
// instance under Keys.Meta, without a lease. Lease says which lease regd
// granted the instance: the record describes the key only while the key is
// on that lease, and regd revokes only leases it granted.
//
// Status and Weight are the instance's lifecycle (absent: StatusUp,
// DefaultWeight, which is also what records of older regd versions mean).
// A PATCH rewrites the record alone, never the instance key: the lease,
// the address and what plain etcd clients see stay as they are.
type meta struct {
	Address      string            `json:"address"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	TTL          int64             `json:"ttl"`
	Lease        int64             `json:"lease"`
	RegisteredAt time.Time         `json:"registered_at"`
	Status       string            `json:"status,omitempty"` // "": StatusUp
	Weight       *int64            `json:"weight,omitempty"` // nil: DefaultWeight
	// Check is the instance's health check (check.go), Health what its
	// owner last published (check_store.go); nil: none, not yet.
	Check  *Check  `json:"check,omitempty"`
	Health *Health `json:"health,omitempty"`

	rev int64 // the record's ModRevision, when read from etcd
}

// noMetadata is the Metadata of every instance without any: one empty map
// for all of them instead of one each (a million instances would hold 48
// MB of empty maps). Instances are read-only once built, like this map.
var noMetadata = map[string]string{}

// instance is the API's view of a REST instance whose key is at keyRev:
// its revision is that of its last registration or update, whichever
// wrote last (the key, or this record).
func (m meta) instance(service, id string, keyRev int64) Instance {
	md := m.Metadata
	if len(md) == 0 {
		md = noMetadata
	}
	at := m.RegisteredAt
	// Only regd writes these records; anything else in them (another
	// program's write) reads as the defaults.
	status := m.Status
	if !validStatus(status) {
		status = StatusUp
	}
	weight := DefaultWeight
	if m.Weight != nil && *m.Weight >= 0 && *m.Weight <= MaxWeight {
		weight = int(*m.Weight)
	}
	inst := Instance{
		Service:      service,
		ID:           id,
		Address:      m.Address,
		Metadata:     md,
		Status:       status,
		Weight:       weight,
		TTL:          m.TTL,
		LeaseID:      FormatLease(m.Lease),
		RegisteredAt: &at,
		Revision:     max(keyRev, m.rev),
	}
	if m.Check != nil && m.Check.valid() {
		c := *m.Check
		inst.Check = &c
		if m.Health != nil {
			h := *m.Health
			inst.Health = &h
		}
	}
	return inst
}

// setLifecycle stores status and weight, leaving the defaults out of the
// record (absent means the default, as in records of older versions).
func (m *meta) setLifecycle(status string, weight int64) {
	m.Status, m.Weight = "", nil
	if status != StatusUp {
		m.Status = status
	}
	if weight != DefaultWeight {
		m.Weight = &weight
	}
}

// describes reports whether m is the record of a key on lease: regd wrote
// both in one registration.
func (m meta) describes(lease int64) bool { return lease != 0 && m.Lease == lease }

func decodeMeta(kv *mvccpb.KeyValue) (meta, bool) {
	if kv == nil {
		return meta{}, false
	}
	var m meta
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		return meta{}, false
	}
	m.rev = kv.ModRevision
	return m, true
}

// ownsLease reports whether the meta record says regd granted lease for
// this instance. regd revokes only leases it granted: a plain client's lease
// may hold other keys.
func ownsLease(metaKV *mvccpb.KeyValue, lease int64) bool {
	m, ok := decodeMeta(metaKV)
	return ok && m.describes(lease)
}
