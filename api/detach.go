package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
)

// A watch stream over HTTP/1.x outlives its handler. Once its head is
// written, the handler takes the connection from net/http (Hijack) and
// hands it, with the subscription, to a goroutine of its own, then
// returns. What a stream holds is then a small goroutine, the
// subscription and the socket: not net/http's connection goroutine (its
// stack grown to 16 KiB by the handler chain), not net/http's background
// reader goroutine, not its 4 KiB read and write buffers
// (docs/scale/notes.md, "2: fan-out", has the profile and the figures).
// HTTP/2 streams cannot be taken over; they are served where they are.
//
// After the takeover the stream frames its writes itself: chunked, as
// net/http declared in the head for an HTTP/1.1 request (RFC 9112 §7.1), or
// as they are for HTTP/1.0, whose body ends when the connection closes.
// When the stream ends, its last chunk is written and the connection
// closed: it cannot go back to net/http for another request. The head does
// not say Connection: close, though: Python's http.client, for one, lets
// go of its socket on that header, and clients stop a stream by shutting
// that socket down (examples/python); a client that reuses the connection
// finds it closed, as after a server's idle timeout, and retries (RFC 9112
// §9.3.1). The client's
// close is noticed by a write that fails, or by a look at the socket
// (gone) that one loop for all streams takes once per healthEvery (sweep),
// without a reader goroutine per stream; the same loop checks the node's
// readiness for every stream at once.

// ctxDetached holds the *detachment of a request whose stream was taken
// over: the middleware leaves their end-of-request work to it.
const ctxDetached = "regd.detached"

// detachment runs the end-of-request work of the middleware (the per-client
// slot's release, the request's metrics and log line) when a taken-over
// stream ends, not when its handler returns.
type detachment struct {
	mu    sync.Mutex
	ended bool
	fns   []func()
}

// add runs fn when the stream ends, at once if it has ended.
func (d *detachment) add(fn func()) {
	d.mu.Lock()
	if d.ended {
		d.mu.Unlock()
		fn()
		return
	}
	d.fns = append(d.fns, fn)
	d.mu.Unlock()
}

// end runs the work added so far, in the order it was added (the innermost
// middleware's first, as deferred calls would have).
func (d *detachment) end() {
	d.mu.Lock()
	d.ended = true
	fns := d.fns
	d.fns = nil
	d.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// atEnd runs fn when the request ends: now, or when its taken-over stream
// ends. The middleware calls it (deferred) for work it would otherwise
// defer.
func atEnd(c echo.Context, fn func()) {
	if d, ok := c.Get(ctxDetached).(*detachment); ok {
		d.add(fn)
		return
	}
	fn()
}

// streamConn is a taken-over connection a stream writes its events to.
type streamConn struct {
	conn    net.Conn
	raw     syscall.RawConn // the TCP socket under conn, for gone; nil: unknown
	chunked bool
	timeout time.Duration // per write
	goneC   chan struct{} // closed when sweep finds the client gone
	// broken: a write failed, perhaps part-way through a chunk; the last
	// chunk must not follow it (the client would read its bytes as the
	// rest of the cut event). Only the stream's goroutine writes.
	broken bool
}

// errNoTakeover: the response cannot be taken over (HTTP/2, a recorder).
var errNoTakeover = errors.New("the connection cannot be taken over")

// takeOver takes the connection of w, whose head has been written and
// flushed. Bytes the client sent after its request are
// dropped: an SSE client sends nothing more.
func takeOver(w http.ResponseWriter, r *http.Request, timeout time.Duration) (*streamConn, error) {
	if r.ProtoMajor != 1 {
		return nil, errNoTakeover
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, errNoTakeover
	}
	// The bufio.ReadWriter net/http returns is dropped with its buffers.
	return &streamConn{conn: conn, raw: rawConn(conn), chunked: r.ProtoAtLeast(1, 1), timeout: timeout, goneC: make(chan struct{})}, nil
}

// rawConn is the socket under c (a TLS connection's, a limited listener's),
// or nil.
func rawConn(c net.Conn) syscall.RawConn {
	for {
		switch x := c.(type) {
		case syscall.Conn:
			raw, err := x.SyscallConn()
			if err != nil {
				return nil
			}
			return raw
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return nil
		}
	}
}

// send writes f (one or more SSE events or comments) as one chunk, within
// the write timeout.
func (c *streamConn) send(f *frame) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	var p []byte
	if c.chunked {
		p = f.chunk()
	} else {
		p = f.body()
	}
	_, err := c.conn.Write(p)
	if err != nil {
		c.broken = true
	}
	return err
}

// close ends the body (the last chunk) and closes the connection. After a
// failed write it only closes: the client sees a body cut short, which it
// treats as a lost connection and resumes from the last whole event.
func (c *streamConn) close() {
	if c.chunked && !c.broken {
		_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.conn.Write([]byte("0\r\n\r\n"))
	}
	_ = c.conn.Close()
}

// gone reports whether the client has closed its end of the connection,
// looking without waiting. Data the client sent is read and dropped: for
// TLS it may be the close_notify alert, which the read turns into io.EOF.
// Only sweep calls it (a read concurrent with the stream's writes is
// allowed on a net.Conn and a tls.Conn).
func (c *streamConn) gone() bool {
	switch peek(c.raw) {
	case peerClosed:
		return true
	case peerSent:
		var buf [512]byte
		_ = c.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		_, err := c.conn.Read(buf[:])
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	return false
}

// peekResult is what a look at a socket's receive side found.
type peekResult uint8

const (
	peerQuiet  peekResult = iota // nothing to read (or no way to look)
	peerSent                     // bytes to read
	peerClosed                   // end of stream or an error: the client is gone
)

// healthState is the node's readiness as the streams follow it: down is
// closed, with err set before, when a check found the node unable to serve
// (sweep then starts a new healthState for the streams that come later).
type healthState struct {
	down chan struct{}
	err  error
}

// streamHealth is the current healthState; the first call starts sweep.
func (s *Server) streamHealth() *healthState {
	s.sweepOnce.Do(func() {
		s.health.Store(&healthState{down: make(chan struct{})})
		go s.sweep()
	})
	return s.health.Load()
}

// sweep is the streams' one periodic check, instead of a ticker and a
// check per stream (10,000 streams would wake 10,000 goroutines a second):
// once per healthEvery, until the server closes, it checks that the node
// can serve (Cluster.Ready) and looks at every taken-over connection for a
// client that left.
func (s *Server) sweep() {
	tick := time.NewTicker(healthEvery)
	defer tick.Stop()
	var conns []*streamConn
	for {
		select {
		case <-s.closing:
			return
		case <-tick.C:
		}
		if err := s.cfg.Cluster.Ready(); err != nil {
			old := s.health.Swap(&healthState{down: make(chan struct{})})
			old.err = err
			close(old.down)
		}
		conns = s.takenOver.list(conns[:0])
		for _, c := range conns {
			if c.gone() {
				close(c.goneC)
			}
		}
		clear(conns) // hold no ended stream
	}
}

// takenOver tracks the streams running on taken-over connections, which
// net/http's Shutdown neither waits for nor closes.
type takenOver struct {
	mu    sync.Mutex
	conns map[*streamConn]struct{}
	// pending counts takeovers under way (begin, then add or abort): the
	// hijacked connection has left net/http's tracking before add.
	pending int
	idle    chan struct{} // closed when none are left; nil: no one waits
}

// begin announces a takeover, so that Wait does not return before it is
// added (or aborted).
func (t *takenOver) begin() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending++
}

// add ends a takeover begun with begin: its stream runs on c.
func (t *takenOver) add(c *streamConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending--
	if t.conns == nil {
		t.conns = make(map[*streamConn]struct{})
	}
	t.conns[c] = struct{}{}
}

// abort ends a takeover begun with begin that did not happen.
func (t *takenOver) abort() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending--
	t.idleIfEmpty()
}

// idleIfEmpty wakes Wait when no stream is left; t.mu is held.
func (t *takenOver) idleIfEmpty() {
	if len(t.conns) == 0 && t.pending == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

// list appends the streams' connections to dst; those that sweep found
// gone are left out (their streams are ending).
func (t *takenOver) list(dst []*streamConn) []*streamConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		select {
		case <-c.goneC:
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func (t *takenOver) remove(c *streamConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
	t.idleIfEmpty()
}

// Wait waits until the watch streams that outlive their handlers have
// ended; call it after Close, once the HTTP server's Shutdown has returned
// (net/http does not track them). When ctx ends first, their connections
// are closed and Wait returns ctx's error once the streams are gone (a
// stream notices at its next write, or at sweep's next look).
func (s *Server) Wait(ctx context.Context) error {
	t := &s.takenOver
	t.mu.Lock()
	if len(t.conns) == 0 && t.pending == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
	}
	t.mu.Lock()
	for c := range t.conns {
		_ = c.conn.Close() // the stream's next write or look fails, and it ends
	}
	t.mu.Unlock()
	<-idle
	return ctx.Err()
}

// frame is a batch of SSE lines being assembled, with room in front for an
// HTTP/1.1 chunk's size line.
type frame struct{ b []byte }

// chunkRoom fits a chunk-size line: up to 16 hex digits and CRLF.
const chunkRoom = 18

// maxPooledFrame: a frame that grew beyond this (a reset event with a long
// list) is left to the collector, not kept in the pool.
const maxPooledFrame = 64 << 10

var frames = sync.Pool{New: func() any { return &frame{b: make([]byte, chunkRoom, 512)} }}

func getFrame() *frame { return frames.Get().(*frame) }

func putFrame(f *frame) {
	if cap(f.b) > maxPooledFrame {
		return
	}
	f.b = f.b[:chunkRoom]
	frames.Put(f)
}

func (f *frame) empty() bool { return len(f.b) == chunkRoom }

func (f *frame) body() []byte { return f.b[chunkRoom:] }

func (f *frame) appendString(s string) { f.b = append(f.b, s...) }

// chunk is the frame as one chunk: its size in hex, CRLF, the data, CRLF.
func (f *frame) chunk() []byte {
	var hex [16]byte
	size := strconv.AppendInt(hex[:0], int64(len(f.b)-chunkRoom), 16)
	start := chunkRoom - 2 - len(size)
	copy(f.b[start:], size)
	f.b[chunkRoom-2], f.b[chunkRoom-1] = '\r', '\n'
	f.b = append(f.b, '\r', '\n')
	return f.b[start:]
}

// writerSink writes a stream's frames to its response, where the
// connection could not be taken over (HTTP/2).
type writerSink struct {
	w *echo.Response
}

func (s writerSink) send(f *frame) error {
	if _, err := s.w.Write(f.body()); err != nil {
		return err
	}
	return http.NewResponseController(s.w.Writer).Flush()
}
