package api

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/regd/regd/registry"
)

// Limits that keep slow or numerous clients from exhausting the server.
// Together with http.Server's ReadHeaderTimeout and IdleTimeout (set where
// the server is built) and the listener's connection cap, they bound what
// one request and one connection can hold: a slow header, a slow body, a
// slow reader of the response, an idle keep-alive connection.
const (
	// DefaultMaxInFlight caps requests being handled at once, watch streams
	// and blocking queries excepted (they have their own cap per client).
	DefaultMaxInFlight = 4096
	// DefaultMaxConns caps open connections (LimitListener).
	DefaultMaxConns = 8192
	// DefaultBodyTimeout bounds reading a request body, from the moment
	// the handler starts. A registration is a few KiB.
	DefaultBodyTimeout = 10 * time.Second
	// DefaultWriteTimeout bounds each write of a response: a client that
	// stops reading is cut off after this long instead of holding a
	// goroutine forever. It is per write, not per response, so watch
	// streams and blocking queries can last as long as they should.
	DefaultWriteTimeout = 30 * time.Second
	// shedLogEvery rate-limits the warning about shed requests, so that a
	// flood does not become a flood of log lines too.
	shedLogEvery = 10 * time.Second
)

// Keys of values the middleware leaves in the echo context.
const ctxShed = "regd.shed" // the request was refused by a limit, not served

// limit is the load-shedding and slow-client middleware. It runs after
// authentication, so that unauthenticated requests never take a slot. What
// a request counts against depends on its route's class (routes.go):
// probes against nothing (a busy node must not look dead to its
// orchestrator), streams and blocking queries against the per-client cap of
// long-lived requests (they wait, they do not work), everything else
// against the in-flight cap.
func (s *Server) limit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		rt := s.routeOf(c)
		if rt.class == classProbe {
			return next(c)
		}
		s.guardWrites(c)

		switch {
		case rt.class == classStream || rt.blocking && isBlockingQuery(c):
			release, ok := s.streams.acquire(clientIP(c.Request()))
			if !ok {
				c.Set(ctxShed, true)
				c.Response().Header().Set("Retry-After", "5")
				return registry.Errorf(registry.KindTooMany, registry.CodeTooManyStreams,
					"this client already has its maximum of %d open watch streams and blocking queries on this node", s.streams.max)
			}
			// A stream holds its slot until it ends, also when it
			// outlives its handler (detach.go).
			defer atEnd(c, release)
		case s.cfg.MaxInFlight > 0:
			if n := s.inflight.Add(1); n > int64(s.cfg.MaxInFlight) {
				s.inflight.Add(-1)
				s.shed()
				c.Set(ctxShed, true)
				c.Response().Header().Set("Retry-After", "1")
				return registry.Errorf(registry.KindUnavailable, registry.CodeOverloaded,
					"this node is handling too many requests; retry shortly")
			}
			defer s.inflight.Add(-1)
		}

		body := s.guardBody(c)
		err := next(c)
		if body != nil && body.timedOut.Load() && !c.Response().Committed {
			// The handler saw a read error; the truth is that the client
			// was too slow. The connection is closed after this answer,
			// because the rest of the body was never read.
			c.Response().Header().Set(echo.HeaderConnection, "close")
			return registry.Errorf(registry.KindRequestTimeout, registry.CodeRequestTimeout,
				"the request body did not arrive within %s", s.cfg.BodyTimeout)
		}
		return err
	}
}

// shed counts a refused request and logs a warning at most once per
// shedLogEvery.
func (s *Server) shed() {
	n := s.shedCount.Add(1)
	now := time.Now().UnixNano()
	last := s.shedLogged.Load()
	if now-last < int64(shedLogEvery) || !s.shedLogged.CompareAndSwap(last, now) {
		return
	}
	s.lg.Warn("shedding load: requests refused with 503 overloaded",
		zap.Int("max-inflight", s.cfg.MaxInFlight),
		zap.Int64("refused-total", n))
}

// guardBody bounds the time to read the request body. Without it a client
// could send headers and then one byte a minute, holding a handler and its
// slot for as long as it likes (http.Server's ReadTimeout would do it too,
// but it also ends every watch stream and blocking query). The deadline is
// lifted once the body is read (net/http does so too at the body's end, when
// it starts watching the connection for the client going away), so it
// cannot fire while the handler does its work afterwards.
func (s *Server) guardBody(c echo.Context) *deadlineBody {
	r := c.Request()
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil
	}
	rc := http.NewResponseController(c.Response().Writer)
	if err := rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout)); err != nil {
		return nil // not a real connection (a test recorder)
	}
	b := &deadlineBody{ReadCloser: r.Body, rc: rc}
	r.Body = b
	return b
}

type deadlineBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	timedOut atomic.Bool
	once     sync.Once
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			b.timedOut.Store(true)
		} else {
			b.once.Do(func() { _ = b.rc.SetReadDeadline(time.Time{}) })
		}
	}
	return n, err
}

// guardWrites gives every write of the response a deadline, renewed
// before each write: a client that stops reading cannot hold the handler
// (and, for a stream, its subscription) beyond it. A deadline left by the
// previous request on a keep-alive connection is cleared first.
func (s *Server) guardWrites(c echo.Context) {
	w := c.Response().Writer
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Time{}); err != nil {
		return // not a real connection (a test recorder)
	}
	c.Response().Writer = &deadlineWriter{ResponseWriter: w, rc: rc, timeout: s.writeTimeout}
}

// deadlineWriter renews the write deadline before each write. On HTTP/2 a
// write deadline fires even with no write pending and resets the stream, so
// it is set only when writing starts, never while a request merely waits;
// the timeout is longer than the keep-alive interval of watch streams.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (w *deadlineWriter) renew() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout)) }

func (w *deadlineWriter) WriteHeader(code int) {
	w.renew()
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.renew()
	return w.ResponseWriter.Write(p)
}

// FlushError is what http.ResponseController (and echo's Flush) call.
func (w *deadlineWriter) FlushError() error {
	w.renew()
	return w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection (deadlines,
// hijacking) through this wrapper.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// LimitListener returns a listener that holds at most max connections
// open at once. At the cap it stops accepting until a connection closes:
// new connections wait in the kernel's accept backlog (and beyond that are
// refused by the kernel), so a flood of connections costs regd no file
// descriptors and no memory. Requests on the connections already open are
// shed with 503 by the in-flight cap before the connection cap is reached in
// practice. max < 1 means no cap.
func LimitListener(l net.Listener, max int) net.Listener {
	if max < 1 {
		return l
	}
	return &limitListener{Listener: l, sem: make(chan struct{}, max), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// NetConn is the connection under the cap: a watch stream looks at its
// socket through it (detach.go).
func (c *limitConn) NetConn() net.Conn { return c.Conn }

// CloseWrite keeps the half-close net/http uses to deliver a final answer
// before closing a connection whose request body it did not read.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
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

// streamLimiter counts open streams and blocking queries per client.
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
