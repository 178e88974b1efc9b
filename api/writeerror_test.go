package api_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/regd/regd/api"
	"github.com/regd/regd/registry"
)

// TestWriteError: the exported error exit answers exactly as the API's own
// does: the contract's error JSON with the status of the error's kind, the
// same headers and no body for HEAD, and a generic 500 that leaks nothing
// for an error that is not a registry error.
func TestWriteError(t *testing.T) {
	unwritable := &registry.Error{Kind: registry.KindUnavailable, Code: registry.CodeStorageUnwritable,
		Message: "this node cannot write its data dir", Err: errors.New(secret)}
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"registry error", unwritable, http.StatusServiceUnavailable, registry.CodeStorageUnwritable},
		{"not found", registry.Errorf(registry.KindNotFound, registry.CodeNotFound, "gone"), http.StatusNotFound, registry.CodeNotFound},
		{"plain error", errors.New(secret), http.StatusInternalServerError, registry.CodeInternal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			get := httptest.NewRecorder()
			api.WriteError(get, httptest.NewRequest(http.MethodGet, "/v1/services", nil), tc.err)
			if get.Code != tc.status || !isJSON(get.Header()) {
				t.Fatalf("GET: %d %q, want %d application/json", get.Code, get.Header().Get("Content-Type"), tc.status)
			}
			code, message := decodeErrorBody(t, get.Body.Bytes())
			if code != tc.code || strings.Contains(message, secret) {
				t.Fatalf("GET: code %q message %q, want code %q and no internal detail", code, message, tc.code)
			}
			if cl := get.Header().Get("Content-Length"); cl != strconv.Itoa(get.Body.Len()) {
				t.Fatalf("GET: Content-Length %q for a body of %d bytes", cl, get.Body.Len())
			}

			head := httptest.NewRecorder()
			api.WriteError(head, httptest.NewRequest(http.MethodHead, "/v1/services", nil), tc.err)
			if head.Code != tc.status || head.Body.Len() != 0 {
				t.Fatalf("HEAD: %d with %d body bytes, want %d and none", head.Code, head.Body.Len(), tc.status)
			}
			for _, h := range []string{"Content-Type", "Content-Length"} {
				if head.Header().Get(h) != get.Header().Get(h) {
					t.Fatalf("HEAD: %s %q, GET has %q", h, head.Header().Get(h), get.Header().Get(h))
				}
			}
		})
	}
}
