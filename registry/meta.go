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
type meta struct {
	Address      string            `json:"address"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	TTL          int64             `json:"ttl"`
	Lease        int64             `json:"lease"`
	RegisteredAt time.Time         `json:"registered_at"`
}

// instance is the API's view of a REST instance whose key is at rev.
func (m meta) instance(service, id string, rev int64) Instance {
	md := m.Metadata
	if md == nil {
		md = map[string]string{}
	}
	at := m.RegisteredAt
	return Instance{
		Service:      service,
		ID:           id,
		Address:      m.Address,
		Metadata:     md,
		TTL:          m.TTL,
		LeaseID:      FormatLease(m.Lease),
		RegisteredAt: &at,
		Revision:     rev,
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
	return m, true
}

// ownsLease reports whether the meta record says regd granted lease for
// this instance. regd revokes only leases it granted: a plain client's lease
// may hold other keys.
func ownsLease(metaKV *mvccpb.KeyValue, lease int64) bool {
	m, ok := decodeMeta(metaKV)
	return ok && m.describes(lease)
}
