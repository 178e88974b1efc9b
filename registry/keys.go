package registry

import (
	"fmt"
	"strconv"
	"strings"
)

// Bookkeeping lives under InternalPrefix, never under the registry prefix,
// so a plain etcd client watching the prefix sees nothing but instances.
// --prefix is validated not to overlap it.
const InternalPrefix = "/_regd/"

const (
	leaseRoot  = InternalPrefix + "lease/"  // lease/<lease %016x>: marker, attached to that lease
	metaRoot   = InternalPrefix + "meta/"   // meta/<service>/<id>: JSON, no lease
	expiryRoot = InternalPrefix + "expiry/" // cursor and ledger of the expiry reporter
	// observeRoot holds the drain handshake's requests and acks
	// (observe.go): observe/<nonce> and observe/<nonce>/<member %016x>,
	// on the request's own short lease.
	observeRoot = InternalPrefix + "observe/"
	// legacyDeregRoot held the deregistration markers of regd before the
	// lease markers; nothing reads them any more, the reporter removes
	// what an old data dir still holds.
	legacyDeregRoot = InternalPrefix + "dereg/"
)

// Keys computes etcd keys for one registry prefix.
type Keys struct {
	Prefix string // e.g. "/service/", always ending in "/"
	// NamingPrefix is the gRPC naming mirror's prefix (naming.go); ""
	// when the mirror is off.
	NamingPrefix string
}

// Instance is the contract's key: <prefix><service>/<id>.
func (k Keys) Instance(service, id string) string { return k.Prefix + service + "/" + id }

// Service is the range of one service's instances. The trailing slash keeps
// "user" from matching "user-b".
func (k Keys) Service(service string) string { return k.Prefix + service + "/" }

// Meta holds the instance's metadata, granted TTL and registration time.
// It is not attached to the lease: it outlives an expiry until the expiry
// reporter has consumed it, which lets the reporter reconcile after history
// was compacted (cluster/DESIGN.md).
func (k Keys) Meta(service, id string) string { return metaRoot + service + "/" + id }

// MetaAll is the range of all metadata.
func (k Keys) MetaAll() string { return metaRoot }

// LeaseMarker is the marker attached to lease: an empty key that etcd
// deletes in the same revision as every other key of the lease when the
// lease expires or is revoked. Seeing it deleted together with an instance
// key is how the registry knows, from history alone, that the instance's
// lease ended there (cluster/DESIGN.md, "Why a key disappeared").
func (k Keys) LeaseMarker(lease int64) string {
	return fmt.Sprintf("%s%016x", leaseRoot, uint64(lease))
}

// LeaseMarkers is the range of all lease markers.
func (k Keys) LeaseMarkers() string { return leaseRoot }

// parseLeaseMarker returns the lease a marker key names.
func parseLeaseMarker(key string) (int64, bool) {
	hex, ok := strings.CutPrefix(key, leaseRoot)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	id, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		return 0, false
	}
	return int64(id), true
}

// ObserveRequest is a drain handshake's request: written in the same
// transaction as the change it observes, so every member's view sees it
// with that change (observe.go).
func (k Keys) ObserveRequest(nonce string) string { return observeRoot + nonce }

// ObserveAck is one member's answer to a drain handshake's request.
func (k Keys) ObserveAck(nonce string, member uint64) string {
	return fmt.Sprintf("%s%s/%016x", observeRoot, nonce, member)
}

// ExpiryCursor holds the last revision the expiry reporter has consumed.
func (k Keys) ExpiryCursor() string { return expiryRoot + "cursor" }

// ExpiryLog is the range of the expiry ledger.
func (k Keys) ExpiryLog() string { return expiryRoot + "log/" }

// ExpiryEntry is one ledger entry. The zero-padded revision makes key order
// revision order, and makes a replayed report land on the same key.
func (k Keys) ExpiryEntry(rev int64, service, id string) string {
	return fmt.Sprintf("%s%020d/%s/%s", k.ExpiryLog(), rev, service, id)
}

// HistoryRange is the one contiguous key range [lo, hi) that the view and
// the expiry reporter watch: the registry prefix, the meta records, the
// lease markers and the drain handshake's keys (which only the view reads;
// they are no change to the registry, and the ledger skips them). One watch over one range delivers all of a revision's
// changes to these keys in one response, which is what lets a deletion be
// classified by the other events of its own revision. Keys of other
// programs that sort in between arrive too and are ignored.
func (k Keys) HistoryRange() (lo, hi string) {
	lo, hi = k.Prefix, prefixEnd(k.Prefix)
	for _, p := range []string{leaseRoot, metaRoot, observeRoot} {
		lo = min(lo, p)
		hi = max(hi, prefixEnd(p))
	}
	return lo, hi
}

// prefixEnd is the end of the range of keys starting with p (as clientv3's
// GetPrefixRangeEnd; p is never empty or all 0xff here).
func prefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return "\x00"
}

// ParseInstance splits an etcd key under the prefix into service and id. It
// reports false for keys that do not follow the layout (written by plain
// clients): those are not instances and are skipped, never a crash.
func (k Keys) ParseInstance(key string) (service, id string, ok bool) {
	rest, found := strings.CutPrefix(key, k.Prefix)
	if !found {
		return "", "", false
	}
	service, id, found = strings.Cut(rest, "/")
	if !found || !validName(service) || !validName(id) {
		return "", "", false
	}
	return service, id, true
}

// FormatLease renders a lease ID the way the API shows it: decimal.
func FormatLease(id int64) string { return strconv.FormatInt(id, 10) }
