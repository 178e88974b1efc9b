package cluster_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// TestAdminBadInput: membership requests a client got wrong are 400 (or
// 404, 409) with the contract's error JSON, never a 500, and change
// nothing; GET /v1/export lists what was registered.
func TestAdminBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	self := strconv.FormatUint(m.Server().Node().ID(), 16)
	if code, _, body := regdtest.Do(t, http.MethodPut, m.URL("/v1/services/web/instances/w1"), `{"address":"10.0.0.1:80","metadata":{"a":"b"}}`); code != http.StatusCreated {
		t.Fatalf("register: %d %s", code, body)
	}
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"name with a space", http.MethodPost, "/v1/cluster/members", `{"name":"m 4","peer_urls":["http://127.0.0.1:1"]}`, 400, registry.CodeInvalidMember},
		{"name with =", http.MethodPost, "/v1/cluster/members", `{"name":"m=4","peer_urls":["http://127.0.0.1:1"]}`, 400, registry.CodeInvalidMember},
		{"empty name", http.MethodPost, "/v1/cluster/members", `{"name":"","peer_urls":["http://127.0.0.1:1"]}`, 400, registry.CodeInvalidMember},
		{"no peer URL", http.MethodPost, "/v1/cluster/members", `{"name":"m4","peer_urls":[]}`, 400, registry.CodeInvalidMember},
		{"peer URL without a port", http.MethodPost, "/v1/cluster/members", `{"name":"m4","peer_urls":["http://127.0.0.1"]}`, 400, registry.CodeInvalidMember},
		{"peer URL not http", http.MethodPost, "/v1/cluster/members", `{"name":"m4","peer_urls":["ftp://127.0.0.1:21"]}`, 400, registry.CodeInvalidMember},
		{"peer URL with a path", http.MethodPost, "/v1/cluster/members", `{"name":"m4","peer_urls":["http://127.0.0.1:1/x"]}`, 400, registry.CodeInvalidMember},
		{"name in use", http.MethodPost, "/v1/cluster/members", `{"name":"m0","peer_urls":["http://127.0.0.1:1"]}`, 409, registry.CodeMemberConflict},
		{"not JSON", http.MethodPost, "/v1/cluster/members", `name=m4`, 400, registry.CodeInvalidJSON},
		{"promote unknown", http.MethodPost, "/v1/cluster/members/abcdef/promote", ``, 404, registry.CodeNotFound},
		{"promote a voter", http.MethodPost, "/v1/cluster/members/" + self + "/promote", ``, 409, registry.CodeMemberConflict},
		{"remove unknown", http.MethodDelete, "/v1/cluster/members/abcdef", ``, 404, registry.CodeNotFound},
		{"remove the member answering", http.MethodDelete, "/v1/cluster/members/" + self, ``, 409, registry.CodeMemberConflict},
		{"id not hex", http.MethodDelete, "/v1/cluster/members/xyz", ``, 400, registry.CodeInvalidParameter},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			code, _, b := regdtest.Do(t, tc.method, m.URL(tc.path), body)
			if code != tc.status || !strings.Contains(string(b), `"code":"`+tc.code+`"`) {
				t.Fatalf("%d %s, want %d %s", code, b, tc.status, tc.code)
			}
		})
	}
	code, _, b := regdtest.Do(t, http.MethodGet, m.URL("/v1/cluster"), nil)
	if code != http.StatusOK || strings.Count(string(b), `"id"`) != 1 {
		t.Errorf("the cluster after the refused requests: %d %s, want one member", code, b)
	}
	code, h, b := regdtest.Do(t, http.MethodGet, m.URL("/v1/export"), nil)
	if code != http.StatusOK || !strings.Contains(string(b), `"id":"w1"`) || !strings.Contains(string(b), `"metadata":{"a":"b"}`) || h.Get("X-Regd-Revision") == "" {
		t.Errorf("export: %d %s", code, b)
	}
}
