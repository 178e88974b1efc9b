package api_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/regd/regd/api"
	"github.com/regd/regd/registry"
)

const adminToken = "a-0123456789abcdef"

// fakeAdmin answers the admin routes: member "1f" exists, "2e" refuses
// removal for the quorum, everything else is unknown.
type fakeAdmin struct{}

func (fakeAdmin) AddMember(_ context.Context, req registry.MemberAdd) (registry.MemberAdded, error) {
	return registry.MemberAdded{Member: registry.MemberStatus{Name: req.Name, ID: "4d", PeerURLs: req.PeerURLs, ClientURLs: []string{}, IsLearner: req.Learner}, InitialCluster: "a=http://x:1," + req.Name + "=" + req.PeerURLs[0], Flags: []string{"--initial-cluster-state=existing"}}, nil
}
func (fakeAdmin) PromoteMember(_ context.Context, id uint64) (registry.MemberStatus, error) {
	if id != 0x1f {
		return registry.MemberStatus{}, registry.Errorf(registry.KindNotFound, registry.CodeNotFound, "no member has ID %x", id)
	}
	return registry.MemberStatus{Name: "m4", ID: "1f", PeerURLs: []string{}, ClientURLs: []string{}}, nil
}
func (fakeAdmin) RemoveMember(_ context.Context, id uint64) error {
	switch id {
	case 0x1f:
		return nil
	case 0x2e:
		return registry.Errorf(registry.KindConflict, registry.CodeQuorumAtRisk, "would lose the quorum")
	}
	return registry.Errorf(registry.KindNotFound, registry.CodeNotFound, "no member has ID %x", id)
}
func (fakeAdmin) Snapshot(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("bbolt...")), nil
}
func (fakeAdmin) Export(context.Context) (registry.Export, error) {
	return registry.Export{Instances: []registry.Instance{}, Revision: 7}, nil
}

// TestAdminRoutes: the admin scope, and each admin route's answers.
func TestAdminRoutes(t *testing.T) {
	a := api.NewAuth(append(testTokens, api.Token{Scope: api.ScopeAdmin, Secret: adminToken}), false)
	_, ts := newFakeAPI(t, api.Config{Auth: a, Membership: fakeAdmin{}, Backup: fakeAdmin{}, Exporter: fakeAdmin{}})
	admin := "Bearer " + adminToken
	tests := []struct {
		name, method, path, authz, body string
		status                          int
		has                             string
	}{
		{"read token may not add", http.MethodPost, "/v1/cluster/members", "Bearer " + readToken, `{"name":"m4","peer_urls":["http://x:2"]}`, 403, `"forbidden"`},
		{"write token may not add", http.MethodPost, "/v1/cluster/members", "Bearer " + writeToken, `{"name":"m4","peer_urls":["http://x:2"]}`, 403, `needs the admin scope`},
		{"no token may not snapshot", http.MethodGet, "/v1/snapshot", "", "", 401, `"unauthorized"`},
		{"write token may not snapshot", http.MethodGet, "/v1/snapshot", "Bearer " + writeToken, "", 403, `"forbidden"`},
		{"write token may not remove", http.MethodDelete, "/v1/cluster/members/1f", "Bearer " + writeToken, "", 403, `"forbidden"`},
		{"add", http.MethodPost, "/v1/cluster/members", admin, `{"name":"m4","peer_urls":["http://x:2"],"learner":true}`, 201, `"is_learner":true`},
		{"add, unknown field", http.MethodPost, "/v1/cluster/members", admin, `{"name":"m4","peer_url":"http://x:2"}`, 400, `"invalid_json"`},
		{"promote", http.MethodPost, "/v1/cluster/members/1f/promote", admin, "", 200, `"name":"m4"`},
		{"promote unknown", http.MethodPost, "/v1/cluster/members/99/promote", admin, "", 404, `"not_found"`},
		{"promote, id not hex", http.MethodPost, "/v1/cluster/members/m4/promote", admin, "", 400, `"invalid_parameter"`},
		{"remove", http.MethodDelete, "/v1/cluster/members/1f", admin, "", 204, ""},
		{"remove, quorum", http.MethodDelete, "/v1/cluster/members/2e", admin, "", 409, `"quorum_at_risk"`},
		{"remove unknown", http.MethodDelete, "/v1/cluster/members/77", admin, "", 404, `"not_found"`},
		{"remove, id too long", http.MethodDelete, "/v1/cluster/members/11111111111111111", admin, "", 400, `"invalid_parameter"`},
		{"remove, id zero", http.MethodDelete, "/v1/cluster/members/0", admin, "", 400, `"invalid_parameter"`},
		{"snapshot", http.MethodGet, "/v1/snapshot", admin, "", 200, "bbolt..."},
		{"admin token writes", http.MethodPut, "/v1/services/user/instances/u1", admin, `{"address":"10.0.0.5:80"}`, 201, `"u1"`},
		{"export is a read", http.MethodGet, "/v1/export", "", "", 200, `"revision":7`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := call(t, tc.method, ts.URL+tc.path, tc.authz, tc.body)
			if status != tc.status || !strings.Contains(string(body), tc.has) {
				t.Fatalf("%s %s: %d %s, want %d with %q", tc.method, tc.path, status, body, tc.status, tc.has)
			}
			if tc.path == "/v1/snapshot" && status == 200 && h.Get("Content-Type") != "application/octet-stream" {
				t.Errorf("snapshot Content-Type %q", h.Get("Content-Type"))
			}
		})
	}
}
