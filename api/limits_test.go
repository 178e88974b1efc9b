package api_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regd/regd/api"
	"github.com/regd/regd/registry"
)

const registerBody = `{"address":"10.0.0.5:8080"}`

// TestInFlightCap: beyond MaxInFlight requests at once, the next is
// refused at once with 503 overloaded and Retry-After; health probes and
// blocking queries are not counted; freed slots serve again.
func TestInFlightCap(t *testing.T) {
	t.Parallel()
	reg := &fakeRegistry{block: make(chan struct{}), entered: make(chan struct{}, 16)}
	_, ts := newFakeAPI(t, api.Config{Registry: reg, MaxInFlight: 2})
	url := ts.URL + "/v1/services/user/instances/"

	var wg sync.WaitGroup
	statuses := make(chan int, 2)
	for i := range 2 {
		wg.Go(func() {
			status, _, _ := call(t, http.MethodPut, fmt.Sprint(url, "held", i), "", registerBody)
			statuses <- status
		})
	}
	for range 2 {
		select {
		case <-reg.entered:
		case <-time.After(5 * time.Second):
			t.Fatal("the held requests did not reach the registry")
		}
	}

	status, hdr, body := call(t, http.MethodPut, url+"third", "", registerBody)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("third request: %d %s, want 503", status, body)
	}
	if code, _ := decodeErrorBody(t, body); code != "overloaded" {
		t.Fatalf("third request: code %q, want overloaded", code)
	}
	if hdr.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q, want 1", hdr.Get("Retry-After"))
	}
	if status, _, body := call(t, http.MethodGet, ts.URL+"/v1/services", "", ""); status != http.StatusServiceUnavailable {
		t.Fatalf("a read counts too: %d %s, want 503", status, body)
	}
	for _, path := range []string{"/healthz", "/readyz", "/v1/services/user/instances?index=1&wait=1s"} {
		if status, _, body := call(t, http.MethodGet, ts.URL+path, "", ""); status != http.StatusOK {
			t.Fatalf("%s while full: %d %s, want 200", path, status, body)
		}
	}

	close(reg.block)
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusCreated {
			t.Fatalf("a held request answered %d, want 201", s)
		}
	}
	if status, _, body := call(t, http.MethodPut, url+"after", "", registerBody); status != http.StatusCreated {
		t.Fatalf("after the slots freed: %d %s", status, body)
	}
}

// TestBodyTimeout: a client that sends its headers and then trickles the
// body is answered 408 and disconnected when BodyTimeout ends, instead of
// holding the handler; a body that arrives in time lifts the deadline, so a
// handler may take longer than BodyTimeout after reading it.
func TestBodyTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	reg := &slowRegistry{delay: 2 * timeout}
	_, ts := newFakeAPI(t, api.Config{Registry: reg, BodyTimeout: timeout})

	t.Run("trickled body", func(t *testing.T) {
		conn, err := net.Dial("tcp", ts.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		fmt.Fprintf(conn, "PUT /v1/services/user/instances/u1 HTTP/1.1\r\nHost: regd\r\nContent-Length: 1000\r\n\r\n{")
		stop := make(chan struct{})
		defer close(stop)
		go func() { // one byte every 50 ms: never done within the timeout
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					if _, err := conn.Write([]byte(" ")); err != nil {
						return
					}
				}
			}
		}()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer after %v: %v", time.Since(start), err)
		}
		body, _ := io.ReadAll(resp.Body)
		took := time.Since(start)
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("status %d %s, want 408", resp.StatusCode, body)
		}
		if code, _ := decodeErrorBody(t, body); code != "request_timeout" {
			t.Fatalf("code %q, want request_timeout", code)
		}
		if took < timeout || took > 3*timeout {
			t.Fatalf("answered after %v, want about %v", took, timeout)
		}
		if !resp.Close {
			t.Fatalf("the connection stays open after a 408 (Connection: %q)", resp.Header.Get("Connection"))
		}
		t.Logf("408 after %v", took.Round(time.Millisecond))
	})

	t.Run("slow handler after a prompt body", func(t *testing.T) {
		client := ts.Client()
		var reused []bool
		for i := range 2 {
			trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) { reused = append(reused, ci.Reused) }}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
				http.MethodPut, ts.URL+"/v1/services/user/instances/u1", strings.NewReader(registerBody))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("request %d: %d %s, want 201 (the handler took %v, longer than the body timeout)", i, resp.StatusCode, body, reg.delay)
			}
		}
		if len(reused) != 2 || !reused[1] {
			t.Logf("connection reuse %v: the second request did not test a keep-alive connection", reused)
		}
	})
}

// slowRegistry takes delay to register, after the body was read.
type slowRegistry struct {
	fakeRegistry
	delay time.Duration
}

func (s *slowRegistry) Register(ctx context.Context, service, id string, r registry.Registration) (registry.Instance, bool, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return registry.Instance{}, false, ctx.Err()
	}
	return s.fakeRegistry.Register(ctx, service, id, r)
}

// TestWriteTimeout: each write has a deadline, so a client that stops
// reading a large answer is cut off; the deadline is set only when writing,
// so a blocking query that waits longer than it still answers, over
// HTTP/1.1 and HTTP/2 alike, and so does a keep-alive connection idle for
// longer than it.
func TestWriteTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	cfg := api.Config{WriteTimeout: timeout, KeepAlive: timeout / 4}

	t.Run("blocking query outlasts it", func(t *testing.T) {
		for _, h2 := range []bool{false, true} {
			s := api.New(withFakes(cfg))
			ts := httptest.NewUnstartedServer(s.Handler())
			ts.EnableHTTP2 = h2
			ts.StartTLS()
			t.Cleanup(ts.Close)
			client := ts.Client()
			for i := range 2 { // the second on a connection idle since the first
				start := time.Now()
				resp, err := client.Get(ts.URL + "/v1/services/user/instances?index=2&wait=600ms")
				if err != nil {
					t.Fatalf("h2=%v: %v", h2, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || (resp.ProtoMajor == 2) != h2 {
					t.Fatalf("h2=%v: %s %d", h2, resp.Proto, resp.StatusCode)
				}
				if took := time.Since(start); took < 600*time.Millisecond {
					t.Fatalf("h2=%v request %d: answered after %v, before the wait ended", h2, i, took)
				}
			}
		}
	})

	t.Run("a client that does not read is cut off", func(t *testing.T) {
		big := bytes.Repeat([]byte(" "), 64<<20) // far beyond both sockets' buffers
		c := withFakes(cfg)
		c.View = bigView{body: big}
		s := api.New(c)
		ts := httptest.NewServer(s.Handler())
		t.Cleanup(ts.Close)
		conn, err := net.Dial("tcp", ts.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /v1/services/user/instances?stale HTTP/1.1\r\nHost: regd\r\n\r\n")
		time.Sleep(5 * timeout) // not reading: the server's write blocks, then times out
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := io.Copy(io.Discard, conn)
		if n >= int64(len(big)) {
			t.Fatalf("read %d bytes: the whole answer arrived although the client stalled", n)
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("after %d bytes the connection is still open: the server is still writing", n)
		}
		t.Logf("cut off after %d of %d bytes (%v)", n, len(big), err)
	})
}

func withFakes(cfg api.Config) api.Config {
	cfg.Registry, cfg.View, cfg.Cluster, cfg.Expirations = &fakeRegistry{}, fakeView{}, fakeCluster{}, fakeExpirations{}
	return cfg
}

// bigView lists body for every service.
type bigView struct {
	fakeView
	body []byte
}

func (v bigView) InstancesJSON(string) ([]byte, int64) { return v.body, 2 }

// TestBlockingQueriesPerClient: blocking queries share the per-client cap
// of watch streams (429 beyond it); plain reads do not count.
func TestBlockingQueriesPerClient(t *testing.T) {
	t.Parallel()
	view := waitingView{waiting: make(chan struct{}, 4)}
	cfg := withFakes(api.Config{StreamsPerClient: 1})
	cfg.View = view
	s := api.New(cfg)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)

	ctx, cancel := context.WithCancel(context.Background())
	held := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/v1/services/a/instances?index=2&wait=30s", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		held <- err
	}()
	select {
	case <-view.waiting:
	case <-time.After(5 * time.Second):
		t.Fatal("the first blocking query did not arrive")
	}
	status, hdr, body := call(t, http.MethodGet, ts.URL+"/v1/services?index=2&wait=1s", "", "")
	if status != http.StatusTooManyRequests {
		t.Fatalf("a second blocking query answered %d %s, want 429", status, body)
	}
	if code, _ := decodeErrorBody(t, body); code != "too_many_streams" || hdr.Get("Retry-After") == "" {
		t.Fatalf("429 without the code or Retry-After: %v %s", hdr, body)
	}
	if status, _, body := call(t, http.MethodGet, ts.URL+"/v1/services", "", ""); status != http.StatusOK {
		t.Fatalf("a plain read: %d %s", status, body)
	}
	cancel()
	<-held
}

// waitingView announces each blocking query that starts to wait.
type waitingView struct {
	fakeView
	waiting chan struct{}
}

func (v waitingView) Changed(string) (int64, <-chan struct{}) {
	v.waiting <- struct{}{}
	return 2, nil
}

// TestLimitListener: at the cap the listener stops accepting; a
// connection beyond it waits (in the kernel's backlog, costing the server
// nothing) and is served as soon as another closes.
func TestLimitListener(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := api.New(withFakes(api.Config{}))
	srv := &http.Server{Handler: s.Handler()}
	go srv.Serve(api.LimitListener(ln, 2))
	t.Cleanup(func() { srv.Close() })

	request := func(c net.Conn, wait time.Duration) error {
		if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: regd\r\n\r\n"); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(wait))
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
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
		if i < 2 {
			if err := request(c, 5*time.Second); err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
		}
	}
	err = request(conns[2], 300*time.Millisecond)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("third connection at a cap of 2: %v, want no answer (timeout)", err)
	}
	conns[0].Close()
	conns[2].SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conns[2]), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("third connection after one closed: %v %v", resp, err)
	}
	resp.Body.Close()
}
