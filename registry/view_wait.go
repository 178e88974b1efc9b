package registry

// Blocking queries with filters: a query waits for a change of its own
// answer, not of the whole service. Each service keeps a short log of its
// changes (the instance before and after, serviceState.record); a query
// after index wakes when a change after index touched an instance its
// filter matched before or after the change. A zone-b change never wakes
// a zone-a query; an up instance drained wakes the default (up) queries,
// whose answer loses it, and ?status=draining ones, whose answer gains it.

// Waiter is one blocking query (GET /v1/services/{s}/instances?index=N):
// C is closed when a change after index touched an instance the filter
// selects (before or after the change). Done must be called once the
// answer was written (or abandoned): it unregisters the query and tells
// the drain handshake (observe.go) whether the answer carried the changes
// it waits for.
type Waiter struct {
	v       *View
	service string
	filter  Filter
	index   int64
	ch      chan struct{}
	fired   bool
	done    bool
	obs     []*observation // drain handshakes waiting for this answer
}

// Block registers a blocking query of service's instances that f selects,
// after revision index. Its C is already closed when such a change is in
// the service's log (or the log cannot tell: then it wakes as a hint).
func (v *View) Block(service string, f Filter, index int64) *Waiter {
	w := &Waiter{v: v, service: service, filter: f, index: index, ch: make(chan struct{})}
	v.mu.Lock()
	defer v.mu.Unlock()
	st, ok := v.services[service]
	if !ok {
		// Never had instances here, or touch dropped its state: its last
		// change is unknown but not after v.rev; an older index answers
		// at once rather than sleeping through a change it has not seen.
		if index < v.rev {
			w.fire()
			return w
		}
	} else if st.changedFor(f, index) {
		w.fire()
		return w
	}
	set := v.waiters[service]
	if set == nil {
		set = make(map[*Waiter]struct{})
		v.waiters[service] = set
	}
	set[w] = struct{}{}
	return w
}

// C is closed when the query should answer.
func (w *Waiter) C() <-chan struct{} { return w.ch }

// Done ends the query: answerRev is the revision its answer reflected (0:
// no answer was written). Call it after the answer's write returned.
func (w *Waiter) Done(answerRev int64) {
	w.v.mu.Lock()
	defer w.v.mu.Unlock()
	if w.done {
		return
	}
	w.done = true
	w.v.unregister(w)
	for _, o := range w.obs {
		o.settle(answerRev >= o.rev)
	}
	w.obs = nil
}

// fire closes C. Call with v.mu held.
func (w *Waiter) fire() {
	if !w.fired {
		w.fired = true
		close(w.ch)
	}
}

// unregister removes w from the waiting queries. Call with v.mu held.
func (v *View) unregister(w *Waiter) {
	if set := v.waiters[w.service]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(v.waiters, w.service)
		}
	}
}

// wakeWaiters fires the queries of svc after an index below rev whose
// filter matches the instance before or after the change. Call with v.mu
// held.
func (v *View) wakeWaiters(svc string, rev int64, prev, now *Instance) {
	for w := range v.waiters[svc] {
		if w.index < rev && (prev != nil && w.filter.Match(*prev) || now != nil && w.filter.Match(*now)) {
			w.fire()
			v.unregister(w)
		}
	}
}

// wakeAllWaiters fires every query (after a reload, whose gap the logs do
// not hold). Call with v.mu held.
func (v *View) wakeAllWaiters() {
	for _, set := range v.waiters {
		for w := range set {
			w.fire()
		}
	}
	clear(v.waiters)
}

// Waiting is how many blocking queries of service wait for a change now
// (registered and not woken): for tests and diagnostics.
func (v *View) Waiting(service string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.waiters[service])
}
