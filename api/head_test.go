package api_test

import (
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/regdtest"
)

// TestHEAD: every GET route of the route table (so a new route is covered
// without touching this test) also answers HEAD, on a real node: the
// status and headers of the GET, no body, and at once for a watch stream.
// Error answers too: a HEAD gets the error's status and headers.
func TestHEAD(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	if code, _, body := regdtest.Do(t, http.MethodPut, m.URL("/v1/services/user/instances/u1"), `{"address":"10.0.0.5:8080"}`); code != http.StatusCreated {
		t.Fatalf("register: %d %s", code, body)
	}

	routes := api.New(api.Config{}).Routes()
	var paths []string
	for _, r := range routes {
		if path, ok := strings.CutPrefix(r, "GET "); ok {
			paths = append(paths, path)
			if !slices.Contains(routes, "HEAD "+path) {
				t.Errorf("GET %s has no HEAD route", path)
			}
		}
	}
	if len(paths) < 10 {
		t.Fatalf("only %d GET routes: %v", len(paths), routes)
	}
	fill := strings.NewReplacer(":service", "user", ":id", "u1", "*", "")
	for _, p := range paths {
		paths = append(paths, fill.Replace(p))
	}
	paths = paths[len(paths)/2:]
	// Error answers, each of another kind.
	paths = append(paths,
		"/v1/nope",                                 // 404 route_not_found
		"/v1/services/%2e%2e/instances",            // 400 invalid_service_name
		"/v1/services?index=x",                     // 400 invalid_parameter
		"/v1/services/user/instances/ghost",        // 404 not_found
		"/v1/services/user/instances/u1/heartbeat", // 405, Allow
		"/v1/services/user/watch?after=-1",         // 400 on a stream route
	)
	streams := 0
	for _, path := range paths {
		t.Run(path, func(t *testing.T) {
			get := sendRaw(t, http.MethodGet, m.URL(path), "")
			head := sendRaw(t, http.MethodHead, m.URL(path), "")
			if head.status != get.status {
				t.Fatalf("HEAD %d, GET %d", head.status, get.status)
			}
			if len(head.body) != 0 {
				t.Fatalf("HEAD has a body: %.200s", head.body)
			}
			if get.stream {
				streams++
			} else if get.status != http.StatusMethodNotAllowed && len(get.body) == 0 {
				t.Fatalf("GET %d has no body: nothing was compared", get.status)
			}
			// The same headers, but those that say when (Date) or reflect
			// state that may have moved between the two requests (the
			// revision's value: its presence must match).
			g, h := maps.Clone(get.header), maps.Clone(head.header)
			for _, hdr := range []http.Header{g, h} {
				hdr.Del("Date")
				if hdr.Get(api.HeaderRevision) != "" {
					hdr.Set(api.HeaderRevision, "present")
				}
			}
			if !equalHeaders(g, h) {
				t.Fatalf("headers differ\n GET  %v\n HEAD %v", g, h)
			}
		})
	}
	if streams != 2 {
		t.Fatalf("%d of the GET answers were streams, want the 2 watch routes", streams)
	}
}

func equalHeaders(a, b http.Header) bool {
	return maps.EqualFunc(a, b, func(x, y []string) bool { return slices.Equal(x, y) })
}

// TestHEADReadyzWhileDraining: the probe load balancers send as HEAD sees
// the drain's 503 like a GET.
func TestHEADReadyzWhileDraining(t *testing.T) {
	s, ts := newFakeAPI(t, api.Config{})
	for _, want := range []int{http.StatusOK, http.StatusServiceUnavailable} {
		if want == http.StatusServiceUnavailable {
			s.Drain()
		}
		for _, path := range []string{"/readyz", "/healthz"} {
			status, _, body := call(t, http.MethodHead, ts.URL+path, "", "")
			if path == "/healthz" && status != http.StatusOK || path == "/readyz" && status != want || len(body) != 0 {
				t.Fatalf("HEAD %s: %d with %d body bytes", path, status, len(body))
			}
		}
	}
}
