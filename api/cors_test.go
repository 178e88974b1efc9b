package api_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/regd/regd/api"
)

const uiOrigin = "https://ui.example.com"

// request sends method to url with the given headers (name, value, ...);
// a PUT carries a registration.
func request(t *testing.T, method, url string, headers ...string) (int, http.Header) {
	t.Helper()
	body := ""
	if method == http.MethodPut {
		body = registerBody
	}
	a := sendRaw(t, method, url, body, headers...)
	return a.status, a.header
}

// list is the comma-separated values of a header, over all its lines.
func list(h http.Header, name string) []string {
	var out []string
	for _, line := range h.Values(name) {
		for _, v := range strings.Split(line, ",") {
			out = append(out, strings.ToLower(strings.TrimSpace(v)))
		}
	}
	return out
}

func hasAll(h http.Header, name string, want ...string) bool {
	got := list(h, name)
	for _, w := range want {
		if !slices.Contains(got, strings.ToLower(w)) {
			return false
		}
	}
	return true
}

// TestCORS: with allowed origins, a preflight is answered before
// authentication (it carries no token) on routes of every class, only a
// listed origin is echoed (exactly: no subdomain or pattern matching),
// every answer varies by Origin, the revision and drain headers are
// exposed and Authorization may be sent; errors carry the CORS headers
// too, so a page can read them. Without allowed origins there is no CORS.
func TestCORS(t *testing.T) {
	auth := api.NewAuth(testTokens, true) // reads need a token as well
	_, ts := newFakeAPI(t, api.Config{Auth: auth, CORSAllowedOrigins: []string{"HTTPS://UI.Example.com/", "http://localhost:3000"}})
	preflight := func(path, origin, method string) (int, http.Header) {
		return request(t, http.MethodOptions, ts.URL+path, "Origin", origin,
			"Access-Control-Request-Method", method, "Access-Control-Request-Headers", "authorization,content-type")
	}

	for _, tc := range []struct {
		class, path, method string
		methods             []string
	}{
		{"write", "/v1/services/user/instances/u1", http.MethodPut, []string{"PUT", "GET", "HEAD", "DELETE"}},
		{"read", "/v1/services/user/instances", http.MethodGet, []string{"GET", "HEAD"}},
		{"stream", "/v1/services/user/watch", http.MethodGet, []string{"GET", "HEAD"}},
		{"probe", "/readyz", http.MethodGet, []string{"GET", "HEAD"}},
	} {
		status, h := preflight(tc.path, uiOrigin, tc.method)
		if status != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != uiOrigin {
			t.Fatalf("preflight of a %s route: %d, Allow-Origin %q; want 204 and %s", tc.class, status, h.Get("Access-Control-Allow-Origin"), uiOrigin)
		}
		if !hasAll(h, "Access-Control-Allow-Methods", tc.methods...) || !hasAll(h, "Access-Control-Allow-Headers", "Authorization", "Content-Type", "Last-Event-ID") {
			t.Fatalf("preflight of a %s route: Allow-Methods %q Allow-Headers %q", tc.class, h.Get("Access-Control-Allow-Methods"), h.Get("Access-Control-Allow-Headers"))
		}
		if !hasAll(h, "Vary", "Origin") || h.Get("Access-Control-Max-Age") == "" || h.Get("Access-Control-Allow-Credentials") != "" {
			t.Fatalf("preflight of a %s route: Vary %q Max-Age %q Allow-Credentials %q", tc.class, h.Values("Vary"), h.Get("Access-Control-Max-Age"), h.Get("Access-Control-Allow-Credentials"))
		}
	}

	for _, origin := range []string{"https://evil.example.com", "https://sub.ui.example.com", "https://ui.example.com.evil.com", "http://ui.example.com", "null"} {
		status, h := preflight("/v1/services/user/instances/u1", origin, http.MethodPut)
		if h.Get("Access-Control-Allow-Origin") != "" || h.Get("Access-Control-Allow-Methods") != "" || !hasAll(h, "Vary", "Origin") {
			t.Fatalf("preflight from unlisted %s: %d %v; want no CORS grant, Vary: Origin", origin, status, h)
		}
	}

	// Actual requests.
	status, h := request(t, http.MethodPut, ts.URL+"/v1/services/user/instances/u1", "Origin", uiOrigin, "Authorization", "Bearer "+writeToken)
	if status != http.StatusCreated || h.Get("Access-Control-Allow-Origin") != uiOrigin || !hasAll(h, "Vary", "Origin") {
		t.Fatalf("PUT from the listed origin: %d %v", status, h)
	}
	if !hasAll(h, "Access-Control-Expose-Headers", "X-Regd-Revision", "X-Regd-Observed", "Retry-After", "WWW-Authenticate") {
		t.Fatalf("Expose-Headers %q", h.Get("Access-Control-Expose-Headers"))
	}
	status, h = request(t, http.MethodGet, ts.URL+"/v1/services", "Origin", "http://localhost:3000")
	if status != http.StatusUnauthorized || h.Get("Access-Control-Allow-Origin") != "http://localhost:3000" || h.Get("WWW-Authenticate") == "" {
		t.Fatalf("GET without a token from a listed origin: %d %v; want 401 a page can read", status, h)
	}
	status, h = request(t, http.MethodGet, ts.URL+"/v1/services", "Origin", "https://evil.example.com", "Authorization", "Bearer "+readToken)
	if status != http.StatusOK || h.Get("Access-Control-Allow-Origin") != "" || !hasAll(h, "Vary", "Origin") {
		t.Fatalf("GET from an unlisted origin: %d %v; want 200 without a CORS grant", status, h)
	}
	// An OPTIONS that is not a preflight is an ordinary request: it
	// needs a token like any read.
	if status, _ := request(t, http.MethodOptions, ts.URL+"/v1/services", "Origin", uiOrigin); status != http.StatusUnauthorized {
		t.Fatalf("OPTIONS without Access-Control-Request-Method: %d, want 401", status)
	}

	t.Run("any origin", func(t *testing.T) {
		_, ts := newFakeAPI(t, api.Config{CORSAllowedOrigins: []string{"*"}})
		for _, origin := range []string{uiOrigin, "http://127.0.0.1:9999"} {
			status, h := request(t, http.MethodOptions, ts.URL+"/v1/services", "Origin", origin, "Access-Control-Request-Method", "GET")
			if status != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != origin || !hasAll(h, "Vary", "Origin") {
				t.Fatalf("preflight from %s with *: %d %v", origin, status, h)
			}
		}
	})

	t.Run("off", func(t *testing.T) {
		_, ts := newFakeAPI(t, api.Config{})
		status, h := request(t, http.MethodOptions, ts.URL+"/v1/services", "Origin", uiOrigin, "Access-Control-Request-Method", "GET")
		_, h2 := request(t, http.MethodGet, ts.URL+"/v1/services", "Origin", uiOrigin)
		for _, hdr := range []http.Header{h, h2} {
			for name := range hdr {
				if strings.HasPrefix(name, "Access-Control-") || slices.Contains(list(hdr, "Vary"), "origin") {
					t.Fatalf("CORS off: %d %v", status, hdr)
				}
			}
		}
	})
}
