package loadgen

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// The load tool's HTTP client: fasthttp's HostClient (github.com/valyala/
// fasthttp), which reuses its request and response objects and buffers, so
// that a request in steady state allocates next to nothing and the tool
// leaves the shared cores to the servers it measures. Its requests are
// HTTP/1.1 with keep-alive, Content-Length or chunked bodies; no TLS,
// proxies or redirects are needed against regd and etcd's gateway.

// Client sends requests to one address (host:port) over keep-alive
// connections, at most maxConns at once.
type Client struct {
	hc            *fasthttp.HostClient
	timeout       time.Duration
	closeOnCancel bool
	cancelled     atomic.Bool // the request's context ended: Do closed the connections

	mu    sync.Mutex
	conns map[net.Conn]struct{} // open connections, closed by Close and by a cancelled Do
}

// NewClient returns a client of addr whose connections come from localIP
// when it is not empty (a loopback address such as 127.0.0.7, to spread
// connections over source addresses). Every request is bounded by timeout
// besides its context. bufSize is each connection's read buffer: small for
// many idle waiters, larger for big bodies.
func NewClient(addr, localIP string, maxConns, bufSize int, timeout time.Duration) *Client {
	c := &Client{timeout: timeout, conns: make(map[net.Conn]struct{})}
	c.hc = newHostClient(addr, localIP, maxConns, bufSize, func(nc net.Conn) net.Conn { return c.track(nc) })
	return c
}

func newHostClient(addr, localIP string, maxConns, bufSize int, wrap func(net.Conn) net.Conn) *fasthttp.HostClient {
	d := net.Dialer{Timeout: 5 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	return &fasthttp.HostClient{
		Addr:     addr,
		MaxConns: max(maxConns, 1),
		// A worker that finds every connection busy waits for one rather
		// than failing (fasthttp's default is ErrNoFreeConns).
		MaxConnWaitTimeout:       time.Minute,
		MaxIdleConnDuration:      90 * time.Second,
		ReadBufferSize:           max(bufSize, 1024),
		WriteBufferSize:          4 << 10,
		MaxResponseBodySize:      256 << 20,
		NoDefaultUserAgentHeader: true,
		DisablePathNormalizing:   true,
		Dial: func(addr string) (net.Conn, error) {
			nc, err := d.Dial("tcp", addr)
			if err != nil {
				return nil, err
			}
			return wrap(nc), nil
		},
	}
}

// Reply is one response as a check sees it, valid during the call only.
type Reply struct {
	Status int
	Body   []byte
	resp   *fasthttp.Response
}

// Header is the value of the response header name (empty when absent).
func (r *Reply) Header(name string) []byte { return r.resp.Header.Peek(name) }

// Do sends one request (header lines "Name: value") and calls check with
// the reply; check's error is Do's. fasthttp sends an idempotent request
// (GET, HEAD, PUT) again on another connection when a reused one turns out
// closed, so callers only send requests that may be repeated. The request
// ends by ctx's deadline or the client's timeout, whichever comes first.
// When ctx is cancelled before, a client made with CloseOnCancel closes its
// connections (every request in flight on it fails at once: long waits
// such as blocking queries end with the run); any other lets the request
// finish within its timeout, since loops whose contexts still run share
// its connections, and returns ctx's error if the request failed.
func (c *Client) Do(ctx context.Context, method, path string, header []string, body []byte, check func(*Reply) error) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	fillRequest(req, c.hc.Addr, method, path, header, body)
	deadline := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var stop func() bool
	if c.closeOnCancel {
		c.cancelled.Store(false)
		stop = context.AfterFunc(ctx, func() {
			c.cancelled.Store(true) // no retry on a new connection
			c.closeConns()
		})
	}
	err := c.hc.DoDeadline(req, resp, deadline)
	if stop != nil {
		stop()
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return check(&Reply{Status: resp.StatusCode(), Body: resp.Body(), resp: resp})
}

// CloseOnCancel makes Do close the client's connections when a request's
// context is cancelled, for a client of one caller (see Do); it returns c.
func (c *Client) CloseOnCancel() *Client {
	c.closeOnCancel = true
	c.hc.RetryIf = func(req *fasthttp.Request) bool {
		h := &req.Header
		return !c.cancelled.Load() && (h.IsGet() || h.IsHead() || h.IsPut())
	}
	return c
}

// Close closes every connection of the client.
func (c *Client) Close() {
	c.hc.CloseIdleConnections()
	c.closeConns()
}

func (c *Client) track(nc net.Conn) net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conns[nc] = struct{}{}
	return &trackedConn{Conn: nc, c: c}
}

func (c *Client) closeConns() {
	c.mu.Lock()
	conns := make([]net.Conn, 0, len(c.conns))
	for nc := range c.conns {
		conns = append(conns, nc)
	}
	c.mu.Unlock()
	for _, nc := range conns {
		nc.Close()
	}
}

// trackedConn forgets itself in its client when closed.
type trackedConn struct {
	net.Conn
	c    *Client
	once sync.Once
}

func (t *trackedConn) Close() error {
	t.once.Do(func() {
		t.c.mu.Lock()
		delete(t.c.conns, t.Conn)
		t.c.mu.Unlock()
	})
	return t.Conn.Close()
}

func fillRequest(req *fasthttp.Request, addr, method, path string, header []string, body []byte) {
	req.Header.SetMethod(method)
	req.SetRequestURI("http://" + addr + path)
	for _, h := range header {
		if name, value, ok := strings.Cut(h, ":"); ok {
			req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
		}
	}
	if body != nil {
		req.SetBodyRaw(body)
	}
}

// Stream is one streaming response (SSE, etcd's /v3/watch, a snapshot) on a
// connection of its own: Read returns its body as it arrives, chunked
// encoding removed. An open stream costs its connection's read buffer and
// the reader's goroutine.
type Stream struct {
	Status int
	// Body is the whole body of an answer that was not 200, for the error.
	Body []byte

	req  *fasthttp.Request
	resp *fasthttp.Response
	body io.Reader
	conn net.Conn
	stop func() bool
	// closeConn closes conn, set under its own lock by the dialer.
	closeConn func()
}

// OpenStream sends a request on a new connection to addr (from localIP
// when not empty) and returns once the response's head is in. The stream
// ends when ctx does (its connection is closed) or the server ends it.
// bufSize is the connection's read buffer. A status other than 200 comes
// with its whole body in Body and nothing to read.
func OpenStream(ctx context.Context, addr, localIP, method, path string, header []string, bufSize int) (*Stream, error) {
	s := &Stream{req: fasthttp.AcquireRequest(), resp: fasthttp.AcquireResponse()}
	var mu sync.Mutex
	hc := newHostClient(addr, localIP, 1, bufSize, func(nc net.Conn) net.Conn {
		mu.Lock()
		defer mu.Unlock()
		s.conn = nc
		return nc
	})
	hc.StreamResponseBody = true
	fillRequest(s.req, addr, method, path, header, nil)
	closeConn := func() {
		mu.Lock()
		defer mu.Unlock()
		if s.conn != nil {
			s.conn.Close()
		}
	}
	s.closeConn = closeConn
	s.stop = context.AfterFunc(ctx, closeConn)
	if err := hc.DoTimeout(s.req, s.resp, streamHeadTimeout); err != nil {
		s.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	// fasthttp set the connection's read deadline from the head's timeout;
	// the body of a stream may take any time.
	mu.Lock()
	if s.conn != nil {
		_ = s.conn.SetReadDeadline(time.Time{})
	}
	mu.Unlock()
	s.Status = s.resp.StatusCode()
	if s.Status != fasthttp.StatusOK {
		s.Body = append([]byte(nil), s.resp.Body()...)
		s.body = eofReader{}
		return s, nil
	}
	s.body = s.resp.BodyStream()
	if s.body == nil { // the whole body came with the head
		s.body = strings.NewReader(string(s.resp.Body()))
	}
	return s, nil
}

// Header is the value of the response header name (empty when absent).
func (s *Stream) Header(name string) []byte { return s.resp.Header.Peek(name) }

// Read reads the body as it arrives; io.EOF at its end.
func (s *Stream) Read(p []byte) (int, error) { return s.body.Read(p) }

// Close ends the stream and closes its connection.
func (s *Stream) Close() {
	s.stop()
	s.closeConn()
	_ = s.resp.CloseBodyStream()
	fasthttp.ReleaseRequest(s.req)
	fasthttp.ReleaseResponse(s.resp)
}

// streamHeadTimeout bounds OpenStream's wait for a response's head (a
// variable for the test that reads a stream beyond it).
var streamHeadTimeout = 15 * time.Second

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// IsTimeout reports whether err is a request that ran out of time.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, fasthttp.ErrTimeout) || errors.As(err, &ne) && ne.Timeout()
}
