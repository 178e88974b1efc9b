package api

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/regd/regd/registry"
)

// View is the watch-fed, in-memory registry (registry.View implements it).
type View interface {
	WaitRev(ctx context.Context, rev int64) error
	InstancesJSON(service string) ([]byte, int64)
	Services() registry.ServiceList
	Changed(service string) (int64, <-chan struct{})
	Subscribe(ctx context.Context, service string, after int64) (*registry.Subscription, error)
	SubscribeFromList(ctx context.Context, service string) (registry.InstanceList, *registry.Subscription, error)
}

// Limits of long-lived requests.
const (
	DefaultWait    = 60 * time.Second
	MaxWait        = 300 * time.Second
	catchUpTimeout = 5 * time.Second
	// DefaultStreamsPerClient caps concurrent watch streams per client IP.
	DefaultStreamsPerClient = 64
	// DefaultKeepAlive is the interval of SSE comment lines that keep
	// proxies from closing an idle stream.
	DefaultKeepAlive = 15 * time.Second
	// healthEvery is how often a stream checks that its node still knows a
	// leader; a stream on a cut-off node is closed so the client moves on.
	healthEvery = time.Second
)

// readOptions are the query parameters every list read accepts.
type readOptions struct {
	stale  bool          // serve this node's view as it is
	minRev int64         // wait until this node has applied minRev
	index  int64         // blocking query: hold until a change after index
	wait   time.Duration // ... or until wait ends
}

func parseReadOptions(c echo.Context) (readOptions, error) {
	var o readOptions
	q := c.QueryParams()
	if v, ok := q["stale"]; ok {
		o.stale = len(v) == 0 || (v[0] != "false" && v[0] != "0")
	}
	var err error
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

func revisionParam(v, name string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest(codeInvalidParameter, "%s %q must be a revision: a whole number >= 0", name, v)
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
		return 0, badRequest(codeInvalidParameter, "wait %q must be a duration such as 30s or 5m", w)
	}
	return d, nil
}

// catchUp makes this node's view current enough for the read: by default
// as current as the cluster (a linearizable revision read, then a wait for
// the view to apply it), so a read on any member sees every acknowledged
// write; with min_revision, at least that revision; with stale, as it is.
func (s *Server) catchUp(c echo.Context, o readOptions) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), catchUpTimeout)
	defer cancel()
	target := o.minRev
	if !o.stale && o.minRev == 0 {
		rev, err := s.cfg.Registry.Revision(ctx)
		if err != nil {
			return err
		}
		target = rev
	}
	return s.cfg.View.WaitRev(ctx, target)
}

// block holds a blocking query until service changes after index, the wait
// ends (with up to 1/16 jitter so that many clients do not return in step),
// the client leaves, or the server shuts down.
func (s *Server) block(c echo.Context, service string, o readOptions) {
	if o.index == 0 {
		return
	}
	changed, wake := s.cfg.View.Changed(service)
	if changed > o.index {
		return
	}
	wait := o.wait
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

func (s *Server) listInstances(c echo.Context) error {
	service := c.Param("service")
	if err := registry.ValidateService(service); err != nil {
		return err
	}
	o, err := parseReadOptions(c)
	if err != nil {
		return err
	}
	if err := s.catchUp(c, o); err != nil {
		return err
	}
	s.block(c, service, o)
	instances, rev := s.cfg.View.InstancesJSON(service)
	setRevision(c, rev)
	return writeList(c, service, instances, rev)
}

func (s *Server) listServices(c echo.Context) error {
	o, err := parseReadOptions(c)
	if err != nil {
		return err
	}
	if err := s.catchUp(c, o); err != nil {
		return err
	}
	s.block(c, "", o)
	list := s.cfg.View.Services()
	setRevision(c, list.Revision)
	return c.JSON(http.StatusOK, list)
}

func (s *Server) watchService(c echo.Context) error {
	service := c.Param("service")
	if err := registry.ValidateService(service); err != nil {
		return err
	}
	return s.stream(c, service)
}

func (s *Server) watchAll(c echo.Context) error { return s.stream(c, "") }

// stream serves Server-Sent Events: one event per change, id the revision.
// Last-Event-ID (or ?after=) resumes after that revision with nothing
// missed; history this node can no longer replay yields a reset event with
// the full current list first. ?reset=1 asks for that list up front.
func (s *Server) stream(c echo.Context, service string) error {
	after, resume, err := lastEventID(c)
	if err != nil {
		return err
	}
	release, ok := s.streams.acquire(clientIP(c.Request()))
	if !ok {
		c.Response().Header().Set("Retry-After", "5")
		return registry.Errorf(registry.KindTooMany, "too_many_streams", "this client already has %d open watch streams and blocking queries", s.streams.max)
	}
	defer release()
	if err := s.cfg.Cluster.Ready(); err != nil {
		return unavailable(err.Error() + "; watch through another node")
	}
	ctx := c.Request().Context()
	var (
		sub   *registry.Subscription
		reset *registry.InstanceList
		start int64
	)
	if resume {
		sub, err = s.cfg.View.Subscribe(ctx, service, after)
		start = after
	}
	if !resume || errors.Is(err, registry.ErrCompacted) {
		var list registry.InstanceList
		list, sub, err = s.cfg.View.SubscribeFromList(ctx, service)
		start = list.Revision
		if resume || c.QueryParam("reset") == "1" || c.QueryParam("reset") == "true" {
			reset = &list
		}
	}
	if err != nil {
		return err
	}
	defer sub.Close()

	w := c.Response()
	h := w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	setRevision(c, start)
	w.WriteHeader(http.StatusOK)
	w.Flush()
	if reset != nil {
		if err := writeEvent(w, reset.Revision, "reset", reset); err != nil {
			return nil
		}
		w.Flush()
	}
	keepAlive := time.NewTicker(s.keepAlive)
	defer keepAlive.Stop()
	health := time.NewTicker(healthEvery)
	defer health.Stop()
	for {
		events, err := sub.Drain()
		for _, e := range events {
			var data any = e.Data
			if e.Data == nil {
				data = e.Instance
			}
			if werr := writeEvent(w, e.Revision, e.Type, data); werr != nil {
				return nil // the client is gone
			}
		}
		if len(events) > 0 {
			w.Flush()
		}
		if err != nil {
			// Slow consumer or view closed: end the stream; the client
			// reconnects with Last-Event-ID and misses nothing.
			_, _ = w.Write([]byte(": closing: " + err.Error() + "\n\n"))
			w.Flush()
			return nil
		}
		select {
		case <-sub.Notify():
		case <-keepAlive.C:
			if _, err := w.Write([]byte(": keepalive\n\n")); err != nil {
				return nil
			}
			w.Flush()
		case <-health.C:
			if err := s.cfg.Cluster.Ready(); err != nil {
				_, _ = w.Write([]byte(": closing: " + err.Error() + "\n\n"))
				w.Flush()
				return nil
			}
		case <-ctx.Done():
			return nil
		case <-s.closing:
			return nil
		}
	}
}

func writeEvent(w http.ResponseWriter, rev int64, typ string, data any) error {
	// Pre-encoded data is written as it is: json.Marshal of a RawMessage
	// would validate and compact it again for every subscriber.
	buf, ok := data.(json.RawMessage)
	if !ok {
		var err error
		if buf, err = json.Marshal(data); err != nil {
			return err
		}
	}
	frame := make([]byte, 0, len(buf)+len(typ)+40)
	frame = append(frame, "id: "...)
	frame = strconv.AppendInt(frame, rev, 10)
	frame = append(frame, "\nevent: "...)
	frame = append(frame, typ...)
	frame = append(frame, "\ndata: "...)
	frame = append(frame, buf...)
	frame = append(frame, "\n\n"...)
	_, err := w.Write(frame)
	return err
}

func lastEventID(c echo.Context) (int64, bool, error) {
	v := c.Request().Header.Get("Last-Event-ID")
	name := "Last-Event-ID"
	if v == "" {
		v, name = c.QueryParam("after"), "after"
	}
	if v == "" {
		return 0, false, nil
	}
	n, err := revisionParam(v, name)
	return n, err == nil, err
}

// clientIP is the connection's peer address. X-Forwarded-For is not
// trusted: a client could set it to dodge its stream limit.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// streamLimiter counts open streams per client.
type streamLimiter struct {
	mu   sync.Mutex
	open map[string]int
	max  int
}

func (l *streamLimiter) acquire(client string) (release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[client] >= l.max {
		return nil, false
	}
	l.open[client]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.open[client]--; l.open[client] == 0 {
			delete(l.open, client)
		}
	}, true
}

// writeList writes {"service":..,"instances":..,"revision":..} around the
// view's shared, pre-encoded instances, without copying them.
func writeList(c echo.Context, service string, instances []byte, rev int64) error {
	name, err := json.Marshal(service)
	if err != nil {
		return err
	}
	head := make([]byte, 0, len(name)+32)
	head = append(head, `{"service":`...)
	head = append(head, name...)
	head = append(head, `,"instances":`...)
	tail := make([]byte, 0, 32)
	tail = append(tail, `,"revision":`...)
	tail = strconv.AppendInt(tail, rev, 10)
	tail = append(tail, "}\n"...)
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	w.Header().Set(echo.HeaderContentLength, strconv.Itoa(len(head)+len(instances)+len(tail)))
	w.WriteHeader(http.StatusOK)
	for _, part := range [][]byte{head, instances, tail} {
		if _, err := w.Write(part); err != nil {
			return nil // the client is gone
		}
	}
	return nil
}
