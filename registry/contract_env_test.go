package registry_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// contractEnv is one running node seen two ways: through the REST API and
// through a plain gRPC etcd client on its client URL.
type contractEnv struct {
	m    *regdtest.Member
	cli  *clientv3.Client
	keys registry.Keys
}

func opCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func instanceURL(e contractEnv, svc, id string) string {
	return e.m.URL("/v1/services/" + svc + "/instances/" + id)
}

// register PUTs body and requires status.
func (e contractEnv) register(t *testing.T, svc, id, body string, status int) registry.Instance {
	t.Helper()
	code, _, b := regdtest.Do(t, http.MethodPut, instanceURL(e, svc, id), body)
	if code != status {
		t.Fatalf("register %s/%s: %d %s, want %d", svc, id, code, b, status)
	}
	var inst registry.Instance
	regdtest.MustJSON(t, b, &inst)
	return inst
}

func (e contractEnv) list(t *testing.T, svc string) registry.InstanceList {
	t.Helper()
	code, _, b := regdtest.Do(t, http.MethodGet, e.m.URL("/v1/services/"+svc+"/instances"), nil)
	if code != http.StatusOK {
		t.Fatalf("list %s: %d %s", svc, code, b)
	}
	var l registry.InstanceList
	regdtest.MustJSON(t, b, &l)
	return l
}

func (e contractEnv) services(t *testing.T) registry.ServiceList {
	t.Helper()
	code, _, b := regdtest.Do(t, http.MethodGet, e.m.URL("/v1/services"), nil)
	if code != http.StatusOK {
		t.Fatalf("services: %d %s", code, b)
	}
	var l registry.ServiceList
	regdtest.MustJSON(t, b, &l)
	return l
}

// heartbeat PUTs a heartbeat and returns the status and the error code, if any.
func (e contractEnv) heartbeat(t *testing.T, svc, id string) (int, string) {
	t.Helper()
	code, _, b := regdtest.Do(t, http.MethodPut, instanceURL(e, svc, id)+"/heartbeat", nil)
	return code, errorCode(b)
}

func errorCode(b []byte) string {
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(b, &body)
	return body.Error.Code
}

func (e contractEnv) keysUnder(t *testing.T, prefix string) []string {
	t.Helper()
	resp, err := e.cli.Get(opCtx(t), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

func (e contractEnv) leaseTTL(t *testing.T, lease int64) *clientv3.LeaseTimeToLiveResponse {
	t.Helper()
	resp, err := e.cli.TimeToLive(opCtx(t), clientv3.LeaseID(lease), clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func (e contractEnv) revision(t *testing.T) int64 {
	t.Helper()
	resp, err := e.cli.Get(opCtx(t), "/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func ids(l registry.InstanceList) []string {
	out := make([]string, 0, len(l.Instances))
	for _, in := range l.Instances {
		out = append(out, in.ID)
	}
	return out
}

func serviceCount(l registry.ServiceList, name string) int {
	for _, s := range l.Services {
		if s.Name == name {
			return s.Instances
		}
	}
	return 0
}

// nextEvent returns the next watch event on key, skipping others.
func nextEvent(t *testing.T, wch clientv3.WatchChan, key string) *clientv3.Event {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case resp, ok := <-wch:
			if !ok {
				t.Fatal("watch closed")
			}
			if err := resp.Err(); err != nil {
				t.Fatal(err)
			}
			for _, ev := range resp.Events {
				if string(ev.Kv.Key) == key {
					return ev
				}
			}
		case <-timeout.C:
			t.Fatalf("no watch event on %s within 10s", key)
		}
	}
}

func parseLease(t *testing.T, s string) int64 {
	t.Helper()
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id == 0 {
		t.Fatalf("lease_id %q is not a decimal lease: %v", s, err)
	}
	return id
}
