package api

// Micro-benchmarks of the REST layer's hot paths. They run the real
// handlers against fakes of the API's own interfaces (Registry, View,
// Cluster) that answer instantly with canned data, so they measure the HTTP
// layer alone: routing, middleware, strict decoding, validation, JSON
// encoding. No etcd, no network.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regd/regd/registry"
)

// benchRegistry answers every call at once with the canned instance.
type benchRegistry struct{ inst registry.Instance }

func (f *benchRegistry) Heartbeats(_ context.Context, items []registry.HeartbeatItem) []registry.HeartbeatResult {
	out := make([]registry.HeartbeatResult, len(items))
	for i := range out {
		out[i].TTL = 30
	}
	return out
}
func (f *benchRegistry) Patch(context.Context, string, string, registry.Patch) (registry.Instance, error) {
	return f.inst, nil
}
func (f *benchRegistry) PatchObserved(context.Context, string, string, registry.Patch, time.Duration) (registry.Instance, registry.Observed, error) {
	return f.inst, registry.Observed{}, nil
}
func (f *benchRegistry) DeregisterObserved(context.Context, string, string, time.Duration) (int64, registry.Observed, error) {
	return f.inst.Revision, registry.Observed{}, nil
}

func (f *benchRegistry) Register(_ context.Context, service, id string, r registry.Registration) (registry.Instance, bool, error) {
	return f.inst, true, nil
}
func (f *benchRegistry) Heartbeat(context.Context, string, string) (int64, error) { return 30, nil }
func (f *benchRegistry) Deregister(context.Context, string, string) (int64, error) {
	return f.inst.Revision, nil
}
func (f *benchRegistry) Get(context.Context, string, string) (registry.Instance, error) {
	return f.inst, nil
}
func (f *benchRegistry) Revision(context.Context) (int64, error) { return f.inst.Revision, nil }

// benchView serves one canned list and is always caught up. Like the real
// view, it encodes the list once and serves the bytes after that.
type benchView struct {
	list    registry.InstanceList
	once    sync.Once
	encoded []byte
}

func (v *benchView) InstancesJSON(string, registry.Filter) ([]byte, int64, bool) {
	v.once.Do(func() { v.encoded, _ = json.Marshal(v.list.Instances) })
	return v.encoded, v.list.Revision, true
}
func (v *benchView) Block(string, registry.Filter, int64) *registry.Waiter { return nil }

func (v *benchView) WaitRev(context.Context, int64) error { return nil }
func (v *benchView) Rev() int64                           { return v.list.Revision }
func (v *benchView) Services() registry.ServiceList {
	return registry.ServiceList{Revision: v.list.Revision}
}
func (v *benchView) Changed(string) (int64, <-chan struct{})            { return v.list.Revision, nil }
func (v *benchView) List(string, registry.Filter) registry.InstanceList { return v.list }
func (v *benchView) Subscribe(context.Context, string, registry.Filter, registry.EventID) (*registry.Subscription, error) {
	return nil, errors.New("benchView: no subscriptions")
}
func (v *benchView) SubscribeFromList(context.Context, string, registry.Filter) (registry.InstanceList, *registry.Subscription, error) {
	return registry.InstanceList{}, nil, errors.New("benchView: no subscriptions")
}

type benchCluster struct{}

func (benchCluster) Ready() error { return nil }
func (benchCluster) Status(context.Context) (registry.ClusterStatus, error) {
	return registry.ClusterStatus{}, nil
}

func benchInstance(i int) registry.Instance {
	at := time.Date(2026, 11, 22, 3, 10, 35, 860000000, time.UTC)
	return registry.Instance{
		Service:      "user-service",
		ID:           fmt.Sprintf("user-service-%04d", i),
		Address:      fmt.Sprintf("10.0.%d.%d:8080", i/256, i%256),
		Metadata:     map[string]string{"zone": "eu-west-1a", "version": "1.42.7"},
		TTL:          30,
		LeaseID:      "7587880571334082564",
		RegisteredAt: &at,
		Revision:     int64(1000 + i),
	}
}

func benchServer(n int) *Server {
	list := registry.InstanceList{Service: "user-service", Revision: 5000, Instances: make([]registry.Instance, n)}
	for i := range list.Instances {
		list.Instances[i] = benchInstance(i)
	}
	return New(Config{
		Registry: &benchRegistry{inst: benchInstance(7)},
		View:     &benchView{list: list},
		Cluster:  benchCluster{},
	})
}

// discardWriter is a ResponseWriter that keeps only the status and the
// byte count, so a benchmark's memory does not grow with b.N.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(code int) {
	w.status = code
}
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}
func (w *discardWriter) reset() {
	clear(w.h)
	w.status, w.n = 0, 0
}

var registerBodies = []struct{ name, body string }{
	{"minimal", `{"address":"10.0.0.5:8080","ttl":30}`},
	{"metadata8", `{"address":"user-7.eu-west-1.svc.cluster.local:8080","ttl":30,"metadata":{"zone":"eu-west-1a","version":"1.42.7","env":"production","team":"identity","protocol":"http","weight":"100","canary":"false","build":"7f3c2a1"}}`},
}

// BenchmarkDecodeRegister is a registration body through the handler's own
// strict decoder and then the validation Store.Register applies before it
// calls etcd.
func BenchmarkDecodeRegister(b *testing.B) {
	s := benchServer(0)
	for _, tc := range registerBodies {
		b.Run(tc.name, func(b *testing.B) {
			body := []byte(tc.body)
			req := httptest.NewRequest(http.MethodPut, "/v1/services/user-service/instances/user-service-7", nil)
			w := &discardWriter{h: http.Header{}}
			c := s.echo.NewContext(req, w)
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				req.Body = io.NopCloser(bytes.NewReader(body))
				c.Reset(req, w)
				raw, err := s.readBody(c)
				if err != nil {
					b.Fatal(err)
				}
				r, err := decodeRegistration(raw)
				if err != nil {
					b.Fatal(err)
				}
				if err := registry.ValidateService("user-service"); err != nil {
					b.Fatal(err)
				}
				if err := registry.ValidateID("user-service-7"); err != nil {
					b.Fatal(err)
				}
				if err := registry.ValidateAddress(r.Address); err != nil {
					b.Fatal(err)
				}
				if _, err := registry.ResolveTTL(r.TTL); err != nil {
					b.Fatal(err)
				}
				if err := registry.ValidateMetadata(r.Metadata); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// serve runs one request through the whole handler (router, metrics and
// logging middleware, handler, error mapping) and checks the status.
func serve(b *testing.B, h http.Handler, w *discardWriter, req *http.Request, body []byte, want int) {
	if body != nil {
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	w.reset()
	h.ServeHTTP(w, req)
	if w.status != want {
		b.Fatalf("%s %s: status %d, want %d", req.Method, req.URL.Path, w.status, want)
	}
}

// BenchmarkRegisterHandler is PUT .../instances/{id} through the whole HTTP
// layer with a registry that answers at once: what regd spends per
// registration outside etcd.
func BenchmarkRegisterHandler(b *testing.B) {
	s := benchServer(0)
	h := s.Handler()
	for _, tc := range registerBodies {
		b.Run(tc.name, func(b *testing.B) {
			body := []byte(tc.body)
			req := httptest.NewRequest(http.MethodPut, "/v1/services/user-service/instances/user-service-7", nil)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				serve(b, h, w, req, body, http.StatusCreated)
			}
		})
	}
}

// BenchmarkHeartbeatHandler is PUT .../heartbeat through the whole HTTP
// layer: the most frequent request a registry serves.
func BenchmarkHeartbeatHandler(b *testing.B) {
	h := benchServer(0).Handler()
	req := httptest.NewRequest(http.MethodPut, "/v1/services/user-service/instances/user-service-7/heartbeat", nil)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		serve(b, h, w, req, nil, http.StatusOK)
	}
}

// BenchmarkEncodeInstance is one instance object as the API writes it: as
// a JSON response body (echo's serializer: a json.Encoder on the response)
// and as one SSE event of a watch stream.
func BenchmarkEncodeInstance(b *testing.B) {
	inst := benchInstance(7)
	b.Run("json", func(b *testing.B) {
		w := &discardWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			if err := json.NewEncoder(w).Encode(inst); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sse-event", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f := getFrame()
			if err := appendEvent(f, registry.AfterRevision(inst.Revision), registry.EventRegister, inst); err != nil {
				b.Fatal(err)
			}
			putFrame(f)
		}
	})
}

// BenchmarkListRender1000 is GET .../instances of a 1000-instance service
// through the whole HTTP layer with a view that hands over its canned list
// at once: the cost of rendering the list (JSON of 1000 instances) plus the
// request's overhead. Bytes/op is the response size.
func BenchmarkListRender1000(b *testing.B) {
	h := benchServer(1000).Handler()
	req := httptest.NewRequest(http.MethodGet, "/v1/services/user-service/instances", nil)
	w := &discardWriter{h: http.Header{}}
	serve(b, h, w, req, nil, http.StatusOK)
	if !strings.HasPrefix(w.h.Get("Content-Type"), "application/json") {
		b.Fatalf("content type %q", w.h.Get("Content-Type"))
	}
	b.SetBytes(int64(w.n))
	b.ReportAllocs()
	for b.Loop() {
		serve(b, h, w, req, nil, http.StatusOK)
	}
}

// copyingView is benchView without the shared encoding: every call
// returns a fresh copy, as if the service had changed since the last
// request, so the gzip cache of lists never hits.
type copyingView struct{ *benchView }

func (v copyingView) InstancesJSON(s string, f registry.Filter) ([]byte, int64, bool) {
	b, rev, shared := v.benchView.InstancesJSON(s, f)
	return bytes.Clone(b), rev, shared
}

// BenchmarkListGzip1000 is GET .../instances of a 1000-instance service
// through the whole HTTP layer: sent as it is, gzip-compressed from the
// cache (the service unchanged since the last request: the common case,
// one compression per change), and compressed on every request (the cache
// missing each time). Bytes/op is the uncompressed size; wire-B/op what
// is sent.
func BenchmarkListGzip1000(b *testing.B) {
	cached := benchServer(1000)
	uncached := benchServer(1000)
	uncached.cfg.View = copyingView{uncached.cfg.View.(*benchView)}
	for _, tc := range []struct {
		name   string
		s      *Server
		accept string
	}{
		{"identity", cached, ""},
		{"gzip-cached", cached, "gzip"},
		{"gzip-uncached", uncached, "gzip"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := tc.s.Handler()
			req := httptest.NewRequest(http.MethodGet, "/v1/services/user-service/instances", nil)
			if tc.accept != "" {
				req.Header.Set("Accept-Encoding", tc.accept)
			}
			w := &discardWriter{h: http.Header{}}
			serve(b, h, w, req, nil, http.StatusOK)
			if got := w.h.Get("Content-Encoding"); got != tc.accept {
				b.Fatalf("Content-Encoding %q, want %q", got, tc.accept)
			}
			wire := w.n
			plain := &discardWriter{h: http.Header{}}
			serve(b, h, plain, httptest.NewRequest(http.MethodGet, "/v1/services/user-service/instances", nil), nil, http.StatusOK)
			b.SetBytes(int64(plain.n))
			b.ReportAllocs()
			for b.Loop() {
				serve(b, h, w, req, nil, http.StatusOK)
			}
			b.ReportMetric(float64(wire), "wire-B/op")
		})
	}
}
