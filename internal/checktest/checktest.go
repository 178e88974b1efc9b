// Package checktest has health-check targets for tests: an HTTP backend
// serving many instances, each of which can be made healthy, failing,
// hanging or flooding, and which records every probe; a TCP backend that
// can stop and start accepting; a gRPC backend with the standard health
// service. They are real servers on loopback ports. Test-only.
package checktest

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Modes of an HTTP backend's instance.
const (
	Healthy = "healthy" // 200 "ok"
	Failing = "failing" // 503 with a body naming the instance
	Hanging = "hanging" // never answers; the request waits until the prober gives up
	Flood   = "flood"   // 200 and an endless body
)

// Probe is one probe an HTTP backend received.
type Probe struct {
	At     time.Time
	Member string // from the prober's User-Agent, "regd-check (member m1)"
	Mode   string // what the backend answered it with (Healthy, Failing, ...)
	// Hanging is how many probes (of any instance) were hanging at the
	// backend when this one arrived.
	Hanging int
}

// HTTP serves /health/<id> for any number of instances.
type HTTP struct {
	srv *httptest.Server

	mu     sync.Mutex
	modes  map[string]string
	probes map[string][]Probe
	hung   map[string]int // probes waiting in Hanging now
	wake   chan struct{}  // closed at every probe, then replaced
	// Flooded counts the bytes written to flooding probes.
	flooded map[string]int64
}

var memberUA = regexp.MustCompile(`\(member ([^)]+)\)`)

// chunk is what a flooding instance sends, again and again (64 KiB).
var chunk = []byte(strings.Repeat("flood ", 10923))

// NewHTTP starts an HTTP backend, closed when the test ends. Instances are
// Healthy until set otherwise.
func NewHTTP(t testing.TB) *HTTP {
	b := &HTTP{
		modes:   make(map[string]string),
		probes:  make(map[string][]Probe),
		hung:    make(map[string]int),
		flooded: make(map[string]int64),
		wake:    make(chan struct{}),
	}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(func() {
		b.srv.CloseClientConnections()
		b.srv.Close()
	})
	return b
}

// URL is the check URL of instance id.
func (b *HTTP) URL(id string) string { return b.srv.URL + "/health/" + id }

// Addr is the backend's host:port.
func (b *HTTP) Addr() string { return strings.TrimPrefix(b.srv.URL, "http://") }

// Set puts instance id in mode.
func (b *HTTP) Set(id, mode string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.modes[id] = mode
}

// Probes returns the probes of instance id so far.
func (b *HTTP) Probes(id string) []Probe {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Probe(nil), b.probes[id]...)
}

// Hung is how many probes of id wait in Hanging mode now.
func (b *HTTP) Hung(id string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hung[id]
}

// Flooded is how many body bytes flooding probes of id were sent.
func (b *HTTP) Flooded(id string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flooded[id]
}

// WaitProbes waits until instance id has had at least n probes, or fails
// the test after timeout.
func (b *HTTP) WaitProbes(t testing.TB, id string, n int, timeout time.Duration) []Probe {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		got, wake := append([]Probe(nil), b.probes[id]...), b.wake
		b.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-wake:
		case <-deadline.C:
			t.Fatalf("instance %s: %d probes within %s, want %d", id, len(got), timeout, n)
		}
	}
}

func (b *HTTP) serve(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutPrefix(r.URL.Path, "/health/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	p := Probe{At: time.Now()}
	if m := memberUA.FindStringSubmatch(r.UserAgent()); m != nil {
		p.Member = m[1]
	}
	b.mu.Lock()
	mode := b.modes[id]
	if mode == "" {
		mode = Healthy
	}
	p.Mode = mode
	for _, n := range b.hung {
		p.Hanging += n
	}
	b.probes[id] = append(b.probes[id], p)
	close(b.wake)
	b.wake = make(chan struct{})
	b.mu.Unlock()
	switch mode {
	case Failing:
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "instance %s is down", id)
	case Hanging:
		b.mu.Lock()
		b.hung[id]++
		b.mu.Unlock()
		<-r.Context().Done()
		b.mu.Lock()
		b.hung[id]--
		b.mu.Unlock()
	case Flood:
		w.WriteHeader(http.StatusOK)
		for {
			n, err := w.Write(chunk)
			b.mu.Lock()
			b.flooded[id] += int64(n)
			b.mu.Unlock()
			if err != nil || r.Context().Err() != nil {
				return
			}
		}
	default:
		fmt.Fprint(w, "ok")
	}
}

// TCP accepts connections on one loopback port while it is up.
type TCP struct {
	t    testing.TB
	addr string
	mu   sync.Mutex
	ln   net.Listener
}

// NewTCP starts a TCP backend, up, closed when the test ends.
func NewTCP(t testing.TB) *TCP {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	b := &TCP{t: t, addr: ln.Addr().String()}
	b.serve(ln)
	t.Cleanup(b.Down)
	return b
}

// Addr is the backend's host:port.
func (b *TCP) Addr() string { return b.addr }

func (b *TCP) serve(ln net.Listener) {
	b.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// Down stops accepting: connections are refused.
func (b *TCP) Down() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln != nil {
		b.ln.Close()
		b.ln = nil
	}
}

// Up accepts connections again, on the same port.
func (b *TCP) Up() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln != nil {
		return
	}
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatalf("listen again on %s: %v", b.addr, err)
	}
	b.serve(ln)
}

// GRPC serves grpc.health.v1 with a status that can be flipped.
type GRPC struct {
	addr   string
	health *health.Server
}

// NewGRPC starts a gRPC backend whose server ("") and service "svc.A" are
// SERVING, stopped when the test ends.
func NewGRPC(t testing.TB) *GRPC {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := grpc.NewServer()
	h := health.NewServer()
	healthpb.RegisterHealthServer(s, h)
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus("svc.A", healthpb.HealthCheckResponse_SERVING)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return &GRPC{addr: ln.Addr().String(), health: h}
}

// Addr is the backend's host:port.
func (b *GRPC) Addr() string { return b.addr }

// Set sets service's serving status ("" is the server as a whole).
func (b *GRPC) Set(service string, serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	b.health.SetServingStatus(service, st)
}
