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
	metaRoot   = InternalPrefix + "meta/"   // meta/<service>/<id>: JSON, no lease
	deregRoot  = InternalPrefix + "dereg/"  // dereg/<lease hex>/<service>/<id>: deregistration marker
	expiryRoot = InternalPrefix + "expiry/" // cursor and ledger of the expiry reporter
)

// Keys computes etcd keys for one registry prefix.
type Keys struct {
	Prefix string // e.g. "/service/", always ending in "/"
}

// Instance is the contract's key: <prefix><service>/<id>.
func (k Keys) Instance(service, id string) string { return k.Prefix + service + "/" + id }

// Service is the range of one service's instances. The trailing slash keeps
// "user" from matching "user-b".
func (k Keys) Service(service string) string { return k.Prefix + service + "/" }

// Meta holds the instance's metadata, granted TTL and registration time.
// It is not attached to the lease: it outlives an expiry until the expiry
// reporter has consumed it, which lets the reporter reconcile after history
// was compacted.
func (k Keys) Meta(service, id string) string { return metaRoot + service + "/" + id }

// MetaService is the range of one service's metadata.
func (k Keys) MetaService(service string) string { return metaRoot + service + "/" }

// MetaAll is the range of all metadata.
func (k Keys) MetaAll() string { return metaRoot }

// Dereg marks that the deletion of service/id under lease was a REST
// deregistration. It is written in the same transaction as the delete, so
// its ModRevision equals the delete's revision.
func (k Keys) Dereg(lease int64, service, id string) string {
	return fmt.Sprintf("%s%016x/%s/%s", deregRoot, uint64(lease), service, id)
}

// DeregAll is the range of all deregistration markers.
func (k Keys) DeregAll() string { return deregRoot }

// ExpiryCursor holds the last revision the expiry reporter has consumed.
func (k Keys) ExpiryCursor() string { return expiryRoot + "cursor" }

// ExpiryLog is the range of the expiry ledger.
func (k Keys) ExpiryLog() string { return expiryRoot + "log/" }

// ExpiryEntry is one ledger entry. The zero-padded revision makes key order
// revision order, and makes a replayed report land on the same key.
func (k Keys) ExpiryEntry(rev int64, service, id string) string {
	return fmt.Sprintf("%s%020d/%s/%s", k.ExpiryLog(), rev, service, id)
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
