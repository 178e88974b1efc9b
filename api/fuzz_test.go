package api_test

import (
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

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

// Patch applies the real checks of a merge patch's values and pretends to
// store (Store.Patch checks the same before it reads the instance).
func (v validatingRegistry) Patch(_ context.Context, service, id string, p registry.Patch) (registry.Instance, error) {
	for _, err := range []error{registry.ValidateService(service), registry.ValidateID(id)} {
		if err != nil {
			return registry.Instance{}, err
		}
	}
	status, err := registry.ResolveStatus(p.Status)
	if err != nil {
		return registry.Instance{}, err
	}
	weight, err := registry.ResolveWeight(p.Weight)
	if err != nil {
		return registry.Instance{}, err
	}
	md := map[string]string{}
	for k, val := range p.Metadata {
		if val != nil {
			md[k] = *val
		} else {
			md[k] = ""
		}
	}
	if err := registry.ValidateMetadata(md); err != nil {
		return registry.Instance{}, err
	}
	return registry.Instance{Service: service, ID: id, Address: "10.0.0.1:80", Status: status, Weight: int(weight), Metadata: md, LeaseID: "1", Revision: 2}, nil
}

func (v validatingRegistry) PatchObserved(ctx context.Context, service, id string, p registry.Patch, _ time.Duration) (registry.Instance, registry.Observed, error) {
	inst, err := v.Patch(ctx, service, id, p)
	return inst, registry.Observed{Delivered: 1, Subscribers: 1, Acked: 1, Members: 1}, err
}

// FuzzPatch sends arbitrary merge patches, Content-Types and
// ?wait_observed values to PATCH .../instances/{id}: the answer is 200 or
// a 4xx with the error JSON, never a 5xx or a panic; a Content-Type of
// another patch format is 415 and a malformed wait_observed 400, whatever
// the body; a 200 answers an instance whose status and weight are in range.
func FuzzPatch(f *testing.F) {
	for _, seed := range []struct{ ctype, wait, body string }{
		{"application/merge-patch+json", "", `{"status":"draining"}`},
		{"application/json", "10s", `{"weight":0,"metadata":{"a":"b","c":null}}`},
		{"", "1500ms", `{"status":null,"weight":null,"metadata":null}`},
		{"application/json-patch+json", "", `[{"op":"replace","path":"/status","value":"up"}]`},
		{"text/xml", "", `{}`},
		{"application/merge-patch+json", "soon", `{}`},
		{"application/merge-patch+json", "-1s", `{}`},
		{"application/merge-patch+json", "99999999999999999999", `{}`},
		{"application/merge-patch+json", "", `{"weight":1e400}`},
		{"application/merge-patch+json", "", `{"status":"up","status":"bogus"}`},
		{"application/merge-patch+json", "", `{"metadata":{"":"x"}}`},
		{"application/merge-patch+json", "", `null`},
		{"application/merge-patch+json; charset=utf-8", "", `{"address":"x:1"}`},
		{";;", "", `{}`},
	} {
		f.Add(seed.ctype, seed.wait, seed.body)
	}
	srv := httptest.NewServer(api.New(api.Config{Registry: validatingRegistry{}, Cluster: readyCluster{}}).Handler())
	f.Cleanup(srv.Close)
	f.Fuzz(func(t *testing.T, ctype, wait, body string) {
		u := srv.URL + "/v1/services/user/instances/u1"
		if wait != "" {
			u += "?wait_observed=" + url.QueryEscape(wait)
		}
		req, err := http.NewRequest(http.MethodPatch, u, strings.NewReader(body))
		if err != nil {
			return
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if req.Header.Get("Content-Type") != ctype {
			return // not a header a client could send
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			if strings.Contains(err.Error(), "invalid header field") {
				return // net/http refuses to send it: no client can
			}
			t.Fatalf("PATCH: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && !strings.Contains(string(b), `"error":{"code":`) {
			t.Fatalf("%d without the error JSON: %s", resp.StatusCode, b)
		}
		// The server sees the header trimmed of surrounding white space;
		// one that does not parse names no format regd takes.
		ct := strings.Trim(ctype, " \t")
		mt, _, perr := mime.ParseMediaType(ct)
		otherFormat := ct != "" && (perr != nil || !slices.Contains([]string{"application/merge-patch+json", "application/json", "application/x-www-form-urlencoded", "text/plain"}, mt))
		_, waitGood := waitOK(wait)
		switch {
		case otherFormat:
			if resp.StatusCode != http.StatusUnsupportedMediaType {
				t.Fatalf("Content-Type %q: %d %s, want 415", ctype, resp.StatusCode, b)
			}
		case wait != "" && !waitGood:
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"invalid_parameter"`) {
				t.Fatalf("wait_observed %q: %d %s, want 400 invalid_parameter", wait, resp.StatusCode, b)
			}
		case resp.StatusCode == http.StatusOK:
			var inst registry.Instance
			if err := json.Unmarshal(b, &inst); err != nil || inst.Weight < 0 || inst.Weight > registry.MaxWeight ||
				!slices.Contains([]string{"up", "draining", "out_of_service"}, inst.Status) {
				t.Fatalf("200 with %s for %q", b, body)
			}
			if wait != "" && resp.Header.Get(api.HeaderObserved) == "" {
				if d, _ := waitOK(wait); d > 0 {
					t.Fatalf("wait_observed %q answered without %s", wait, api.HeaderObserved)
				}
			}
		case resp.StatusCode >= 400 && resp.StatusCode < 500:
		default:
			t.Fatalf("status %d for Content-Type %q wait %q body %q: %s", resp.StatusCode, ctype, wait, body, b)
		}
	})
}

// Heartbeats checks names and renews nothing.
func (validatingRegistry) Heartbeats(_ context.Context, items []registry.HeartbeatItem) []registry.HeartbeatResult {
	out := make([]registry.HeartbeatResult, len(items))
	for i, it := range items {
		if err := registry.ValidateService(it.Service); err != nil {
			out[i].Err = err
		} else if err := registry.ValidateID(it.ID); err != nil {
			out[i].Err = err
		} else {
			out[i].TTL = 10
		}
	}
	return out
}

// FuzzHeartbeats sends arbitrary bodies to PUT /v1/heartbeats: 200 with one
// result per item, in order, each a ttl or an error; or a 4xx with the
// error JSON; never a 5xx.
func FuzzHeartbeats(f *testing.F) {
	for _, seed := range []string{
		`{"instances":[{"service":"user","id":"u1"},{"service":"bad name","id":"x"}]}`,
		`{"instances":[]}`,
		`{"instances":null}`,
		`{"instances":[{"service":"user"}]}`,
		`{"instances":[{"service":"user","id":"u1","ttl":3}]}`,
		`{"instances":[1]}`,
		`[]`,
		``,
	} {
		f.Add(seed)
	}
	srv := httptest.NewServer(api.New(api.Config{Registry: validatingRegistry{}, Cluster: readyCluster{}}).Handler())
	f.Cleanup(srv.Close)
	f.Fuzz(func(t *testing.T, body string) {
		req, err := http.NewRequest(http.MethodPut, srv.URL+"/v1/heartbeats", strings.NewReader(body))
		if err != nil {
			return
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("PUT: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK:
			var in struct{ Instances []registry.HeartbeatItem }
			var out struct {
				Results []struct {
					Service, ID string
					TTL         *int64
					Error       *struct{ Code, Message string }
				}
			}
			if json.Unmarshal([]byte(body), &in) != nil || json.Unmarshal(b, &out) != nil || len(out.Results) != len(in.Instances) || len(in.Instances) == 0 {
				t.Fatalf("200 %s for %q", b, body)
			}
			for i, r := range out.Results {
				if r.Service != in.Instances[i].Service || r.ID != in.Instances[i].ID || (r.TTL == nil) == (r.Error == nil) {
					t.Fatalf("result %d %+v for item %+v", i, r, in.Instances[i])
				}
			}
		case resp.StatusCode >= 400 && resp.StatusCode < 500:
			if !strings.Contains(string(b), `"error":{"code":`) {
				t.Fatalf("%d without the error JSON: %s", resp.StatusCode, b)
			}
		default:
			t.Fatalf("status %d for %q: %s", resp.StatusCode, body, b)
		}
	})
}
