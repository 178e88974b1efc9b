package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Conn is one HTTP/1.1 client connection for load generation: the request
// is written from a reused buffer, the response head parsed in place and
// the body read into a reused buffer, so a request in steady state
// allocates nothing, and an idle streaming connection costs one goroutine
// and its read buffer. It speaks just enough HTTP/1.1 for a known server:
// Content-Length and chunked bodies, keep-alive and Connection: close; no
// proxies, redirects, 1xx or TLS. Not safe for concurrent use.
type Conn struct {
	addr string
	nc   net.Conn
	br   *bufio.Reader
	wbuf []byte

	// The last response: status, raw header block, body.
	Status int
	head   []byte
	Body   []byte

	bodyLen int64 // -1: chunked; -2: until close
	close   bool  // the server will close after this response
	chunked chunkedReader
}

// Dial connects to addr (host:port), from localIP when it is not empty (a
// loopback address such as 127.0.0.7, to spread connections over source
// addresses). bufSize is the read buffer: small for streams, larger for
// big bodies.
func Dial(ctx context.Context, addr, localIP string, bufSize int) (*Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Conn{addr: addr, nc: nc, br: bufio.NewReaderSize(nc, max(bufSize, 64))}, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// Closed reports whether the server said it will close the connection
// after the last response; the caller should dial a new one.
func (c *Conn) Closed() bool { return c.close }

// SetDeadline bounds the next reads and writes (zero: none).
func (c *Conn) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// Watch closes the connection when ctx ends, which makes a blocked read or
// write return; call the returned stop when the request is done. A
// cancelled connection must not be reused.
func (c *Conn) Watch(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() { c.nc.Close() })
}

// Send writes one request. header holds complete "Name: value" lines
// without line ends; a body gets a Content-Length.
func (c *Conn) Send(method, path string, header []string, body []byte) error {
	c.Status = 0
	b := c.wbuf[:0]
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, c.addr...)
	b = append(b, "\r\n"...)
	for _, h := range header {
		b = append(b, h...)
		b = append(b, "\r\n"...)
	}
	if body != nil {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	b = append(b, body...)
	c.wbuf = b
	_, err := c.nc.Write(b)
	return err
}

// Do sends a request and reads the whole response into Status, Body and
// the header (Header).
func (c *Conn) Do(method, path string, header []string, body []byte) error {
	if err := c.Send(method, path, header, body); err != nil {
		return err
	}
	if err := c.ReadHead(); err != nil {
		return err
	}
	return c.ReadBody()
}

var errMalformed = errors.New("malformed HTTP response")

// ReadHead reads a response's status line and header.
func (c *Conn) ReadHead() error {
	c.head = c.head[:0]
	c.Status, c.bodyLen, c.close = 0, -2, false
	first := true
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return fmt.Errorf("%w: a header line longer than %d bytes", errMalformed, c.br.Size())
			}
			if first && errors.Is(err, io.EOF) && len(line) == 0 {
				return io.ErrUnexpectedEOF // the server closed an idle connection
			}
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if first {
			first = false
			// HTTP/1.1 200 OK
			if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
				return fmt.Errorf("%w: status line %q", errMalformed, line)
			}
			n, err := strconv.Atoi(string(line[9:12]))
			if err != nil {
				return fmt.Errorf("%w: status line %q", errMalformed, line)
			}
			c.Status = n
			if line[7] == '0' {
				c.close = true // HTTP/1.0
			}
			continue
		}
		if len(line) == 0 {
			break
		}
		c.head = append(c.head, line...)
		c.head = append(c.head, '\n')
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return fmt.Errorf("%w: header line %q", errMalformed, line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("%w: Content-Length %q", errMalformed, value)
			}
			if c.bodyLen != -1 {
				c.bodyLen = n
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			if bytes.EqualFold(value, []byte("chunked")) {
				c.bodyLen = -1
			}
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(value, []byte("close")) {
				c.close = true
			}
		}
	}
	if c.Status == 204 || c.Status == 304 || c.Status < 200 {
		c.bodyLen = 0 // RFC 9112 §6.3: no body, whatever the header says
	}
	if c.bodyLen == -2 {
		c.close = true // the body runs until the server closes
	}
	if c.bodyLen == -1 {
		c.chunked = chunkedReader{br: c.br}
	}
	return nil
}

// Header returns the value of the last response's header name, or nil.
func (c *Conn) Header(name string) []byte {
	for rest := c.head; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		n, v, _ := bytes.Cut(line, []byte(":"))
		if bytes.EqualFold(n, []byte(name)) {
			return bytes.TrimSpace(v)
		}
	}
	return nil
}

// ReadBody reads the whole body of the response whose head was read.
func (c *Conn) ReadBody() error {
	c.Body = c.Body[:0]
	switch {
	case c.bodyLen >= 0:
		if int64(cap(c.Body)) < c.bodyLen {
			c.Body = make([]byte, 0, c.bodyLen)
		}
		c.Body = c.Body[:c.bodyLen]
		_, err := io.ReadFull(c.br, c.Body)
		return err
	case c.bodyLen == -1:
		for {
			p, err := c.chunked.Next()
			c.Body = append(c.Body, p...)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
		}
	default:
		for {
			p, err := c.next()
			c.Body = append(c.Body, p...)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
}

// Next returns the next piece of a streamed response's body, a slice of the
// read buffer valid until the next call, without copying: for a
// never-ending SSE stream. io.EOF ends the body.
func (c *Conn) Next() ([]byte, error) {
	switch {
	case c.bodyLen == -1:
		return c.chunked.Next()
	case c.bodyLen >= 0:
		if c.bodyLen == 0 {
			return nil, io.EOF
		}
		p, err := c.next()
		if int64(len(p)) > c.bodyLen {
			p = p[:c.bodyLen]
		}
		c.bodyLen -= int64(len(p))
		if err == io.EOF && c.bodyLen > 0 {
			err = io.ErrUnexpectedEOF
		}
		return p, err
	default:
		return c.next()
	}
}

// next returns what the read buffer holds, reading once if it is empty.
func (c *Conn) next() ([]byte, error) {
	if c.br.Buffered() == 0 {
		if _, err := c.br.Peek(1); err != nil {
			return nil, err
		}
	}
	p, _ := c.br.Peek(c.br.Buffered())
	_, _ = c.br.Discard(len(p))
	return p, nil
}

// chunkedReader decodes Transfer-Encoding: chunked (RFC 9112 §7.1),
// handing out slices of the underlying buffer.
type chunkedReader struct {
	br   *bufio.Reader
	left int64 // bytes left in the current chunk
	mid  bool  // inside a chunk (its CRLF still to come)
	done bool
}

func (r *chunkedReader) Next() ([]byte, error) {
	if r.done {
		return nil, io.EOF
	}
	if r.left == 0 {
		if r.mid {
			if err := r.crlf(); err != nil {
				return nil, err
			}
			r.mid = false
		}
		line, err := r.br.ReadSlice('\n')
		if err != nil {
			return nil, unexpected(err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i] // chunk extensions
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: chunk size %q", errMalformed, line)
		}
		if n == 0 {
			// Trailer fields, then the final CRLF.
			for {
				l, err := r.br.ReadSlice('\n')
				if err != nil {
					return nil, unexpected(err)
				}
				if len(bytes.TrimRight(l, "\r\n")) == 0 {
					break
				}
			}
			r.done = true
			return nil, io.EOF
		}
		r.left, r.mid = n, true
	}
	if r.br.Buffered() == 0 {
		if _, err := r.br.Peek(1); err != nil {
			return nil, unexpected(err)
		}
	}
	p, _ := r.br.Peek(int(min(int64(r.br.Buffered()), r.left)))
	_, _ = r.br.Discard(len(p))
	r.left -= int64(len(p))
	return p, nil
}

func (r *chunkedReader) crlf() error {
	b, err := r.br.ReadSlice('\n')
	if err != nil {
		return unexpected(err)
	}
	if len(bytes.TrimRight(b, "\r\n")) != 0 {
		return fmt.Errorf("%w: no CRLF after a chunk", errMalformed)
	}
	return nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Pool keeps idle Conns to one address for request/response use.
type Pool struct {
	addr    string
	localIP string
	bufSize int
	timeout time.Duration
	idle    chan *Conn
}

// NewPool keeps up to size idle connections to addr. Every request is
// bounded by timeout besides its context.
func NewPool(addr, localIP string, size int, timeout time.Duration) *Pool {
	return &Pool{addr: addr, localIP: localIP, bufSize: 16 << 10, timeout: timeout, idle: make(chan *Conn, size)}
}

// Addr is the pool's address.
func (p *Pool) Addr() string { return p.addr }

// Close closes the idle connections.
func (p *Pool) Close() {
	for {
		select {
		case c := <-p.idle:
			c.Close()
		default:
			return
		}
	}
}

// Do sends one request on an idle connection (or a new one) and calls check
// with the connection holding the response (Status, Header, Body, valid
// during the call); check's error is Do's. A request that fails on a
// reused connection before any answer came (the server closed it while
// idle, or restarted) is sent again on the next idle connection, and
// finally on a new one, so callers only send requests that may be repeated
// (regd's PUTs, GETs).
func (p *Pool) Do(ctx context.Context, method, path string, header []string, body []byte, check func(*Conn) error) error {
	for {
		var c *Conn
		reused := false
		select {
		case c = <-p.idle:
			reused = true
		default:
			var err error
			if c, err = Dial(ctx, p.addr, p.localIP, p.bufSize); err != nil {
				return err
			}
		}
		deadline := time.Now().Add(p.timeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		_ = c.SetDeadline(deadline)
		stop := c.Watch(ctx)
		err := c.Do(method, path, header, body)
		cancelled := !stop()
		if err != nil {
			c.Close()
			if cancelled && ctx.Err() != nil {
				return ctx.Err()
			}
			if reused && c.Status == 0 && stale(err) {
				continue // every stale one goes; at worst a new one is dialled
			}
			return err
		}
		err = check(c)
		if c.Closed() || cancelled {
			c.Close()
		} else {
			select {
			case p.idle <- c:
			default:
				c.Close()
			}
		}
		return err
	}
}

// stale reports whether err is what a write to, or a read from, a
// connection the server closed while it was idle looks like.
func stale(err error) bool {
	var ne *net.OpError
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.As(err, &ne) && !ne.Timeout()
}
