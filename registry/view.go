package registry

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"go.uber.org/zap"
)

// The view is split by job: view.go (the type, readiness, revisions),
// view_watch.go (following the etcd watch), view_apply.go (turning one
// revision, or a reload, into index changes and events), view_index.go
// (services, instances, lists, their encoded JSON) and view_history.go
// (the event history and subscriptions).

// Event types of the watch stream. A re-registration of a live instance is
// a register event again: clients treat register as "upsert". An update
// (a PATCH of status, weight or metadata) changes an instance in place:
// an upsert too, never a removal.
const (
	EventRegister   = "register"
	EventUpdate     = "update"
	EventDeregister = "deregister"
	EventExpire     = "expire"
)

// Event is one change to a service's instances.
type Event struct {
	Type     string   `json:"type"`
	Instance Instance `json:"instance"`
	// Prev is the instance before a register or update event, as this
	// view had it; nil for a new instance and for removals (whose
	// Instance is the instance as it was). Filtered streams and blocking
	// queries use it: a change concerns a filter that matched the
	// instance before or after it.
	Prev     *Instance `json:"-"`
	Revision int64     `json:"revision"`
	// Index is the event's place among the events of its revision (from
	// 0), in the order etcd applied the changes: the same on every
	// member. Batch is how many events the revision has. ID() names the
	// event from both.
	Index int `json:"-"`
	Batch int `json:"-"`
	// Data is Instance as JSON, encoded once when the event is published
	// and shared by every subscriber's stream.
	Data json.RawMessage `json:"-"`
}

// ErrCompacted means the history a subscriber asked to resume from is gone;
// it must start over from the current list.
var ErrCompacted error = &Error{Kind: KindUnavailable, Code: CodeCompacted, Message: "the requested revision has been compacted; start over from a list"}

// ErrSlowSubscriber closes a subscription whose consumer fell too far behind;
// one slow client must not hold events for everyone else.
var ErrSlowSubscriber error = &Error{Kind: KindTooMany, Code: CodeSlowSubscriber, Message: "the subscriber fell too far behind"}

// ErrViewClosed closes subscriptions when the view stops.
var ErrViewClosed error = &Error{Kind: KindUnavailable, Code: CodeUnavailable, Message: "this node is shutting down"}

// Defaults of ViewOptions.
const (
	DefaultViewHistory    = 65536
	DefaultViewQueueLimit = 8192
)

// ViewOptions tune a View.
type ViewOptions struct {
	History    int // events kept in memory for resuming subscribers; 0: DefaultViewHistory
	QueueLimit int // pending events per subscriber before it is dropped; 0: DefaultViewQueueLimit
	// MemberID is this node's etcd member, which answers drain
	// handshakes (observe.go); 0: the member that serves the view's
	// client (the in-process client's is this node).
	MemberID uint64
}

// View is an in-memory copy of the registry fed by one etcd watch. It serves
// lists without touching etcd, wakes blocking queries when a service
// changes, and fans events out to any number of subscribers: one upstream
// watch per node, however many HTTP clients watch.
type View struct {
	st   *Store
	lg   *zap.Logger
	opts ViewOptions
	lo   string // the watched range, Keys.HistoryRange
	hi   string

	mu       sync.Mutex
	rev      int64         // every change up to rev is applied
	revWake  chan struct{} // closed when rev advances
	services map[string]*serviceState
	// folds names the services by their lower-case name (view_lookup.go):
	// DNS names match without regard to case.
	folds    map[string][]string
	waiters  map[string]map[*Waiter]struct{} // blocking queries, by service
	metas    map[string]meta                 // "service/id" → newest meta record
	invalid  map[string]bool                 // "service/id" of keys whose value is no instance (ParseValue)
	allWake  chan struct{}                   // closed when the set of services or their counts change
	allRev   int64                           // revision of the last such change
	history  []Event                         // ring of recent events, oldest first
	floor    int64                           // history holds every event with revision > floor
	subs     map[*Subscription]struct{}
	ackWaits map[string]*ackWait // drain handshakes this member originated, by nonce
	memberID uint64              // this member, whose acks the view writes
	stopped  chan struct{}       // closed when the view stops
	ready    chan struct{}
	readyOK  bool
	closed   bool

	progress func() // asks etcd for a progress notification on the live watch
}

// NewView returns a view over st's registry. Run must be called to fill it.
func NewView(st *Store, opts ViewOptions) *View {
	if opts.History <= 0 {
		opts.History = DefaultViewHistory
	}
	if opts.QueueLimit <= 0 {
		opts.QueueLimit = DefaultViewQueueLimit
	}
	lo, hi := st.keys.HistoryRange()
	lg := st.lg
	if lg == nil {
		lg = zap.NewNop()
	}
	return &View{
		st:       st,
		lg:       lg,
		opts:     opts,
		lo:       lo,
		hi:       hi,
		revWake:  make(chan struct{}),
		allWake:  make(chan struct{}),
		services: make(map[string]*serviceState),
		folds:    make(map[string][]string),
		waiters:  make(map[string]map[*Waiter]struct{}),
		metas:    make(map[string]meta),
		invalid:  make(map[string]bool),
		subs:     make(map[*Subscription]struct{}),
		ackWaits: make(map[string]*ackWait),
		memberID: opts.MemberID,
		stopped:  make(chan struct{}),
		ready:    make(chan struct{}),
		progress: func() {},
	}
}

// Ready is closed once the view has loaded the registry.
func (v *View) Ready() <-chan struct{} { return v.ready }

// Rev is the revision the view reflects.
func (v *View) Rev() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rev
}

// InvalidValues is how many keys under the prefix, named like instances,
// hold a value that is no instance (ParseValue) right now: data of other
// programs, neither listed nor watched nor reported.
func (v *View) InvalidValues() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.invalid)
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

func (v *View) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.closed {
		close(v.stopped)
	}
	v.closed = true
	for s := range v.subs {
		s.fail(ErrViewClosed)
	}
	v.subs = nil
}
