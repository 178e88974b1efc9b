package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The raw client against Go's own HTTP server, over real sockets: the
// framings regd's server produces (Content-Length, chunked, 204, close).
func TestConnAgainstNetHTTP(t *testing.T) {
	big := strings.Repeat("0123456789", 5000)
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fixed":
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Regd-Revision", "42")
			fmt.Fprintf(w, "%s %s", r.Method, body)
		case "/chunked":
			w.Write([]byte("a"))
			w.(http.Flusher).Flush()
			w.Write([]byte("bc"))
			w.(http.Flusher).Flush()
			w.Write([]byte(big))
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/close":
			w.Header().Set("Connection", "close")
			w.Write([]byte("bye"))
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	c, err := Dial(context.Background(), addr, "", 256)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Do("PUT", "/fixed", []string{"Content-Type: text/plain"}, []byte("xyz")); err != nil {
		t.Fatal(err)
	}
	if c.Status != 200 || string(c.Body) != "PUT xyz" || string(c.Header("x-regd-revision")) != "42" || c.Header("Nope") != nil {
		t.Fatalf("fixed: %d %q rev %q", c.Status, c.Body, c.Header("X-Regd-Revision"))
	}
	if err := c.Do("GET", "/chunked", nil, nil); err != nil {
		t.Fatal(err)
	}
	if c.Status != 200 || string(c.Body) != "abc"+big {
		t.Fatalf("chunked: %d, %d bytes", c.Status, len(c.Body))
	}
	if err := c.Do("DELETE", "/nocontent", nil, nil); err != nil {
		t.Fatal(err)
	}
	if c.Status != 204 || len(c.Body) != 0 || c.Closed() {
		t.Fatalf("204: %d %q closed %v", c.Status, c.Body, c.Closed())
	}
	if err := c.Do("GET", "/close", nil, nil); err != nil {
		t.Fatal(err)
	}
	if string(c.Body) != "bye" || !c.Closed() {
		t.Fatalf("close: %q closed %v", c.Body, c.Closed())
	}
	if conns.Load() != 1 {
		t.Fatalf("%d connections for four requests on one Conn", conns.Load())
	}

	t.Run("pool reuses and survives a server-side close", func(t *testing.T) {
		before := conns.Load()
		p := NewPool(addr, "127.0.0.1", 4, 5*time.Second)
		defer p.Close()
		get := func() {
			t.Helper()
			err := p.Do(context.Background(), "PUT", "/fixed", nil, []byte("p"), func(c *Conn) error {
				if c.Status != 200 || string(c.Body) != "PUT p" {
					return fmt.Errorf("%d %q", c.Status, c.Body)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		for range 5 {
			get()
		}
		if n := conns.Load() - before; n != 1 {
			t.Fatalf("%d connections for 5 sequential requests", n)
		}
		// The server drops its idle connections (four of them, as after a
		// restart): the next request goes on a new one instead of failing.
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 20 {
					get()
				}
			})
		}
		wg.Wait()
		opened := conns.Load()
		srv.CloseClientConnections()
		get()
		if n := conns.Load() - opened; n != 1 {
			t.Fatalf("%d new connections after the server closed the idle ones, want 1", n)
		}
		// check's error is Do's; the connection is still reused.
		want := errors.New("rejected")
		if err := p.Do(context.Background(), "GET", "/fixed", nil, nil, func(*Conn) error { return want }); !errors.Is(err, want) {
			t.Fatalf("err %v", err)
		}
	})

	t.Run("a cancelled request returns at once", func(t *testing.T) {
		block := make(chan struct{})
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
		defer slow.Close()
		defer close(block)
		p := NewPool(strings.TrimPrefix(slow.URL, "http://"), "", 1, time.Minute)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := p.Do(ctx, "GET", "/", nil, nil, func(*Conn) error { return nil })
		if !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			t.Fatalf("err %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("took %v", d)
		}
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A streamed SSE body through Next and the parser, as the fan-out readers
// consume it.
func TestConnStreamsSSE(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for i := range 50 {
			fmt.Fprintf(w, "id: %d\nevent: register\ndata: {\"id\":\"c%d\"}\n\n", i+1, i)
			if i%7 == 0 {
				w.(http.Flusher).Flush()
			}
		}
		fmt.Fprint(w, ": closing: done\n\n")
	}))
	defer srv.Close()
	c, err := Dial(context.Background(), strings.TrimPrefix(srv.URL, "http://"), "", 64)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send("GET", "/watch", []string{"Accept: text/event-stream"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.ReadHead(); err != nil || c.Status != 200 {
		t.Fatalf("head: %v %d", err, c.Status)
	}
	var n int
	var closing string
	p := &SSEParser{
		OnEvent: func(e *SSEEvent) {
			if want := fmt.Sprintf(`{"id":"c%d"}`, n); string(e.Data) != want || string(e.ID) != fmt.Sprint(n+1) {
				t.Errorf("event %d: id %q data %q", n, e.ID, e.Data)
			}
			n++
		},
		OnComment: func(b []byte) { closing = string(b) },
	}
	for {
		b, err := c.Next()
		p.Feed(b)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n != 50 || closing != " closing: done" {
		t.Fatalf("%d events, closing %q", n, closing)
	}
}
