// Package tcpproxy is a loopback TCP proxy that fault tests put in front of
// an etcd member's peer URL to cut it off from the rest of its cluster.
//
// A proxy forwards every connection it accepts to one target address. Two
// kinds of fault can be switched on and off while connections are open:
//
//   - Cut: the proxy refuses every new connection and closes every open one,
//     so nobody reaches the target (inbound traffic of the member behind it).
//   - Block(from): the proxy refuses connections whose first HTTP request
//     carries the header "X-Server-From: <from>", and closes the open ones.
//     etcd's raft transport sets that header, with the sending member's ID
//     in hex, on every request it makes to a peer (stream dials and
//     pipeline/snapshot posts), and each of its connections only ever
//     carries one member's requests. Blocking member X on the proxies of
//     the other members therefore cuts X's outbound raft traffic, which no
//     address-based rule can tell apart on loopback.
//
// Cut on X's proxy plus Block(X) on every other member's proxy is a full,
// symmetric partition of X. Heal undoes both.
//
// Connections whose first bytes are not an HTTP request header (within
// PeekTimeout and MaxHeader bytes) are forwarded untagged: a Block never
// matches them, a Cut does.
package tcpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Header is the request header that identifies the sending member.
const Header = "X-Server-From"

// Tunables of the header peek.
const (
	MaxHeader   = 16 << 10        // bytes read while looking for the end of the first request header
	PeekTimeout = 2 * time.Second // how long a new connection may take to send its first header
	DialTimeout = 2 * time.Second // dialing the target

	acceptBackoff = 50 * time.Millisecond
)

// Proxy forwards connections from its listener to a target address.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	cut     bool
	blocked map[string]bool
	conns   map[*conn]struct{}
	closed  bool

	accepted atomic.Int64
	refused  atomic.Int64

	wg sync.WaitGroup
}

type conn struct {
	from      string // the X-Server-From of its first request, "" if none
	client    net.Conn
	server    net.Conn
	closeOnce sync.Once
}

func (c *conn) close() {
	c.closeOnce.Do(func() {
		c.client.Close()
		if c.server != nil {
			c.server.Close()
		}
	})
}

// New listens on listenAddr ("127.0.0.1:0" for any free port) and forwards
// to target. Close stops it.
func New(listenAddr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		ln:      ln,
		target:  target,
		blocked: make(map[string]bool),
		conns:   make(map[*conn]struct{}),
	}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's listen address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Cut refuses every new connection and closes every open one, until Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	victims := p.matching(func(*conn) bool { return true })
	p.mu.Unlock()
	closeAll(victims)
}

// Block refuses connections whose first request says it comes from member
// from (X-Server-From, compared case-insensitively) and closes the open
// ones, until Unblock or Heal.
func (p *Proxy) Block(from string) {
	from = strings.ToLower(strings.TrimSpace(from))
	p.mu.Lock()
	p.blocked[from] = true
	victims := p.matching(func(c *conn) bool { return c.from == from })
	p.mu.Unlock()
	closeAll(victims)
}

// Unblock lets connections from member from through again.
func (p *Proxy) Unblock(from string) {
	p.mu.Lock()
	delete(p.blocked, strings.ToLower(strings.TrimSpace(from)))
	p.mu.Unlock()
}

// Heal undoes Cut and every Block.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.cut = false
	p.blocked = make(map[string]bool)
	p.mu.Unlock()
}

// Accepted counts the connections forwarded so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Refused counts the connections refused (cut or blocked) so far.
func (p *Proxy) Refused() int64 { return p.refused.Load() }

// Open is the number of connections being forwarded right now.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	victims := p.matching(func(*conn) bool { return true })
	p.mu.Unlock()
	err := p.ln.Close()
	closeAll(victims)
	p.wg.Wait()
	return err
}

// matching removes the open connections f selects and returns them, to be
// closed outside the lock. Call with p.mu held.
func (p *Proxy) matching(f func(*conn) bool) []*conn {
	var out []*conn
	for c := range p.conns {
		if f(c) {
			out = append(out, c)
			delete(p.conns, c)
		}
	}
	return out
}

func closeAll(cs []*conn) {
	for _, c := range cs {
		c.close()
	}
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient accept error (EMFILE...): back off a little.
			time.Sleep(acceptBackoff)
			continue
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

// admit reports whether a connection from member from may pass now.
func (p *Proxy) admit(from string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed && !p.cut && !(from != "" && p.blocked[from])
}

func (p *Proxy) handle(client net.Conn) {
	defer p.wg.Done()
	if p.isCutOrClosed() {
		p.refused.Add(1)
		client.Close()
		return
	}
	head, from := peekHeader(client)
	if !p.admit(from) {
		p.refused.Add(1)
		client.Close()
		return
	}
	server, err := net.DialTimeout("tcp", p.target, DialTimeout)
	if err != nil {
		// The target is down: look like it to the client.
		client.Close()
		return
	}
	c := &conn{from: from, client: client, server: server}
	// Register, re-checking under the lock: a Cut or Block that came
	// while we dialed must not miss this connection.
	p.mu.Lock()
	if p.closed || p.cut || (from != "" && p.blocked[from]) {
		p.mu.Unlock()
		p.refused.Add(1)
		c.close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	p.accepted.Add(1)
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.close()
	}()

	done := make(chan struct{}, 2)
	go func() {
		if len(head) > 0 {
			if _, err := server.Write(head); err != nil {
				done <- struct{}{}
				return
			}
		}
		io.Copy(server, client) //nolint:errcheck // ends with either side
		done <- struct{}{}
	}()
	go func() {
		io.Copy(client, server) //nolint:errcheck // ends with either side
		done <- struct{}{}
	}()
	// Either direction ending ends the connection: the protocols behind
	// this proxy (HTTP/1.1) never half-close on purpose.
	<-done
	c.close()
	<-done
}

func (p *Proxy) isCutOrClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut || p.closed
}

// peekHeader reads the connection's first bytes until the end of an HTTP
// request header, MaxHeader bytes, PeekTimeout or an error, whichever comes
// first. It returns what it read (to be forwarded as is) and the lower-cased
// value of the X-Server-From header, "" when there is none.
func peekHeader(c net.Conn) (head []byte, from string) {
	_ = c.SetReadDeadline(time.Now().Add(PeekTimeout))
	defer c.SetReadDeadline(time.Time{}) //nolint:errcheck // best effort
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 4096)
	for len(buf) < MaxHeader {
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if end := bytes.Index(buf, []byte("\r\n\r\n")); end >= 0 {
			return buf, headerValue(buf[:end+4], Header)
		}
		if err != nil {
			break
		}
	}
	return buf, ""
}

// headerValue parses an HTTP/1.x request line and header block and returns
// the lower-cased, trimmed value of name, or "".
func headerValue(block []byte, name string) string {
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(block)))
	line, err := r.ReadLine()
	if err != nil || !strings.Contains(line, " HTTP/1.") {
		return ""
	}
	h, err := r.ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSpace(h.Get(name)))
}
