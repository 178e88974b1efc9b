package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// testFilters: ?status= and ?meta.KEY= on lists, blocking queries and
// streams.
func testFilters(t *testing.T, lc lifecycle) {
	m0, m1, m2 := lc.m0, lc.m1, lc.m2
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
}
