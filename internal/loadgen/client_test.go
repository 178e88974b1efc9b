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

// The client against Go's own HTTP server, over real sockets: the framings
// regd's server produces (Content-Length, chunked, 204, close), keep-alive,
// a server that drops its idle connections, a cancelled request.
func TestClientAgainstNetHTTP(t *testing.T) {
	big := strings.Repeat("0123456789", 5000)
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fixed":
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Regd-Revision", "42")
			fmt.Fprintf(w, "%s %s %s", r.Method, r.Header.Get("Content-Type"), body)
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

	c := NewClient(addr, "127.0.0.1", 4, 256, 5*time.Second)
	defer c.Close()
	do := func(method, path string, header []string, body []byte, check func(*Reply) error) {
		t.Helper()
		if err := c.Do(context.Background(), method, path, header, body, check); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	do("PUT", "/fixed", []string{"Content-Type: text/plain"}, []byte("xyz"), func(r *Reply) error {
		if r.Status != 200 || string(r.Body) != "PUT text/plain xyz" || string(r.Header("x-regd-revision")) != "42" || len(r.Header("Nope")) != 0 {
			return fmt.Errorf("fixed: %d %q rev %q", r.Status, r.Body, r.Header("X-Regd-Revision"))
		}
		return nil
	})
	do("GET", "/chunked", nil, nil, func(r *Reply) error {
		if r.Status != 200 || string(r.Body) != "abc"+big {
			return fmt.Errorf("chunked: %d, %d bytes", r.Status, len(r.Body))
		}
		return nil
	})
	do("DELETE", "/nocontent", nil, nil, func(r *Reply) error {
		if r.Status != 204 || len(r.Body) != 0 {
			return fmt.Errorf("204: %d %q", r.Status, r.Body)
		}
		return nil
	})
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for three sequential requests", n)
	}
	do("GET", "/close", nil, nil, func(r *Reply) error {
		if string(r.Body) != "bye" {
			return fmt.Errorf("close: %q", r.Body)
		}
		return nil
	})
	do("GET", "/fixed", nil, nil, func(r *Reply) error { return nil })
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2: a new one after the server's Connection: close", n)
	}

	t.Run("keep-alive survives a server-side close", func(t *testing.T) {
		get := func() error {
			return c.Do(context.Background(), "PUT", "/fixed", nil, []byte("p"), func(r *Reply) error {
				if r.Status != 200 || !strings.HasPrefix(string(r.Body), "PUT ") || !strings.HasSuffix(string(r.Body), " p") {
					return fmt.Errorf("%d %q", r.Status, r.Body)
				}
				return nil
			})
		}
		errs := make(chan error, 4*20)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 20 {
					if err := get(); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if n := conns.Load(); n > 2+4 {
			t.Fatalf("%d connections for 4 workers on a client of 4", n)
		}
		// The server drops its idle connections (as after a restart): the
		// next request goes on a new one instead of failing.
		opened := conns.Load()
		srv.CloseClientConnections()
		if err := get(); err != nil {
			t.Fatal(err)
		}
		if n := conns.Load() - opened; n != 1 {
			t.Fatalf("%d new connections after the server closed the idle ones, want 1", n)
		}
		// check's error is Do's.
		want := errors.New("rejected")
		if err := c.Do(context.Background(), "GET", "/fixed", nil, nil, func(*Reply) error { return want }); !errors.Is(err, want) {
			t.Fatalf("err %v", err)
		}
	})

	t.Run("a request ends with its context", func(t *testing.T) {
		block := make(chan struct{})
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-block:
			case <-r.Context().Done():
			}
		}))
		defer slow.Close()
		defer close(block)
		slowAddr := strings.TrimPrefix(slow.URL, "http://")
		// By its deadline, on any client.
		p := NewClient(slowAddr, "", 1, 0, time.Minute)
		defer p.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := p.Do(ctx, "GET", "/", nil, nil, func(*Reply) error { return nil })
		if !errors.Is(err, context.DeadlineExceeded) && !IsTimeout(err) {
			t.Fatalf("err %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("took %v", d)
		}
		// Cancelled, on a client that closes its connection then.
		w := NewClient(slowAddr, "", 1, 0, time.Minute).CloseOnCancel()
		defer w.Close()
		ctx, cancel = context.WithCancel(context.Background())
		stop := time.AfterFunc(100*time.Millisecond, cancel)
		defer stop.Stop()
		start = time.Now()
		if err := w.Do(ctx, "GET", "/", nil, nil, func(*Reply) error { return nil }); !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("took %v", d)
		}
	})
}

// A stream is read as it arrives, chunk by chunk, beyond the timeout of its
// head; a refusal comes with its body; cancelling ends a stream that waits.
func TestStream(t *testing.T) {
	defer func(d time.Duration) { streamHeadTimeout = d }(streamHeadTimeout)
	streamHeadTimeout = 300 * time.Millisecond
	next := make(chan string)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refused" {
			http.Error(w, `{"error":"no"}`, http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Last", r.Header.Get("Last-Event-ID"))
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case s := <-next:
				io.WriteString(w, s)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	st, err := OpenStream(context.Background(), addr, "", "GET", "/events", []string{"Last-Event-ID: 7"}, 512)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.Status != 200 || string(st.Header("X-Last")) != "7" {
		t.Fatalf("status %d, X-Last %q", st.Status, st.Header("X-Last"))
	}
	opened := time.Now()
	buf := make([]byte, 1024)
	read := func(want string) {
		t.Helper()
		got := ""
		for len(got) < len(want) {
			n, err := st.Read(buf)
			got += string(buf[:n])
			if err != nil {
				t.Fatalf("read %q, then %v", got, err)
			}
		}
		if got != want {
			t.Fatalf("read %q, want %q", got, want)
		}
	}
	next <- "id: 8\ndata: a\n\n"
	read("id: 8\ndata: a\n\n")
	// The next event comes after the head's timeout has passed: the
	// stream must still be open.
	for time.Since(opened) < 2*streamHeadTimeout {
		time.Sleep(50 * time.Millisecond)
	}
	next <- "id: 9\ndata: b\n\n"
	read("id: 9\ndata: b\n\n")

	ref, err := OpenStream(context.Background(), addr, "", "GET", "/refused", nil, 512)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	if n, err := ref.Read(buf); ref.Status != 403 || !strings.Contains(string(ref.Body), `"error":"no"`) || n != 0 || err != io.EOF {
		t.Fatalf("refused: %d %q, read %d %v", ref.Status, ref.Body, n, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	waiting, err := OpenStream(ctx, addr, "", "GET", "/events", nil, 512)
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	done := make(chan error, 1)
	go func() {
		_, err := waiting.Read(buf[:10])
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a read of a cancelled stream returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled stream's read did not return")
	}
}
