package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// testBatchHeartbeats: PUT /v1/heartbeats renews every lease it names and
// answers one result per item, in order; malformed batches are refused.
func testBatchHeartbeats(t *testing.T, lc lifecycle) {
	c, m0, m1, m2, cli := lc.c, lc.m0, lc.m1, lc.m2, lc.cli
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
				// Set-up, not the subject: a 503 (the quorum slow under
				// load) is retried as the contract tells clients to; a
				// retry may find the first attempt's registration (200).
				var code int
				var out []byte
				for attempt := 0; attempt < 5; attempt++ {
					code, _, out = regdtest.Do(t, http.MethodPut, c.Members[i%3].URL("/v1/services/hb/instances/"+id), map[string]any{"address": "10.4.0.1:80", "ttl": 30})
					if code != http.StatusServiceUnavailable {
						break
					}
				}
				var in registry.Instance
				if code != http.StatusCreated && code != http.StatusOK || json.Unmarshal(out, &in) != nil {
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
	poll.Until(t, 20*time.Second, "the expired hbx instances gone", func() error {
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
	// The leases checked below have aged (at most 26 s of their 30 s
	// left) before the batch, so that a renewal shows as more time
	// left, whatever the batch's own time on a loaded machine.
	checked := []string{"i000", "i150", "i299"}
	leaseOf := func(id string) clientv3.LeaseID {
		var lid int64
		fmt.Sscan(leases[id], &lid)
		return clientv3.LeaseID(lid)
	}
	before := map[string]int64{}
	poll.Until(t, 10*time.Second, "the checked leases aged", func() error {
		for _, id := range checked {
			ttl, err := cli.TimeToLive(ctx, leaseOf(id))
			if err != nil {
				return err
			}
			if before[id] = ttl.TTL; ttl.TTL > 26 {
				return fmt.Errorf("lease of %s has %d s left", id, ttl.TTL)
			}
		}
		return nil
	})
	sent := time.Now()
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
	// The leases were renewed: each has more time left than before the
	// batch, and its full TTL less at most the time since the batch
	// was sent (and a second of etcd's rounding).
	for _, id := range checked {
		ttl, err := cli.TimeToLive(ctx, leaseOf(id))
		since := int64(math.Ceil(time.Since(sent).Seconds()))
		if err != nil || ttl.TTL <= before[id] || ttl.TTL < 30-since-1 {
			t.Fatalf("lease of %s after the batch: %d s left (%d before it, sent %d s ago) %v", id, ttl.TTL, before[id], since, err)
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
}

// Last: without a quorum a batch answers 503 as a whole, as a single
// heartbeat does.
// testBatchWithoutQuorum: without a quorum a batch answers 503 as a
// whole, as a single heartbeat does.
func testBatchWithoutQuorum(t *testing.T, lc lifecycle) {
	c, m0 := lc.c, lc.m0
	wRegister(t, m0, "hbq", "q1", "10.7.0.1:80", 60)
	c.Stop(1)
	c.Stop(2)
	// Until m0 notices it lost the quorum, a leader may renew leases
	// on its own (etcd's lessor): wait for that first.
	poll.Until(t, 15*time.Second, "m0 notices it lost the quorum", func() error {
		if code, _, _ := regdtest.Do(t, http.MethodGet, m0.URL("/readyz"), nil); code != http.StatusServiceUnavailable {
			return fmt.Errorf("m0 still ready")
		}
		return nil
	})
	code, _, out := regdtest.Do(t, http.MethodPut, m0.URL("/v1/heartbeats"), map[string]any{"instances": []registry.HeartbeatItem{{Service: "hbq", ID: "q1"}, {Service: "hbq", ID: "q2"}}})
	if code != http.StatusServiceUnavailable || wErrorCode(out) != "unavailable" {
		t.Fatalf("batch without a quorum: %d %s, want 503 unavailable", code, out)
	}
}
