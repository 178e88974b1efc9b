package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/api"
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
	m0, m1, m2 := c.Members[0], c.Members[1], c.Members[2]
	cli := c.EtcdClient(t, 1)

	t.Run("RegisterWithStatusAndWeight", func(t *testing.T) {
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
	})

	t.Run("PatchInPlace", func(t *testing.T) {
		orig := wRegister(t, m0, "life", "l1", "10.1.0.1:80", 30)
		after := fmt.Sprint(orig.Revision)
		anyStream := openSSE(t, m2.URL("/v1/services/life/watch?status=any"), after)
		upStream := openSSE(t, m1.URL("/v1/services/life/watch"), after)
		zoneStream := openSSE(t, m1.URL("/v1/services/life/watch?meta.zone=z&status=any"), after)
		// Up instances of zone z: l1 enters zone z but leaves up, so it
		// is never in this view; the first event it shows is the marker's.
		zoneUpStream := openSSE(t, m0.URL("/v1/services/life/watch?meta.zone=z"), after)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		plain := cli.Watch(ctx, "/service/", clientv3.WithPrefix(), clientv3.WithRev(orig.Revision+1))

		p := mustPatch(t, m1, "life", "l1", `{"status":"draining","weight":7,"metadata":{"zone":"z","gone":null}}`)
		if p.Status != registry.StatusDraining || p.Weight != 7 || p.Metadata["zone"] != "z" || len(p.Metadata) != 1 {
			t.Fatalf("patched %+v", p)
		}
		if p.LeaseID != orig.LeaseID || p.TTL != orig.TTL || p.Address != orig.Address || !p.RegisteredAt.Equal(*orig.RegisteredAt) || p.Revision <= orig.Revision {
			t.Fatalf("patch changed more than it asked: %+v, was %+v", p, orig)
		}
		// Every stream that the change concerns gets an update event: the
		// default one too (the instance leaves it, its status says so),
		// and the zone one (the instance enters it).
		for name, s := range map[string]*sseStream{"status=any": anyStream, "default": upStream, "meta.zone=z&status=any": zoneStream} {
			t.Logf("reading the %s stream", name)
			e := s.next(t, 10*time.Second)
			in := e.instance(t)
			if e.Event != registry.EventUpdate || in.ID != "l1" || in.Status != registry.StatusDraining || e.rev(t) != p.Revision || in.Revision != p.Revision {
				t.Fatalf("%s stream: %s, want the update at %d", name, e, p.Revision)
			}
		}
		// Plain etcd clients see no change: the first event of their
		// watch after the patch is a marker written after it.
		if _, err := cli.Put(ctx, "/service/life/zz-marker", "10.1.0.99:80"); err != nil {
			t.Fatal(err)
		}
		select {
		case wr := <-plain:
			if len(wr.Events) == 0 || string(wr.Events[0].Kv.Key) != "/service/life/zz-marker" {
				t.Fatalf("a plain etcd watcher of /service/ saw %v before the marker", wr.Events)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the plain watch saw nothing")
		}

		// The default list hides it, any shows it.
		if l := listInstances(t, m2, "life", ""); ids(l) != "zz-marker" {
			t.Fatalf("default list %s", ids(l))
		}
		if l := listInstances(t, m2, "life", "?status=any"); ids(l) != "l1,zz-marker" {
			t.Fatalf("status=any list %s", ids(l))
		}
		zm := registerWith(t, m0, "life", "zmark", map[string]any{"address": "10.1.0.97:80", "metadata": map[string]string{"zone": "z"}})
		if e := zoneUpStream.next(t, 10*time.Second); e.instance(t).ID != "zmark" || e.rev(t) != zm.Revision {
			t.Fatalf("meta.zone=z (up) stream: %s first, want zmark's registration; l1 never was in its view", e)
		}

		// Heartbeats go on; leader changes and restarts keep the status.
		check := func(when string) {
			t.Helper()
			for _, m := range c.Members {
				if m.Server() == nil {
					continue
				}
				in := getInstance(t, m, "life", "l1")
				if in.Status != registry.StatusDraining || in.Weight != 7 || in.LeaseID != orig.LeaseID || in.Revision != p.Revision {
					t.Fatalf("%s, on %s: %+v", when, m.Name, in)
				}
			}
		}
		for i := range c.Members {
			heartbeatOK(t, c.Members[i], "life", "l1")
		}
		check("after heartbeats")
		leader := c.WaitLeader(t)
		c.MoveLeader(t, (leader+1)%3)
		heartbeatOK(t, m0, "life", "l1")
		check("after a leader change")
		follower := (c.WaitLeader(t) + 1) % 3
		c.Stop(follower)
		heartbeatOK(t, c.Members[(follower+1)%3], "life", "l1")
		c.Restart(follower)
		c.WaitLeader(t)
		heartbeatOK(t, c.Members[follower], "life", "l1")
		check("after a member's restart")
		leader = c.WaitLeader(t)
		c.Stop(leader)
		c.WaitLeader(t)
		c.Restart(leader)
		c.WaitLeader(t)
		heartbeatOK(t, c.Members[leader], "life", "l1")
		check("after the leader's restart")

		// Never an expiry: a canary that expires after all of this is
		// reported (the ledger has passed the patch), l1 is not.
		canary := wRegister(t, m0, "life", "canary", "10.1.0.2:80", 2)
		regdtest.Eventually(t, 30*time.Second, func() error {
			for _, e := range m2.Ledger(t, url.Values{"service": {"life"}}) {
				if e.ID == "l1" {
					t.Fatalf("the patched instance was reported as expired: %+v", e)
				}
				if e.ID == "canary" && e.LeaseID == canary.LeaseID {
					if e.Cause != registry.ExpiryCauseTTL {
						t.Fatalf("canary's cause %q, want ttl", e.Cause)
					}
					return nil
				}
			}
			heartbeatOK(t, m1, "life", "l1")
			return fmt.Errorf("canary not reported yet")
		})
		heartbeatOK(t, m0, "life", "l1")
		check("after the canary's expiry")
	})

	t.Run("BadPatches", func(t *testing.T) {
		orig := registerWith(t, m0, "badp", "b1", map[string]any{"address": "10.2.0.1:80", "ttl": 60, "metadata": map[string]string{"k": "v"}})
		big := strings.Repeat("x", registry.MaxMetadataBytes)
		many := map[string]string{}
		for i := range registry.MaxMetadataPairs {
			many[fmt.Sprintf("k%d", i)] = "v"
		}
		manyJSON, _ := json.Marshal(map[string]any{"metadata": many}) // 64 new + k: 65
		path := "/v1/services/badp/instances/b1"
		for _, tc := range []struct {
			name, path, query, ctype, body string
			status                         int
			code                           string
		}{
			{"unknown status", path, "", "", `{"status":"sleeping"}`, 400, "invalid_status"},
			{"empty status", path, "", "", `{"status":""}`, 400, "invalid_status"},
			{"status any", path, "", "", `{"status":"any"}`, 400, "invalid_status"},
			{"status a number", path, "", "", `{"status":5}`, 400, "invalid_json"},
			{"weight below 0", path, "", "", `{"weight":-1}`, 400, "invalid_weight"},
			{"weight over 10000", path, "", "", `{"weight":10001}`, 400, "invalid_weight"},
			{"weight a fraction", path, "", "", `{"weight":1.5}`, 400, "invalid_json"},
			{"weight a string", path, "", "", `{"weight":"5"}`, 400, "invalid_json"},
			{"weight huge", path, "", "", `{"weight":1e40}`, 400, "invalid_json"},
			{"metadata value a number", path, "", "", `{"metadata":{"k":5}}`, 400, "invalid_json"},
			{"metadata an array", path, "", "", `{"metadata":["k"]}`, 400, "invalid_json"},
			{"metadata empty key", path, "", "", `{"metadata":{"":"x"}}`, 400, "invalid_metadata"},
			{"metadata control key", path, "", "", `{"metadata":{"a\nb":"x"}}`, 400, "invalid_metadata"},
			{"metadata too big", path, "", "", `{"metadata":{"big":"` + big + `"}}`, 400, "invalid_metadata"},
			{"metadata too many pairs", path, "", "", string(manyJSON), 400, "invalid_metadata"},
			{"address", path, "", "", `{"address":"10.9.9.9:80"}`, 400, "invalid_json"},
			{"ttl", path, "", "", `{"ttl":30}`, 400, "invalid_json"},
			{"misspelt field", path, "", "", `{"stauts":"draining"}`, 400, "invalid_json"},
			{"array body", path, "", "", `[]`, 400, "invalid_json"},
			{"null body", path, "", "", `null`, 400, "invalid_json"},
			{"string body", path, "", "", `"draining"`, 400, "invalid_json"},
			{"empty body", path, "", "", ``, 400, "invalid_json"},
			{"trailing data", path, "", "", `{"status":"draining"} {}`, 400, "invalid_json"},
			{"not JSON", path, "", "", `{status: draining}`, 400, "invalid_json"},
			{"JSON Patch", path, "", "application/json-patch+json", `[{"op":"replace","path":"/status","value":"draining"}]`, 415, "unsupported_media_type"},
			{"XML", path, "", "application/xml", `<status>draining</status>`, 415, "unsupported_media_type"},
			{"bad wait_observed", path, "?wait_observed=soon", "", `{"status":"draining"}`, 400, "invalid_parameter"},
			{"negative wait_observed", path, "?wait_observed=-1s", "", `{"status":"draining"}`, 400, "invalid_parameter"},
			{"unknown instance", "/v1/services/badp/instances/nobody", "", "", `{"status":"draining"}`, 404, "not_found"},
			{"bad id", "/v1/services/badp/instances/bad%20id", "", "", `{"status":"draining"}`, 400, "invalid_instance_id"},
			{"bad service", "/v1/services/..a%21/instances/b1", "", "", `{"status":"draining"}`, 400, "invalid_service_name"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := clusterRev(t, cli)
				code, hdr, out := sendTyped(t, http.MethodPatch, m1.URL(tc.path+tc.query), tc.ctype, tc.body)
				if code != tc.status || wErrorCode(out) != tc.code {
					t.Fatalf("%d %s, want %d %s", code, out, tc.status, tc.code)
				}
				if code == http.StatusUnsupportedMediaType && !strings.Contains(hdr.Get("Accept-Patch"), "application/merge-patch+json") {
					t.Fatalf("415 without Accept-Patch: %v", hdr)
				}
				if after := clusterRev(t, cli); after != before {
					t.Fatalf("revision moved from %d to %d: something was written", before, after)
				}
			})
		}
		if in := getInstance(t, m2, "badp", "b1"); in.Revision != orig.Revision || in.Status != registry.StatusUp || in.Metadata["k"] != "v" {
			t.Fatalf("after the refused patches: %+v", in)
		}
		// A plain etcd client's key holds no record to patch.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cli.Put(ctx, "/service/badp/plain", "10.2.0.9:80"); err != nil {
			t.Fatal(err)
		}
		regdtest.Eventually(t, 5*time.Second, func() error {
			if code, _, _ := regdtest.Do(t, http.MethodGet, m0.URL("/v1/services/badp/instances/plain"), nil); code != 200 {
				return fmt.Errorf("plain key not listed yet")
			}
			return nil
		})
		before := clusterRev(t, cli)
		code, _, out := sendTyped(t, http.MethodPatch, m0.URL("/v1/services/badp/instances/plain"), "", `{"status":"draining"}`)
		if code != http.StatusConflict || wErrorCode(out) != "plain_instance" || clusterRev(t, cli) != before {
			t.Fatalf("PATCH of a plain key: %d %s (revision %d, was %d)", code, out, clusterRev(t, cli), before)
		}
		// A valid patch in every accepted type; null resets.
		for _, ct := range []string{"application/merge-patch+json", "application/json; charset=utf-8", "", "application/x-www-form-urlencoded"} {
			code, _, out := sendTyped(t, http.MethodPatch, m1.URL(path), ct, `{"weight":3}`)
			if code != http.StatusOK {
				t.Fatalf("Content-Type %q: %d %s", ct, code, out)
			}
		}
		in := mustPatch(t, m2, "badp", "b1", `{"status":"out_of_service","metadata":null}`)
		if in.Status != registry.StatusOutOfService || len(in.Metadata) != 0 || in.Weight != 3 {
			t.Fatalf("after status and metadata null: %+v", in)
		}
		in = mustPatch(t, m2, "badp", "b1", `{"status":null,"weight":null}`)
		if in.Status != registry.StatusUp || in.Weight != registry.DefaultWeight {
			t.Fatalf("after nulls: %+v", in)
		}
	})

	t.Run("Filters", func(t *testing.T) {
		reg := func(id, status string, md map[string]string) registry.Instance {
			body := map[string]any{"address": "10.3.0.1:80", "ttl": 120, "metadata": md}
			if status != "" {
				body["status"] = status
			}
			return registerWith(t, m0, "flt", id, body)
		}
		reg("a1", "", map[string]string{"zone": "a"})
		reg("a2", "", map[string]string{"zone": "a", "tier": "web"})
		reg("b1", "", map[string]string{"zone": "b"})
		reg("d1", "draining", map[string]string{"zone": "a"})
		last := reg("o1", "out_of_service", map[string]string{"zone": "b"})
		for q, want := range map[string]string{
			"":                               "a1,a2,b1",
			"status=up":                      "a1,a2,b1",
			"status=any":                     "a1,a2,b1,d1,o1",
			"status=draining":                "d1",
			"status=out_of_service":          "o1",
			"meta.zone=a":                    "a1,a2",
			"meta.zone=a&meta.tier=web":      "a2",
			"meta.zone=a&status=any":         "a1,a2,d1",
			"meta.zone=c":                    "",
			"meta.zone=a&meta.zone=b":        "",
			"meta.tier=web&min_revision=1":   "a2",
			"status=any&meta.zone=b&stale=1": "b1,o1",
		} {
			l := listInstances(t, m1, "flt", "?"+q+"&min_revision="+fmt.Sprint(last.Revision))
			if got := ids(l); got != want {
				t.Errorf("?%s: %s, want %s", q, got, want)
			}
		}
		for _, q := range []string{"status=bogus", "status=up&status=any", "status=", "meta.=x", "meta.%0A=x"} {
			for _, p := range []string{"/v1/services/flt/instances?", "/v1/services/flt/watch?"} {
				code, _, out := regdtest.Do(t, http.MethodGet, m2.URL(p+q), nil)
				if code != http.StatusBadRequest || wErrorCode(out) != "invalid_parameter" {
					t.Errorf("GET %s%s: %d %s, want 400 invalid_parameter", p, q, code, out)
				}
			}
		}
		code, hdr, out := regdtest.Do(t, http.MethodGet, m2.URL("/v1/services"), nil)
		sl := decodeList[registry.ServiceList](t, code, hdr, out)
		for _, s := range sl.Services {
			if s.Name == "flt" && (s.Instances != 5 || s.Up != 3) {
				t.Fatalf("/v1/services counts %+v, want 5 instances, 3 up", s)
			}
		}

		// Blocking queries wake only for their own answer. Changes to
		// zone b, then a positive marker in zone a: the zone-a query's
		// answer must carry the marker.
		index := headerRev(t, hdr)
		zoneA := asyncGet(context.Background(), m1.URL(fmt.Sprintf("/v1/services/flt/instances?meta.zone=a&index=%d&wait=20s", index)))
		zoneAStream := openSSE(t, m2.URL("/v1/services/flt/watch?meta.zone=a"), fmt.Sprint(index))
		drained := asyncGet(context.Background(), m2.URL(fmt.Sprintf("/v1/services/flt/instances?status=draining&index=%d&wait=20s", index)))
		up := asyncGet(context.Background(), m0.URL(fmt.Sprintf("/v1/services/flt/instances?index=%d&wait=20s", index)))
		b1 := mustPatch(t, m0, "flt", "b1", `{"weight":5}`)
		reg("b2", "", map[string]string{"zone": "b"})
		wDeregister(t, m2, "flt", "b2")
		mustPatch(t, m1, "flt", "o1", `{"status":"up"}`) // zone b, into the up answer
		// The default query's answer has b1 (up): it woke for b1's change.
		res := await(t, up, 10*time.Second, "the default query after b1's change")
		if l := decodeList[registry.InstanceList](t, res.code, res.hdr, res.body); l.Revision < b1.Revision || !strings.Contains(ids(l), "b1") {
			t.Fatalf("default query woke with %s at %d", ids(l), l.Revision)
		}
		marker := mustPatch(t, m2, "flt", "a1", `{"weight":9}`)
		res = await(t, zoneA, 10*time.Second, "the zone-a query after the zone-a marker")
		l := decodeList[registry.InstanceList](t, res.code, res.hdr, res.body)
		if l.Revision < marker.Revision || ids(l) != "a1,a2" || l.Instances[0].Weight != 9 {
			t.Fatalf("zone-a query answered %s at %d (weights %+v), want the marker at %d: it woke for zone b", ids(l), l.Revision, l.Instances, marker.Revision)
		}
		if e := zoneAStream.next(t, 10*time.Second); e.instance(t).ID != "a1" || e.rev(t) != marker.Revision {
			t.Fatalf("zone-a stream's first event %s, want the marker: it got zone b's", e)
		}
		// Nothing entered or left the draining answer so far; its answer,
		// when a2 drains, must carry a2 (had it woken before, it would
		// reflect an earlier revision).
		a2 := mustPatch(t, m1, "flt", "a2", `{"status":"draining"}`)
		res = await(t, drained, 10*time.Second, "the draining query after a2's drain")
		if l := decodeList[registry.InstanceList](t, res.code, res.hdr, res.body); ids(l) != "a2,d1" || l.Revision < a2.Revision {
			t.Fatalf("draining query: %s at %d", ids(l), l.Revision)
		}
		if e := zoneAStream.next(t, 10*time.Second); e.Event != registry.EventUpdate || e.instance(t).ID != "a2" || e.instance(t).Status != registry.StatusDraining {
			t.Fatalf("zone-a stream: %s, want a2 leaving with its drain", e)
		}
	})

	t.Run("BatchHeartbeats", func(t *testing.T) {
		const valid, expired, unknown = 300, 20, 100
		var items []registry.HeartbeatItem
		type want struct {
			ok   bool
			code string
		}
		var wants []want
		add := func(svc, id string, w want) {
			items = append(items, registry.HeartbeatItem{Service: svc, ID: id})
			wants = append(wants, w)
		}
		leases := map[string]string{}
		for i := range expired {
			wRegister(t, m2, "hbx", fmt.Sprintf("x%03d", i), "10.5.0.1:80", 2)
		}
		expiredAt := time.Now()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := w; i < valid; i += 8 {
					id := fmt.Sprintf("i%03d", i)
					code, _, out := regdtest.Do(t, http.MethodPut, c.Members[i%3].URL("/v1/services/hb/instances/"+id), map[string]any{"address": "10.4.0.1:80", "ttl": 30})
					var in registry.Instance
					if code != http.StatusCreated || json.Unmarshal(out, &in) != nil {
						t.Errorf("register hb/%s: %d %s", id, code, out)
						return
					}
					mu.Lock()
					leases[id] = in.LeaseID
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		noLease, err := cli.Put(ctx, "/service/hb/plain-nolease", "10.4.0.9:80")
		if err != nil {
			t.Fatal(err)
		}
		lease, err := cli.Grant(ctx, 30)
		if err != nil {
			t.Fatal(err)
		}
		plainPut, err := cli.Put(ctx, "/service/hb/plain-lease", "10.4.0.8:80", clientv3.WithLease(lease.ID))
		if err != nil {
			t.Fatal(err)
		}
		// Wait until the expired ones are gone and every member has the
		// plain keys.
		regdtest.Eventually(t, 20*time.Second, func() error {
			if l := listInstances(t, m1, "hbx", "?status=any"); len(l.Instances) != 0 {
				return fmt.Errorf("%d of hbx left, %s after their TTL", len(l.Instances), time.Since(expiredAt))
			}
			return nil
		})
		for _, m := range c.Members {
			listInstances(t, m, "hb", fmt.Sprintf("?min_revision=%d", max(noLease.Header.Revision, plainPut.Header.Revision)))
		}
		for i := range valid {
			add("hb", fmt.Sprintf("i%03d", i), want{ok: true})
		}
		for i := range expired {
			add("hbx", fmt.Sprintf("x%03d", i), want{code: "not_found"})
		}
		for i := range unknown {
			add("hb", fmt.Sprintf("never%03d", i), want{code: "not_found"})
		}
		for i := range 40 {
			add("bad service", fmt.Sprintf("i%03d", i), want{code: "invalid_service_name"})
			add("hb", "../x", want{code: "invalid_instance_id"})
		}
		add("", "i000", want{code: "invalid_service_name"})
		add("hb", "", want{code: "invalid_instance_id"})
		add("hb", strings.Repeat("n", 129), want{code: "invalid_instance_id"})
		add("hb", "plain-nolease", want{code: "no_lease"})
		add("hb", "plain-lease", want{ok: true})
		for i := 0; len(items) < registry.MaxHeartbeatBatch; i++ {
			add("hb", fmt.Sprintf("i%03d", i%valid), want{ok: true}) // repeats
		}
		code, _, out := regdtest.Do(t, http.MethodPut, m1.URL("/v1/heartbeats"), map[string]any{"instances": items})
		if code != http.StatusOK {
			t.Fatalf("batch of %d: %d %s", len(items), code, out)
		}
		var resp struct {
			Results []struct {
				Service, ID string
				TTL         *int64
				Error       *struct{ Code, Message string }
			}
		}
		regdtest.MustJSON(t, out, &resp)
		if len(resp.Results) != len(items) {
			t.Fatalf("%d results for %d items", len(resp.Results), len(items))
		}
		for i, r := range resp.Results {
			w := wants[i]
			if r.Service != items[i].Service || r.ID != items[i].ID {
				t.Fatalf("result %d is for %s/%s, item %+v", i, r.Service, r.ID, items[i])
			}
			switch {
			case w.ok && (r.Error != nil || r.TTL == nil || *r.TTL < 25 || *r.TTL > 30):
				t.Fatalf("item %d %+v: %+v, want a ttl near 30", i, items[i], r)
			case !w.ok && (r.Error == nil || r.TTL != nil || r.Error.Code != w.code || r.Error.Message == ""):
				t.Fatalf("item %d %+v: %+v %v, want error %s", i, items[i], r, r.Error, w.code)
			}
		}
		// The leases were renewed: each has nearly its full TTL again.
		for _, id := range []string{"i000", "i150", "i299"} {
			var lid int64
			fmt.Sscan(leases[id], &lid)
			ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(lid))
			if err != nil || ttl.TTL < 28 {
				t.Fatalf("lease of %s after the batch: %+v %v", id, ttl, err)
			}
		}
		// Malformed batches.
		over := make([]registry.HeartbeatItem, registry.MaxHeartbeatBatch+1)
		for i := range over {
			over[i] = registry.HeartbeatItem{Service: "hb", ID: "i000"}
		}
		for name, body := range map[string]any{
			"empty list":    map[string]any{"instances": []any{}},
			"no list":       map[string]any{},
			"1001 items":    map[string]any{"instances": over},
			"unknown field": `{"instances":[{"service":"hb","id":"i000","ttl":3}]}`,
			"a list":        `[{"service":"hb","id":"i000"}]`,
			"not JSON":      `instances`,
		} {
			code, _, out := regdtest.Do(t, http.MethodPut, m0.URL("/v1/heartbeats"), body)
			if code != http.StatusBadRequest || wErrorCode(out) != "invalid_json" {
				t.Errorf("%s: %d %s, want 400 invalid_json", name, code, out)
			}
		}
	})

	t.Run("ExpiryCauseCheckFailed", func(t *testing.T) {
		in := wRegister(t, m0, "cause", "c1", "10.6.0.1:80", 60)
		var lease int64
		fmt.Sscan(in.LeaseID, &lease)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m1.Server().Store().EndLease(ctx, lease, registry.LeaseEnd{Cause: registry.ExpiryCauseCheckFailed, Output: "HTTP 503 from /health"}); err != nil {
			t.Fatal(err)
		}
		regdtest.Eventually(t, 20*time.Second, func() error {
			for _, e := range m2.Ledger(t, url.Values{"service": {"cause"}}) {
				if e.ID == "c1" {
					if e.Cause != registry.ExpiryCauseCheckFailed || e.Output != "HTTP 503 from /health" || e.LeaseID != in.LeaseID {
						t.Fatalf("reported %+v", e)
					}
					return nil
				}
			}
			return fmt.Errorf("c1 not reported yet")
		})
	})

	// Last: without a quorum a batch answers 503 as a whole, as a single
	// heartbeat does.
	t.Run("BatchWithoutQuorum", func(t *testing.T) {
		wRegister(t, m0, "hbq", "q1", "10.7.0.1:80", 60)
		c.Stop(1)
		c.Stop(2)
		// Until m0 notices it lost the quorum, a leader may renew leases
		// on its own (etcd's lessor): wait for that first.
		regdtest.Eventually(t, 15*time.Second, func() error {
			if code, _, _ := regdtest.Do(t, http.MethodGet, m0.URL("/readyz"), nil); code != http.StatusServiceUnavailable {
				return fmt.Errorf("m0 still ready")
			}
			return nil
		})
		code, _, out := regdtest.Do(t, http.MethodPut, m0.URL("/v1/heartbeats"), map[string]any{"instances": []registry.HeartbeatItem{{Service: "hbq", ID: "q1"}, {Service: "hbq", ID: "q2"}}})
		if code != http.StatusServiceUnavailable || wErrorCode(out) != "unavailable" {
			t.Fatalf("batch without a quorum: %d %s, want 503 unavailable", code, out)
		}
	})
}
