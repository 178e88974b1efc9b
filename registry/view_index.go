package registry

import (
	"encoding/json"
	"sort"
	"strings"
)

// serviceState is one service in the index.
//
// Memory (a member keeps every instance of the registry here; issue 17
// counts a million): each instance is one heap Instance, shared by the
// index, the service's log and the events' Prev, never modified once in
// the index (a change stores a new one). Its Service is the service's
// name, its ID a copy of the id alone: neither keeps the etcd key it was
// parsed from alive.
type serviceState struct {
	name      string // the services map's key, shared by its instances
	instances map[string]*Instance
	up        int // instances with status up
	changed   int64
	wake      chan struct{}
	sorted    []Instance // cache; nil after a change
	// lists caches the sorted instances of each status-only filter and
	// their JSON, by Filter.Status; nil after a change.
	lists map[string]*cachedList
	// log is the service's recent changes, oldest first, for blocking
	// queries with filters (a change after their index wakes them only
	// if it touched an instance they match); it holds every change with
	// revision > logFloor.
	log      []logEntry
	logFloor int64
}

// cachedList is one filtered list of a service, built once per change.
type cachedList struct {
	sorted  []Instance
	encoded []byte // nil until asked for
}

// logEntry is one change of a service: the instance before (nil: new) and
// after (nil: removed).
type logEntry struct {
	rev       int64
	prev, now *Instance
}

// maxServiceLog bounds a service's log; a blocking query whose index is
// older than what it holds wakes at once, as a hint.
const maxServiceLog = 512

// record appends one change to the service's log.
func (st *serviceState) record(rev int64, prev, now *Instance) {
	if len(st.log) >= maxServiceLog {
		drop := len(st.log) / 2
		// Never split a revision: the floor's changes are all gone.
		for drop < len(st.log) && st.log[drop].rev == st.log[drop-1].rev {
			drop++
		}
		st.logFloor = st.log[drop-1].rev
		st.log = append([]logEntry(nil), st.log[drop:]...)
	}
	st.log = append(st.log, logEntry{rev: rev, prev: prev, now: now})
}

// changedFor reports whether a change after index touched an instance f
// matches (before or after the change), as far as the log can tell: an
// index below its floor counts as changed.
func (st *serviceState) changedFor(f Filter, index int64) bool {
	if st.changed <= index {
		return false
	}
	if index < st.logFloor {
		return true
	}
	i := sort.Search(len(st.log), func(i int) bool { return st.log[i].rev > index })
	for _, e := range st.log[i:] {
		if e.prev != nil && f.Match(*e.prev) || e.now != nil && f.Match(*e.now) {
			return true
		}
	}
	return false
}

// The helpers below run with v.mu held.

func (v *View) instance(svc, id string) (Instance, bool) {
	st, ok := v.services[svc]
	if !ok {
		return Instance{}, false
	}
	inst, ok := st.instances[id]
	if !ok {
		return Instance{}, false
	}
	return *inst, true
}

func (v *View) state(svc string) *serviceState {
	st, ok := v.services[svc]
	if !ok {
		svc = strings.Clone(svc) // not the etcd key it may be cut from
		st = &serviceState{name: svc, instances: make(map[string]*Instance), wake: make(chan struct{})}
		v.services[svc] = st
		v.addFold(svc)
	}
	return st
}

func (v *View) touch(svc string, st *serviceState, rev int64) {
	st.changed = rev
	st.sorted = nil
	st.lists = nil
	close(st.wake)
	st.wake = make(chan struct{})
	if len(st.instances) == 0 && len(v.services) > 4096 {
		// Keep the map from growing without bound with dead services;
		// a waiter on this service was just woken and will recreate it,
		// and a blocking query finds no log: it answers at once.
		delete(v.services, svc)
		v.dropFold(svc)
	}
}

func (v *View) touchAll(rev int64) {
	v.allRev = rev
	close(v.allWake)
	v.allWake = make(chan struct{})
}

func (v *View) setRev(rev int64) {
	if rev <= v.rev {
		return
	}
	v.rev = rev
	close(v.revWake)
	v.revWake = make(chan struct{})
}

func (v *View) advance(rev int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.setRev(rev)
}

// leaseOf is the lease of service/id as this view last saw it: a hint for
// heartbeats (Local.Heartbeat), which verify it with etcd.
func (v *View) leaseOf(service, id string) (int64, bool) {
	v.mu.Lock()
	inst, ok := v.instance(service, id)
	v.mu.Unlock()
	if !ok {
		return 0, false
	}
	return leaseIDOf(inst), true
}

// List is the service's instances that f selects, from memory, sorted by
// id; service "" lists every service's, sorted by service and id.
func (v *View) List(service string, f Filter) InstanceList {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := InstanceList{Service: service, Instances: []Instance{}, Revision: v.rev}
	if service == "" {
		for _, st := range v.services {
			for _, inst := range st.instances {
				if f.Match(*inst) {
					out.Instances = append(out.Instances, *inst)
				}
			}
		}
		sort.Slice(out.Instances, func(i, j int) bool {
			a, b := out.Instances[i], out.Instances[j]
			return a.Service < b.Service || a.Service == b.Service && a.ID < b.ID
		})
		return out
	}
	if st, ok := v.services[service]; ok {
		out.Instances = st.list(f).sorted
	}
	return out
}

// sortedInstances is the service's instances sorted by id, built once per
// change. The slice is shared and never mutated: a change builds a new one.
// Call with v.mu held.
func (st *serviceState) sortedInstances() []Instance {
	if st.sorted == nil {
		st.sorted = make([]Instance, 0, len(st.instances))
		for _, inst := range st.instances {
			st.sorted = append(st.sorted, *inst)
		}
		sort.Slice(st.sorted, func(i, j int) bool { return st.sorted[i].ID < st.sorted[j].ID })
	}
	return st.sorted
}

// list is the service's instances that f selects, sorted by id. Lists of
// status-only filters (the default, ?status=...) are cached until the
// service changes and shared; others are built per call. Call with v.mu
// held; never modify the result.
func (st *serviceState) list(f Filter) *cachedList {
	if f.StatusOnly() {
		if l, ok := st.lists[f.Status]; ok {
			return l
		}
	}
	all := st.sortedInstances()
	l := &cachedList{sorted: all}
	if !f.everything() {
		// Shared with all while f selects every instance (the default
		// filter of a service whose instances are all up): one copy of
		// the list per service, not two.
		shared := true
		for i, inst := range all {
			switch {
			case f.Match(inst):
				if !shared {
					l.sorted = append(l.sorted, inst)
				}
			case shared:
				l.sorted = append(make([]Instance, 0, len(all)-1), all[:i]...)
				shared = false
			}
		}
	}
	if f.StatusOnly() {
		if st.lists == nil {
			st.lists = make(map[string]*cachedList)
		}
		st.lists[f.Status] = l
	}
	return l
}

// InstancesJSON is the service's instances that f selects, sorted by id,
// as a JSON array, and the revision the view reflects. For a status-only
// filter the array is encoded once per change of the service and shared
// (shared reports it): callers write it out and must not modify it; the
// same slice comes back until the service changes. Serving a list then
// allocates nothing in proportion to its size, which matters on a node
// with a large heap, where garbage makes every GC cycle mark all of it.
// Lists with metadata filters are encoded per call.
func (v *View) InstancesJSON(service string, f Filter) (encoded []byte, rev int64, shared bool) {
	v.mu.Lock()
	rev = v.rev
	st, ok := v.services[service]
	var l *cachedList
	var changed int64
	if ok {
		l, changed = st.list(f), st.changed
		encoded = l.encoded
	}
	v.mu.Unlock()
	shared = f.StatusOnly()
	if encoded != nil {
		return encoded, rev, shared
	}
	if l == nil || len(l.sorted) == 0 {
		return []byte("[]"), rev, shared
	}
	// Encode outside the lock; keep the result only if the service has not
	// changed meanwhile.
	encoded, _ = json.Marshal(l.sorted) // Instances always encode
	if shared {
		v.mu.Lock()
		if st.changed == changed && l.encoded == nil {
			l.encoded = encoded
		}
		if l.encoded != nil {
			encoded = l.encoded
		}
		v.mu.Unlock()
	}
	return encoded, rev, shared
}

// Count is how many of service's instances f selects and match accepts,
// from memory. Unlike List it caches nothing: a gauge that counts over
// every service on each scrape (DNS's unservable names) would otherwise
// keep a sorted copy of every service's list until it changes.
func (v *View) Count(service string, f Filter, match func(Instance) bool) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	st, ok := v.services[service]
	if !ok {
		return 0
	}
	n := 0
	for _, inst := range st.instances {
		if f.Match(*inst) && match(*inst) {
			n++
		}
	}
	return n
}

// Services lists the services with instances, from memory: how many, and
// how many are up.
func (v *View) Services() ServiceList {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := ServiceList{Services: []ServiceSummary{}, Revision: v.rev}
	for name, st := range v.services {
		if len(st.instances) > 0 {
			out.Services = append(out.Services, ServiceSummary{Name: name, Instances: len(st.instances), Up: st.up})
		}
	}
	sort.Slice(out.Services, func(i, j int) bool { return out.Services[i].Name < out.Services[j].Name })
	return out
}

// Changed reports the revision of service's last change and a channel
// closed at its next change; service "" means the service list.
func (v *View) Changed(service string) (int64, <-chan struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if service == "" {
		return v.allRev, v.allWake
	}
	st, ok := v.services[service]
	if !ok {
		// The service never had instances here, or touch dropped its
		// state after its last one went. Its last change is unknown but
		// not after v.rev: a waiter with an older index looks again
		// rather than sleeping through a change it has not seen.
		st = v.state(service)
		st.changed = v.rev
	}
	return st.changed, st.wake
}
