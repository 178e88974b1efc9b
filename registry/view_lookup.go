package registry

import (
	"slices"
	"strings"
)

// Lookups for views that match names without regard to case. DNS names
// are case-insensitive (RFC 4343), and resolvers may send any mix of case
// (some randomise it on purpose, "0x20" encoding), while regd's names are
// case-sensitive: `redis` and `Redis` are two services. A DNS name
// therefore stands for every service whose name equals it ignoring ASCII
// case, and answers their instances together. Names are ASCII
// ([A-Za-z0-9._-]), so lower-casing is exact.

func (v *View) addFold(svc string) {
	k := strings.ToLower(svc)
	names := append(v.folds[k], svc)
	slices.Sort(names)
	v.folds[k] = names
}

func (v *View) dropFold(svc string) {
	k := strings.ToLower(svc)
	names := slices.DeleteFunc(v.folds[k], func(n string) bool { return n == svc })
	if len(names) == 0 {
		delete(v.folds, k)
		return
	}
	v.folds[k] = names
}

// ServiceFold is the instances that f selects of every service whose name
// equals service ignoring ASCII case, from memory (no etcd call, no wait:
// the view as it is), sorted by service then id. The result is shared
// with the view's caches: read it, never modify it. nil when there are
// none.
func (v *View) ServiceFold(service string, f Filter) []Instance {
	v.mu.Lock()
	defer v.mu.Unlock()
	names := v.folds[strings.ToLower(service)]
	var out []Instance
	for i, name := range names {
		st, ok := v.services[name]
		if !ok {
			continue
		}
		l := st.list(f).sorted
		if i == 0 || out == nil {
			out = l // the common case, one service: no copy
			continue
		}
		if len(l) > 0 {
			out = append(slices.Clip(out), l...)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
