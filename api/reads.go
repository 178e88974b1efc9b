package api

import (
	"context"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/regd/regd/registry"
)

// Limits of reads that wait.
const (
	// DefaultWait is a blocking query's wait without ?wait=.
	DefaultWait = 60 * time.Second
	// MaxWait caps ?wait= (the contract: capped at 300 s).
	MaxWait = 300 * time.Second
	// catchUpTimeout bounds a consistent read's wait for this node's view
	// to apply the cluster's revision.
	catchUpTimeout = 5 * time.Second
)

// readOptions are the query parameters every list read accepts.
type readOptions struct {
	stale  bool            // serve this node's view as it is
	minRev int64           // wait until this node has applied minRev (a revision the cluster has reached)
	index  int64           // blocking query: hold until a change after index
	wait   time.Duration   // ... or until wait ends
	filter registry.Filter // ?status= and ?meta.<key>= (instance lists only: withFilter)
}

func parseReadOptions(c echo.Context) (readOptions, error) {
	var o readOptions
	q := c.QueryParams()
	var err error
	if v, ok := q["stale"]; ok {
		o.stale = len(v) == 0 || (v[0] != "false" && v[0] != "0")
	}
	if o.minRev, err = revisionParam(q.Get("min_revision"), "min_revision"); err != nil {
		return o, err
	}
	if o.index, err = revisionParam(q.Get("index"), "index"); err != nil {
		return o, err
	}
	o.wait = DefaultWait
	if w := q.Get("wait"); w != "" {
		d, err := parseWait(w)
		if err != nil {
			return o, err
		}
		o.wait = min(d, MaxWait)
	}
	return o, nil
}

// isBlockingQuery reports whether the request asks to wait for a change
// (a non-zero ?index=); the limits treat it as long-lived.
func isBlockingQuery(c echo.Context) bool {
	ix := c.QueryParam("index")
	return ix != "" && ix != "0"
}

func revisionParam(v, name string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, invalidParameter("%s %q must be a revision: a whole number >= 0", name, v)
	}
	return n, nil
}

// parseWait accepts Go/Consul durations ("30s", "5m") and bare seconds ("30").
// Bare seconds are capped at MaxWait before the conversion: a huge number
// would overflow time.Duration and turn into a negative wait.
func parseWait(w string) (time.Duration, error) {
	if n, err := strconv.Atoi(w); err == nil && n >= 0 {
		return time.Duration(min(n, int(MaxWait/time.Second))) * time.Second, nil
	}
	d, err := time.ParseDuration(w)
	if err != nil || d < 0 {
		return 0, invalidParameter("wait %q must be a duration such as 30s or 5m", w)
	}
	return d, nil
}

// catchUp makes this node's view current enough for the read: by default
// as current as the cluster (a linearizable revision read, then a wait for
// the view to apply it), so a read on any member sees every acknowledged
// write; with min_revision, at least that revision; with stale, as it is.
//
// A min_revision the view has applied answers at once, without a quorum.
// One beyond it is checked against the cluster's current revision (a
// linearizable read): beyond that too, it is a revision no write has made
// yet, and the read is refused at once with 400 future_revision, as etcd
// refuses a range or watch at a future revision (ErrFutureRev), rather
// than held for catchUpTimeout and answered 503. Up to it, the view is
// behind and the read waits for it.
func (s *Server) catchUp(c echo.Context, o readOptions) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), catchUpTimeout)
	defer cancel()
	target := o.minRev
	switch {
	case o.minRev > 0:
		if s.cfg.View.Rev() >= o.minRev {
			return nil
		}
		head, err := s.cfg.Registry.Revision(ctx)
		if err != nil {
			return err
		}
		if o.minRev > head {
			return registry.Errorf(registry.KindInvalid, registry.CodeFutureRevision,
				"min_revision %d is beyond the cluster's current revision %d: no write has made it yet", o.minRev, head)
		}
	case !o.stale:
		rev, err := s.cfg.Registry.Revision(ctx)
		if err != nil {
			return err
		}
		target = rev
	}
	return s.cfg.View.WaitRev(ctx, target)
}

// withFilter adds the instance filters (?status=, ?meta.<key>=) to o: the
// instance list's parameters, not the service list's.
func withFilter(c echo.Context, o readOptions) (readOptions, error) {
	var err error
	o.filter, err = parseFilter(c.QueryParams())
	return o, err
}

// metaParamPrefix starts a metadata filter's query parameter:
// ?meta.<key>=<value>.
const metaParamPrefix = "meta."

// parseFilter reads ?status= (one of up, draining, out_of_service, any;
// default up) and ?meta.<key>=<value> (repeatable; every one must match).
// A malformed one is 400 invalid_parameter.
func parseFilter(q url.Values) (registry.Filter, error) {
	var status string
	if vs, ok := q["status"]; ok {
		if len(vs) != 1 {
			return registry.Filter{}, invalidParameter("status is given %d times; give one status (or any)", len(vs))
		}
		status = vs[0]
		if status == "" {
			return registry.Filter{}, invalidParameter("status is empty; give up, draining, out_of_service or any")
		}
	}
	var meta []registry.MetaMatch
	for k, vs := range q {
		key, ok := strings.CutPrefix(k, metaParamPrefix)
		if !ok {
			continue
		}
		for _, v := range vs {
			meta = append(meta, registry.MetaMatch{Key: key, Value: v})
		}
	}
	return registry.NewFilter(status, meta)
}

// blockFilter holds a blocking query of service's instances until a change
// after index touched an instance the filter selects (before or after it),
// the wait ends (with up to 1/16 jitter so that many clients do not return
// in step), the client leaves, or the server shuts down. The query stays
// registered until its answer is written: the caller calls Done on the
// waiter it returns (nil when the request is no blocking query), with the
// revision of the answer it wrote, or 0, which the drain handshake reads.
func (s *Server) blockFilter(c echo.Context, service string, o readOptions) *registry.Waiter {
	if o.index == 0 {
		return nil
	}
	w := s.cfg.View.Block(service, o.filter, o.index)
	var wake <-chan struct{}
	if w != nil { // nil from a View without blocking queries (tests): wait it out
		wake = w.C()
	}
	s.hold(c, wake, o.wait)
	return w
}

// block holds a blocking query of the service list until a service
// appears or goes or a count changes after index; see blockFilter.
func (s *Server) block(c echo.Context, o readOptions) {
	if o.index == 0 {
		return
	}
	changed, wake := s.cfg.View.Changed("")
	if changed > o.index {
		return
	}
	s.hold(c, wake, o.wait)
}

// hold waits for wake, the wait (plus up to 1/16 jitter), the client
// leaving or the server shutting down.
func (s *Server) hold(c echo.Context, wake <-chan struct{}, wait time.Duration) {
	if wait > 0 {
		wait += time.Duration(rand.Int64N(int64(wait)/16 + 1))
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-wake:
	case <-timer.C:
	case <-c.Request().Context().Done():
	case <-s.closing:
	}
}
