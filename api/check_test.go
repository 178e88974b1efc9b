package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// badCheckBodies are registrations whose health check is wrong (contract
// v2, "Health checks run by the registry"): 400 with a code, nothing
// written. The one table of the check rules (registry.ResolveCheck).
var badCheckBodies = []struct {
	name, check, extra, code string // check: the "check" member's JSON; extra: more members
}{
	// The target: exactly one of http, tcp, grpc.
	{"no target", `{}`, ``, registry.CodeInvalidCheck},
	{"null target", `{"http":null}`, ``, registry.CodeInvalidCheck},
	{"only settings", `{"interval":"5s"}`, ``, registry.CodeInvalidCheck},
	{"two targets", `{"http":"http://10.0.0.5/h","tcp":"10.0.0.5:1"}`, ``, registry.CodeInvalidCheck},
	{"three targets", `{"http":"http://10.0.0.5/h","tcp":"10.0.0.5:1","grpc":"10.0.0.5:2"}`, ``, registry.CodeInvalidCheck},
	{"unknown kind", `{"exec":"/bin/true"}`, ``, "invalid_json"},
	{"check is a string", `"http://10.0.0.5/h"`, ``, "invalid_json"},
	{"target is a number", `{"tcp":5432}`, ``, "invalid_json"},
	// HTTP URLs.
	{"empty URL", `{"http":""}`, ``, registry.CodeInvalidCheck},
	{"no scheme", `{"http":"10.0.0.5/health"}`, ``, registry.CodeInvalidCheck},
	{"ftp", `{"http":"ftp://10.0.0.5/health"}`, ``, registry.CodeInvalidCheck},
	{"file", `{"http":"file:///etc/passwd"}`, ``, registry.CodeInvalidCheck},
	{"javascript", `{"http":"javascript:alert(1)"}`, ``, registry.CodeInvalidCheck},
	{"no host", `{"http":"http:///health"}`, ``, registry.CodeInvalidCheck},
	{"only a scheme", `{"http":"http://"}`, ``, registry.CodeInvalidCheck},
	{"credentials", `{"http":"http://user:secret@10.0.0.5/health"}`, ``, registry.CodeInvalidCheck},
	{"port 0", `{"http":"http://10.0.0.5:0/health"}`, ``, registry.CodeInvalidCheck},
	{"port 99999", `{"http":"http://10.0.0.5:99999/health"}`, ``, registry.CodeInvalidCheck},
	{"empty port", `{"http":"http://10.0.0.5:/health"}`, ``, registry.CodeInvalidCheck},
	{"bad IPv6", `{"http":"http://[::1/health"}`, ``, registry.CodeInvalidCheck},
	{"space in host", `{"http":"http://a b/health"}`, ``, registry.CodeInvalidCheck},
	{"numeric top-level label", `{"http":"http://999.1.1.1/health"}`, ``, registry.CodeInvalidCheck},
	{"control character", `{"http":"http://10.0.0.5/he\u0000alth"}`, ``, registry.CodeInvalidCheck},
	{"URL over 2 KiB", `{"http":"http://10.0.0.5/` + strings.Repeat("a", 2100) + `"}`, ``, registry.CodeInvalidCheck},
	// TCP and gRPC addresses.
	{"tcp without port", `{"tcp":"10.0.0.5"}`, ``, registry.CodeInvalidCheck},
	{"tcp port 0", `{"tcp":"10.0.0.5:0"}`, ``, registry.CodeInvalidCheck},
	{"tcp URL", `{"tcp":"http://10.0.0.5:80"}`, ``, registry.CodeInvalidCheck},
	{"tcp empty", `{"tcp":""}`, ``, registry.CodeInvalidCheck},
	{"grpc without port", `{"grpc":"10.0.0.5"}`, ``, registry.CodeInvalidCheck},
	{"grpc empty service", `{"grpc":"10.0.0.5:9090/"}`, ``, registry.CodeInvalidCheck},
	{"grpc bad service", `{"grpc":"10.0.0.5:9090/a b"}`, ``, registry.CodeInvalidCheck},
	{"grpc service path", `{"grpc":"10.0.0.5:9090/a/b"}`, ``, registry.CodeInvalidCheck},
	// Interval: 1s to 1h.
	{"interval 0", `{"tcp":"10.0.0.5:1","interval":"0s"}`, ``, registry.CodeInvalidCheck},
	{"interval 999ms", `{"tcp":"10.0.0.5:1","interval":"999ms"}`, ``, registry.CodeInvalidCheck},
	{"interval 0.5 seconds", `{"tcp":"10.0.0.5:1","interval":0.5}`, ``, registry.CodeInvalidCheck},
	{"interval over an hour", `{"tcp":"10.0.0.5:1","interval":"1h0m1s"}`, ``, registry.CodeInvalidCheck},
	{"interval negative", `{"tcp":"10.0.0.5:1","interval":-10}`, ``, registry.CodeInvalidCheck},
	{"interval without unit", `{"tcp":"10.0.0.5:1","interval":"10"}`, ``, registry.CodeInvalidCheck},
	{"interval garbage", `{"tcp":"10.0.0.5:1","interval":"soon"}`, ``, registry.CodeInvalidCheck},
	{"interval a bool", `{"tcp":"10.0.0.5:1","interval":true}`, ``, registry.CodeInvalidCheck},
	{"interval huge", `{"tcp":"10.0.0.5:1","interval":1e300}`, ``, registry.CodeInvalidCheck},
	// Timeout: positive, below the interval.
	{"timeout equals interval", `{"tcp":"10.0.0.5:1","interval":"2s","timeout":"2s"}`, ``, registry.CodeInvalidCheck},
	{"timeout above the default interval", `{"tcp":"10.0.0.5:1","timeout":"11s"}`, ``, registry.CodeInvalidCheck},
	{"timeout 0", `{"tcp":"10.0.0.5:1","timeout":0}`, ``, registry.CodeInvalidCheck},
	{"timeout negative", `{"tcp":"10.0.0.5:1","timeout":"-1s"}`, ``, registry.CodeInvalidCheck},
	{"timeout garbage", `{"tcp":"10.0.0.5:1","timeout":"fast"}`, ``, registry.CodeInvalidCheck},
	// Failures: 1 to 100.
	{"failures 0", `{"tcp":"10.0.0.5:1","failures":0}`, ``, registry.CodeInvalidCheck},
	{"failures 101", `{"tcp":"10.0.0.5:1","failures":101}`, ``, registry.CodeInvalidCheck},
	{"failures negative", `{"tcp":"10.0.0.5:1","failures":-3}`, ``, registry.CodeInvalidCheck},
	{"failures fractional", `{"tcp":"10.0.0.5:1","failures":1.5}`, ``, "invalid_json"},
	{"failures a string", `{"tcp":"10.0.0.5:1","failures":"3"}`, ``, "invalid_json"},
	// Settings beside the check (the contract's place for them).
	{"interval beside, out of range", `{"tcp":"10.0.0.5:1"}`, `"interval":"2h"`, registry.CodeInvalidCheck},
	{"timeout beside, above the interval", `{"tcp":"10.0.0.5:1"}`, `"interval":"1s","timeout":"1s"`, registry.CodeInvalidCheck},
	{"failures beside, 0", `{"tcp":"10.0.0.5:1"}`, `"failures":0`, registry.CodeInvalidCheck},
	{"interval in both places", `{"tcp":"10.0.0.5:1","interval":"5s"}`, `"interval":"5s"`, registry.CodeInvalidCheck},
	{"failures in both places", `{"tcp":"10.0.0.5:1","failures":2}`, `"failures":2`, registry.CodeInvalidCheck},
	{"interval without a check", ``, `"interval":"5s"`, registry.CodeInvalidCheck},
	{"timeout without a check", ``, `"timeout":"1s"`, registry.CodeInvalidCheck},
	{"failures without a check", ``, `"failures":3`, registry.CodeInvalidCheck},
	// An IP address outside --check-allowed-cidrs (the default: loopback
	// and private networks) could never be probed: refused at once. Names
	// are checked at each connection (checks/allow.go).
	{"public address", `{"tcp":"8.8.8.8:53"}`, ``, registry.CodeInvalidCheck},
	{"cloud metadata", `{"http":"http://169.254.169.254/latest/meta-data/"}`, ``, registry.CodeInvalidCheck},
	{"cloud metadata, IPv4-mapped", `{"http":"http://[::ffff:169.254.169.254]/"}`, ``, registry.CodeInvalidCheck},
	{"public address, gRPC", `{"grpc":"8.8.8.8:53/svc.A"}`, ``, registry.CodeInvalidCheck},
	{"unspecified address", `{"tcp":"0.0.0.0:22"}`, ``, registry.CodeInvalidCheck},
}

func checkBody(check, extra string) string {
	var members []string
	members = append(members, `"address":"10.0.0.5:8080"`)
	if check != "" {
		members = append(members, `"check":`+check)
	}
	if extra != "" {
		members = append(members, extra)
	}
	return "{" + strings.Join(members, ",") + "}"
}

// TestCheckSpecs: every bad check is 400 with its code and writes nothing
// (no key, record, marker or lease); good ones get the defaults.
func TestCheckSpecs(t *testing.T) {
	m, cli, mark := freshNode(t)
	for _, tc := range badCheckBodies {
		t.Run(tc.name, func(t *testing.T) {
			status, hdr, body := send(t, http.MethodPut, m.URL("/v1/services/db/instances/d1"), checkBody(tc.check, tc.extra))
			if status != http.StatusBadRequest || !isJSON(hdr) {
				t.Fatalf("status %d (%s), want 400 JSON; body %s", status, hdr.Get("Content-Type"), body)
			}
			code, msg := decodeErrorBody(t, body)
			if code != tc.code || msg == "" {
				t.Fatalf("code %q, want %q; body %s", code, tc.code, body)
			}
			if strings.Contains(tc.name, "address") || strings.Contains(tc.name, "metadata") {
				if !strings.Contains(msg, "--check-allowed-cidrs") {
					t.Errorf("message %q does not name --check-allowed-cidrs", msg)
				}
			}
		})
	}
	t.Run("nothing was written", func(t *testing.T) { nothingWritten(t, cli, mark) })

	// Good ones: the defaults, and the TTL rule (registry.CheckTTL, with
	// the test cluster's 750 ms election timeout: 2.5 s for a change of
	// owner).
	for i, tc := range []struct {
		check, extra string
		want         string // the instance's check as JSON
		ttl          int64
	}{
		{`{"tcp":"10.0.0.5:5432"}`, ``, `{"tcp":"10.0.0.5:5432","interval":"10s","timeout":"2s","failures":3}`, 35},
		{`{"http":"https://[::1]:8443/h?x=1"}`, `"interval":"1s"`, `{"http":"https://[::1]:8443/h?x=1","interval":"1s","timeout":"500ms","failures":3}`, 10},
		{`{"grpc":"db.internal:9090/svc.A","interval":90,"timeout":1.5,"failures":100}`, `"ttl":30`, `{"grpc":"db.internal:9090/svc.A","interval":"1m30s","timeout":"1.5s","failures":100}`, 274},
		{`{"http":"http://10.0.0.5/health"}`, `"interval":"3s","timeout":"2500ms","failures":1,"ttl":2`, `{"http":"http://10.0.0.5/health","interval":"3s","timeout":"2.5s","failures":1}`, 14},
		{`{"tcp":"10.0.0.5:1","interval":"1h"}`, ``, `{"tcp":"10.0.0.5:1","interval":"1h0m0s","timeout":"2s","failures":3}`, 10805},
		{`{"tcp":"10.0.0.5:1","interval":"10s"}`, `"ttl":600`, `{"tcp":"10.0.0.5:1","interval":"10s","timeout":"2s","failures":3}`, 600},
	} {
		id := fmt.Sprintf("good%d", i)
		status, _, body := send(t, http.MethodPut, m.URL("/v1/services/db/instances/"+id), checkBody(tc.check, tc.extra))
		if status != http.StatusCreated {
			t.Fatalf("%s: %d %s", tc.check, status, body)
		}
		var raw struct {
			Check  jsonRaw `json:"check"`
			Health *struct{}
			TTL    int64 `json:"ttl"`
		}
		regdtest.MustJSON(t, body, &raw)
		if string(raw.Check) != tc.want || raw.TTL != tc.ttl || raw.Health != nil {
			t.Errorf("%s %s: check %s ttl %d health %v, want %s ttl %d, no health yet", tc.check, tc.extra, raw.Check, raw.TTL, raw.Health, tc.want, tc.ttl)
		}
	}
}

type jsonRaw []byte

func (r *jsonRaw) UnmarshalJSON(b []byte) error { *r = append((*r)[:0], b...); return nil }
