package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/regd/regd/registry"
)

// Limits of watch streams.
const (
	// DefaultMaxWatchesPerClient caps concurrent watch streams per client IP.
	DefaultMaxWatchesPerClient = 64
	// DefaultKeepAlive is the interval of SSE comment lines that keep
	// proxies from closing an idle stream.
	DefaultKeepAlive = 15 * time.Second
	// healthEvery is how often a stream checks that its node still knows a
	// leader; a stream on a cut-off node is closed so the client moves on.
	healthEvery = time.Second
)

// watchService is GET /v1/services/{service}/watch.
func (s *Server) watchService(c echo.Context) error {
	service := c.Param("service")
	if err := registry.ValidateService(service); err != nil {
		return err
	}
	return s.stream(c, service)
}

// watchAll is GET /v1/watch: every service's changes.
func (s *Server) watchAll(c echo.Context) error { return s.stream(c, "") }

// stream serves Server-Sent Events: one event per change, with an id of
// its own (registry.EventID). ?status= and ?meta.<key>= select the
// instances, as for lists (default: up ones); a change concerns the stream
// when the filter selects the instance before or after it, so an
// instance leaves a filtered stream with an event whose instance the
// filter no longer selects. Last-Event-ID (or ?after=) resumes after that
// event with nothing missed; history this node can no longer replay yields a reset event with
// the full current list first. ?reset=1 asks for that list up front.
// The per-client cap of streams is applied by the limits (class stream).
// A HEAD request gets the stream's status and headers, and no events: it
// returns at once instead of holding the connection.
func (s *Server) stream(c echo.Context, service string) error {
	after, resume, err := lastEventID(c)
	if err != nil {
		return err
	}
	filter, err := parseFilter(c.QueryParams())
	if err != nil {
		return err
	}
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
		sub, err = s.cfg.View.Subscribe(ctx, service, filter, after)
		start = after.Rev
	}
	if !resume || errors.Is(err, registry.ErrCompacted) {
		var list registry.InstanceList
		list, sub, err = s.cfg.View.SubscribeFromList(ctx, service, filter)
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
	if c.Request().Method == http.MethodHead {
		return nil
	}
	if reset != nil {
		if err := writeEvent(w, registry.AfterRevision(reset.Revision), "reset", reset); err != nil {
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
			if werr := writeEvent(w, e.ID(), e.Type, data); werr != nil {
				return nil // the client is gone
			}
		}
		if len(events) > 0 {
			if http.NewResponseController(w.Writer).Flush() == nil {
				// Written and flushed: the drain handshake counts it.
				sub.Delivered(events[len(events)-1].Revision)
			}
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
			// The reason, for the client's log; it resumes on another
			// member with Last-Event-ID.
			_, _ = w.Write([]byte(": closing: this node is shutting down\n\n"))
			w.Flush()
			return nil
		}
	}
}

// writeEvent writes one event: its id (registry.EventID: "<revision>" or
// "<revision>.<index>"), type and one line of JSON data.
func writeEvent(w http.ResponseWriter, id registry.EventID, typ string, data any) error {
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
	frame, _ = id.AppendText(frame) // never fails
	frame = append(frame, "\nevent: "...)
	frame = append(frame, typ...)
	frame = append(frame, "\ndata: "...)
	frame = append(frame, buf...)
	frame = append(frame, "\n\n"...)
	_, err := w.Write(frame)
	return err
}

// lastEventID is where a stream resumes: Last-Event-ID, or ?after= where
// headers cannot be set; an event's id ("<revision>" or
// "<revision>.<index>", registry.EventID), or a list's revision.
func lastEventID(c echo.Context) (registry.EventID, bool, error) {
	v := c.Request().Header.Get("Last-Event-ID")
	name := "Last-Event-ID"
	if v == "" {
		v, name = c.QueryParam("after"), "after"
	}
	if v == "" {
		return registry.EventID{}, false, nil
	}
	id, ok := registry.ParseEventID(v)
	if !ok {
		return registry.EventID{}, false, invalidParameter("%s %s must be an event id (\"<revision>\" or \"<revision>.<index>\", e.g. 42 or 42.1) or a revision", name, registry.QuoteInput(v))
	}
	return id, true, nil
}
