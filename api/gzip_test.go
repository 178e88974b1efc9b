package api_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// getRaw sends method to url, with Accept-Encoding when given.
func getRaw(t *testing.T, method, url, acceptEncoding string) wireAnswer {
	t.Helper()
	if acceptEncoding == "" {
		return sendRaw(t, method, url, "")
	}
	return sendRaw(t, method, url, "", "Accept-Encoding", acceptEncoding)
}

// gunzip decodes exactly one gzip member (RFC 1952) that is all of b:
// what any client can decode, not only those that accept concatenated
// members.
func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	rd := bytes.NewReader(b)
	zr, err := gzip.NewReader(rd)
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	zr.Multistream(false)
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("corrupt gzip (checksum or length): %v", err)
	}
	if rd.Len() != 0 {
		t.Fatalf("%d bytes after the gzip member", rd.Len())
	}
	return out
}

// swapView serves one service whose encoded instances the test replaces,
// and a revision it moves, as the real view does.
type swapView struct {
	fakeView
	encoded atomic.Pointer[[]byte]
	rev     atomic.Int64
}

func (v *swapView) InstancesJSON(string, registry.Filter) ([]byte, int64, bool) {
	return *v.encoded.Load(), v.rev.Load(), true
}

func (v *swapView) set(b []byte) { v.encoded.Store(&b) }

// encodeInstances is n instances as the view encodes them; tag makes two
// encodings of the same length differ.
func encodeInstances(t testing.TB, n int, tag string) []byte {
	t.Helper()
	list := make([]registry.Instance, n)
	for i := range list {
		list[i] = fakeInstance("user", fmt.Sprintf("u%04d", i), fmt.Sprintf("10.0.%d.%d:8080", i/256, i%256))
		list[i].Metadata = map[string]string{"zone": "eu-west-1a", "build": tag}
	}
	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeInstanceList(t *testing.T, b []byte) registry.InstanceList {
	t.Helper()
	var l registry.InstanceList
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatalf("not an instance list: %v: %.200s", err, b)
	}
	return l
}

// TestGzipInstanceLists: a list of 1 KiB or more is gzip-compressed when
// the client accepts gzip, as one valid gzip member with the exact
// Content-Length, equal to the uncompressed answer; its revision follows
// the view although the compressed instances are cached; a change of the
// instances (to an encoding of the same length) is never served stale;
// smaller lists, HEAD and clients that do not accept gzip get the plain
// answer; every answer says Vary: Accept-Encoding.
func TestGzipInstanceLists(t *testing.T) {
	view := &swapView{}
	view.set(encodeInstances(t, 200, "aaaa"))
	view.rev.Store(10)
	cfg := withFakes(api.Config{})
	cfg.View = view
	s := api.New(cfg)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	url := ts.URL + "/v1/services/user/instances?stale"

	plain := getRaw(t, http.MethodGet, url, "")
	zipped := getRaw(t, http.MethodGet, url, "gzip")
	if plain.header.Get("Content-Encoding") != "" || zipped.header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q without gzip, %q with", plain.header.Get("Content-Encoding"), zipped.header.Get("Content-Encoding"))
	}
	for _, a := range []wireAnswer{plain, zipped} {
		if a.status != http.StatusOK || !strings.Contains(a.header.Get("Vary"), "Accept-Encoding") || !isJSON(a.header) {
			t.Fatalf("%d Vary %q Content-Type %q", a.status, a.header.Get("Vary"), a.header.Get("Content-Type"))
		}
		if cl := a.header.Get("Content-Length"); cl != strconv.Itoa(len(a.body)) {
			t.Fatalf("Content-Length %q for %d bytes", cl, len(a.body))
		}
	}
	if got := gunzip(t, zipped.body); !bytes.Equal(got, plain.body) {
		t.Fatalf("the gzip answer decodes to\n%.300s\nnot the plain answer\n%.300s", got, plain.body)
	}
	if len(zipped.body) > len(plain.body)/5 {
		t.Fatalf("compressed %d of %d bytes: barely compressed", len(zipped.body), len(plain.body))
	}
	t.Logf("list of 200: %d bytes, %d compressed", len(plain.body), len(zipped.body))

	// Another revision, the same instances: the cached instances with the
	// new revision.
	view.rev.Store(11)
	l := decodeInstanceList(t, gunzip(t, getRaw(t, http.MethodGet, url, "gzip").body))
	if l.Revision != 11 || len(l.Instances) != 200 || l.Instances[0].Metadata["build"] != "aaaa" {
		t.Fatalf("after the revision moved: revision %d, %d instances, build %q", l.Revision, len(l.Instances), l.Instances[0].Metadata["build"])
	}
	// Changed instances, encoded to the same length: never the old ones.
	view.set(encodeInstances(t, 200, "bbbb"))
	l = decodeInstanceList(t, gunzip(t, getRaw(t, http.MethodGet, url, "gzip").body))
	if l.Instances[0].Metadata["build"] != "bbbb" || l.Instances[199].Metadata["build"] != "bbbb" {
		t.Fatalf("after the instances changed: build %q, the cache served the old list", l.Instances[0].Metadata["build"])
	}

	for _, tc := range []struct {
		accept string
		gzip   bool
	}{
		{"gzip", true},
		{"deflate, gzip;q=0.5", true},
		{"GZIP", true},
		{"x-gzip", true},
		{"*", true},
		{"gzip;q=0", false},
		{"gzip;q=0.0, *", false},
		{"*;q=0", false},
		{"br", false},
		{"identity", false},
	} {
		a := getRaw(t, http.MethodGet, url, tc.accept)
		if (a.header.Get("Content-Encoding") == "gzip") != tc.gzip {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q, want gzip %v", tc.accept, a.header.Get("Content-Encoding"), tc.gzip)
		}
	}

	head := getRaw(t, http.MethodHead, url, "gzip")
	if head.header.Get("Content-Encoding") != "" || len(head.body) != 0 || head.header.Get("Content-Length") != strconv.Itoa(len(getRaw(t, http.MethodGet, url, "").body)) {
		t.Fatalf("HEAD with gzip: %v, %d body bytes; want the plain answer's headers", head.header, len(head.body))
	}

	view.set(encodeInstances(t, 2, "small"))
	small := getRaw(t, http.MethodGet, url, "gzip")
	if len(small.body) >= 1024 || small.header.Get("Content-Encoding") != "" || !strings.Contains(small.header.Get("Vary"), "Accept-Encoding") {
		t.Fatalf("a list under 1 KiB: %d bytes, Content-Encoding %q, Vary %q", len(small.body), small.header.Get("Content-Encoding"), small.header.Get("Vary"))
	}
}

// TestGzipListsConcurrently: many clients while the instances change:
// each compressed answer is one whole, consistent list.
func TestGzipListsConcurrently(t *testing.T) {
	view := &swapView{}
	versions := [][]byte{encodeInstances(t, 100, "v0"), encodeInstances(t, 100, "v1"), encodeInstances(t, 100, "v2")}
	view.set(versions[0])
	view.rev.Store(1)
	cfg := withFakes(api.Config{})
	cfg.View = view
	ts := httptest.NewServer(api.New(cfg).Handler())
	t.Cleanup(ts.Close)

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 25 {
				a := getRaw(t, http.MethodGet, ts.URL+"/v1/services/user/instances?stale", "gzip")
				l := decodeInstanceList(t, gunzip(t, a.body))
				build := l.Instances[0].Metadata["build"]
				for _, inst := range l.Instances {
					if inst.Metadata["build"] != build {
						t.Errorf("one answer mixes lists %q and %q", build, inst.Metadata["build"])
						return
					}
				}
			}
		})
	}
	for i := range 200 {
		view.set(versions[i%len(versions)])
		view.rev.Add(1)
	}
	wg.Wait()
}

// bigServices is a view with many services, for a large /v1/services.
type bigServices struct{ fakeView }

func (bigServices) Services() registry.ServiceList {
	l := registry.ServiceList{Revision: 2}
	for i := range 100 {
		l.Services = append(l.Services, registry.ServiceSummary{Name: fmt.Sprintf("service-%03d", i), Instances: i})
	}
	return l
}

// TestGzipOtherAnswers: JSON answers other than instance lists are
// compressed as they are written, from 1 KiB; /metrics is compressed once,
// by promhttp; errors and small answers are sent as they are.
func TestGzipOtherAnswers(t *testing.T) {
	cfg := withFakes(api.Config{})
	cfg.View = bigServices{}
	ts := httptest.NewServer(api.New(cfg).Handler())
	t.Cleanup(ts.Close)

	doc, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	a := getRaw(t, http.MethodGet, ts.URL+"/v1/openapi.json", "gzip")
	if a.header.Get("Content-Encoding") != "gzip" || !bytes.Equal(gunzip(t, a.body), doc) || a.header.Get("Content-Length") != "" && a.header.Get("Content-Length") != strconv.Itoa(len(a.body)) {
		t.Fatalf("openapi.json with gzip: %v", a.header)
	}
	plain := getRaw(t, http.MethodGet, ts.URL+"/v1/services?stale", "")
	a = getRaw(t, http.MethodGet, ts.URL+"/v1/services?stale", "gzip")
	if len(plain.body) < 1024 || a.header.Get("Content-Encoding") != "gzip" || !bytes.Equal(gunzip(t, a.body), plain.body) {
		t.Fatalf("a %d-byte service list with gzip: %v", len(plain.body), a.header)
	}
	a = getRaw(t, http.MethodGet, ts.URL+"/metrics", "gzip")
	if a.header.Get("Content-Encoding") != "gzip" || !bytes.HasPrefix(gunzip(t, a.body), []byte("# HELP")) {
		t.Fatalf("/metrics with gzip: %v, not compressed exactly once", a.header)
	}
	for _, path := range []string{"/healthz", "/v1/nope", "/v1/services/user/instances/u1"} {
		a := getRaw(t, http.MethodGet, ts.URL+path, "gzip")
		if a.header.Get("Content-Encoding") != "" || len(a.body) >= 1024 || !isJSON(a.header) {
			t.Fatalf("%s (%d bytes) with gzip: %v", path, len(a.body), a.header)
		}
	}
}

// TestGzipOnANode: on a real node, a list a client asks to compress is
// compressed, and a watch stream never is: its events arrive as they
// happen, readable as they are.
func TestGzipOnANode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	md := `{"zone":"eu-west-1a","rack":"r17","version":"1.42.7","team":"identity"}`
	for i := range 12 {
		body := fmt.Sprintf(`{"address":"10.0.0.%d:8080","metadata":%s}`, i+1, md)
		if code, _, b := regdtest.Do(t, http.MethodPut, m.URL(fmt.Sprintf("/v1/services/user/instances/u%02d", i)), body); code != http.StatusCreated {
			t.Fatalf("register: %d %s", code, b)
		}
	}
	plain := getRaw(t, http.MethodGet, m.URL("/v1/services/user/instances"), "")
	zipped := getRaw(t, http.MethodGet, m.URL("/v1/services/user/instances"), "gzip")
	if len(plain.body) < 1024 || zipped.header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("a %d-byte list with gzip: %v", len(plain.body), zipped.header)
	}
	if l := decodeInstanceList(t, gunzip(t, zipped.body)); len(l.Instances) != 12 || strconv.FormatInt(l.Revision, 10) != zipped.header.Get(api.HeaderRevision) {
		t.Fatalf("the gzip list: %d instances, revision %d, header %s", len(l.Instances), l.Revision, zipped.header.Get(api.HeaderRevision))
	}

	// The web UI's files too; a range of one is a range of the file, never
	// compressed.
	js := getRaw(t, http.MethodGet, m.URL("/ui/app.js"), "")
	jsz := getRaw(t, http.MethodGet, m.URL("/ui/app.js"), "gzip")
	if len(js.body) < 1024 || jsz.header.Get("Content-Encoding") != "gzip" || !bytes.Equal(gunzip(t, jsz.body), js.body) || len(jsz.body) >= len(js.body) {
		t.Fatalf("/ui/app.js (%d bytes) with gzip: %d bytes, %v", len(js.body), len(jsz.body), jsz.header)
	}
	rreq, err := http.NewRequest(http.MethodGet, m.URL("/ui/app.js"), nil)
	if err != nil {
		t.Fatal(err)
	}
	rreq.Header.Set("Accept-Encoding", "gzip")
	rreq.Header.Set("Range", "bytes=0-99")
	rresp, err := http.DefaultTransport.RoundTrip(rreq)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(rresp.Body)
	rresp.Body.Close()
	if rresp.StatusCode != http.StatusPartialContent || rresp.Header.Get("Content-Encoding") != "" || !bytes.Equal(part, js.body[:100]) {
		t.Fatalf("a range of /ui/app.js with gzip: %d %v, %d bytes", rresp.StatusCode, rresp.Header, len(part))
	}

	req, err := http.NewRequest(http.MethodGet, m.URL("/v1/services/user/watch"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "gzip")
	resp, cancel := dialSSERequest(t, req)
	if resp.Header.Get("Content-Encoding") != "" || strings.Contains(resp.Header.Get("Vary"), "Accept-Encoding") {
		t.Fatalf("watch stream with gzip: %v", resp.Header)
	}
	stream := startSSE(t, req.URL.String(), resp, cancel)
	if code, _, b := regdtest.Do(t, http.MethodPut, m.URL("/v1/services/user/instances/late"), `{"address":"10.0.0.99:8080"}`); code != http.StatusCreated {
		t.Fatalf("register: %d %s", code, b)
	}
	stream.expect(t, "register", "user", "late", 0)
}
