package registry

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Event types of the watch stream. A re-registration of a live instance is
// a register event again: clients treat register as "upsert".
const (
	EventRegister   = "register"
	EventDeregister = "deregister"
	EventExpire     = "expire"
)

// Event is one change to a service's instances.
type Event struct {
	Type     string   `json:"type"`
	Instance Instance `json:"instance"`
	Revision int64    `json:"revision"`
	// Data is Instance as JSON, encoded once when the event is published
	// and shared by every subscriber's stream.
	Data json.RawMessage `json:"-"`
}

// ErrCompacted means the history a subscriber asked to resume from is gone;
// it must start over from the current list.
var ErrCompacted error = &Error{Kind: KindUnavailable, Code: "compacted", Message: "the requested revision has been compacted; start over from a list"}

// ErrSlowSubscriber closes a subscription whose consumer fell too far behind;
// one slow client must not hold events for everyone else.
var ErrSlowSubscriber error = &Error{Kind: KindTooMany, Code: "slow_subscriber", Message: "the subscriber fell too far behind"}

// ErrViewClosed closes subscriptions when the view stops.
var ErrViewClosed error = &Error{Kind: KindUnavailable, Code: CodeUnavailable, Message: "this node is shutting down"}

// ViewOptions tune a View.
type ViewOptions struct {
	History    int // events kept in memory for resuming subscribers; default 65536
	QueueLimit int // pending events per subscriber before it is dropped; default 8192
}

// View is an in-memory copy of the registry fed by one etcd watch. It serves
// lists without touching etcd, wakes blocking queries when a service
// changes, and fans events out to any number of subscribers: one upstream
// watch per node, however many HTTP clients watch.
type View struct {
	st   *Store
	lg   *zap.Logger
	opts ViewOptions
	lo   string // the watched range: instances, meta records and markers
	hi   string

	mu       sync.Mutex
	rev      int64         // every change up to rev is applied
	revWake  chan struct{} // closed when rev advances
	services map[string]*serviceState
	metas    map[string]meta // "service/id" → newest meta record
	allWake  chan struct{}   // closed when the set of services or their counts change
	allRev   int64           // revision of the last such change
	history  []Event         // ring of recent events, oldest first
	floor    int64           // history holds every event with revision > floor
	subs     map[*Subscription]struct{}
	ready    chan struct{}
	readyOK  bool
	closed   bool

	progress func() // asks etcd for a progress notification on the live watch
}

type serviceState struct {
	instances map[string]Instance
	changed   int64
	wake      chan struct{}
	sorted    []Instance // cache; nil after a change
	encoded   []byte     // sorted as JSON; nil after a change
}

// NewView returns a view over st's registry. Run must be called to fill it.
func NewView(st *Store, opts ViewOptions) *View {
	if opts.History <= 0 {
		opts.History = 65536
	}
	if opts.QueueLimit <= 0 {
		opts.QueueLimit = 8192
	}
	// One contiguous range covering the prefix, meta records and markers:
	// one watch stream keeps all of a revision's changes together.
	lo, hi := st.keys.Prefix, clientv3.GetPrefixRangeEnd(st.keys.Prefix)
	for _, p := range []string{metaRoot, deregRoot} {
		if p < lo {
			lo = p
		}
		if end := clientv3.GetPrefixRangeEnd(p); end > hi {
			hi = end
		}
	}
	return &View{
		st:       st,
		lg:       st.lg,
		opts:     opts,
		lo:       lo,
		hi:       hi,
		revWake:  make(chan struct{}),
		allWake:  make(chan struct{}),
		services: make(map[string]*serviceState),
		metas:    make(map[string]meta),
		subs:     make(map[*Subscription]struct{}),
		ready:    make(chan struct{}),
		progress: func() {},
	}
}

// Run keeps the view in sync until ctx ends. After a broken watch it loads
// the registry again and turns the difference into events, so subscribers
// never miss a change silently.
func (v *View) Run(ctx context.Context) {
	defer v.close()
	for ctx.Err() == nil {
		err := v.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		v.lg.Warn("registry view resyncing", zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Ready is closed once the view has loaded the registry.
func (v *View) Ready() <-chan struct{} { return v.ready }

func (v *View) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed = true
	for s := range v.subs {
		s.fail(ErrViewClosed)
	}
	v.subs = nil
}

func (v *View) follow(ctx context.Context) error {
	// A serializable snapshot: the view must fill even on a member that
	// has lost its quorum; the watch continues from exactly this state.
	resp, err := v.st.cli.Get(ctx, v.lo, clientv3.WithRange(v.hi), clientv3.WithSerializable())
	if err != nil {
		return err
	}
	rev := resp.Header.Revision
	v.load(ctx, rev, resp.Kvs)

	// No WithRequireLeader: on a member cut off from its quorum the view
	// keeps serving what it has (stale reads); the API decides what a
	// leaderless member may answer.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watcher := v.st.cli.Watcher
	v.mu.Lock()
	v.progress = func() { _ = watcher.RequestProgress(wctx) }
	v.mu.Unlock()
	wch := watcher.Watch(wctx, v.lo, clientv3.WithRange(v.hi), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
	for wr := range wch {
		if wr.CompactRevision != 0 {
			return ErrCompacted
		}
		if err := wr.Err(); err != nil {
			return err
		}
		if wr.IsProgressNotify() {
			v.advance(wr.Header.Revision)
			continue
		}
		for i := 0; i < len(wr.Events); {
			j := i
			for j < len(wr.Events) && wr.Events[j].Kv.ModRevision == wr.Events[i].Kv.ModRevision {
				j++
			}
			v.apply(ctx, wr.Events[i].Kv.ModRevision, wr.Events[i:j])
			i = j
		}
	}
	return ctx.Err()
}

// load replaces the view's state with a snapshot at rev. If the view held
// an older state (a resync), the differences become events at rev.
func (v *View) load(ctx context.Context, rev int64, kvs []*mvccpb.KeyValue) {
	metas := make(map[string]meta)
	var instKVs []*mvccpb.KeyValue
	for _, kv := range kvs {
		k := string(kv.Key)
		if rest, ok := strings.CutPrefix(k, metaRoot); ok {
			if m, ok := decodeMeta(kv); ok {
				metas[rest] = m
			}
		} else if _, _, ok := v.st.keys.ParseInstance(k); ok {
			instKVs = append(instKVs, kv)
		}
	}
	fresh := make(map[string]map[string]Instance)
	for _, kv := range instKVs {
		svc, id, _ := v.st.keys.ParseInstance(string(kv.Key))
		if fresh[svc] == nil {
			fresh[svc] = make(map[string]Instance)
		}
		fresh[svc][id] = v.instanceFrom(ctx, svc, id, kv, func(k string) (meta, bool) { m, ok := metas[k]; return m, ok })
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	v.metas = metas
	wasReady := v.readyOK
	var events []Event
	if wasReady {
		for svc, st := range v.services {
			for id, old := range st.instances {
				if _, ok := fresh[svc][id]; !ok {
					events = append(events, Event{Type: EventExpire, Instance: old, Revision: rev})
				}
			}
		}
		for svc, insts := range fresh {
			for id, inst := range insts {
				old, ok := v.instance(svc, id)
				if !ok || old.Revision != inst.Revision {
					events = append(events, Event{Type: EventRegister, Instance: inst, Revision: rev})
				}
			}
		}
		// Deletions found by a resync cannot be classified any more;
		// they are reported as expire, the common case. The
		// expiry ledger, which never guesses, is authoritative.
		v.lg.Info("registry view reloaded", zap.Int64("revision", rev), zap.Int("changes", len(events)))
	}
	for svc, st := range v.services {
		if _, ok := fresh[svc]; !ok {
			st.instances = map[string]Instance{}
			v.touch(svc, st, rev)
		}
	}
	for svc, insts := range fresh {
		st := v.state(svc)
		st.instances = insts
		v.touch(svc, st, rev)
	}
	v.touchAll(rev)
	for _, e := range events {
		v.publish(e)
	}
	if !wasReady {
		// Subscribers can resume only from revisions this view has seen.
		v.floor = rev
	}
	v.setRev(rev)
	if !v.readyOK {
		v.readyOK = true
		close(v.ready)
	}
}

// apply applies one revision's changes.
func (v *View) apply(ctx context.Context, rev int64, evs []*clientv3.Event) {
	metaPut := make(map[string]meta)
	metaDel := make(map[string]bool)
	marker := make(map[string]bool)
	var insts []*clientv3.Event
	for _, ev := range evs {
		k := string(ev.Kv.Key)
		switch {
		case strings.HasPrefix(k, metaRoot):
			rest := k[len(metaRoot):]
			if ev.Type == clientv3.EventTypeDelete {
				metaDel[rest] = true
			} else if m, ok := decodeMeta(ev.Kv); ok {
				metaPut[rest] = m
			}
		case strings.HasPrefix(k, deregRoot):
			if ev.Type == clientv3.EventTypePut {
				// dereg/<lease>/<service>/<id>
				if _, rest, ok := strings.Cut(k[len(deregRoot):], "/"); ok {
					marker[rest] = true
				}
			}
		default:
			if _, _, ok := v.st.keys.ParseInstance(k); ok {
				insts = append(insts, ev)
			}
		}
	}

	// Work that may call etcd (lease lookups) happens outside the lock.
	metaOf := func(key string) (meta, bool) {
		if m, ok := metaPut[key]; ok {
			return m, true
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		m, ok := v.metas[key]
		return m, ok
	}
	type change struct {
		svc, id string
		event   Event
		del     bool
	}
	var changes []change
	for _, ev := range insts {
		svc, id, _ := v.st.keys.ParseInstance(string(ev.Kv.Key))
		if ev.Type == clientv3.EventTypePut {
			inst := v.instanceFrom(ctx, svc, id, ev.Kv, metaOf)
			changes = append(changes, change{svc, id, Event{Type: EventRegister, Instance: inst, Revision: rev}, false})
			continue
		}
		v.mu.Lock()
		old, known := v.instance(svc, id)
		v.mu.Unlock()
		if !known && ev.PrevKv != nil {
			old = v.instanceFrom(ctx, svc, id, ev.PrevKv, metaOf)
			known = true
		}
		if !known {
			continue
		}
		typ := v.deletionType(ctx, svc+"/"+id, old, marker, metaOf)
		changes = append(changes, change{svc, id, Event{Type: typ, Instance: old, Revision: rev}, true})
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	for k := range metaDel {
		delete(v.metas, k)
	}
	for k, m := range metaPut {
		v.metas[k] = m
	}
	countsChanged := false
	for _, c := range changes {
		st := v.state(c.svc)
		_, existed := st.instances[c.id]
		if c.del {
			delete(st.instances, c.id)
			countsChanged = countsChanged || existed
		} else {
			st.instances[c.id] = c.event.Instance
			countsChanged = countsChanged || !existed
		}
		v.touch(c.svc, st, rev)
		v.publish(c.event)
	}
	if countsChanged {
		v.touchAll(rev)
	}
	v.setRev(rev)
}

// deletionType applies the expiry reporter's rule to a deletion the view
// saw: a marker written in the same revision is a deregistration; a key
// without a lease, or whose lease is still alive, was deleted explicitly by
// a plain client; otherwise the lease ran out. A REST instance whose meta
// record outlived its key expired (REST deregistrations delete the record
// with the key): that shortcut saves a lease lookup per expiry on every
// member. The view's answer is for watchers; the expiry ledger is the
// authority.
func (v *View) deletionType(ctx context.Context, key string, old Instance, marker map[string]bool, metaOf func(string) (meta, bool)) string {
	lease, _ := strconv.ParseInt(old.LeaseID, 10, 64)
	if marker[key] || lease == 0 {
		return EventDeregister
	}
	if m, ok := metaOf(key); ok && m.Lease == lease {
		return EventExpire
	}
	tctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	// GrantedTTL, not TTL: a live lease in its last second shows TTL 0.
	if resp, err := v.st.cli.TimeToLive(tctx, clientv3.LeaseID(lease)); err == nil && resp.GrantedTTL > 0 {
		return EventDeregister
	}
	return EventExpire
}

func (v *View) instanceFrom(ctx context.Context, svc, id string, kv *mvccpb.KeyValue, metaOf func(string) (meta, bool)) Instance {
	if m, ok := metaOf(svc + "/" + id); ok && m.Lease == kv.Lease && kv.Lease != 0 {
		m.Address = string(kv.Value)
		return m.instance(svc, id, kv.ModRevision)
	}
	// A plain client's key: its TTL needs a lease lookup, bounded so that
	// a member without a quorum does not stall its view.
	tctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return v.st.build(tctx, svc, id, kv, nil)
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

func (v *View) publish(e Event) {
	// Encoded once here, not once per subscriber.
	if e.Data == nil {
		e.Data, _ = json.Marshal(e.Instance) // Instances always encode
	}
	v.history = append(v.history, e)
	// Trim in one go once the history is a quarter over its size: trimming
	// on every event would copy the whole history per event, under the lock.
	if len(v.history) > v.opts.History+v.opts.History/4 {
		over := len(v.history) - v.opts.History
		v.floor = v.history[over-1].Revision
		// Never split a revision: the floor must be a revision whose
		// events are all gone.
		for over < len(v.history) && v.history[over].Revision == v.floor {
			over++
		}
		v.history = append([]Event(nil), v.history[over:]...)
	}
	for s := range v.subs {
		if s.service == "" || s.service == e.Instance.Service {
			if !s.push(e, v.opts.QueueLimit) {
				delete(v.subs, s)
			}
		}
	}
}

// LeaseOf is the lease of service/id as this view last saw it: a hint for
// heartbeats, which verify it with etcd.
func (v *View) LeaseOf(service, id string) (int64, bool) {
	v.mu.Lock()
	inst, ok := v.instance(service, id)
	v.mu.Unlock()
	if !ok {
		return 0, false
	}
	lease, err := strconv.ParseInt(inst.LeaseID, 10, 64)
	return lease, err == nil
}

// Rev is the revision the view reflects.
func (v *View) Rev() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rev
}

// WaitRev waits until the view reflects at least rev. It is how reads on
// any member see a write made through any member: the write's revision, or
// the cluster's current revision, is the target.
func (v *View) WaitRev(ctx context.Context, rev int64) error {
	select {
	case <-v.ready:
	case <-ctx.Done():
		return viewNotReady(ctx.Err())
	}
	asked := false
	for {
		v.mu.Lock()
		cur, wake, progress := v.rev, v.revWake, v.progress
		v.mu.Unlock()
		if cur >= rev {
			return nil
		}
		// Without changes in the view's range, no event moves it
		// forward; a progress notification does.
		if !asked {
			progress()
			asked = true
		}
		select {
		case <-wake:
		case <-time.After(100 * time.Millisecond):
			asked = false
		case <-ctx.Done():
			return viewNotReady(ctx.Err())
		}
	}
}

func viewNotReady(err error) error {
	return &Error{Kind: KindUnavailable, Code: CodeUnavailable, Message: "this node has not caught up with the cluster in time", Err: err}
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

// Subscription receives events in revision order.
type Subscription struct {
	v       *View
	service string
	mu      sync.Mutex
	queue   []Event
	err     error
	notify  chan struct{}
}

// futureWait bounds how long Subscribe waits for the view to reach a
// revision it has not applied yet.
const futureWait = 2 * time.Second

// Subscribe streams the events of service ("" for all services) with
// revision > after. It returns ErrCompacted when after is older than what
// this node can replay, or older than etcd's compaction point, or a
// revision the view does not reach within futureWait (not one of this
// cluster's); the caller then starts over from a list.
func (v *View) Subscribe(ctx context.Context, service string, after int64) (*Subscription, error) {
	select {
	case <-v.ready:
	case <-ctx.Done():
		return nil, viewNotReady(ctx.Err())
	}
	if after > v.Rev() {
		// The subscriber's last event came from a member that is ahead
		// of this one. Without catching up first, the events up to after
		// would reach it a second time.
		wctx, cancel := context.WithTimeout(ctx, futureWait)
		err := v.WaitRev(wctx, after)
		cancel()
		if ctx.Err() != nil {
			return nil, viewNotReady(ctx.Err())
		}
		if err != nil {
			return nil, ErrCompacted
		}
	}
	if v.storeCompacted(ctx, after) {
		return nil, ErrCompacted
	}
	return v.subscribe(service, after)
}

// storeCompacted reports whether etcd has compacted revision after away.
// The view may still hold those events, but the contract makes a resume
// from before the store's compaction point a reset. A local, serializable
// read at that revision answers it; any other error leaves the decision to
// the view's own history.
func (v *View) storeCompacted(ctx context.Context, after int64) bool {
	if after <= 0 {
		return false // revision 0 means "latest" to etcd; the floor covers it
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := v.st.cli.Get(ctx, v.lo, clientv3.WithRev(after), clientv3.WithSerializable(), clientv3.WithCountOnly())
	return err != nil && (errors.Is(err, rpctypes.ErrCompacted) || rpctypes.ErrorDesc(err) == rpctypes.ErrCompacted.Error())
}

func (v *View) subscribe(service string, after int64) (*Subscription, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil, ErrViewClosed
	}
	if after < v.floor {
		return nil, ErrCompacted
	}
	s := &Subscription{v: v, service: service, notify: make(chan struct{}, 1)}
	i := sort.Search(len(v.history), func(i int) bool { return v.history[i].Revision > after })
	for _, e := range v.history[i:] {
		if service == "" || e.Instance.Service == service {
			s.queue = append(s.queue, e)
		}
	}
	if len(s.queue) > 0 {
		s.notify <- struct{}{}
	}
	v.subs[s] = struct{}{}
	return s, nil
}

// SubscribeFromList returns the current list of service and a subscription
// to every event after it, atomically: what a reset starts from.
func (v *View) SubscribeFromList(ctx context.Context, service string) (InstanceList, *Subscription, error) {
	select {
	case <-v.ready:
	case <-ctx.Done():
		return InstanceList{}, nil, viewNotReady(ctx.Err())
	}
	v.mu.Lock()
	rev := v.rev
	v.mu.Unlock()
	for {
		list := v.List(service)
		s, err := v.subscribe(service, list.Revision)
		if err != nil {
			return InstanceList{}, nil, err
		}
		if list.Revision >= rev {
			return list, s, nil
		}
		s.Close()
	}
}

func (s *Subscription) push(e Event, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false
	}
	if len(s.queue) >= limit {
		s.err = ErrSlowSubscriber
		s.queue = nil
		s.wake()
		return false
	}
	s.queue = append(s.queue, e)
	s.wake()
	return true
}

func (s *Subscription) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
	s.wake()
}

func (s *Subscription) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Notify has a value when Drain has something to return.
func (s *Subscription) Notify() <-chan struct{} { return s.notify }

// Drain returns the pending events, and the error that ended the
// subscription once everything before it was drained.
//
// It takes the view's lock, under which a revision's events are published
// together, so it never returns part of a revision: a client that resumes
// after the last id it received misses nothing.
func (s *Subscription) Drain() ([]Event, error) {
	s.v.mu.Lock()
	defer s.v.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	if len(q) > 0 {
		return q, nil
	}
	return nil, s.err
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.v.mu.Lock()
	delete(s.v.subs, s)
	s.v.mu.Unlock()
	s.fail(ErrViewClosed)
}
