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
	// healthEvery is how often the streams' check (sweep, detach.go) looks
	// that the node still knows a leader, and at the connections of
	// taken-over streams; a stream on a cut-off node is closed so the
	// client moves on.
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
// Over HTTP/1.x the stream leaves net/http once its head is written and
// runs on a goroutine of its own (detach.go); errors before the head leave
// through the one error exit, as for any request.
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

	w, r := c.Response(), c.Request()
	h := w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	setRevision(c, start)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		sub.Close()
		return nil
	}
	w.Flush()
	s.metrics.streams.Inc()
	health := s.streamHealth()
	s.takenOver.begin()
	conn, err := takeOver(w.Writer, r, s.writeTimeout)
	if err != nil {
		s.takenOver.abort()
		// HTTP/2: the stream stays in its handler.
		s.follow(sub, reset, writerSink{w}, health, r.Context().Done())
		sub.Close()
		s.metrics.streams.Dec()
		return nil
	}
	d := &detachment{}
	c.Set(ctxDetached, d)
	s.takenOver.add(conn)
	go func() {
		s.follow(sub, reset, conn, health, conn.goneC)
		sub.Close()
		conn.close()
		s.metrics.streams.Dec()
		d.end()
		s.takenOver.remove(conn)
	}()
	return nil
}

// sink is where a stream's frames go: a taken-over connection
// (streamConn) or the response (writerSink).
type sink interface {
	send(f *frame) error
}

// maxFrame is the most a stream assembles before it writes: a burst of
// events (a mass expiry) goes out in pieces of about this size.
const maxFrame = 32 << 10

// follow writes the subscription's events to out until the stream ends:
// a write fails, the client is gone (clientGone closes), the subscription
// fails (a slow consumer, the view closed), the node stops being ready
// (health) or shuts down. It runs on a goroutine of its own once the
// connection is taken over; its frames stay small so that its stack does
// too.
func (s *Server) follow(sub *registry.Subscription, reset *registry.InstanceList, out sink, health *healthState, clientGone <-chan struct{}) {
	if reset != nil {
		f := getFrame()
		err := appendEvent(f, registry.AfterRevision(reset.Revision), "reset", reset)
		if err == nil {
			err = out.send(f)
		}
		putFrame(f)
		if err != nil {
			return
		}
	}
	keepAlive := time.NewTicker(s.keepAlive)
	defer keepAlive.Stop()
	for {
		events, err := sub.Drain()
		if len(events) > 0 {
			if sendEvents(out, events) != nil {
				return // the client is gone
			}
			// Written: the drain handshake counts it.
			sub.Delivered(events[len(events)-1].Revision)
		}
		if err != nil {
			// Slow consumer or view closed: end the stream; the client
			// reconnects with Last-Event-ID and misses nothing.
			_ = sendString(out, ": closing: "+err.Error()+"\n\n")
			return
		}
		select {
		case <-sub.Notify():
		case <-keepAlive.C:
			if sendString(out, ": keepalive\n\n") != nil {
				return
			}
		case <-health.down:
			_ = sendString(out, ": closing: "+health.err.Error()+"\n\n")
			return
		case <-clientGone:
			return
		case <-s.closing:
			// The reason, for the client's log; it resumes on another
			// member with Last-Event-ID.
			_ = sendString(out, ": closing: this node is shutting down\n\n")
			return
		}
	}
}

// sendEvents writes events, in frames of up to about maxFrame.
func sendEvents(out sink, events []registry.Event) error {
	f := getFrame()
	defer putFrame(f)
	for _, e := range events {
		var data any = e.Data
		if e.Data == nil {
			data = e.Instance
		}
		if err := appendEvent(f, e.ID(), e.Type, data); err != nil {
			return err
		}
		if len(f.b) >= maxFrame {
			if err := out.send(f); err != nil {
				return err
			}
			f.b = f.b[:chunkRoom]
		}
	}
	if f.empty() {
		return nil
	}
	return out.send(f)
}

// sendString writes one comment (or any lines) as it is.
func sendString(out sink, lines string) error {
	f := getFrame()
	defer putFrame(f)
	f.appendString(lines)
	return out.send(f)
}

// appendEvent adds one event to f: its id (registry.EventID: "<revision>"
// or "<revision>.<index>"), type and one line of JSON data.
func appendEvent(f *frame, id registry.EventID, typ string, data any) error {
	// Pre-encoded data is written as it is: json.Marshal of a RawMessage
	// would validate and compact it again for every subscriber.
	buf, ok := data.(json.RawMessage)
	if !ok {
		var err error
		if buf, err = json.Marshal(data); err != nil {
			return err
		}
	}
	f.b = append(f.b, "id: "...)
	f.b, _ = id.AppendText(f.b) // never fails
	f.b = append(f.b, "\nevent: "...)
	f.b = append(f.b, typ...)
	f.b = append(f.b, "\ndata: "...)
	f.b = append(f.b, buf...)
	f.b = append(f.b, "\n\n"...)
	return nil
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
