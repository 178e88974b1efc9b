package api_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// Watch streams over HTTP/1.x are taken over from net/http once their head
// is written (api/detach.go). These tests hold the stream to everything it
// did before: events, resume, the client's close noticed, shutdown, TLS,
// HTTP/1.0, and HTTP/2 (not taken over).

// watchStreams reads regd_watch_streams from the member's /metrics.
func watchStreams(t testing.TB, m *regdtest.Member) (int, error) {
	t.Helper()
	status, _, body := regdtest.Do(t, http.MethodGet, m.URL("/metrics"), nil)
	if status != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %d", status)
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, "regd_watch_streams "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(n), err
		}
	}
	return 0, errors.New("no regd_watch_streams in /metrics")
}

// waitStreams polls until the member has want watch streams open.
func waitStreams(t testing.TB, m *regdtest.Member, want int, what string) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, func() error {
		n, err := watchStreams(t, m)
		if err == nil && n != want {
			err = fmt.Errorf("%d watch streams open, want %d", n, want)
		}
		return err
	})
}

// TestWatchTakenOver: a stream on an HTTP/1.1 connection is framed in
// chunks, without Connection: close; its events arrive, a resume with
// Last-Event-ID misses nothing and repeats nothing, the client's close is
// noticed (the open-stream gauge drops), and a graceful stop ends the
// stream with its closing comment and a clean end of the body.
func TestWatchTakenOver(t *testing.T) {
	t.Parallel()
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	url := m.URL("/v1/services/to/watch")

	s := openSSE(t, url, "")
	if s.Resp.Close || !slices.Equal(s.Resp.TransferEncoding, []string{"chunked"}) {
		t.Fatalf("stream over HTTP/1.1: Close %v, Transfer-Encoding %q; want chunked, without Connection: close (Python's http.client drops its socket on it)", s.Resp.Close, s.Resp.TransferEncoding)
	}
	waitStreams(t, m, 1, "the stream is counted")
	a1 := wRegister(t, m, "to", "a1", "10.1.0.1:80", 60)
	first := s.expect(t, registry.EventRegister, "to", "a1", a1.Revision)
	a2 := wRegister(t, m, "to", "a2", "10.1.0.2:80", 60)
	s.expect(t, registry.EventRegister, "to", "a2", a2.Revision)

	s.Close()
	waitStreams(t, m, 0, "the client's close is noticed")

	// Resume after a1: a2 comes next, then what happens after.
	r := openSSE(t, url, first.ID)
	r.expect(t, registry.EventRegister, "to", "a2", a2.Revision)
	a3 := wRegister(t, m, "to", "a3", "10.1.0.3:80", 60)
	r.expect(t, registry.EventRegister, "to", "a3", a3.Revision)

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		c.Stop(0) // fails the test if the streams do not end within its deadline
	}()
	for {
		e := r.nextAny(t, 10*time.Second)
		if e.Comment == "closing: this node is shutting down" {
			break
		}
		if e.Comment == "" {
			t.Fatalf("an event after the stop began: %s", e)
		}
	}
	if !r.ended(10 * time.Second) {
		t.Fatal("the stream did not end after its closing comment")
	}
	if r.err != nil {
		t.Errorf("the stream's body ended with %v, want a clean end (the last chunk)", r.err)
	}
	<-stopped
}

// TestWatchHTTP10: an HTTP/1.0 client gets no chunks (it could not read
// them): the events as they are, the body ending when the connection
// closes; its close is noticed too.
func TestWatchHTTP10(t *testing.T) {
	t.Parallel()
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	conn, err := net.Dial("tcp", m.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/services/old/watch HTTP/1.0\r\nHost: regd\r\n\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || len(resp.TransferEncoding) != 0 || !resp.Close {
		t.Fatalf("HTTP/1.0 stream: %d, Transfer-Encoding %q, Close %v", resp.StatusCode, resp.TransferEncoding, resp.Close)
	}
	waitStreams(t, m, 1, "the stream is counted")
	inst := wRegister(t, m, "old", "o1", "10.1.1.1:80", 60)
	// The body's first bytes are the event itself, no chunk size before it.
	want := "id: " + strconv.FormatInt(inst.Revision, 10) + "\nevent: register\ndata: {"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != want {
		t.Fatalf("body starts %q (%v), want %q", got, err, want)
	}
	conn.Close()
	waitStreams(t, m, 0, "the client's close is noticed")
}

// streamsGauge reads regd_watch_streams from reg.
func streamsGauge(t testing.TB, reg *prometheus.Registry) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "regd_watch_streams" {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	t.Fatal("no regd_watch_streams gauge")
	return 0
}

// waitGauge polls until reg's regd_watch_streams is want.
func waitGauge(t testing.TB, reg *prometheus.Registry, want int, what string) {
	t.Helper()
	poll.Until(t, 10*time.Second, what, func() error {
		if n := streamsGauge(t, reg); n != want {
			return fmt.Errorf("%d watch streams open, want %d", n, want)
		}
		return nil
	})
}

// TestWatchTLS: over TLS a stream on HTTP/1.1 is taken over (and its
// client's close, a TLS close_notify and a FIN, is noticed); one on HTTP/2
// is not, and works as before. Server.Wait closes what is still open when
// its context ends.
func TestWatchTLS(t *testing.T) {
	t.Parallel()
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	reg := prometheus.NewRegistry()
	cfg := withFakes(api.Config{Metrics: reg})
	cfg.View = m.Server().View()
	s := api.New(cfg)
	ts := httptest.NewUnstartedServer(s.Handler())
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	t.Cleanup(s.Close)

	h2 := ts.Client()
	h1tr := h2.Transport.(*http.Transport).Clone()
	h1tr.ForceAttemptHTTP2 = false
	h1tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	h1tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	h1 := &http.Client{Transport: h1tr}

	open := func(client *http.Client) *sseStream {
		req, err := http.NewRequest(http.MethodGet, ts.URL+"/v1/services/tls/watch", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, cancel := dialSSEWith(t, client, req)
		return startSSE(t, req.URL.String(), resp, cancel)
	}
	s1, s2 := open(h1), open(h2)
	if s1.Resp.ProtoMajor != 1 || !slices.Equal(s1.Resp.TransferEncoding, []string{"chunked"}) || s2.Resp.ProtoMajor != 2 {
		t.Fatalf("streams over %s (Transfer-Encoding %q) and %s; want HTTP/1.1 chunked and HTTP/2", s1.Resp.Proto, s1.Resp.TransferEncoding, s2.Resp.Proto)
	}
	waitGauge(t, reg, 2, "both streams are counted")
	inst := wRegister(t, m, "tls", "t1", "10.1.2.1:80", 60)
	s1.expect(t, registry.EventRegister, "tls", "t1", inst.Revision)
	s2.expect(t, registry.EventRegister, "tls", "t1", inst.Revision)

	s1.Close()
	h1tr.CloseIdleConnections()
	waitGauge(t, reg, 1, "the TLS client's close is noticed")

	// Wait with an ended context closes the taken-over streams it waits
	// for; s3 has no closing comment, its connection just ends.
	s3 := open(h1)
	waitGauge(t, reg, 2, "the third stream is counted")
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Wait(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with an ended context: %v, want context.Canceled", err)
	}
	if !s3.ended(10 * time.Second) {
		t.Fatal("the taken-over stream still runs after Wait returned")
	}
	// The HTTP/2 stream is net/http's, not Wait's: it still works.
	inst = wRegister(t, m, "tls", "t2", "10.1.2.2:80", 60)
	s2.expect(t, registry.EventRegister, "tls", "t2", inst.Revision)
	if n := streamsGauge(t, reg); n != 1 {
		t.Fatalf("%d streams after Wait, want the HTTP/2 one", n)
	}
}
