package api_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regd/regd/api"
)

// TestLimitListener: at the cap the listener stops accepting; a
// connection beyond it waits (in the kernel's backlog, costing the server
// nothing) and is served as soon as another closes. The order of accepts
// and closes underneath shows it: the third connection is accepted only
// after the first one was closed.
func TestLimitListener(t *testing.T) {
	t.Parallel()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &recordingListener{Listener: inner}
	s := api.New(withFakes(api.Config{}))
	srv := &http.Server{Handler: s.Handler()}
	go srv.Serve(api.LimitListener(ln, 2))
	t.Cleanup(func() { srv.Close() })

	request := func(c net.Conn) error {
		if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: regd\r\n\r\n"); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	var conns []net.Conn
	for i := range 3 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
		if i < 2 {
			if err := request(c); err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
		}
	}
	third := make(chan error, 1)
	go func() { third <- request(conns[2]) }()
	conns[0].Close()
	if err := <-third; err != nil {
		t.Fatalf("third connection after one closed: %v", err)
	}
	if got, want := ln.log(), "accept accept close accept"; got != want {
		t.Fatalf("underneath the cap of 2: %q, want %q (the third accepted only once a slot was free)", got, want)
	}
}

// recordingListener records, in order, each accepted connection and each
// close of one.
type recordingListener struct {
	net.Listener
	mu     sync.Mutex
	events []string
}

func (l *recordingListener) record(e string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *recordingListener) log() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.events, " ")
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.record("accept")
		c = &recordingConn{Conn: c, l: l}
	}
	return c, err
}

type recordingConn struct {
	net.Conn
	l    *recordingListener
	once sync.Once
}

func (c *recordingConn) Close() error {
	c.once.Do(func() { c.l.record("close") })
	return c.Conn.Close()
}
