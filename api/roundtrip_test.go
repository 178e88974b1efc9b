package api_test

import (
	"net/http"
	"testing"

	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

func TestRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	url := m.URL("/v1/services/user/instances/u1")

	code, hdr, body := regdtest.Do(t, http.MethodPut, url, `{"address":"10.0.0.5:8080","ttl":10,"metadata":{"zone":"a"}}`)
	if code != http.StatusCreated {
		t.Fatalf("register: %d %s", code, body)
	}
	var inst registry.Instance
	regdtest.MustJSON(t, body, &inst)
	if inst.Address != "10.0.0.5:8080" || inst.TTL != 10 || inst.Metadata["zone"] != "a" || inst.Revision < 1 || inst.LeaseID == "0" || inst.RegisteredAt == nil {
		t.Fatalf("register returned %+v", inst)
	}
	if hdr.Get("X-Regd-Revision") == "" {
		t.Fatal("no revision header on register")
	}

	code, _, body = regdtest.Do(t, http.MethodPut, url, `{"address":"10.0.0.5:8081"}`)
	if code != http.StatusOK {
		t.Fatalf("re-register: %d %s", code, body)
	}

	code, _, body = regdtest.Do(t, http.MethodPut, url+"/heartbeat", nil)
	if code != http.StatusOK {
		t.Fatalf("heartbeat: %d %s", code, body)
	}
	var hb struct{ TTL int64 }
	regdtest.MustJSON(t, body, &hb)
	if hb.TTL < 9 || hb.TTL > 10 {
		t.Fatalf("heartbeat ttl %d", hb.TTL)
	}

	code, hdr, body = regdtest.Do(t, http.MethodGet, m.URL("/v1/services/user/instances"), nil)
	var list registry.InstanceList
	regdtest.MustJSON(t, body, &list)
	if code != 200 || len(list.Instances) != 1 || list.Instances[0].Address != "10.0.0.5:8081" || list.Revision < 1 || hdr.Get("X-Regd-Revision") == "" {
		t.Fatalf("list: %d %s", code, body)
	}

	code, _, body = regdtest.Do(t, http.MethodDelete, url, nil)
	if code != http.StatusNoContent {
		t.Fatalf("deregister: %d %s", code, body)
	}
	code, _, body = regdtest.Do(t, http.MethodGet, url, nil)
	if code != http.StatusNotFound {
		t.Fatalf("get after deregister: %d %s", code, body)
	}
	code, _, body = regdtest.Do(t, http.MethodPut, url+"/heartbeat", nil)
	if code != http.StatusNotFound {
		t.Fatalf("heartbeat after deregister: %d %s", code, body)
	}
}
