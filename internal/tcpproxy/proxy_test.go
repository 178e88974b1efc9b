package tcpproxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/regd/regd/internal/tcpproxy"
)

// echoServer echoes every byte back on each connection.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c) //nolint:errcheck // echo until either side closes
			}()
		}
	}()
	return ln.Addr().String()
}

func newProxy(t *testing.T, target string) *tcpproxy.Proxy {
	t.Helper()
	p, err := tcpproxy.New("127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// request is an HTTP/1.1 request header as etcd's raft transport sends it.
func request(from string) string {
	h := "GET /raft/stream/message/" + from + " HTTP/1.1\r\nHost: x\r\n"
	if from != "" {
		h += "X-Server-From: " + from + "\r\n"
	}
	return h + "\r\n"
}

// roundTrip writes msg and reads it back through an echo target.
func roundTrip(c net.Conn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("read %q, want %q", buf, msg)
	}
	return nil
}

func dial(t *testing.T, p *tcpproxy.Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByProxy asserts that the proxy closes c (reads end) soon.
func closedByProxy(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("connection still open 3 s after it should have been closed")
		}
		return
	}
}

func TestForwardsBothWays(t *testing.T) {
	p := newProxy(t, echoServer(t))
	c := dial(t, p)
	if err := roundTrip(c, request("a1")); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(c, strings.Repeat("x", 100000)); err != nil {
		t.Fatal(err)
	}
	if p.Accepted() != 1 || p.Refused() != 0 {
		t.Fatalf("accepted %d refused %d, want 1 and 0", p.Accepted(), p.Refused())
	}
}

func TestCutAndHeal(t *testing.T) {
	p := newProxy(t, echoServer(t))
	open := dial(t, p)
	if err := roundTrip(open, request("a1")); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	closedByProxy(t, open)
	// New connections are accepted by the kernel and closed at once.
	refused := dial(t, p)
	io.WriteString(refused, request("a1")) //nolint:errcheck // may fail: it is being closed
	closedByProxy(t, refused)
	if p.Refused() == 0 {
		t.Fatal("no refused connection counted")
	}
	if p.Open() != 0 {
		t.Fatalf("%d connections open after Cut", p.Open())
	}

	p.Heal()
	again := dial(t, p)
	if err := roundTrip(again, request("a1")); err != nil {
		t.Fatalf("after Heal: %v", err)
	}
}

func TestBlockOneSender(t *testing.T) {
	p := newProxy(t, echoServer(t))
	fromA, fromB, untagged := dial(t, p), dial(t, p), dial(t, p)
	for _, tc := range []struct {
		c   net.Conn
		msg string
	}{{fromA, request("aa")}, {fromB, request("bb")}, {untagged, request("")}} {
		if err := roundTrip(tc.c, tc.msg); err != nil {
			t.Fatal(err)
		}
	}
	p.Block("AA") // case-insensitive, as hex IDs may be printed either way
	closedByProxy(t, fromA)
	for _, c := range []net.Conn{fromB, untagged} {
		if err := roundTrip(c, "still here"); err != nil {
			t.Fatalf("a connection not from aa was disturbed: %v", err)
		}
	}
	blocked := dial(t, p)
	io.WriteString(blocked, request("aa")) //nolint:errcheck // may fail: it is being closed
	closedByProxy(t, blocked)
	ok := dial(t, p)
	if err := roundTrip(ok, request("cc")); err != nil {
		t.Fatalf("another sender while aa is blocked: %v", err)
	}

	p.Unblock("aa")
	back := dial(t, p)
	if err := roundTrip(back, request("aa")); err != nil {
		t.Fatalf("after Unblock: %v", err)
	}
}

// TestHTTPThroughProxy: a real HTTP client and server, with keep-alive and a
// streamed response, as etcd's peers use them.
func TestHTTPThroughProxy(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "from=%s\n", r.Header.Get(tcpproxy.Header))
		w.(http.Flusher).Flush()
		if r.URL.Path == "/stream" {
			<-r.Context().Done()
		}
	}))
	t.Cleanup(srv.Close)
	p := newProxy(t, strings.TrimPrefix(srv.URL, "http://"))
	// One transport per sender, as each etcd member has its own: the proxy
	// tags a connection by its first request.
	clients := map[string]*http.Client{}
	get := func(path, from string) (string, error) {
		client := clients[from]
		if client == nil {
			client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
			clients[from] = client
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.Addr()+path, nil)
		req.Header.Set(tcpproxy.Header, from)
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body) // to the end, so the connection is reused
		return string(b), err
	}
	for range 3 { // keep-alive: one connection, several requests
		if got, err := get("/x", "abc"); err != nil || got != "from=abc\n" {
			t.Fatalf("GET: %q %v", got, err)
		}
	}
	if p.Accepted() != 1 {
		t.Fatalf("%d connections for three keep-alive requests", p.Accepted())
	}

	// A streaming response is cut when its sender is blocked.
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.Addr()+"/stream", nil)
	req.Header.Set(tcpproxy.Header, "def")
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "from=def\n" {
		t.Fatalf("stream: %q %v", line, err)
	}
	ended := make(chan error, 1)
	go func() { _, err := io.ReadAll(br); ended <- err }()
	p.Block("def")
	select {
	case <-ended:
	case <-time.After(3 * time.Second):
		t.Fatal("stream still open after Block")
	}
	if _, err := get("/x", "def"); err == nil {
		t.Fatal("a request from a blocked sender went through")
	}
	if got, err := get("/x", "abc"); err != nil || got != "from=abc\n" {
		t.Fatalf("GET from another sender: %q %v", got, err)
	}
}

func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	ln.Close()
	p := newProxy(t, target)
	c := dial(t, p)
	io.WriteString(c, request("a")) //nolint:errcheck // may fail: it is being closed
	closedByProxy(t, c)
}

func TestClose(t *testing.T) {
	p, err := tcpproxy.New("127.0.0.1:0", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p)
	if err := roundTrip(c, request("a")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs")
	}
	closedByProxy(t, c)
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("still listening after Close")
	}
}
