package registry

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/zap"
)

// leaseLookupTimeout bounds the lease lookup that gives a plain client's key
// its TTL, so that a member without a quorum does not stall its view.
const leaseLookupTimeout = time.Second

// viewChange is one instance's change, ready to go into the index.
type viewChange struct {
	svc, id string
	event   Event
	del     bool
	pos     int // place among the revision's etcd events: the event order
}

// apply applies one revision. The previous state of each key is what this
// view last published (a removal event carries the instance as subscribers
// saw it), and Classify, from the revision's events alone, says whether a
// removal is an expire or a deregister. A meta record written without its
// key (a PATCH) changes the instance in place: an update event.
//
// Events are ordered as etcd applied the revision's changes (their ids
// depend on it, and must be the same on every member).
func (v *View) apply(ctx context.Context, ch Changes) {
	olds := make(map[string]Instance)
	var updates []viewChange
	v.mu.Lock()
	keyed := make(map[string]bool, len(ch.Instances))
	// records are the meta records of the changed keys before this
	// revision (View.record).
	records := make(map[string]record, len(ch.Instances))
	for i := range ch.Instances {
		ic := &ch.Instances[i]
		ic.Prev = nil
		keyed[ic.Service+"/"+ic.ID] = true
		records[ic.Service+"/"+ic.ID] = v.record(ic.Service, ic.ID)
		if old, ok := v.instance(ic.Service, ic.ID); ok {
			olds[ic.Service+"/"+ic.ID] = old
			ic.Prev = &KeyState{Address: old.Address, Valid: true, Lease: leaseIDOf(old), ModRevision: old.Revision}
		}
	}
	for _, mw := range ch.metaOrder {
		if keyed[mw.key] {
			continue // a registration: the key's change carries it
		}
		svc, id, _ := strings.Cut(mw.key, "/")
		old, ok := v.instance(svc, id)
		m := ch.metaPut[mw.key]
		if !ok || !m.describes(leaseIDOf(old)) {
			continue // not (or no longer) the record of a live instance here
		}
		m.Address = old.Address
		inst := m.instance(svc, id, old.Revision)
		prev := old
		updates = append(updates, viewChange{svc, id, Event{Type: EventUpdate, Instance: inst, Prev: &prev, Revision: ch.Revision}, false, mw.pos})
	}
	v.mu.Unlock()
	removed := make(map[string]Removal)
	for _, r := range Classify(ch) {
		removed[r.Service+"/"+r.ID] = r
	}

	// Building instances may call etcd (lease lookups): outside the lock.
	metaOf := func(key string) meta {
		if m, ok := ch.metaPut[key]; ok {
			return m
		}
		return records[key].m
	}
	var changes []viewChange
	for _, ic := range ch.Instances {
		k := ic.Service + "/" + ic.ID
		if r, ok := removed[k]; ok {
			changes = append(changes, viewChange{ic.Service, ic.ID, Event{Type: eventType(r.Cause), Instance: olds[k], Revision: ch.Revision}, true, ic.pos})
			continue
		}
		if ic.Deleted || !ic.Now.Valid {
			continue
		}
		inst := v.build(ctx, ic.Service, ic.ID, ic.Now, metaOf(k))
		var prev *Instance
		if old, ok := olds[k]; ok {
			prev = &old
		}
		changes = append(changes, viewChange{ic.Service, ic.ID, Event{Type: EventRegister, Instance: inst, Prev: prev, Revision: ch.Revision}, false, ic.pos})
	}
	if len(updates) > 0 {
		changes = append(changes, updates...)
		slices.SortStableFunc(changes, func(a, b viewChange) int { return cmp.Compare(a.pos, b.pos) })
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	for _, ic := range ch.Instances {
		v.trackValue(ic.Service, ic.ID, !ic.Deleted && !ic.Now.Valid, ch.Revision)
	}
	v.observeLocked(ch, changes)
	v.recordAcksLocked(ch.observeAcks)
	countsChanged := false
	for i := range changes {
		// Ids: the index follows etcd's order of the revision's
		// changes, never a map's.
		changes[i].event.Index, changes[i].event.Batch = i, len(changes)
		countsChanged = v.applyChange(changes[i], ch.Revision) || countsChanged
	}
	// Each changed record, and the record of each changed key, as it is
	// after this revision.
	for k, r := range records {
		if m, ok := ch.metaPut[k]; ok {
			r = record{m, true}
		} else if ch.metaDel[k] {
			r = record{}
		}
		v.keepRecord(k, r)
	}
	for k := range ch.metaDel {
		if _, ok := records[k]; !ok {
			v.keepRecord(k, record{})
		}
	}
	for k, m := range ch.metaPut {
		if _, ok := records[k]; !ok {
			v.keepRecord(k, record{m, true})
		}
	}
	if countsChanged {
		v.touchAll(ch.Revision)
	}
	v.setRev(ch.Revision)
}

// record is an instance's meta record as the view knows it; ok false:
// none.
type record struct {
	m  meta
	ok bool
}

// The view needs an instance's meta record whenever its key changes in a
// revision that does not write the record (a plain client rewrites the
// value, or puts the key back on its lease). Most records are the instance
// itself: an instance built from its record (it has RegisteredAt; the
// record describes its lease) holds every field of it that matters, so
// View.metas keeps only the others — records of keys that are no instance,
// or not on the record's lease, and "none" where an instance built from a
// record has lost it (a zero meta, which describes no lease). A million
// instances then cost no second map of a million decoded records.

// record is the meta record of service/id before the revision being
// applied. Call with v.mu held.
func (v *View) record(svc, id string) record {
	if m, ok := v.metas[svc+"/"+id]; ok {
		return record{m, m.Lease != 0}
	}
	st, ok := v.services[svc]
	if !ok {
		return record{}
	}
	inst, ok := st.instances[id]
	if !ok || inst.RegisteredAt == nil {
		return record{}
	}
	// What meta.instance made inst from: building from it again gives
	// the same instance, with the new key's address and revision.
	m := meta{Metadata: inst.Metadata, TTL: inst.TTL, Lease: leaseIDOf(*inst), RegisteredAt: *inst.RegisteredAt, Check: inst.Check, Health: inst.Health}
	m.setLifecycle(inst.Status, int64(inst.Weight))
	return record{m, true}
}

// keepRecord stores r, the record of key ("service/id") after the revision
// just applied to the index, in View.metas unless the instance there holds
// it. Call with v.mu held.
func (v *View) keepRecord(key string, r record) {
	svc, id, _ := strings.Cut(key, "/")
	var inst *Instance
	if st, ok := v.services[svc]; ok {
		inst = st.instances[id]
	}
	fromRecord := inst != nil && inst.RegisteredAt != nil
	switch {
	case r.ok && fromRecord && r.m.describes(leaseIDOf(*inst)):
		delete(v.metas, key) // inst was built from it in this revision, or before
	case r.ok:
		r.m.Address = "" // the key's value is the address
		v.metas[key] = r.m
	case fromRecord:
		v.metas[key] = meta{} // none, though inst was built from one
	default:
		delete(v.metas, key)
	}
}

func eventType(c Cause) string {
	if c == CauseExpired {
		return EventExpire
	}
	return EventDeregister
}

// build is the instance of a key whose value is an instance value, bounded
// in time (Store.build may look up a plain client's lease).
func (v *View) build(ctx context.Context, svc, id string, k KeyState, m meta) Instance {
	ctx, cancel := context.WithTimeout(ctx, leaseLookupTimeout)
	defer cancel()
	inst, _ := v.st.build(ctx, svc, id, k, m)
	return inst
}

// trackValue counts the keys named like instances whose value is no
// instance, and logs each once when it appears. Call with v.mu held.
func (v *View) trackValue(svc, id string, invalid bool, rev int64) {
	k := svc + "/" + id
	if !invalid {
		delete(v.invalid, k)
		return
	}
	if !v.invalid[k] {
		v.invalid[k] = true
		v.lg.Warn("key under the registry prefix holds a value that is neither host:port nor a gRPC naming endpoint; it is not an instance",
			zap.String("key", v.st.keys.Instance(svc, id)), zap.Int64("revision", rev))
	}
}

// applyChange puts one change into the index, wakes the blocking queries
// whose answer it changes and publishes its event. It reports whether the
// service's counts (instances, up) changed. Call with v.mu held.
func (v *View) applyChange(c viewChange, rev int64) bool {
	st := v.state(c.svc)
	prev, existed := st.instances[c.id]
	var now *Instance
	if existed && isUp(*prev) {
		st.up--
	}
	if c.del {
		delete(st.instances, c.id)
	} else {
		inst := c.event.Instance
		// The strings the index keeps (serviceState).
		inst.Service = st.name
		if existed {
			inst.ID = prev.ID
		} else {
			inst.ID = strings.Clone(c.id)
		}
		now = &inst
		st.instances[inst.ID] = now
		c.event.Instance = inst
		if isUp(inst) {
			st.up++
		}
	}
	v.touch(c.svc, st, rev)
	st.record(rev, prev, now)
	v.wakeWaiters(c.svc, rev, prev, now)
	v.publish(c.event)
	upChanged := existed && isUp(*prev) != (!c.del && isUp(*now))
	return existed == c.del || upChanged
}

// isUp reports whether inst is shown by the default view.
func isUp(inst Instance) bool { return inst.Status == StatusUp || inst.Status == "" }

// load replaces the view's state with a snapshot at rev. If the view held
// an older state (a resync after a broken watch), the differences become
// events at rev. The history of the gap may be gone, so a vanished
// instance is classified by the state instead: its lease's marker still
// there means the lease is alive and the key was deleted (deregister),
// gone means the lease ended (expire). The expiry ledger is the authority;
// this only labels the watch events of a resync.
func (v *View) load(ctx context.Context, rev int64, kvs []*mvccpb.KeyValue) {
	metas := make(map[string]meta)
	marked := make(map[int64]bool)
	type instKV struct {
		svc, id string
		k       KeyState
	}
	var valid []instKV
	var invalid []instKV
	for _, kv := range kvs {
		key := string(kv.Key)
		if lease, ok := parseLeaseMarker(key); ok {
			marked[lease] = true
		} else if rest, ok := strings.CutPrefix(key, metaRoot); ok {
			if m, ok := decodeMeta(kv); ok {
				metas[rest] = m
			}
		} else if svc, id, ok := v.st.keys.ParseInstance(key); ok {
			if k := keyState(kv); k.Valid {
				valid = append(valid, instKV{svc, id, k})
			} else {
				invalid = append(invalid, instKV{svc, id, k})
			}
		}
	}
	fresh := make(map[string]map[string]*Instance)
	for _, in := range valid {
		if fresh[in.svc] == nil {
			fresh[in.svc] = make(map[string]*Instance)
		}
		inst := v.build(ctx, in.svc, in.id, in.k, metas[in.svc+"/"+in.id])
		inst.ID = strings.Clone(in.id) // the service's name is set below
		fresh[in.svc][inst.ID] = &inst
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	// Kept only where no instance holds them (View.record); a new map,
	// as a Go map does not shrink.
	v.metas = make(map[string]meta)
	for k, m := range metas {
		svc, id, _ := strings.Cut(k, "/")
		if inst := fresh[svc][id]; inst == nil || inst.RegisteredAt == nil {
			m.Address = ""
			v.metas[k] = m
		}
	}
	stillInvalid := make(map[string]bool)
	for _, in := range invalid {
		v.trackValue(in.svc, in.id, true, rev)
		stillInvalid[in.svc+"/"+in.id] = true
	}
	for k := range v.invalid {
		if !stillInvalid[k] {
			delete(v.invalid, k)
		}
	}
	var events []Event
	if v.readyOK {
		events = v.resyncEvents(rev, fresh, stillInvalid, marked)
		v.lg.Info("registry view reloaded", zap.Int64("revision", rev), zap.Int("changes", len(events)))
	}
	// The gap's changes are not in the services' logs: every blocking
	// query wakes (a hint; it compares and asks again).
	for svc, st := range v.services {
		if _, ok := fresh[svc]; !ok {
			st.instances, st.up = map[string]*Instance{}, 0
			st.log, st.logFloor = nil, rev
			v.touch(svc, st, rev)
		}
	}
	for svc, insts := range fresh {
		st := v.state(svc)
		st.instances, st.up = insts, 0
		for _, inst := range insts {
			inst.Service = st.name
			if isUp(*inst) {
				st.up++
			}
		}
		st.log, st.logFloor = nil, rev
		v.touch(svc, st, rev)
	}
	v.wakeAllWaiters()
	v.touchAll(rev)
	for _, e := range events {
		v.publish(e)
	}
	if !v.readyOK {
		// Subscribers can resume only from revisions this view has seen.
		v.floor = rev
	}
	v.setRev(rev)
	if !v.readyOK {
		v.readyOK = true
		close(v.ready)
	}
}

// resyncEvents is the difference between the index and a reloaded state,
// as events at rev, sorted by service and id. Call with v.mu held.
func (v *View) resyncEvents(rev int64, fresh map[string]map[string]*Instance, invalid map[string]bool, marked map[int64]bool) []Event {
	var events []Event
	gone := Changes{Revision: rev}
	olds := make(map[string]Instance)
	for svc, st := range v.services {
		for id, old := range st.instances {
			if inst, ok := fresh[svc][id]; ok {
				if inst.Revision != old.Revision {
					events = append(events, Event{Type: EventRegister, Instance: *inst, Prev: old, Revision: rev})
				}
				continue
			}
			k := svc + "/" + id
			olds[k] = *old
			lease := leaseIDOf(*old)
			ic := InstanceChange{Service: svc, ID: id, Deleted: !invalid[k], Prev: &KeyState{Address: old.Address, Valid: true, Lease: lease}}
			if ic.Deleted && lease != 0 && !marked[lease] {
				gone.EndedLeases = setAdd(gone.EndedLeases, lease)
			}
			gone.Instances = append(gone.Instances, ic)
		}
	}
	for svc, insts := range fresh {
		for id, inst := range insts {
			if _, ok := v.instance(svc, id); !ok {
				events = append(events, Event{Type: EventRegister, Instance: *inst, Revision: rev})
			}
		}
	}
	for _, r := range Classify(gone) {
		events = append(events, Event{Type: eventType(r.Cause), Instance: olds[r.Service+"/"+r.ID], Revision: rev})
	}
	slices.SortFunc(events, func(a, b Event) int {
		return cmp.Or(cmp.Compare(a.Instance.Service, b.Instance.Service), cmp.Compare(a.Instance.ID, b.Instance.ID))
	})
	for i := range events {
		events[i].Index, events[i].Batch = i, len(events)
	}
	return events
}

// leaseIDOf is an instance's lease as a number.
func leaseIDOf(inst Instance) int64 {
	lease, _ := strconv.ParseInt(inst.LeaseID, 10, 64)
	return lease
}
