package registry

import (
	"encoding/json"
	"sort"
)

// serviceState is one service in the index.
type serviceState struct {
	instances map[string]Instance
	changed   int64
	wake      chan struct{}
	sorted    []Instance // cache; nil after a change
	encoded   []byte     // sorted as JSON; nil after a change
}

// The helpers below run with v.mu held.

func (v *View) instance(svc, id string) (Instance, bool) {
	st, ok := v.services[svc]
	if !ok {
		return Instance{}, false
	}
	inst, ok := st.instances[id]
	return inst, ok
}

func (v *View) state(svc string) *serviceState {
	st, ok := v.services[svc]
	if !ok {
		st = &serviceState{instances: make(map[string]Instance), wake: make(chan struct{})}
		v.services[svc] = st
	}
	return st
}

func (v *View) touch(svc string, st *serviceState, rev int64) {
	st.changed = rev
	st.sorted = nil
	st.encoded = nil
	close(st.wake)
	st.wake = make(chan struct{})
	if len(st.instances) == 0 && len(v.services) > 4096 {
		// Keep the map from growing without bound with dead services;
		// a waiter on this service was just woken and will recreate it.
		delete(v.services, svc)
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

// List is the service's instances from memory, sorted by id; service ""
// lists every instance, sorted by service and id.
func (v *View) List(service string) InstanceList {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := InstanceList{Service: service, Instances: []Instance{}, Revision: v.rev}
	if service == "" {
		for _, st := range v.services {
			for _, inst := range st.instances {
				out.Instances = append(out.Instances, inst)
			}
		}
		sort.Slice(out.Instances, func(i, j int) bool {
			a, b := out.Instances[i], out.Instances[j]
			return a.Service < b.Service || a.Service == b.Service && a.ID < b.ID
		})
		return out
	}
	if st, ok := v.services[service]; ok {
		out.Instances = st.sortedInstances()
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
			st.sorted = append(st.sorted, inst)
		}
		sort.Slice(st.sorted, func(i, j int) bool { return st.sorted[i].ID < st.sorted[j].ID })
	}
	return st.sorted
}

// InstancesJSON is the service's instances, sorted by id, as a JSON array,
// and the revision the view reflects. The array is encoded once per change
// of the service and shared: callers write it out and must not modify it.
// Serving a list then allocates nothing in proportion to its size, which
// matters on a node with a large heap, where garbage makes every GC cycle
// mark all of it.
func (v *View) InstancesJSON(service string) ([]byte, int64) {
	v.mu.Lock()
	rev := v.rev
	st, ok := v.services[service]
	var encoded []byte
	var sorted []Instance
	var changed int64
	if ok {
		encoded, sorted, changed = st.encoded, st.sortedInstances(), st.changed
	}
	v.mu.Unlock()
	if encoded != nil {
		return encoded, rev
	}
	if len(sorted) == 0 {
		return []byte("[]"), rev
	}
	// Encode outside the lock; keep the result only if the service has not
	// changed meanwhile.
	encoded, _ = json.Marshal(sorted) // Instances always encode
	v.mu.Lock()
	if st.changed == changed && st.encoded == nil {
		st.encoded = encoded
	}
	v.mu.Unlock()
	return encoded, rev
}

// Services lists the services with instances, from memory.
func (v *View) Services() ServiceList {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := ServiceList{Services: []ServiceSummary{}, Revision: v.rev}
	for name, st := range v.services {
		if len(st.instances) > 0 {
			out.Services = append(out.Services, ServiceSummary{Name: name, Instances: len(st.instances)})
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
