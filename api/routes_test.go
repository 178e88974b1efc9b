package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

// TestRouteTable: every route has a handler and a class, no method and
// path twice, and the classes the rules depend on are where they must be.
func TestRouteTable(t *testing.T) {
	s := New(Config{EnablePprof: true})
	seen := map[routeKey]bool{}
	for _, r := range s.routes() {
		k := routeKey{r.method, r.path}
		if seen[k] {
			t.Errorf("%s %s is in the table twice", r.method, r.path)
		}
		seen[k] = true
		if r.handler == nil {
			t.Errorf("%s %s has no handler", r.method, r.path)
		}
		if r.class > classProbe {
			t.Errorf("%s %s has no class (%d)", r.method, r.path, r.class)
		}
		if got := s.table[k]; got == nil || got.class != r.class {
			t.Errorf("%s %s: the server's table has %v, the route table class %s", r.method, r.path, got, r.class)
		}
		var want class
		switch {
		case r.path == "/healthz" || r.path == "/readyz":
			want = classProbe
		case strings.HasSuffix(r.path, "/watch"):
			want = classStream
		case strings.HasPrefix(r.path, "/v1/cluster/members") || r.path == "/v1/snapshot":
			want = classAdmin // operating the cluster: membership, backups
		case r.method == http.MethodGet:
			want = classRead
		default:
			want = classWrite
		}
		if r.class != want {
			t.Errorf("%s %s is of class %s, want %s", r.method, r.path, r.class, want)
		}
		if r.blocking != (r.method == http.MethodGet && (r.path == "/v1/services" || r.path == "/v1/services/:service/instances")) {
			t.Errorf("%s %s: blocking %v; only the two lists answer blocking queries", r.method, r.path, r.blocking)
		}
	}
}

// TestClassScopes: the scope each class needs, read from the route
// table by authentication, over every class (admin on a route added for
// the test, so that the test does not depend on the admin routes' fakes).
func TestClassScopes(t *testing.T) {
	tokens := []Token{
		{Scope: ScopeRead, Secret: "r-0123456789abcdef"},
		{Scope: ScopeWrite, Secret: "w-0123456789abcdef"},
		{Scope: ScopeAdmin, Secret: "a-0123456789abcdef"},
	}
	s := New(Config{Auth: NewAuth(tokens, true), Cluster: readyFake{}})
	ok := func(c echo.Context) error { return c.NoContent(http.StatusNoContent) }
	extra := []route{
		{method: http.MethodPost, path: "/test/read", class: classRead, handler: ok},
		{method: http.MethodPost, path: "/test/write", class: classWrite, handler: ok},
		{method: http.MethodPost, path: "/test/admin", class: classAdmin, handler: ok},
		{method: http.MethodPost, path: "/test/stream", class: classStream, handler: ok},
		{method: http.MethodPost, path: "/test/probe", class: classProbe, handler: ok},
	}
	for k, r := range s.mount(s.echo, extra) {
		s.table[k] = r
	}
	// want is the status per token: none, read, write, admin.
	for _, tc := range []struct {
		class string
		want  [4]int
	}{
		{"probe", [4]int{204, 204, 204, 204}},
		{"read", [4]int{401, 204, 204, 204}},
		{"stream", [4]int{401, 204, 204, 204}},
		{"write", [4]int{401, 403, 204, 204}},
		{"admin", [4]int{401, 403, 403, 204}},
	} {
		for i, secret := range []string{"", tokens[0].Secret, tokens[1].Secret, tokens[2].Secret} {
			req := httptest.NewRequest(http.MethodPost, "/test/"+tc.class, nil)
			if secret != "" {
				req.Header.Set("Authorization", "Bearer "+secret)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			if rec.Code != tc.want[i] {
				t.Errorf("class %s with token %d: %d %s, want %d", tc.class, i, rec.Code, rec.Body, tc.want[i])
			}
		}
	}
}

type readyFake struct{ Cluster }

func (readyFake) Ready() error { return nil }
