package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// ---- helpers of the lifecycle tests ----

// sendTyped sends body (a string, "" for none) with the given Content-Type ("":
// none) and returns status, headers and body.
func sendTyped(t testing.TB, method, url, contentType, body string) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := (&http.Client{Timeout: 90 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, out
}

// mustPatch sends a merge patch and returns the instance it answered.
func mustPatch(t testing.TB, m *regdtest.Member, service, id, body string) registry.Instance {
	t.Helper()
	code, hdr, out := sendTyped(t, http.MethodPatch, m.URL("/v1/services/"+service+"/instances/"+id), "application/merge-patch+json", body)
	if code != http.StatusOK {
		t.Fatalf("PATCH %s/%s %s: %d %s", service, id, body, code, out)
	}
	var inst registry.Instance
	regdtest.MustJSON(t, out, &inst)
	if headerRev(t, hdr) != inst.Revision {
		t.Fatalf("PATCH: X-Regd-Revision %s, instance revision %d", hdr.Get(api.HeaderRevision), inst.Revision)
	}
	return inst
}

// registerWith registers with an arbitrary body and returns the instance.
func registerWith(t testing.TB, m *regdtest.Member, service, id string, body map[string]any) registry.Instance {
	t.Helper()
	code, _, out := regdtest.Do(t, http.MethodPut, m.URL("/v1/services/"+service+"/instances/"+id), body)
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("register %s/%s %v: %d %s", service, id, body, code, out)
	}
	var inst registry.Instance
	regdtest.MustJSON(t, out, &inst)
	return inst
}

func getInstance(t testing.TB, m *regdtest.Member, service, id string) registry.Instance {
	t.Helper()
	code, _, out := regdtest.Do(t, http.MethodGet, m.URL("/v1/services/"+service+"/instances/"+id), nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s/%s on %s: %d %s", service, id, m.Name, code, out)
	}
	var inst registry.Instance
	regdtest.MustJSON(t, out, &inst)
	return inst
}

func heartbeatOK(t testing.TB, m *regdtest.Member, service, id string) {
	t.Helper()
	code, _, out := regdtest.Do(t, http.MethodPut, m.URL("/v1/services/"+service+"/instances/"+id+"/heartbeat"), nil)
	if code != http.StatusOK {
		t.Fatalf("heartbeat %s/%s on %s: %d %s", service, id, m.Name, code, out)
	}
}

// clusterRev is the cluster's current revision, read linearizably.
func clusterRev(t testing.TB, cli *clientv3.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/regd-test-revision-probe", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func idsOf(insts []registry.Instance) string {
	var out []string
	for _, in := range insts {
		out = append(out, in.ID)
	}
	return strings.Join(out, ",")
}

// ---- the tests ----

// lifecycle is the cluster TestInstanceLifecycle's subtests share, in
// order; each subtest lives in the file of its subject (patch_test.go,
// filters_test.go, heartbeats_test.go).
type lifecycle struct {
	c          *regdtest.Cluster
	m0, m1, m2 *regdtest.Member
	cli        *clientv3.Client
}

// TestInstanceLifecycle (issue 12) on one three-member cluster: status and
// weight on register, PATCH in place (lease, TTL, address kept; an update
// event; no expiry; invisible to plain etcd clients; surviving heartbeats,
// leader changes and restarts), bad patches refused with nothing written,
// filters on lists, blocking queries and streams, batch heartbeats, and
// expiry causes.
func TestInstanceLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	t.Parallel()
	c := regdtest.StartCluster(t, 3)
	lc := lifecycle{c: c, m0: c.Members[0], m1: c.Members[1], m2: c.Members[2], cli: c.EtcdClient(t, 1)}

	t.Run("RegisterWithStatusAndWeight", func(t *testing.T) { testRegisterWithStatusAndWeight(t, lc) })
	t.Run("PatchInPlace", func(t *testing.T) { testPatchInPlace(t, lc) })
	t.Run("BadPatches", func(t *testing.T) { testBadPatches(t, lc) })
	t.Run("Filters", func(t *testing.T) { testFilters(t, lc) })
	t.Run("BatchHeartbeats", func(t *testing.T) { testBatchHeartbeats(t, lc) })
	t.Run("ExpiryCauseCheckFailed", func(t *testing.T) { testExpiryCauseCheckFailed(t, lc) })
	// Last: without a quorum a batch answers 503 as a whole, as a single
	// heartbeat does.
	t.Run("BatchWithoutQuorum", func(t *testing.T) { testBatchWithoutQuorum(t, lc) })
}

// testRegisterWithStatusAndWeight: status and weight on register, their
// defaults, and the values refused.
func testRegisterWithStatusAndWeight(t *testing.T, lc lifecycle) {
	m0, m1, m2 := lc.m0, lc.m1, lc.m2
	in := registerWith(t, m0, "reg", "r1", map[string]any{"address": "10.0.0.1:80", "status": "out_of_service", "weight": 0})
	if in.Status != registry.StatusOutOfService || in.Weight != 0 {
		t.Fatalf("registered %+v", in)
	}
	in = registerWith(t, m0, "reg", "r2", map[string]any{"address": "10.0.0.2:80"})
	if in.Status != registry.StatusUp || in.Weight != registry.DefaultWeight {
		t.Fatalf("defaults: %+v", in)
	}
	// A re-registration replaces the instance: absent means default.
	in = registerWith(t, m1, "reg", "r1", map[string]any{"address": "10.0.0.1:80"})
	if in.Status != registry.StatusUp || in.Weight != registry.DefaultWeight {
		t.Fatalf("re-registered without status: %+v", in)
	}
	for _, bad := range []struct {
		body map[string]any
		code string
	}{
		{map[string]any{"address": "10.0.0.3:80", "status": "sleeping"}, "invalid_status"},
		{map[string]any{"address": "10.0.0.3:80", "status": ""}, "invalid_status"},
		{map[string]any{"address": "10.0.0.3:80", "status": "any"}, "invalid_status"},
		{map[string]any{"address": "10.0.0.3:80", "weight": 10001}, "invalid_weight"},
		{map[string]any{"address": "10.0.0.3:80", "weight": -1}, "invalid_weight"},
		{map[string]any{"address": "10.0.0.3:80", "weight": 1.5}, "invalid_json"},
		{map[string]any{"address": "10.0.0.3:80", "status": 1}, "invalid_json"},
	} {
		code, _, out := regdtest.Do(t, http.MethodPut, m2.URL("/v1/services/reg/instances/r3"), bad.body)
		if code != http.StatusBadRequest || wErrorCode(out) != bad.code {
			t.Errorf("register %v: %d %s, want 400 %s", bad.body, code, out, bad.code)
		}
	}
	if code, _, _ := regdtest.Do(t, http.MethodGet, m2.URL("/v1/services/reg/instances/r3"), nil); code != http.StatusNotFound {
		t.Fatalf("a refused registration was written: %d", code)
	}
}

// testExpiryCauseCheckFailed: a lease ended for a failed check is
// reported once on every member with its cause and the check's output.
func testExpiryCauseCheckFailed(t *testing.T, lc lifecycle) {
	c, m0, m1 := lc.c, lc.m0, lc.m1
	in := wRegister(t, m0, "cause", "c1", "10.6.0.1:80", 60)
	var lease int64
	fmt.Sscan(in.LeaseID, &lease)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m1.Server().Store().EndLease(ctx, lease, registry.LeaseEnd{Cause: registry.ExpiryCauseCheckFailed, Output: "HTTP 503 from /health"}); err != nil {
		t.Fatal(err)
	}
	c.WaitExpiries(t, 20*time.Second, ledgertest.Expected{
		Service: "cause",
		Want:    map[ledgertest.Expiry]string{regdtest.ExpiryOfInstance(in): in.Address},
		Each: func(e ledgertest.Entry) error {
			if e.Cause != registry.ExpiryCauseCheckFailed || e.Output != "HTTP 503 from /health" {
				return fmt.Errorf("cause %q, output %q; want %s with the check's output", e.Cause, e.Output, registry.ExpiryCauseCheckFailed)
			}
			return nil
		},
	})
}
