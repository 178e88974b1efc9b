package api_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
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

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/registry"
)

const registerBody = `{"address":"10.0.0.5:8080"}`

// TestInFlightCap: beyond MaxInFlight requests at once, the next is
// refused at once with 503 overloaded and Retry-After; health probes and
// blocking queries are not counted; freed slots serve again. Each step
// proves its scenario happened: the held requests are inside the registry,
// a blocking query is waiting inside its handler while the slots are full,
// the node is still full after the probes (a later counted request is still
// refused), and the refusals were counted and logged as shedding.
func TestInFlightCap(t *testing.T) {
	t.Parallel()
	reg := &fakeRegistry{block: make(chan struct{}), entered: make(chan struct{}, 16)}
	view := waitingView{waiting: make(chan struct{}, 4)}
	core, logs := observer.New(zap.WarnLevel)
	metrics := prometheus.NewRegistry()
	cfg := withFakes(api.Config{MaxInFlight: 2, Logger: zap.New(core), Metrics: metrics, Gatherer: metrics})
	cfg.Registry, cfg.View = reg, view
	s := api.New(cfg)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	t.Cleanup(s.Close)
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

	refused := func(method, path, body, what string) {
		t.Helper()
		status, hdr, resp := call(t, method, ts.URL+path, "", body)
		if status != http.StatusServiceUnavailable {
			t.Fatalf("%s: %d %s, want 503", what, status, resp)
		}
		if code, _ := decodeErrorBody(t, resp); code != "overloaded" {
			t.Fatalf("%s: code %q, want overloaded", what, code)
		}
		if hdr.Get("Retry-After") != "1" {
			t.Fatalf("%s: Retry-After %q, want 1", what, hdr.Get("Retry-After"))
		}
	}
	refused(http.MethodPut, "/v1/services/user/instances/third", registerBody, "a third write")
	refused(http.MethodGet, "/v1/services", "", "a read (reads count too)")

	for _, path := range []string{"/healthz", "/readyz"} {
		if status, _, body := call(t, http.MethodGet, ts.URL+path, "", ""); status != http.StatusOK {
			t.Fatalf("%s while full: %d %s, want 200", path, status, body)
		}
	}
	// A blocking query gets past the limits while every slot is taken:
	// it is waiting inside its handler.
	ctx, cancel := context.WithCancel(context.Background())
	blocking := asyncGet(ctx, ts.URL+"/v1/services/user/instances?index=2&wait=30s")
	select {
	case <-view.waiting:
	case r := <-blocking:
		t.Fatalf("the blocking query answered %d %s instead of waiting", r.code, r.body)
	case <-time.After(5 * time.Second):
		t.Fatal("the blocking query did not get past the limits while the slots were full")
	}
	// Still full after all that: the probes and the blocking query were
	// answered under overload, not after it ended.
	refused(http.MethodPut, "/v1/services/user/instances/fourth", registerBody, "a write after the probes")
	cancel()
	<-blocking

	// The refusals were counted as 503s of their routes and logged once
	// as shedding, with the total so far.
	if n := requestsWithCode(t, metrics, "PUT", "/v1/services/:service/instances/:id", "503"); n != 2 {
		t.Fatalf("regd_http_requests_total of refused writes = %v, want 2", n)
	}
	if n := requestsWithCode(t, metrics, "GET", "/v1/services", "503"); n != 1 {
		t.Fatalf("regd_http_requests_total of refused reads = %v, want 1", n)
	}
	shed := logs.FilterMessageSnippet("shedding load").All()
	if len(shed) != 1 || shed[0].ContextMap()["max-inflight"] != int64(2) || shed[0].ContextMap()["refused-total"] != int64(1) {
		t.Fatalf("shedding was logged as %v, want one warning for the first refusal", shed)
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

// requestsWithCode is regd_http_requests_total{method,route,code} in reg.
func requestsWithCode(t *testing.T, reg prometheus.Gatherer, method, route, code string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "regd_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["method"] == method && labels["route"] == route && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
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
			t.Fatalf("connection reuse %v: the second request did not run on the kept-alive connection", reused)
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
		core, logs := observer.New(zap.DebugLevel)
		c := withFakes(cfg)
		c.View = bigView{body: big}
		c.Logger = zap.New(core)
		s := api.New(c)
		ts := httptest.NewServer(s.Handler())
		t.Cleanup(ts.Close)
		conn, err := net.Dial("tcp", ts.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /v1/services/user/instances?stale HTTP/1.1\r\nHost: regd\r\n\r\n")
		// Not reading: the server's write blocks, then times out and the
		// handler ends; its request log line is the marker.
		var line observer.LoggedEntry
		poll.Until(t, 10*time.Second, "the list request ends on the server", func() error {
			served := logs.FilterMessage("request").FilterField(zap.String("route", "/v1/services/:service/instances")).All()
			if len(served) == 0 {
				return errors.New("the list request has not ended on the server")
			}
			line = served[0]
			return nil
		})
		if line.ContextMap()["status"] != int64(http.StatusOK) {
			t.Fatalf("the list ended with status %v, want 200 (an answer that started and was cut)", line.ContextMap()["status"])
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := io.Copy(io.Discard, conn)
		if n == 0 || n >= int64(len(big)) {
			t.Fatalf("read %d of %d bytes: want the start of the answer, cut off", n, len(big))
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

func (v bigView) InstancesJSON(string, registry.Filter) ([]byte, int64, bool) { return v.body, 2, true }

// TestBlockingQueriesPerClient: blocking queries share the per-client cap
// of watch streams (429 beyond it); plain reads do not count.
func TestBlockingQueriesPerClient(t *testing.T) {
	t.Parallel()
	view := waitingView{waiting: make(chan struct{}, 4)}
	cfg := withFakes(api.Config{MaxWatchesPerClient: 1})
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

func (v waitingView) Block(string, registry.Filter, int64) *registry.Waiter {
	v.waiting <- struct{}{}
	return nil
}
