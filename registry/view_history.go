package registry

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

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
		if s.wants(e) {
			if !s.push(e, v.opts.QueueLimit) {
				delete(v.subs, s)
			}
		}
	}
}

// Subscription receives events in revision order: those of its service
// ("" for all) that concern an instance its filter selects, before or
// after the change. On a filtered stream an instance leaves the view with
// a register or update event whose instance the filter no longer selects
// (a drain, on the default stream of up instances).
type Subscription struct {
	v       *View
	service string
	filter  Filter
	mu      sync.Mutex
	queue   []Event
	err     error
	notify  chan struct{}

	// obs are the drain handshakes (observe.go) waiting for this
	// subscriber to be written their change; guarded by v.mu. pending
	// counts them, so that Delivered takes the view's lock only when one
	// waits.
	obs     []*observation
	pending atomic.Int32
	// internal: a follower within regd (View.Follow), no client's; the
	// drain handshake does not count it.
	internal bool
}

// wants reports whether the subscription streams e.
func (s *Subscription) wants(e Event) bool {
	if s.service != "" && s.service != e.Instance.Service {
		return false
	}
	return s.filter.Match(e.Instance) || e.Prev != nil && s.filter.Match(*e.Prev)
}

// futureWait bounds how long Subscribe waits for the view to reach a
// revision it has not applied yet.
const futureWait = 2 * time.Second

// Subscribe streams the events of service ("" for all services) that
// concern instances f selects (Subscription) and follow the position after
// (an event's id, or AfterRevision of a list's revision). It returns ErrCompacted when after is older than what this
// node can replay, or older than etcd's compaction point, or a revision
// the view does not reach within futureWait (not one of this cluster's);
// the caller then starts over from a list.
func (v *View) Subscribe(ctx context.Context, service string, f Filter, after EventID) (*Subscription, error) {
	select {
	case <-v.ready:
	case <-ctx.Done():
		return nil, viewNotReady(ctx.Err())
	}
	if after.Rev > v.Rev() {
		// The subscriber's last event came from a member that is ahead
		// of this one. Without catching up first, the events up to after
		// would reach it a second time.
		wctx, cancel := context.WithTimeout(ctx, futureWait)
		err := v.WaitRev(wctx, after.Rev)
		cancel()
		if ctx.Err() != nil {
			return nil, viewNotReady(ctx.Err())
		}
		if err != nil {
			return nil, ErrCompacted
		}
	}
	if v.storeCompacted(ctx, after.Rev) {
		return nil, ErrCompacted
	}
	return v.subscribe(service, f, after, false)
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
	return err != nil && isCompacted(err)
}

// subscribe subscribes from after; internal marks a follower within regd
// (Follow), which the drain handshake neither counts nor waits for.
func (v *View) subscribe(service string, f Filter, after EventID, internal bool) (*Subscription, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil, ErrViewClosed
	}
	// The history holds every event of the revisions above the floor,
	// none of the floor's: a position inside the floor's revision
	// cannot be resumed from.
	if after.Rev < v.floor || after.Rev == v.floor && after.Index != WholeRevision {
		return nil, ErrCompacted
	}
	s := &Subscription{v: v, service: service, filter: f, notify: make(chan struct{}, 1), internal: internal}
	i := sort.Search(len(v.history), func(i int) bool { return v.history[i].follows(after) })
	for _, e := range v.history[i:] {
		if s.wants(e) {
			s.queue = append(s.queue, e)
		}
	}
	if len(s.queue) > 0 {
		s.notify <- struct{}{}
	}
	v.subs[s] = struct{}{}
	return s, nil
}

// SubscribeFromList returns the current list of service's instances that
// f selects and a subscription to every event after it that concerns
// them, atomically: what a reset starts from.
func (v *View) SubscribeFromList(ctx context.Context, service string, f Filter) (InstanceList, *Subscription, error) {
	return v.subscribeFromList(ctx, service, f, false)
}

func (v *View) subscribeFromList(ctx context.Context, service string, f Filter, internal bool) (InstanceList, *Subscription, error) {
	select {
	case <-v.ready:
	case <-ctx.Done():
		return InstanceList{}, nil, viewNotReady(ctx.Err())
	}
	v.mu.Lock()
	rev := v.rev
	v.mu.Unlock()
	for {
		list := v.List(service, f)
		s, err := v.subscribe(service, f, AfterRevision(list.Revision), internal)
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

// Delivered tells the drain handshake (observe.go) that every event up to
// revision rev has been written to the subscriber (the write and its
// flush returned). Cheap when no handshake waits.
func (s *Subscription) Delivered(rev int64) {
	if s.pending.Load() == 0 {
		return
	}
	s.v.mu.Lock()
	defer s.v.mu.Unlock()
	kept := s.obs[:0]
	for _, o := range s.obs {
		if o.rev <= rev {
			o.settle(true)
			continue
		}
		kept = append(kept, o)
	}
	clear(s.obs[len(kept):])
	s.obs = kept
	s.pending.Store(int32(len(kept)))
}

// Close ends the subscription. Handshakes still waiting for it are told
// it was not delivered.
func (s *Subscription) Close() {
	s.v.mu.Lock()
	delete(s.v.subs, s)
	for _, o := range s.obs {
		o.settle(false)
	}
	s.obs = nil
	s.pending.Store(0)
	s.v.mu.Unlock()
	s.fail(ErrViewClosed)
}
