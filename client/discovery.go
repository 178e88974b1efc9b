package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Reasons passed to OnDeregister callbacks.
const (
	ReasonDeregister = "deregister" // deregistered through the API
	ReasonExpire     = "expire"     // its lease ran out
	ReasonReset      = "reset"      // gone from the list a reset event replaced the state with
	// ReasonStatus: still registered, but no longer up (drained or taken
	// out of service); Instance.Status says which. It comes back with
	// OnRegister when it is up again.
	ReasonStatus = "status"
)

const (
	// streamIdleTimeout ends a watch stream that sent nothing, not even a
	// keep-alive comment (regd sends one every 15 s), for this long: the
	// node is hung or cut off without the connection being closed.
	streamIdleTimeout = 45 * time.Second
	// maxSSELine bounds one line of the stream; a reset event carries the
	// whole list on one data line.
	maxSSELine = 64 << 20
	// healthyStream is how long a stream must have lasted for the next
	// reconnect to start again from the shortest backoff.
	healthyStream = 5 * time.Second
)

// authRetryDelay is the wait before a watch refused with 401 or 403 is
// tried again (on the same node). A variable for the tests.
var authRetryDelay = 30 * time.Second

// Discovery follows one service's instances: see the package
// documentation. Its methods are safe for concurrent use.
type Discovery struct {
	c       *conn
	service string
	rr      atomic.Uint64
	life    context.Context // ends at Close
	kill    context.CancelFunc

	mu         sync.Mutex
	onRegister []func(Instance)
	onDeregist []func(Instance, string)
	onEvent    []func(Event)
	state      map[string]Instance
	sorted     []Instance // state sorted by id; nil when it must be rebuilt
	rev        int64      // the newest revision applied
	// lastID is where the next stream resumes (Last-Event-ID): the id of
	// the last event applied, kept as the string regd sent (ids are
	// opaque; several events of one revision have ids of their own), or
	// the revision of the last list.
	lastID    string
	node      int // index of the node the watch uses
	started   bool
	closed    bool
	active    sync.WaitGroup // Start and the watch loop
	lastError error
}

// NewDiscovery prepares to follow service. Nothing is sent until Start.
func NewDiscovery(cfg Config, service string) *Discovery {
	life, kill := context.WithCancel(context.Background())
	return &Discovery{
		c:       newConn(cfg),
		service: service,
		life:    life,
		kill:    kill,
		state:   make(map[string]Instance),
	}
}

// OnRegister adds a callback for an instance that appears or is
// registered again (a register event is an upsert: a new lease, address or
// metadata), or changes in place while up (an update: weight, metadata),
// or comes back up after a drain. Callbacks run one at a time in the order of the changes, on
// the Discovery's own goroutine (on Start's for the initial list), never
// while it holds its lock; they must not call Close. Add callbacks before
// Start to see the initial instances.
func (d *Discovery) OnRegister(f func(Instance)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onRegister = append(d.onRegister, f)
}

// OnDeregister adds a callback for an instance that is gone, with the
// reason: ReasonDeregister, ReasonExpire, or ReasonReset when the instance
// is missing from the full list of a reset. See OnRegister for how
// callbacks are run.
func (d *Discovery) OnDeregister(f func(Instance, string)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onDeregist = append(d.onDeregist, f)
}

// Start lists the service's instances, trying the nodes in turn with
// backoff until one answers or ctx ends, calls OnRegister for each, and
// then follows the watch stream in the background until Close. An answer
// that no retry can change (401 or 403: Config.Token is missing or
// unknown, see IsAuthError) is returned at once as an *APIError.
func (d *Discovery) Start(ctx context.Context) error {
	d.mu.Lock()
	switch {
	case d.closed:
		d.mu.Unlock()
		return ErrClosed
	case d.started:
		d.mu.Unlock()
		return ErrStarted
	}
	d.started = true
	d.active.Add(1)
	defer d.active.Done()
	d.mu.Unlock()

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	defer context.AfterFunc(d.life, stop)()

	p := pacer{bo: backoff{base: 100 * time.Millisecond, max: 5 * time.Second}, nodes: len(d.c.bases)}
	node := 0
	var (
		list InstanceList
		raw  json.RawMessage
	)
	for {
		base := d.c.node(node)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := d.c.do(rctx, http.MethodGet, base, "/v1/services/"+url.PathEscape(d.service)+"/instances", nil, &raw)
		cancel()
		if err == nil {
			if err = json.Unmarshal(raw, &list); err != nil {
				err = fmt.Errorf("regd: list: %w", err)
			}
		}
		if err == nil {
			break
		}
		d.c.log.Warn("regd: list failed", "service", d.service, "node", base, "err", err)
		if d.life.Err() != nil {
			return ErrClosed
		}
		if !retryable(err) {
			return err
		}
		node = (node + 1) % len(d.c.bases)
		if ctx.Err() != nil || !sleep(ctx, p.next(err)) {
			if d.life.Err() != nil {
				return ErrClosed
			}
			return errors.Join(ctx.Err(), err)
		}
	}

	d.mu.Lock()
	d.node = node
	calls := d.resetLocked(list)
	d.mu.Unlock()
	d.dispatch(calls)
	d.notify(Event{Type: EventList, ID: strconv.FormatInt(list.Revision, 10), Data: raw})

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	d.active.Add(1)
	go d.run(d.life)
	return nil
}

// Close stops following the service and waits until no callback runs
// (so it must not be called from a callback).
func (d *Discovery) Close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.kill()
	d.active.Wait()
}

// Instances is a copy of the current instances, sorted by id.
func (d *Discovery) Instances() []Instance { return d.List().Instances }

// Pick returns the next instance round-robin, or false when there is none.
func (d *Discovery) Pick() (Instance, bool) {
	d.mu.Lock()
	s := d.sortedLocked()
	d.mu.Unlock()
	if len(s) == 0 {
		return Instance{}, false
	}
	i := (d.rr.Add(1) - 1) % uint64(len(s))
	return s[i].clone(), true
}

// Revision is the newest etcd revision the state reflects.
func (d *Discovery) Revision() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rev
}

// Err is why the last watch stream ended, or nil while one is open. A
// watch refused with 401 or 403 (IsAuthError: the token was revoked, say)
// is not moved to another node but tried again on the same one every 30 s;
// Err reports it meanwhile.
func (d *Discovery) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastError
}

// sortedLocked returns the state as a slice sorted by id. The slice is
// never modified afterwards: a change builds a new one.
func (d *Discovery) sortedLocked() []Instance {
	if d.sorted == nil {
		d.sorted = make([]Instance, 0, len(d.state))
		for _, in := range d.state {
			d.sorted = append(d.sorted, in)
		}
		slices.SortFunc(d.sorted, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
	}
	return d.sorted
}

// call is one callback invocation, made after the lock is released.
type call struct {
	in     Instance
	reason string // "" for OnRegister
}

func (d *Discovery) dispatch(calls []call) {
	if len(calls) == 0 {
		return
	}
	d.mu.Lock()
	onReg, onDereg := d.onRegister, d.onDeregist
	d.mu.Unlock()
	for _, c := range calls {
		if c.reason == "" {
			for _, f := range onReg {
				f(c.in.clone())
			}
		} else {
			for _, f := range onDereg {
				f(c.in.clone(), c.reason)
			}
		}
	}
}

// resetLocked replaces the state with list and returns the callbacks for
// the differences: removed instances first (reason "reset"), then new or
// changed ones, by id.
func (d *Discovery) resetLocked(list InstanceList) []call {
	var calls []call
	fresh := make(map[string]Instance, len(list.Instances))
	for _, in := range list.Instances {
		fresh[in.ID] = in
	}
	for _, old := range d.sortedLocked() {
		if _, ok := fresh[old.ID]; !ok {
			calls = append(calls, call{old, ReasonReset})
		}
	}
	ids := make([]string, 0, len(fresh))
	for id := range fresh {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		in := fresh[id]
		if old, ok := d.state[id]; !ok || !sameInstance(old, in) {
			calls = append(calls, call{in, ""})
		}
	}
	d.state = fresh
	d.sorted = nil
	d.rev = list.Revision
	d.lastID = strconv.FormatInt(list.Revision, 10)
	return calls
}

func sameInstance(a, b Instance) bool {
	return a.Revision == b.Revision && a.LeaseID == b.LeaseID && a.Address == b.Address
}

// applyLocked applies one stream event and returns its callbacks. A
// resume with the last event's id continues with the next event, on any
// node, so nothing is applied twice.
func (d *Discovery) applyLocked(ev sseEvent) ([]call, error) {
	if ev.HasID && ev.ID != "" {
		d.lastID = ev.ID
		// The revision is the id's leading number ("42" or "42.1"),
		// for Revision() only; the id itself is kept as it came.
		num, _, _ := strings.Cut(ev.ID, ".")
		if n, err := strconv.ParseInt(num, 10, 64); err == nil && n > d.rev {
			d.rev = n
		}
	}
	switch ev.Event {
	case "reset":
		var list InstanceList
		if err := json.Unmarshal([]byte(ev.Data), &list); err != nil {
			return nil, fmt.Errorf("regd client: reset event: %w", err)
		}
		return d.resetLocked(list), nil
	case "register", "update", "deregister", "expire":
	default:
		return nil, nil // a type this client does not know: skip it
	}
	var in Instance
	if err := json.Unmarshal([]byte(ev.Data), &in); err != nil {
		return nil, fmt.Errorf("regd client: %s event: %w", ev.Event, err)
	}
	if in.Metadata == nil {
		in.Metadata = map[string]string{}
	}
	if ev.Event == "register" || ev.Event == "update" {
		// The stream shows up instances (regd's default): an instance
		// whose status is another one has left this view.
		if in.Status == "" || in.Status == StatusUp {
			d.state[in.ID] = in
			d.sorted = nil
			return []call{{in, ""}}, nil
		}
		if _, ok := d.state[in.ID]; !ok {
			return nil, nil
		}
		delete(d.state, in.ID)
		d.sorted = nil
		return []call{{in, ReasonStatus}}, nil
	}
	old, ok := d.state[in.ID]
	if !ok {
		return nil, nil // never seen registered: nothing to take back
	}
	delete(d.state, in.ID)
	d.sorted = nil
	if in.Address == "" {
		in = old
	}
	return []call{{in, ev.Event}}, nil
}

// resumeFrom is the Last-Event-ID of the next stream.
func (d *Discovery) resumeFrom() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastID
}

// run follows the watch stream until ctx ends, moving to the next node
// after every stream that ends.
func (d *Discovery) run(ctx context.Context) {
	defer d.active.Done()
	p := pacer{bo: backoff{base: 100 * time.Millisecond, max: 3 * time.Second}, nodes: len(d.c.bases)}
	for {
		d.mu.Lock()
		base := d.c.node(d.node)
		d.mu.Unlock()
		began := time.Now()
		err := d.stream(ctx, base)
		if ctx.Err() != nil {
			return
		}
		if IsAuthError(err) {
			// The token is missing, unknown or lacks the read scope: every
			// node answers the same. Stay on this node and try again
			// seldom, in case regd's tokens are put right.
			d.mu.Lock()
			d.lastError = err
			d.mu.Unlock()
			d.c.log.Error("regd: watch refused: check the token", "service", d.service,
				"node", base, "err", err, "revision", d.Revision(), "in", authRetryDelay)
			if !sleep(ctx, authRetryDelay) {
				return
			}
			continue
		}
		d.mu.Lock()
		d.lastError = err
		d.node = (d.node + 1) % len(d.c.bases)
		next := d.c.node(d.node)
		d.mu.Unlock()
		if time.Since(began) > healthyStream {
			p.reset()
		}
		wait := p.next(err)
		d.c.log.Warn("regd: watch stream ended; resuming on the next node", "service", d.service,
			"node", base, "next", next, "err", err, "revision", d.Revision(), "in", wait)
		if !sleep(ctx, wait) {
			return
		}
	}
}

// stream follows one watch stream until it ends; it never returns nil.
func (d *Discovery) stream(ctx context.Context, base string) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	after := d.resumeFrom()
	req, err := d.c.newRequest(ctx, http.MethodGet, base+"/v1/services/"+url.PathEscape(d.service)+"/watch", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	req.Header.Set("Last-Event-ID", after)

	idle := time.AfterFunc(streamIdleTimeout, func() {
		cancel(fmt.Errorf("no data for %s", streamIdleTimeout))
	})
	defer idle.Stop()
	resp, err := d.c.hc.Do(req)
	if err != nil {
		return errors.Join(err, context.Cause(ctx))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return apiError(resp)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return fmt.Errorf("regd client: watch answered %q, not an event stream", mt)
	}
	d.c.log.Info("regd: watching", "service", d.service, "node", base, "after", after)
	d.mu.Lock()
	d.lastError = nil
	d.mu.Unlock()

	var closing string
	p := newSSEReader(resp.Body, maxSSELine)
	p.onLine = func() { idle.Reset(streamIdleTimeout) }
	p.onComment = func(c string) {
		if r, ok := strings.CutPrefix(c, "closing:"); ok {
			closing = strings.TrimSpace(r)
		}
	}
	for {
		ev, err := p.Next()
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
				return cause
			}
			if closing != "" {
				return fmt.Errorf("server closed the stream: %s", closing)
			}
			if err == io.EOF {
				return errors.New("server closed the stream")
			}
			return err
		}
		d.mu.Lock()
		calls, err := d.applyLocked(ev)
		d.mu.Unlock()
		if err != nil {
			return err
		}
		d.dispatch(calls)
		d.notify(Event{Type: ev.Event, ID: ev.ID, Data: json.RawMessage(ev.Data)})
	}
}
