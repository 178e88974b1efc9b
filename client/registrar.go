package client

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"sync"
	"time"
)

// DefaultTTL is the TTL a Registrar asks for when RegistrarOptions.TTL is 0.
const DefaultTTL = 10

// RegistrarOptions tune a Registrar.
type RegistrarOptions struct {
	// TTL in whole seconds (regd accepts 2–3600); 0: DefaultTTL. The
	// Registrar heartbeats every third of the TTL regd grants.
	TTL int
	// Metadata is registered with the instance.
	Metadata map[string]string
	// Weight is registered with the instance (0–10000); nil: regd's
	// default, 100.
	Weight *int
	// Check, when set, is a health check regd runs for the instance as
	// well: regd removes the instance after the check's failures even
	// while the Registrar heartbeats. regd may grant a longer TTL than
	// asked for, to cover the check; the Registrar heartbeats at a third
	// of the TTL granted.
	Check *Check
}

// Registrar keeps one instance registered: see the package documentation.
// Its methods are safe for concurrent use.
type Registrar struct {
	c                    *conn
	service, id, address string
	ttl                  int
	metadata             map[string]string
	weight               *int
	check                *Check

	life context.Context // ends at Close: stops Start's retries and the heartbeats
	kill context.CancelFunc

	mu        sync.Mutex
	node      int      // index of the node in use
	inst      Instance // the last registration's answer
	status    string   // registered with each registration; "" or StatusUp: up
	err       error    // the last failure, nil after a success
	started   bool
	closed    bool
	closeErr  error
	startDone chan struct{} // closed when Start returns
	loopDone  chan struct{} // closed when the heartbeat loop returns; nil until it runs
}

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("regd client: closed")

// ErrStarted is returned by a second Start.
var ErrStarted = errors.New("regd client: already started")

// NewRegistrar prepares the registration of instance id of service at
// address. Nothing is sent until Start.
func NewRegistrar(cfg Config, service, id, address string, opts RegistrarOptions) *Registrar {
	ttl := opts.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	life, kill := context.WithCancel(context.Background())
	return &Registrar{
		life:     life,
		kill:     kill,
		c:        newConn(cfg),
		service:  service,
		id:       id,
		address:  address,
		ttl:      ttl,
		metadata: maps.Clone(opts.Metadata),
		weight:   opts.Weight,
		check:    opts.Check,
	}
}

// Drain sets the instance's status to draining, in place: it stays
// registered and heartbeating but leaves discovery answers, so clients stop
// sending it new work. With wait > 0 (at most 60 s) it returns once every
// subscriber of the service on every member has been written the change,
// or when wait ends: Observed says how far it got. A graceful shutdown:
// Drain, finish the work in flight, then Close. A registration the
// Registrar makes afterwards (its lease expired) keeps the status.
func (r *Registrar) Drain(ctx context.Context, wait time.Duration) (Observed, error) {
	return r.SetStatus(ctx, StatusDraining, wait)
}

// SetStatus changes the instance's status in place (StatusUp undrains);
// see Drain.
func (r *Registrar) SetStatus(ctx context.Context, status string, wait time.Duration) (Observed, error) {
	cl := &Client{c: r.c}
	r.mu.Lock()
	cl.node.Store(uint64(r.node))
	r.mu.Unlock()
	inst, obs, err := cl.SetStatus(ctx, r.service, r.id, status, wait)
	if err != nil {
		return obs, err
	}
	r.mu.Lock()
	r.status, r.inst = status, inst
	r.mu.Unlock()
	r.c.log.Info("regd: status set", "service", r.service, "id", r.id, "status", status, "observed", obs.String())
	return obs, nil
}

// Start registers the instance, trying the nodes in turn with backoff until
// one accepts it or ctx ends, then heartbeats in the background until
// Close. An answer that no retry can change (400: a bad name, address, TTL
// or metadata; 401 or 403: Config.Token is missing, unknown or a read
// token, see IsAuthError) is returned at once as an *APIError. A Registrar
// starts once; after a failed Start, Close it anyway: a write that timed
// out may still have been applied, and Close removes it (after a 401 or
// 403, Close's deregistration is refused the same way and returns that
// error).
func (r *Registrar) Start(ctx context.Context) error {
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return ErrClosed
	case r.started:
		r.mu.Unlock()
		return ErrStarted
	}
	r.started = true
	r.startDone = make(chan struct{})
	defer close(r.startDone)
	r.mu.Unlock()

	// Close aborts the attempts; it then deregisters, so that a
	// registration it interrupted does not linger until its TTL.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	defer context.AfterFunc(r.life, stop)()

	p := pacer{bo: backoff{base: 100 * time.Millisecond, max: 5 * time.Second}, nodes: len(r.c.bases)}
	for {
		err := r.register(ctx)
		if err == nil {
			break
		}
		if r.life.Err() != nil {
			return ErrClosed
		}
		if !retryable(err) {
			return err
		}
		r.nextNode(err)
		if ctx.Err() != nil || !sleep(ctx, p.next(err)) {
			if r.life.Err() != nil {
				return ErrClosed
			}
			return errors.Join(ctx.Err(), err)
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	r.loopDone = make(chan struct{})
	go r.run(r.life, r.loopDone)
	return nil
}

// Instance is the instance as regd returned it at the last registration.
func (r *Registrar) Instance() Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inst.clone()
}

// Err is the last failure (of a registration or heartbeat), or nil when
// the last attempt succeeded. The Registrar keeps retrying on its own;
// after a 401 or 403 (IsAuthError: the token was revoked, say) it does not
// move to another node or register again, but heartbeats on at its usual
// pace, so that it recovers if regd's tokens are put right in time.
func (r *Registrar) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close stops heartbeating and deregisters the instance, trying the nodes
// in turn until one answers 204 or 404 or ctx ends. Later calls return the
// first call's result.
func (r *Registrar) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		err := r.closeErr
		r.mu.Unlock()
		return err
	}
	r.closed = true
	started, startDone := r.started, r.startDone
	r.mu.Unlock()

	r.kill()
	var err error
	if started {
		select { // Start returns promptly once r.life has ended
		case <-startDone:
		case <-ctx.Done():
		}
		r.mu.Lock()
		loopDone := r.loopDone
		r.mu.Unlock()
		if loopDone != nil {
			select {
			case <-loopDone:
			case <-ctx.Done():
			}
		}
		err = r.deregister(ctx)
	}
	r.mu.Lock()
	r.closeErr = err
	r.mu.Unlock()
	return err
}

func (r *Registrar) deregister(ctx context.Context) error {
	p := pacer{bo: backoff{base: 100 * time.Millisecond, max: 2 * time.Second}, nodes: len(r.c.bases)}
	for {
		base := r.base()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		status, err := r.c.do(rctx, http.MethodDelete, base, instancePath(r.service, r.id), nil, nil)
		cancel()
		if err == nil || status == http.StatusNotFound {
			r.c.log.Info("regd: deregistered", "service", r.service, "id", r.id, "node", base)
			return nil
		}
		if !retryable(err) || ctx.Err() != nil {
			return err
		}
		r.nextNode(err)
		if !sleep(ctx, p.next(err)) {
			return errors.Join(ctx.Err(), err)
		}
	}
}

// run heartbeats every TTL/3 until ctx ends.
func (r *Registrar) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	p := pacer{bo: backoff{base: 100 * time.Millisecond, max: r.interval()}, nodes: len(r.c.bases)}
	timer := time.NewTimer(r.interval())
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		err := r.heartbeat(ctx)
		if err != nil && ctx.Err() == nil && !retryable(err) && !IsAuthError(err) {
			// 404: expired or deregistered behind our back; 409 no_lease:
			// a plain etcd client replaced the key. Register again.
			r.c.log.Warn("regd: heartbeat refused; registering again", "service", r.service, "id", r.id, "err", err)
			err = r.register(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			p.reset()
			p.bo.max = r.interval()
			timer.Reset(r.interval())
			continue
		}
		if IsAuthError(err) {
			// The token is missing, unknown or read-only (revoked on a
			// SIGHUP, say): every node answers the same, and registering
			// again would too. Err reports it; try again at the heartbeat
			// pace, on the same node, in case regd's tokens are put right
			// before the lease runs out.
			timer.Reset(r.interval())
			continue
		}
		r.nextNode(err)
		timer.Reset(p.next(err))
	}
}

// interval is a third of the granted TTL.
func (r *Registrar) interval() time.Duration {
	r.mu.Lock()
	ttl := r.inst.TTL
	r.mu.Unlock()
	if ttl <= 0 {
		ttl = int64(r.ttl)
	}
	return max(time.Duration(ttl)*time.Second/3, 100*time.Millisecond)
}

// reqTimeout bounds one heartbeat: half the TTL, 1–10 s, so that a hung
// node leaves time to try another before the lease runs out.
func (r *Registrar) reqTimeout() time.Duration {
	return min(max(time.Duration(r.ttl)*time.Second/2, time.Second), 10*time.Second)
}

func (r *Registrar) register(ctx context.Context) error {
	base := r.base()
	reg := Registration{Address: r.address, TTL: r.ttl, Metadata: r.metadata, Weight: r.weight, Check: r.check}
	r.mu.Lock()
	if r.status != StatusUp {
		reg.Status = r.status
	}
	r.mu.Unlock()
	body := reg.body()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var inst Instance
	status, err := r.c.do(rctx, http.MethodPut, base, instancePath(r.service, r.id), body, &inst)
	r.mu.Lock()
	r.err = err
	if err == nil {
		r.inst = inst
	}
	r.mu.Unlock()
	if err != nil {
		r.c.log.Warn("regd: register failed", "service", r.service, "id", r.id, "node", base, "err", err)
		return err
	}
	r.c.log.Info("regd: registered", "service", r.service, "id", r.id, "node", base,
		"status", status, "ttl", inst.TTL, "lease", inst.LeaseID, "revision", inst.Revision)
	return nil
}

func (r *Registrar) heartbeat(ctx context.Context) error {
	base := r.base()
	rctx, cancel := context.WithTimeout(ctx, r.reqTimeout())
	defer cancel()
	var out struct {
		TTL int64 `json:"ttl"`
	}
	_, err := r.c.do(rctx, http.MethodPut, base, instancePath(r.service, r.id)+"/heartbeat", nil, &out)
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		r.c.log.Warn("regd: heartbeat failed", "service", r.service, "id", r.id, "node", base, "err", err)
	} else if err == nil {
		r.c.log.Debug("regd: heartbeat", "service", r.service, "id", r.id, "node", base, "ttl", out.TTL)
	}
	return err
}

func (r *Registrar) base() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c.node(r.node)
}

// nextNode leaves the node in use after a failure that another node may
// not have.
func (r *Registrar) nextNode(err error) {
	if !retryable(err) || len(r.c.bases) < 2 {
		return
	}
	r.mu.Lock()
	r.node = (r.node + 1) % len(r.c.bases)
	next := r.c.bases[r.node]
	r.mu.Unlock()
	r.c.log.Info("regd: switching node", "service", r.service, "id", r.id, "next", next, "err", err)
}
