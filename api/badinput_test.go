package api_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// send sends rawURL as written (percent-encodings and dot segments are
// not normalised) and returns redirects as they are, so a test sees a 3xx
// instead of the page it points to.
func send(t *testing.T, method, rawURL, body string) (int, http.Header, []byte) {
	t.Helper()
	var headers []string
	if body != "" {
		headers = []string{"Content-Type", "application/json"}
	}
	a := sendRaw(t, method, rawURL, body, headers...)
	return a.status, a.header, a.body
}

type badCase struct {
	name   string
	method string
	path   string // raw, as sent
	body   string
	status int
	code   string
	allow  []string // for 405: methods the Allow header must list
}

const validBody = `{"address":"10.0.0.5:8080","ttl":10}`

// badNames are invalid service names / instance ids as they appear in a
// raw URL path. Each one reaches the handler as one path segment.
var badNames = []struct{ name, raw string }{
	{"dot-dot", ".."},
	{"dot", "."},
	{"encoded dot-dot", "%2e%2e"},
	{"encoded dot", "%2E"},
	{"encoded slash", "a%2Fb"},
	{"encoded space", "a%20b"},
	{"encoded NUL", "a%00"},
	{"encoded colon", "a%3Ab"},
	{"unicode", "ü"},
	{"129 chars", strings.Repeat("n", 129)},
}

func badInputCases() []badCase {
	var cases []badCase
	for _, n := range badNames {
		svcBase := "/v1/services/" + n.raw + "/instances/"
		idBase := "/v1/services/user/instances/" + n.raw
		ops := []struct {
			op, method, svcPath, idPath, body string
		}{
			{"register", http.MethodPut, svcBase + "u1", idBase, validBody},
			{"get", http.MethodGet, svcBase + "u1", idBase, ""},
			{"deregister", http.MethodDelete, svcBase + "u1", idBase, ""},
			{"heartbeat", http.MethodPut, svcBase + "u1/heartbeat", idBase + "/heartbeat", ""},
		}
		for _, op := range ops {
			cases = append(cases,
				badCase{name: "service " + n.name + " " + op.op, method: op.method, path: op.svcPath, body: op.body, status: 400, code: registry.CodeInvalidService},
				badCase{name: "id " + n.name + " " + op.op, method: op.method, path: op.idPath, body: op.body, status: 400, code: registry.CodeInvalidID},
			)
		}
		cases = append(cases, badCase{name: "service " + n.name + " list", method: http.MethodGet, path: "/v1/services/" + n.raw + "/instances", status: 400, code: registry.CodeInvalidService})
	}

	reg := func(name, body string, status int, code string) badCase {
		return badCase{name: name, method: http.MethodPut, path: "/v1/services/user/instances/u1", body: body, status: status, code: code}
	}
	withMeta := func(n, valueLen int) string {
		var b strings.Builder
		b.WriteString(`{"address":"10.0.0.5:8080","metadata":{`)
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `"k%03d":%q`, i, strings.Repeat("v", valueLen))
		}
		b.WriteString("}}")
		return b.String()
	}
	cases = append(cases,
		// Not JSON, or not the JSON of a registration.
		reg("empty body", "", 400, "invalid_json"),
		reg("whitespace body", " \n", 400, "invalid_json"),
		reg("truncated object", "{", 400, "invalid_json"),
		reg("array", "[]", 400, "invalid_json"),
		reg("string", `"10.0.0.5:8080"`, 400, "invalid_json"),
		reg("null", "null", 400, registry.CodeInvalidAddress),
		reg("empty object", "{}", 400, registry.CodeInvalidAddress),
		reg("address is a number", `{"address":1}`, 400, "invalid_json"),
		reg("ttl is a string", `{"address":"x:80","ttl":"10"}`, 400, "invalid_json"),
		reg("ttl is fractional", `{"address":"x:80","ttl":10.5}`, 400, "invalid_json"),
		reg("ttl in exponent form", `{"address":"x:80","ttl":1e1}`, 400, "invalid_json"),
		reg("ttl overflows int64", `{"address":"x:80","ttl":99999999999999999999}`, 400, "invalid_json"),
		reg("unknown field", `{"address":"x:80","tll":10}`, 400, "invalid_json"),
		reg("second object after the first", `{"address":"x:80"} {}`, 400, "invalid_json"),
		reg("garbage after the object", `{"address":"x:80"}x`, 400, "invalid_json"),
		reg("metadata is an array", `{"address":"x:80","metadata":[]}`, 400, "invalid_json"),
		reg("metadata is a string", `{"address":"x:80","metadata":"zone=a"}`, 400, "invalid_json"),
		reg("metadata value is a number", `{"address":"x:80","metadata":{"a":1}}`, 400, "invalid_json"),
		reg("metadata value is an object", `{"address":"x:80","metadata":{"a":{}}}`, 400, "invalid_json"),
		reg("metadata value is null", `{"address":"x:80","metadata":{"a":null}}`, 400, registry.CodeInvalidMetadata),
		reg("one of two metadata values is null", `{"address":"x:80","metadata":{"a":"","b":null}}`, 400, registry.CodeInvalidMetadata),
		// Well-formed JSON, invalid values.
		reg("address without port", `{"address":"10.0.0.5"}`, 400, registry.CodeInvalidAddress),
		reg("address with port 0", `{"address":"x:0"}`, 400, registry.CodeInvalidAddress),
		reg("address is a URL", `{"address":"http://x:80"}`, 400, registry.CodeInvalidAddress),
		reg("ttl 0", `{"address":"x:80","ttl":0}`, 400, registry.CodeInvalidTTL),
		reg("ttl 1", `{"address":"x:80","ttl":1}`, 400, registry.CodeInvalidTTL),
		reg("ttl 3601", `{"address":"x:80","ttl":3601}`, 400, registry.CodeInvalidTTL),
		reg("ttl -1", `{"address":"x:80","ttl":-1}`, 400, registry.CodeInvalidTTL),
		reg("65 metadata pairs", withMeta(65, 1), 400, registry.CodeInvalidMetadata),
		reg("metadata over 4 KiB", withMeta(2, 2048), 400, registry.CodeInvalidMetadata),
		reg("empty metadata key", `{"address":"x:80","metadata":{"":"v"}}`, 400, registry.CodeInvalidMetadata),
		reg("body over 64 KiB", withMeta(1, 70<<10), 413, "body_too_large"),
	)

	cases = append(cases,
		// Routing.
		badCase{name: "unknown route", method: http.MethodGet, path: "/v1/nope", status: 404, code: "route_not_found"},
		badCase{name: "unknown version", method: http.MethodGet, path: "/v2/services", status: 404, code: "route_not_found"},
		badCase{name: "service without collection", method: http.MethodGet, path: "/v1/services/user", status: 404, code: "route_not_found"},
		badCase{name: "empty service", method: http.MethodPut, path: "/v1/services//instances/x", body: validBody, status: 400, code: registry.CodeInvalidService},
		badCase{name: "empty id", method: http.MethodPut, path: "/v1/services/x/instances/", body: validBody, status: 404, code: "route_not_found"},
		badCase{name: "too deep", method: http.MethodPut, path: "/v1/services/user/instances/a/b", body: validBody, status: 404, code: "route_not_found"},
		badCase{name: "POST instance", method: http.MethodPost, path: "/v1/services/x/instances/y", body: validBody, status: 405, code: "method_not_allowed", allow: []string{"PUT", "GET", "DELETE", "PATCH"}},
		badCase{name: "PATCH instance with a registration body", method: http.MethodPatch, path: "/v1/services/x/instances/y", body: validBody, status: 400, code: "invalid_json"},
		badCase{name: "POST heartbeats", method: http.MethodPost, path: "/v1/heartbeats", body: `{"instances":[]}`, status: 405, code: "method_not_allowed", allow: []string{"PUT"}},
		badCase{name: "DELETE services", method: http.MethodDelete, path: "/v1/services", status: 405, code: "method_not_allowed", allow: []string{"GET"}},
		badCase{name: "GET heartbeat", method: http.MethodGet, path: "/v1/services/x/instances/y/heartbeat", status: 405, code: "method_not_allowed", allow: []string{"PUT"}},
		badCase{name: "POST heartbeat", method: http.MethodPost, path: "/v1/services/x/instances/y/heartbeat", status: 405, code: "method_not_allowed", allow: []string{"PUT"}},
		// Query parameters.
		badCase{name: "expirations limit 0", method: http.MethodGet, path: "/v1/expirations?limit=0", status: 400, code: "invalid_parameter"},
		badCase{name: "expirations limit abc", method: http.MethodGet, path: "/v1/expirations?limit=abc", status: 400, code: "invalid_parameter"},
		badCase{name: "expirations limit -1", method: http.MethodGet, path: "/v1/expirations?limit=-1", status: 400, code: "invalid_parameter"},
		badCase{name: "expirations limit in exponent form", method: http.MethodGet, path: "/v1/expirations?limit=1e5", status: 400, code: "invalid_parameter"},
		badCase{name: "expirations limit hugely negative", method: http.MethodGet, path: "/v1/expirations?limit=-99999999999999999999", status: 400, code: "invalid_parameter"},
		badCase{name: "expirations service dot-dot", method: http.MethodGet, path: "/v1/expirations?service=..", status: 400, code: registry.CodeInvalidService},
		badCase{name: "expirations service with slash", method: http.MethodGet, path: "/v1/expirations?service=a%2Fb", status: 400, code: registry.CodeInvalidService},
		// Valid names, nothing registered.
		badCase{name: "heartbeat unknown instance", method: http.MethodPut, path: "/v1/services/user/instances/ghost/heartbeat", status: 404, code: registry.CodeNotFound},
		badCase{name: "get unknown instance", method: http.MethodGet, path: "/v1/services/user/instances/ghost", status: 404, code: registry.CodeNotFound},
		badCase{name: "deregister unknown instance", method: http.MethodDelete, path: "/v1/services/user/instances/ghost", status: 404, code: registry.CodeNotFound},
	)
	return cases
}

// TestBadInput sends every malformed request to a fresh single-node cluster,
// then checks that none of them wrote anything.
func TestBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	cli := c.EtcdClient(t, 0)
	leasesBefore := leaseIDs(t, cli)

	for _, tc := range badInputCases() {
		t.Run(tc.name, func(t *testing.T) {
			status, hdr, body := send(t, tc.method, m.URL(tc.path), tc.body)
			if status >= 300 && status < 400 {
				t.Fatalf("redirect %d to %q", status, hdr.Get("Location"))
			}
			if status >= 500 {
				t.Fatalf("server error %d for client input: %s", status, body)
			}
			if status != tc.status {
				t.Fatalf("status %d, want %d; body %s", status, tc.status, body)
			}
			if !isJSON(hdr) {
				t.Fatalf("Content-Type %q, want application/json", hdr.Get("Content-Type"))
			}
			if code, _ := decodeErrorBody(t, body); code != tc.code {
				t.Fatalf("code %q, want %q; body %s", code, tc.code, body)
			}
			if len(tc.allow) > 0 {
				allow := hdr.Get("Allow")
				for _, want := range tc.allow {
					if !slices.Contains(strings.Split(strings.ReplaceAll(allow, " ", ""), ","), want) {
						t.Fatalf("Allow %q does not list %s", allow, want)
					}
				}
			}
		})
	}

	t.Run("nothing was written", func(t *testing.T) {
		status, _, body := send(t, http.MethodGet, m.URL("/v1/services"), "")
		var services registry.ServiceList
		regdtest.MustJSON(t, body, &services)
		if status != http.StatusOK || len(services.Services) != 0 {
			t.Fatalf("services after bad input: %d %s", status, body)
		}
		nothingWritten(t, cli, leasesBefore)
	})
}

// nothingWritten fails the test if the registry holds any instance key,
// meta record or lease marker, or if the leases differ from before.
func nothingWritten(t *testing.T, cli *clientv3.Client, leasesBefore []int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, prefix := range []string{"/service/", registry.InternalPrefix + "meta/", registry.InternalPrefix + "lease/"} {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			t.Errorf("bad input wrote key %q", kv.Key)
		}
	}
	if after := leaseIDs(t, cli); !slices.Equal(after, leasesBefore) {
		t.Errorf("bad input granted leases: before %v, after %v", leasesBefore, after)
	}
}

func leaseIDs(t *testing.T, cli *clientv3.Client) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int64, 0, len(resp.Leases))
	for _, l := range resp.Leases {
		ids = append(ids, int64(l.ID))
	}
	slices.Sort(ids)
	return ids
}
