package api_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/regd/regd/api"
	"github.com/regd/regd/registry"
)

// validatingRegistry applies the real validation and pretends to store: the
// fuzzer exercises HTTP decoding plus validation without etcd, fast enough
// to run thousands of inputs a second.
type validatingRegistry struct{ api.Registry }

func (validatingRegistry) Register(_ context.Context, service, id string, r registry.Registration) (registry.Instance, bool, error) {
	for _, err := range []error{registry.ValidateService(service), registry.ValidateID(id), registry.ValidateAddress(r.Address), registry.ValidateMetadata(r.Metadata)} {
		if err != nil {
			return registry.Instance{}, false, err
		}
	}
	ttl, err := registry.ResolveTTL(r.TTL)
	if err != nil {
		return registry.Instance{}, false, err
	}
	return registry.Instance{Service: service, ID: id, Address: r.Address, TTL: ttl, Metadata: map[string]string{}, LeaseID: "1", Revision: 1}, true, nil
}

// FuzzRegister sends arbitrary bodies and names to the register route: the
// answer is always 201 or a 4xx with the error JSON, never a 5xx or a panic.
func FuzzRegister(f *testing.F) {
	for _, seed := range []struct{ service, id, body string }{
		{"user", "u1", `{"address":"10.0.0.5:8080","ttl":10,"metadata":{"zone":"a"}}`},
		{"user", "u1", `{"address":"x:80","tll":10}`},
		{"user", "u1", `{"address":"x:80"} {}`},
		{"user", "u1", `{"address":1}`},
		{"user", "u1", `{"address":"x:80","ttl":1e400}`},
		{"user", "u1", `{"address":"x:80","metadata":{"a":null}}`},
		{"..", "u1", `{"address":"x:80"}`},
		{"user", "%2e%2e", `{}`},
		{"user", "u1", ``},
		{"user", "u1", `[`},
	} {
		f.Add(seed.service, seed.id, seed.body)
	}
	srv := httptest.NewServer(api.New(api.Config{Registry: validatingRegistry{}, Cluster: readyCluster{}}).Handler())
	f.Cleanup(srv.Close)
	f.Fuzz(func(t *testing.T, service, id, body string) {
		u := srv.URL + "/v1/services/" + url.PathEscape(service) + "/instances/" + url.PathEscape(id)
		req, err := http.NewRequest(http.MethodPut, u, strings.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("PUT: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusCreated:
		case resp.StatusCode >= 400 && resp.StatusCode < 500:
			if !strings.Contains(string(b), `"error":{"code":`) {
				t.Fatalf("%d without the error JSON: %s", resp.StatusCode, b)
			}
		default:
			t.Fatalf("status %d for service %q id %q body %q: %s", resp.StatusCode, service, id, body, b)
		}
	})
}
