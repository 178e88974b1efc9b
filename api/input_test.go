package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/regd/regd/api"
	"github.com/regd/regd/registry"
)

// limitRecorder remembers the limit (and the before) the API asked the
// ledger for.
type limitRecorder struct{ limit, before atomic.Int64 }

func (r *limitRecorder) Expirations(_ context.Context, q registry.ExpirationQuery) ([]registry.Expiration, error) {
	r.limit.Store(int64(q.Limit))
	r.before.Store(q.Before)
	return []registry.Expiration{}, nil
}

// expirationsServer is an API whose ledger records the queries it gets.
func expirationsServer(t *testing.T) (*limitRecorder, *httptest.Server) {
	ledger := &limitRecorder{}
	cfg := withFakes(api.Config{})
	cfg.Expirations = ledger
	ts := httptest.NewServer(api.New(cfg).Handler())
	t.Cleanup(ts.Close)
	return ledger, ts
}

// TestExpirationsLimit: ?limit= is a whole number from 1; above the
// maximum it is clamped to it (the contract), even beyond what an int
// holds; anything else is 400 invalid_parameter.
func TestExpirationsLimit(t *testing.T) {
	ledger, ts := expirationsServer(t)

	for _, tc := range []struct {
		query string
		want  int64 // 0: 400
	}{
		{"", api.DefaultExpirationsLimit},
		{"limit=1", 1},
		{"limit=%2B7", 7},
		{"limit=10000", api.MaxExpirationsLimit},
		{"limit=10001", api.MaxExpirationsLimit},
		{"limit=100000", api.MaxExpirationsLimit},
		{"limit=99999999999999999999", api.MaxExpirationsLimit},
		{"limit=0", 0},
		{"limit=-1", 0},
		{"limit=-99999999999999999999", 0},
		{"limit=abc", 0},
		{"limit=1e5", 0},
		{"limit=5.0", 0},
		{"limit=", api.DefaultExpirationsLimit},
	} {
		ledger.limit.Store(-1)
		status, _, body := call(t, http.MethodGet, ts.URL+"/v1/expirations?"+tc.query, "", "")
		switch {
		case tc.want == 0:
			if code, _ := decodeErrorBody(t, body); status != http.StatusBadRequest || code != registry.CodeInvalidParameter {
				t.Errorf("%q: %d %s, want 400 invalid_parameter", tc.query, status, body)
			}
			if ledger.limit.Load() != -1 {
				t.Errorf("%q: the ledger was read after a 400", tc.query)
			}
		case status != http.StatusOK || ledger.limit.Load() != tc.want:
			t.Errorf("%q: %d, the ledger was asked for %d; want 200 and %d", tc.query, status, ledger.limit.Load(), tc.want)
		}
	}
}

// TestExpirationsBefore: ?before= is a revision from 1 (one beyond int64
// bounds nothing); anything else is 400 invalid_parameter, the ledger
// untouched.
func TestExpirationsBefore(t *testing.T) {
	ledger, ts := expirationsServer(t)

	for _, tc := range []struct {
		query string
		want  int64 // -1: 400
	}{
		{"", 0},
		{"before=", 0},
		{"before=1", 1},
		{"before=123456", 123456},
		{"before=9223372036854775807", 9223372036854775807},
		{"before=99999999999999999999", 0},
		{"before=0", -1},
		{"before=-5", -1},
		{"before=-99999999999999999999", -1},
		{"before=abc", -1},
		{"before=1.5", -1},
		{"before=1e3", -1},
	} {
		ledger.limit.Store(-1)
		ledger.before.Store(-1)
		status, _, body := call(t, http.MethodGet, ts.URL+"/v1/expirations?"+tc.query, "", "")
		switch {
		case tc.want == -1:
			if code, _ := decodeErrorBody(t, body); status != http.StatusBadRequest || code != registry.CodeInvalidParameter {
				t.Errorf("%q: %d %s, want 400 invalid_parameter", tc.query, status, body)
			}
			if ledger.limit.Load() != -1 {
				t.Errorf("%q: the ledger was read after a 400", tc.query)
			}
		case status != http.StatusOK || ledger.before.Load() != tc.want:
			t.Errorf("%q: %d, the ledger was asked for before=%d; want 200 and %d", tc.query, status, ledger.before.Load(), tc.want)
		}
	}
}

// TestRegisterMetadataNull: a metadata value is a string; null is refused
// with invalid_metadata naming the key (encoding/json alone would store ""),
// while "" stays a valid value and a null metadata object means none.
func TestRegisterMetadataNull(t *testing.T) {
	_, ts := newFakeAPI(t, api.Config{Registry: validatingRegistry{}})
	url := ts.URL + "/v1/services/user/instances/u1"
	for _, tc := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"address":"x:80","metadata":{"zone":null}}`, 400, registry.CodeInvalidMetadata},
		{`{"address":"x:80","metadata":{"a":"1","zone":null,"b":""}}`, 400, registry.CodeInvalidMetadata},
		{`{"address":"x:80","metadata":{"zone":""}}`, 201, ""},
		{`{"address":"x:80","metadata":{"zone":"null"}}`, 201, ""},
		{`{"address":"x:80","metadata":null}`, 201, ""},
		{`{"address":"x:80","metadata":{"zone":""},"tll":null}`, 400, registry.CodeInvalidJSON},
	} {
		status, _, body := call(t, http.MethodPut, url, "", tc.body)
		if status != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.body, status, body, tc.status)
			continue
		}
		if tc.code == "" {
			continue
		}
		code, message := decodeErrorBody(t, body)
		if code != tc.code {
			t.Errorf("%s: code %q, want %q", tc.body, code, tc.code)
		}
		if tc.code == registry.CodeInvalidMetadata && !strings.Contains(message, `"zone"`) {
			t.Errorf("%s: the message %q does not name the key", tc.body, message)
		}
	}
}
