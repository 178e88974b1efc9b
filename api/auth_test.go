package api_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/regd/regd/api"
	"github.com/regd/regd/registry"
)

// ---- fakes of the API's own interfaces, shared with limits_test.go ----

// fakeRegistry answers every call at once with canned data. When block is
// set, Register announces itself on entered and then waits for block to
// close (or the request to end), to hold a request in flight.
type fakeRegistry struct {
	block   chan struct{}
	entered chan struct{}
}

func (f *fakeRegistry) Register(ctx context.Context, service, id string, r registry.Registration) (registry.Instance, bool, error) {
	if f.block != nil {
		f.entered <- struct{}{}
		select {
		case <-f.block:
		case <-ctx.Done():
			return registry.Instance{}, false, ctx.Err()
		}
	}
	return fakeInstance(service, id, r.Address), true, nil
}
func (f *fakeRegistry) Heartbeat(context.Context, string, string) (int64, error)  { return 10, nil }
func (f *fakeRegistry) Deregister(context.Context, string, string) (int64, error) { return 3, nil }
func (f *fakeRegistry) Heartbeats(_ context.Context, items []registry.HeartbeatItem) []registry.HeartbeatResult {
	out := make([]registry.HeartbeatResult, len(items))
	for i := range out {
		out[i].TTL = 10
	}
	return out
}
func (f *fakeRegistry) Patch(_ context.Context, service, id string, _ registry.Patch) (registry.Instance, error) {
	return fakeInstance(service, id, "10.0.0.5:8080"), nil
}
func (f *fakeRegistry) PatchObserved(ctx context.Context, service, id string, p registry.Patch, _ time.Duration) (registry.Instance, registry.Observed, error) {
	inst, err := f.Patch(ctx, service, id, p)
	return inst, registry.Observed{}, err
}
func (f *fakeRegistry) DeregisterObserved(context.Context, string, string, time.Duration) (int64, registry.Observed, error) {
	return 3, registry.Observed{}, nil
}
func (f *fakeRegistry) Get(_ context.Context, service, id string) (registry.Instance, error) {
	return fakeInstance(service, id, "10.0.0.5:8080"), nil
}
func (f *fakeRegistry) Revision(context.Context) (int64, error) { return 2, nil }

func fakeInstance(service, id, addr string) registry.Instance {
	return registry.Instance{Service: service, ID: id, Address: addr, Metadata: map[string]string{}, TTL: 10, LeaseID: "1", Revision: 2}
}

// fakeView is an always caught-up, empty view whose services never change.
type fakeView struct{}

func (fakeView) WaitRev(context.Context, int64) error { return nil }
func (fakeView) Rev() int64                           { return 2 }
func (fakeView) InstancesJSON(string, registry.Filter) ([]byte, int64, bool) {
	return []byte("[]"), 2, true
}
func (fakeView) Block(string, registry.Filter, int64) *registry.Waiter { return nil }
func (fakeView) Services() registry.ServiceList {
	return registry.ServiceList{Services: []registry.ServiceSummary{}, Revision: 2}
}
func (fakeView) Changed(string) (int64, <-chan struct{}) { return 2, nil }
func (fakeView) List(service string, _ registry.Filter) registry.InstanceList {
	return registry.InstanceList{Service: service, Instances: []registry.Instance{}, Revision: 2}
}
func (fakeView) Subscribe(context.Context, string, registry.Filter, registry.EventID) (*registry.Subscription, error) {
	return nil, errors.New("fakeView: no subscriptions")
}
func (fakeView) SubscribeFromList(context.Context, string, registry.Filter) (registry.InstanceList, *registry.Subscription, error) {
	return registry.InstanceList{}, nil, errors.New("fakeView: no subscriptions")
}

type fakeCluster struct{}

func (fakeCluster) Ready() error { return nil }
func (fakeCluster) Status(context.Context) (registry.ClusterStatus, error) {
	return registry.ClusterStatus{Node: "n1", Leader: "n1", Revision: 2}, nil
}

type fakeExpirations struct{}

func (fakeExpirations) Expirations(context.Context, registry.ExpirationQuery) ([]registry.Expiration, error) {
	return []registry.Expiration{}, nil
}

// newFakeAPI serves an api.Server over the fakes; cfg's unset interfaces
// are filled in.
func newFakeAPI(t *testing.T, cfg api.Config) (*api.Server, *httptest.Server) {
	t.Helper()
	if cfg.Registry == nil {
		cfg.Registry = &fakeRegistry{}
	}
	cfg.View, cfg.Cluster, cfg.Expirations = fakeView{}, fakeCluster{}, fakeExpirations{}
	s := api.New(cfg)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	t.Cleanup(s.Close)
	return s, ts
}

// call sends one request with an optional Authorization header value and
// returns status, headers and body.
func call(t *testing.T, method, url, authz, body string) (int, http.Header, []byte) {
	t.Helper()
	var headers []string
	if authz != "" {
		headers = []string{"Authorization", authz}
	}
	a := sendRaw(t, method, url, body, headers...)
	return a.status, a.header, a.body
}

const (
	readToken  = "r-0123456789abcdef"
	writeToken = "w-0123456789abcdef"
)

var testTokens = []api.Token{{Scope: api.ScopeRead, Secret: readToken}, {Scope: api.ScopeWrite, Secret: writeToken}}

func TestAuth(t *testing.T) {
	type route struct{ method, path, body string }
	var (
		healthz   = route{http.MethodGet, "/healthz", ""}
		readyz    = route{http.MethodGet, "/readyz", ""}
		get       = route{http.MethodGet, "/v1/services/user/instances/u1", ""}
		list      = route{http.MethodGet, "/v1/services/user/instances", ""}
		services  = route{http.MethodGet, "/v1/services", ""}
		cluster   = route{http.MethodGet, "/v1/cluster", ""}
		expired   = route{http.MethodGet, "/v1/expirations", ""}
		metrics   = route{http.MethodGet, "/metrics", ""}
		openapi   = route{http.MethodGet, "/v1/openapi.json", ""}
		scope     = route{http.MethodGet, "/v1/auth/token", ""}
		register  = route{http.MethodPut, "/v1/services/user/instances/u1", `{"address":"10.0.0.5:8080"}`}
		heartbeat = route{http.MethodPut, "/v1/services/user/instances/u1/heartbeat", ""}
		dereg     = route{http.MethodDelete, "/v1/services/user/instances/u1", ""}
		nowhere   = route{http.MethodPost, "/v1/nowhere", "{}"}
		reads     = []route{get, list, services, cluster, expired, metrics, openapi, scope}
		writes    = []route{register, heartbeat, dereg}
	)
	ok := map[route]int{register: 201, heartbeat: 200, dereg: 204, nowhere: 404}
	for _, r := range append(reads, healthz, readyz) {
		ok[r] = 200
	}

	const (
		none     = ""
		asRead   = "Bearer " + readToken
		asWrite  = "Bearer " + writeToken
		bogus    = "Bearer x-0123456789abcdef"
		basic    = "Basic dXNlcjpwYXNz"
		empty    = "Bearer "
		lower    = "bearer " + writeToken
		prefixOf = "Bearer " + writeToken + "x"
	)
	type want struct {
		status int    // 0: the route's success status
		code   string // error code when status is 401/403
	}
	success := want{}
	noToken := want{401, "unauthorized"}
	badToken := want{401, "unauthorized"}
	forbidden := want{403, "forbidden"}

	tests := []struct {
		name      string
		auth      *api.Auth // nil: no tokens configured
		authz     string
		routes    []route
		want      want
		challenge string // WWW-Authenticate must contain this (401/403)
	}{
		// Without a token file nothing is checked, not even a bogus token.
		{name: "no auth: anonymous writes", routes: writes, want: success},
		{name: "no auth: bogus token ignored", authz: bogus, routes: append(reads, writes...), want: success},

		// Reads open (the default with a token file).
		{name: "open reads: health without token", auth: api.NewAuth(testTokens, false), routes: []route{healthz, readyz}, want: success},
		{name: "open reads: health ignores a bogus token", auth: api.NewAuth(testTokens, false), authz: bogus, routes: []route{healthz, readyz}, want: success},
		{name: "open reads: reads without token", auth: api.NewAuth(testTokens, false), routes: reads, want: success},
		{name: "open reads: reads with read token", auth: api.NewAuth(testTokens, false), authz: asRead, routes: reads, want: success},
		{name: "open reads: reads with write token", auth: api.NewAuth(testTokens, false), authz: asWrite, routes: reads, want: success},
		{name: "open reads: reads with bogus token", auth: api.NewAuth(testTokens, false), authz: bogus, routes: reads, want: badToken, challenge: `error="invalid_token"`},
		{name: "open reads: writes without token", auth: api.NewAuth(testTokens, false), routes: writes, want: noToken, challenge: `Bearer realm="regd"`},
		{name: "open reads: writes with read token", auth: api.NewAuth(testTokens, false), authz: asRead, routes: writes, want: forbidden, challenge: `error="insufficient_scope"`},
		{name: "open reads: writes with write token", auth: api.NewAuth(testTokens, false), authz: asWrite, routes: writes, want: success},
		{name: "open reads: scheme is case-insensitive", auth: api.NewAuth(testTokens, false), authz: lower, routes: writes, want: success},
		{name: "open reads: writes with bogus token", auth: api.NewAuth(testTokens, false), authz: bogus, routes: writes, want: badToken, challenge: `error="invalid_token"`},
		{name: "open reads: a longer token is not a match", auth: api.NewAuth(testTokens, false), authz: prefixOf, routes: writes, want: badToken},
		{name: "open reads: basic auth is no token", auth: api.NewAuth(testTokens, false), authz: basic, routes: writes, want: badToken},
		{name: "open reads: empty bearer", auth: api.NewAuth(testTokens, false), authz: empty, routes: writes, want: badToken},
		{name: "open reads: unknown route without token", auth: api.NewAuth(testTokens, false), routes: []route{nowhere}, want: noToken},
		{name: "open reads: unknown route with write token", auth: api.NewAuth(testTokens, false), authz: asWrite, routes: []route{nowhere}, want: success},

		// Reads closed (--auth-reads token).
		{name: "token reads: health without token", auth: api.NewAuth(testTokens, true), routes: []route{healthz, readyz}, want: success},
		{name: "token reads: reads without token", auth: api.NewAuth(testTokens, true), routes: reads, want: noToken, challenge: `Bearer realm="regd"`},
		{name: "token reads: reads with read token", auth: api.NewAuth(testTokens, true), authz: asRead, routes: reads, want: success},
		{name: "token reads: reads with write token", auth: api.NewAuth(testTokens, true), authz: asWrite, routes: reads, want: success},
		{name: "token reads: reads with bogus token", auth: api.NewAuth(testTokens, true), authz: bogus, routes: reads, want: badToken},
		{name: "token reads: writes with read token", auth: api.NewAuth(testTokens, true), authz: asRead, routes: writes, want: forbidden},
		{name: "token reads: writes with write token", auth: api.NewAuth(testTokens, true), authz: asWrite, routes: writes, want: success},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ts := newFakeAPI(t, api.Config{Auth: tt.auth})
			for _, r := range tt.routes {
				status, hdr, body := call(t, r.method, ts.URL+r.path, tt.authz, r.body)
				wantStatus := tt.want.status
				if wantStatus == 0 {
					wantStatus = ok[r]
				}
				if status != wantStatus {
					t.Errorf("%s %s: status %d, want %d; body %.200s", r.method, r.path, status, wantStatus, body)
					continue
				}
				if tt.want.code == "" {
					if hdr.Get("WWW-Authenticate") != "" {
						t.Errorf("%s %s: WWW-Authenticate %q on a %d", r.method, r.path, hdr.Get("WWW-Authenticate"), status)
					}
					continue
				}
				if code, _ := decodeErrorBody(t, body); code != tt.want.code {
					t.Errorf("%s %s: code %q, want %q", r.method, r.path, code, tt.want.code)
				}
				if !isJSON(hdr) {
					t.Errorf("%s %s: Content-Type %q", r.method, r.path, hdr.Get("Content-Type"))
				}
				challenge := hdr.Get("WWW-Authenticate")
				if !strings.HasPrefix(challenge, `Bearer realm="regd"`) || !strings.Contains(challenge, tt.challenge) {
					t.Errorf("%s %s: WWW-Authenticate %q, want it to start with %q and contain %q", r.method, r.path, challenge, `Bearer realm="regd"`, tt.challenge)
				}
				for _, secret := range []string{readToken, writeToken, "x-0123456789abcdef"} {
					if strings.Contains(string(body), secret) || strings.Contains(challenge, secret) {
						t.Errorf("%s %s: the answer repeats a token: %s", r.method, r.path, body)
					}
				}
			}
		})
	}
}

// TestAuthSetTokens: replacing the tokens (what SIGHUP does) takes effect
// for the next request; the old tokens stop working.
func TestAuthSetTokens(t *testing.T) {
	a := api.NewAuth(testTokens, false)
	_, ts := newFakeAPI(t, api.Config{Auth: a})
	url := ts.URL + "/v1/services/user/instances/u1/heartbeat"
	if status, _, body := call(t, http.MethodPut, url, "Bearer "+writeToken, ""); status != 200 {
		t.Fatalf("before: %d %s", status, body)
	}
	const rotated = "rotated-0123456789"
	a.SetTokens([]api.Token{{Scope: api.ScopeWrite, Secret: rotated}})
	if status, _, _ := call(t, http.MethodPut, url, "Bearer "+writeToken, ""); status != 401 {
		t.Fatalf("old token after rotation: %d, want 401", status)
	}
	if status, _, body := call(t, http.MethodPut, url, "Bearer "+rotated, ""); status != 200 {
		t.Fatalf("new token: %d %s", status, body)
	}
}

// TestParseTokens: the token file format. Errors name the line and never
// contain the token.
func TestParseTokens(t *testing.T) {
	tests := []struct {
		name   string
		file   string
		want   []api.Token
		errHas string // "" means no error
	}{
		{name: "good", file: "# regd tokens\n\nread  " + readToken + "\n  write\t" + writeToken + "  \n", want: testTokens},
		{name: "write only", file: "write " + writeToken, want: testTokens[1:]},
		{name: "empty", file: "", errHas: "no tokens"},
		{name: "comments only", file: "# nothing\n#\n", errHas: "no tokens"},
		{name: "short token", file: "write 0123456789abcde\n", errHas: "line 1: token is shorter than 16"},
		{name: "bad scope", file: "\nowner " + writeToken + "\n", errHas: "line 2: the scope"},
		{name: "admin", file: "admin " + adminToken + "\n", want: []api.Token{{Scope: api.ScopeAdmin, Secret: adminToken}}},
		{name: "swapped", file: writeToken + " write\n", errHas: "line 1: the scope"},
		{name: "token only", file: writeToken + "\n", errHas: "line 1: want `<scope> <token>`, got 1 fields"},
		{name: "three fields", file: "write " + writeToken + " extra\n", errHas: "line 1: want"},
		{name: "non-ASCII token", file: "write 0123456789abcdéf\n", errHas: "line 1: token must be printable ASCII"},
		{name: "duplicate", file: "read " + writeToken + "\nwrite " + writeToken + "\n", errHas: "line 2: the same token is already on line 1"},
		{name: "long line", file: "write " + strings.Repeat("x", 70<<10) + "\n", errHas: "line 1: line is too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := api.ParseTokens(strings.NewReader(tt.file))
			if tt.errHas == "" {
				if err != nil {
					t.Fatalf("ParseTokens: %v", err)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("got %d tokens, want %d", len(got), len(tt.want))
				}
				for i := range got {
					if got[i] != tt.want[i] {
						t.Errorf("token %d: scope %v, want %v (secrets equal: %v)", i, got[i].Scope, tt.want[i].Scope, got[i].Secret == tt.want[i].Secret)
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("err %v, want one containing %q", err, tt.errHas)
			}
			for _, secret := range []string{writeToken, "0123456789abcde", "xxxxxxxx"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q contains the token", err)
				}
			}
		})
	}
}
