package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/regd/regd/api"
	"github.com/regd/regd/ui"
)

// TestTokenScope: GET /v1/auth/token tells what the request's own
// credentials allow, in every auth setting.
func TestTokenScope(t *testing.T) {
	tests := []struct {
		name  string
		auth  *api.Auth
		authz string
		want  string // the JSON body, or the error code
	}{
		{"no auth", nil, "", `{"scope":"write","authenticated":false}`},
		{"no auth, a token is not looked at", nil, "Bearer " + readToken, `{"scope":"write","authenticated":false}`},
		{"open reads, no token", api.NewAuth(testTokens, false), "", `{"scope":"read","authenticated":false}`},
		{"open reads, read token", api.NewAuth(testTokens, false), "Bearer " + readToken, `{"scope":"read","authenticated":true}`},
		{"open reads, write token", api.NewAuth(testTokens, false), "Bearer " + writeToken, `{"scope":"write","authenticated":true}`},
		{"open reads, bogus token", api.NewAuth(testTokens, false), "Bearer x-0123456789abcdef", "unauthorized"},
		{"token reads, no token", api.NewAuth(testTokens, true), "", "unauthorized"},
		{"token reads, read token", api.NewAuth(testTokens, true), "Bearer " + readToken, `{"scope":"read","authenticated":true}`},
		{"token reads, write token", api.NewAuth(testTokens, true), "Bearer " + writeToken, `{"scope":"write","authenticated":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ts := newFakeAPI(t, api.Config{Auth: tt.auth})
			status, hdr, body := call(t, http.MethodGet, ts.URL+"/v1/auth/token", tt.authz, "")
			if !strings.HasPrefix(tt.want, "{") {
				if code, _ := decodeErrorBody(t, body); status != http.StatusUnauthorized || code != tt.want {
					t.Fatalf("status %d code %q, want 401 %q", status, code, tt.want)
				}
				return
			}
			if status != http.StatusOK || strings.TrimSpace(string(body)) != tt.want {
				t.Fatalf("status %d body %s, want 200 %s", status, body, tt.want)
			}
			if hdr.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", hdr.Get("Cache-Control"))
			}
		})
	}
}

// TestUIMount: with Config.UI the web UI's files are served without a token
// (a page load cannot carry one), writes under /ui still need one, and /
// redirects browsers only; without it neither route exists.
func TestUIMount(t *testing.T) {
	_, ts := newFakeAPI(t, api.Config{UI: ui.New(), Auth: api.NewAuth(testTokens, true)})
	do := func(method, path, accept, authz string) (int, http.Header, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, ts.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header, b
	}
	const browser = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
	tests := []struct {
		name, method, path, accept, authz string
		status                            int
		location, code                    string
	}{
		{name: "page without token", method: "GET", path: "/ui/", status: 200},
		{name: "asset without token", method: "HEAD", path: "/ui/app.js", status: 200},
		{name: "ui without slash", method: "GET", path: "/ui", status: 301, location: "/ui/"},
		{name: "unknown asset", method: "GET", path: "/ui/nope.js", status: 404, code: "route_not_found"},
		{name: "write under ui needs a token first", method: "POST", path: "/ui/", status: 401, code: "unauthorized"},
		{name: "write under ui with a token", method: "DELETE", path: "/ui/app.js", authz: "Bearer " + writeToken, status: 405, code: "method_not_allowed"},
		{name: "browser at root", method: "GET", path: "/", accept: browser, status: 302, location: "/ui/"},
		{name: "HEAD by a browser at root", method: "HEAD", path: "/", accept: "text/html", status: 302, location: "/ui/"},
		{name: "curl at root", method: "GET", path: "/", accept: "*/*", status: 404, code: "route_not_found"},
		{name: "API client at root", method: "GET", path: "/", accept: "application/json", status: 404, code: "route_not_found"},
		{name: "no Accept at root", method: "GET", path: "/", status: 404, code: "route_not_found"},
		{name: "html refused at root", method: "GET", path: "/", accept: "text/html;q=0, */*", status: 404, code: "route_not_found"},
		{name: "html at q=0.000", method: "GET", path: "/", accept: "text/html; q=0.000", status: 404, code: "route_not_found"},
		{name: "malformed Accept", method: "GET", path: "/", accept: "text/html;;;=", status: 404, code: "route_not_found"},
		{name: "API still needs a token", method: "GET", path: "/v1/services", status: 401, code: "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, body := do(tt.method, tt.path, tt.accept, tt.authz)
			if status != tt.status {
				t.Fatalf("status %d, want %d; body %.200s", status, tt.status, body)
			}
			if got := hdr.Get("Location"); got != tt.location {
				t.Errorf("Location %q, want %q", got, tt.location)
			}
			if tt.code != "" && tt.method != "HEAD" {
				code, msg := decodeErrorBody(t, body)
				if code != tt.code {
					t.Errorf("code %q, want %q (body %s)", code, tt.code, body)
				}
				if tt.path == "/" && !strings.Contains(msg, "/ui/") {
					t.Errorf("message %q at / does not name the UI", msg)
				}
			}
			if strings.HasPrefix(tt.path, "/ui") && (tt.method == "GET" || tt.method == "HEAD") && hdr.Get("Content-Security-Policy") == "" {
				t.Errorf("no Content-Security-Policy on %s %s", tt.method, tt.path)
			}
		})
	}

	// Without a UI, nothing of it is routed and / is a 404 for browsers too.
	s, plain := newFakeAPI(t, api.Config{})
	if slices.ContainsFunc(s.Routes(), func(r string) bool { return strings.Contains(r, " /ui") || strings.HasSuffix(r, " /") }) {
		t.Errorf("routes without a UI: %v", s.Routes())
	}
	for _, p := range []string{"/", "/ui/"} {
		req, _ := http.NewRequest("GET", plain.URL+p, nil)
		req.Header.Set("Accept", browser)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 404 || e.Error.Code != "route_not_found" {
			t.Errorf("GET %s without a UI: %d %q, want 404 route_not_found", p, resp.StatusCode, e.Error.Code)
		}
	}
}
