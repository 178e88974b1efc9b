package registry

import (
	"encoding/json"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The gRPC naming mirror (contract v2, "Discovery for clients without a
// regd library"): with Options.NamingPrefix P set, every up instance is
// also the key P<service>/<id>, holding the endpoint JSON of etcd's gRPC
// naming, {"Op":0,"Addr":"host:port","Metadata":{...}}, which
// go.etcd.io/etcd/client/v3/naming/resolver watches: a Go gRPC client
// dialing "etcd:///P<service>" follows the registry without a regd library.
//
// The mirror key is written by the same transactions as the instance and
// on the instance's own lease:
//   - a registration puts it (status up) or deletes it (any other status);
//   - a PATCH puts it again (up: the address and the metadata as they are
//     now) or deletes it (draining, out_of_service);
//   - a deregistration deletes it;
//   - an expiry deletes it with the lease, in the same revision as the
//     instance key: etcd does that, nothing of regd has to run.
//
// The mirror is never an instance to regd: P may overlap neither the
// registry prefix nor InternalPrefix (the command checks it), so
// Keys.ParseInstance never matches a mirror key, and the view and the
// expiry ledger, which read only instance keys, meta records and lease
// markers, drop its events (decodeChanges) even where P sorts inside
// Keys.HistoryRange. Keys a plain etcd client writes under the registry
// prefix get no mirror: regd writes it only in its own transactions.

// namingUpdate is etcd's gRPC naming endpoint as its endpoints manager
// writes it (naming/endpoints/internal.Update): Op 0 is "add".
type namingUpdate struct {
	Op       uint8             `json:"Op"`
	Addr     string            `json:"Addr"`
	Metadata map[string]string `json:"Metadata"`
}

// NamingEndpoint is the mirror key of an instance: <NamingPrefix><service>/<id>.
// Only meaningful when NamingPrefix is set.
func (k Keys) NamingEndpoint(service, id string) string {
	return k.NamingPrefix + service + "/" + id
}

// NamingValue is the mirror key's value for an instance at addr with
// metadata md: etcd's naming endpoint JSON, Metadata always an object.
func NamingValue(addr string, md map[string]string) string {
	if md == nil {
		md = map[string]string{}
	}
	b, _ := json.Marshal(namingUpdate{Addr: addr, Metadata: md}) // strings only: never fails
	return string(b)
}

// mirror is the operation that brings the instance's mirror key in line
// with its state, for the transaction that writes that state: a put on
// the instance's lease while it is up, a delete otherwise. None without a
// NamingPrefix.
func (s *Store) mirror(service, id, addr, status string, md map[string]string, lease int64) []clientv3.Op {
	if s.keys.NamingPrefix == "" {
		return nil
	}
	key := s.keys.NamingEndpoint(service, id)
	if status != StatusUp && status != "" {
		return []clientv3.Op{clientv3.OpDelete(key)}
	}
	return []clientv3.Op{clientv3.OpPut(key, NamingValue(addr, md), clientv3.WithLease(clientv3.LeaseID(lease)))}
}

// mirrorDelete is the deregistration's part: the mirror key goes with the
// instance key, in the same transaction.
func (s *Store) mirrorDelete(service, id string) []clientv3.Op {
	if s.keys.NamingPrefix == "" {
		return nil
	}
	return []clientv3.Op{clientv3.OpDelete(s.keys.NamingEndpoint(service, id))}
}

// NamingPrefixOverlap reports why p cannot be the mirror's prefix beside
// the registry prefix: the two, or p and InternalPrefix, must not be
// prefixes of one another, or a mirror key could be read as an instance or
// as regd's bookkeeping. "" when p is fine.
func NamingPrefixOverlap(p, registryPrefix string) string {
	switch {
	case strings.HasPrefix(p, registryPrefix) || strings.HasPrefix(registryPrefix, p):
		return "overlaps the registry prefix " + quote(registryPrefix) + " (--prefix)"
	case strings.HasPrefix(p, InternalPrefix) || strings.HasPrefix(InternalPrefix, p):
		return "overlaps regd's internal keyspace " + quote(InternalPrefix)
	}
	return ""
}
