package registry

import (
	"slices"
	"strings"
)

// Instance statuses (contract v2, "Instance lifecycle"). Discovery views
// (lists, blocking queries, watch streams) show only StatusUp instances
// unless a Filter asks for others.
const (
	// StatusUp: takes traffic. The default, and the status of every key
	// a plain etcd client wrote.
	StatusUp = "up"
	// StatusDraining: finishing its work before it stops; no new
	// traffic.
	StatusDraining = "draining"
	// StatusOutOfService: registered, but taken out of rotation (Eureka's
	// OUT_OF_SERVICE, Consul's maintenance mode).
	StatusOutOfService = "out_of_service"
	// StatusAny is no status but a filter: every instance, whatever its
	// status.
	StatusAny = "any"
)

// Weight bounds (contract v2): a relative share of traffic, as in DNS SRV
// records (RFC 2782); 0 means "only when nothing else is there".
const (
	DefaultWeight = 100
	MaxWeight     = 10000
)

// validStatus reports whether s is an instance status.
func validStatus(s string) bool {
	return s == StatusUp || s == StatusDraining || s == StatusOutOfService
}

// MaxMetaFilters bounds the metadata terms of one Filter, as
// MaxMetadataPairs bounds an instance's metadata: more terms than an
// instance can have pairs cannot all match distinct keys.
const MaxMetaFilters = MaxMetadataPairs

// MetaMatch is one metadata term of a Filter: the instance's metadata has
// Key, with exactly Value.
type MetaMatch struct{ Key, Value string }

// Filter selects the instances a discovery view shows: by status and by
// metadata, every term must match. The zero Filter is the default view:
// up instances, any metadata.
type Filter struct {
	// Status: "" or StatusUp (up only), StatusDraining,
	// StatusOutOfService, or StatusAny.
	Status string
	// Meta terms, all of which must match; sorted by key then value
	// (NewFilter sorts them) so that equal filters compare equal.
	Meta []MetaMatch
}

// NewFilter checks and builds a filter: status "" means up; meta terms
// may repeat a key (then with different values nothing matches: all must
// match). Errors are KindInvalid with CodeInvalidParameter; param names
// the query parameter for the message ("status", "meta.zone").
func NewFilter(status string, meta []MetaMatch) (Filter, error) {
	if status != "" && status != StatusAny && !validStatus(status) {
		return Filter{}, Errorf(KindInvalid, CodeInvalidParameter, "status %s must be up, draining, out_of_service or any", quote(status))
	}
	if len(meta) > MaxMetaFilters {
		return Filter{}, Errorf(KindInvalid, CodeInvalidParameter, "%d metadata filters; at most %d are allowed", len(meta), MaxMetaFilters)
	}
	for _, m := range meta {
		if err := validateMetaKey(m.Key); err != nil {
			return Filter{}, Errorf(KindInvalid, CodeInvalidParameter, "metadata filter meta.%s: %s", quote(m.Key), err)
		}
	}
	f := Filter{Status: status}
	if status == StatusUp {
		f.Status = ""
	}
	if len(meta) > 0 {
		f.Meta = slices.Clone(meta)
		slices.SortFunc(f.Meta, func(a, b MetaMatch) int {
			if c := strings.Compare(a.Key, b.Key); c != 0 {
				return c
			}
			return strings.Compare(a.Value, b.Value)
		})
		f.Meta = slices.Compact(f.Meta)
	}
	return f, nil
}

// AllInstances is the filter that shows every instance.
var AllInstances = Filter{Status: StatusAny}

// Match reports whether inst is in the view f selects.
func (f Filter) Match(inst Instance) bool {
	switch f.Status {
	case "":
		if inst.Status != StatusUp && inst.Status != "" {
			return false
		}
	case StatusAny:
	default:
		if inst.Status != f.Status {
			return false
		}
	}
	for _, m := range f.Meta {
		if v, ok := inst.Metadata[m.Key]; !ok || v != m.Value {
			return false
		}
	}
	return true
}

// StatusOnly reports whether f selects by status alone (no metadata
// terms): the view caches those lists, shared between requests.
func (f Filter) StatusOnly() bool { return len(f.Meta) == 0 }

// everything reports whether f selects every instance.
func (f Filter) everything() bool { return f.Status == StatusAny && len(f.Meta) == 0 }
