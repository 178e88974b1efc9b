package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/regd/regd/api"
	"github.com/regd/regd/registry"
)

// failingRegistry is a fake of the API's own Registry interface: Get, the
// method the test calls, fails with err. It stands in for the domain, not
// for etcd. The embedded nil interface keeps it compiling as the interface
// grows; any other method would panic, which the test would show.
type failingRegistry struct {
	api.Registry
	err error
}

func (f failingRegistry) Get(context.Context, string, string) (registry.Instance, error) {
	return registry.Instance{}, f.err
}

type readyCluster struct{ api.Cluster }

func (readyCluster) Ready() error { return nil }

// secret is text that must never reach a client.
const secret = "s3cr3t-dial-tcp-10.9.9.9:2379"

// decodeErrorBody checks that body is exactly {"error":{"code":...,"message":...}}
// with both strings non-empty, and returns code and message.
func decodeErrorBody(t *testing.T, body []byte) (code, message string) {
	t.Helper()
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(body, &outer); err != nil {
		t.Fatalf("error body %q is not a JSON object: %v", body, err)
	}
	if len(outer) != 1 || outer["error"] == nil {
		t.Fatalf("error body %s: want exactly one member, \"error\"", body)
	}
	var inner map[string]any
	if err := json.Unmarshal(outer["error"], &inner); err != nil {
		t.Fatalf("error body %s: \"error\" is not an object: %v", body, err)
	}
	if len(inner) != 2 {
		t.Fatalf("error body %s: want exactly \"code\" and \"message\"", body)
	}
	code, okc := inner["code"].(string)
	message, okm := inner["message"].(string)
	if !okc || !okm || code == "" || message == "" {
		t.Fatalf("error body %s: code and message must be non-empty strings", body)
	}
	return code, message
}

func isJSON(h http.Header) bool {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

func TestErrorStatusMap(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		code   string
	}{
		// Every kind of registry error.
		{"invalid", registry.Errorf(registry.KindInvalid, registry.CodeInvalidAddress, "bad address"), 400, registry.CodeInvalidAddress},
		{"not found", registry.Errorf(registry.KindNotFound, registry.CodeNotFound, "no such instance"), 404, registry.CodeNotFound},
		{"conflict", registry.Errorf(registry.KindConflict, registry.CodeNoLease, "no lease"), 409, registry.CodeNoLease},
		{"too large", registry.Errorf(registry.KindTooLarge, "body_too_large", "too big"), 413, "body_too_large"},
		{"too many", registry.Errorf(registry.KindTooMany, "too_many_streams", "slow down"), 429, "too_many_streams"},
		{"unavailable", registry.Errorf(registry.KindUnavailable, registry.CodeUnavailable, "no quorum"), 503, registry.CodeUnavailable},
		{"internal with cause", &registry.Error{Kind: registry.KindInternal, Code: "boom_" + secret, Message: "failed: " + secret, Err: errors.New(secret)}, 500, registry.CodeInternal},
		{"unknown kind", &registry.Error{Kind: registry.Kind(99), Code: "weird", Message: secret}, 500, registry.CodeInternal},
		{"wrapped registry error", fmt.Errorf("store: %w", registry.Errorf(registry.KindNotFound, registry.CodeNotFound, "gone")), 404, registry.CodeNotFound},

		// Errors that are not registry errors.
		{"plain error", errors.New(secret), 500, registry.CodeInternal},
		{"deadline exceeded", context.DeadlineExceeded, 503, registry.CodeUnavailable},
		{"wrapped deadline exceeded", fmt.Errorf("grant: %w", context.DeadlineExceeded), 503, registry.CodeUnavailable},
		{"canceled", context.Canceled, 503, registry.CodeUnavailable},
		{"gRPC no leader", rpctypes.ErrGRPCNoLeader, 503, registry.CodeUnavailable},
		{"gRPC request timed out", rpctypes.ErrGRPCTimeout, 503, registry.CodeUnavailable},
		{"gRPC unavailable status", status.Error(codes.Unavailable, "connection refused"), 503, registry.CodeUnavailable},
		{"gRPC lease not found", rpctypes.ErrGRPCLeaseNotFound, 404, registry.CodeNotFound},
		{"client lease not found", rpctypes.ErrLeaseNotFound, 404, registry.CodeNotFound},
		{"gRPC no space", rpctypes.ErrGRPCNoSpace, 503, registry.CodeStorageFull},
		{"client no space", rpctypes.ErrNoSpace, 503, registry.CodeStorageFull},
		{"gRPC unknown status", status.Error(codes.Unknown, secret), 500, registry.CodeInternal},

		// clientv3 (and the in-process v3client) turns gRPC status errors
		// into rpctypes.EtcdError values (clientv3.ContextError), which
		// carry no gRPC status: registry.fromEtcd misses them.
		{"client no leader", rpctypes.ErrNoLeader, 503, registry.CodeUnavailable},
		{"client request timed out", rpctypes.ErrTimeout, 503, registry.CodeUnavailable},
		{"client leader changed", rpctypes.ErrLeaderChanged, 503, registry.CodeUnavailable},
		{"client server stopped", rpctypes.ErrStopped, 503, registry.CodeUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := api.New(api.Config{Registry: failingRegistry{err: tc.err}, Cluster: readyCluster{}})
			ts := httptest.NewServer(s.Handler())
			defer ts.Close()

			resp, err := http.Get(ts.URL + "/v1/services/user/instances/u1")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			if !isJSON(resp.Header) {
				t.Fatalf("Content-Type %q, want application/json", resp.Header.Get("Content-Type"))
			}
			code, message := decodeErrorBody(t, body)
			if code != tc.code {
				t.Fatalf("code %q, want %q; body %s", code, tc.code, body)
			}
			if tc.status == http.StatusInternalServerError && (strings.Contains(message, secret) || strings.Contains(message, "s3cr3t")) {
				t.Fatalf("a 500 leaks the internal error: %s", body)
			}
		})
	}
}
