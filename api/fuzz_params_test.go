package api_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/regd/regd/api"
	"github.com/regd/regd/registry"
)

// paramRegistry and paramView answer at once, from canned data at revision
// paramRev; the view never changes, so a blocking query waits its whole wait.
const paramRev = 5

type paramRegistry struct{ api.Registry }

func (paramRegistry) Revision(context.Context) (int64, error) { return paramRev, nil }

type paramView struct{ api.View }

func (paramView) WaitRev(context.Context, int64) error { return nil }
func (paramView) Rev() int64                           { return paramRev }
func (paramView) InstancesJSON(string, registry.Filter) ([]byte, int64, bool) {
	return []byte("[]"), paramRev, true
}
func (paramView) Block(string, registry.Filter, int64) *registry.Waiter { return nil }
func (paramView) Services() registry.ServiceList {
	return registry.ServiceList{Services: []registry.ServiceSummary{}, Revision: paramRev}
}
func (paramView) Changed(string) (int64, <-chan struct{}) { return paramRev, nil }
func (paramView) List(service string, _ registry.Filter) registry.InstanceList {
	return registry.InstanceList{Service: service, Instances: []registry.Instance{}, Revision: paramRev}
}

// Streams cannot be opened on this fake: a valid watch request gets as far
// as subscribing and answers 503.
func (paramView) Subscribe(context.Context, string, registry.Filter, registry.EventID) (*registry.Subscription, error) {
	return nil, registry.ErrViewClosed
}
func (paramView) SubscribeFromList(context.Context, string, registry.Filter) (registry.InstanceList, *registry.Subscription, error) {
	return registry.InstanceList{}, nil, registry.ErrViewClosed
}

type paramExpirations struct{}

func (paramExpirations) Expirations(context.Context, registry.ExpirationQuery) ([]registry.Expiration, error) {
	return []registry.Expiration{}, nil
}

// paramRoutes are the routes that read query parameters or Last-Event-ID.
var paramRoutes = []string{
	"/v1/services/user/instances",
	"/v1/services",
	"/v1/services/user/watch",
	"/v1/watch",
	"/v1/expirations",
}

// FuzzQueryParams sends arbitrary query strings and Last-Event-ID headers
// to the routes that parse them: the answer is never a 5xx but the fake's
// 503, a 400 exactly when a parameter is malformed (checked against the
// contract's rules, written out independently below), and a blocking query
// holds for its wait, capped at 300 s, whatever number it is given.
func FuzzQueryParams(f *testing.F) {
	for _, seed := range []struct {
		route      uint8
		query, lei string
	}{
		{0, "", ""},
		{0, "index=3&wait=30s", ""},
		{0, "index=9&wait=2", ""},
		{0, "index=9&wait=9223372036", ""},
		{0, "index=9&wait=99999999999999999999s", ""},
		{0, "index=-1", ""},
		{0, "index=x&wait=5m", ""},
		{0, "wait=-1s", ""},
		{0, "stale&min_revision=4", ""},
		{1, "index=6&wait=1h", ""},
		{1, "min_revision=18446744073709551616", ""},
		{2, "", "7"},
		{2, "after=7", ""},
		{2, "reset=1", "-3"},
		{3, "after=%zz", "x"},
		{2, "", "7.0"},
		{2, "after=7.12", ""},
		{3, "", "7."},
		{3, "", ".3"},
		{3, "", "7.-1"},
		{3, "", "7.1.2"},
		{2, "", "+7"},
		{0, "status=any&meta.zone=a&meta.zone=b", ""},
		{0, "status=up&status=any", ""},
		{0, "status=", ""},
		{0, "meta.=x", ""},
		{2, "meta.%ff=x", ""},
		{3, "status=draining&meta.a%00b=1", ""},
		{1, "status=bogus&meta.=x", ""},
		{2, "", "7.1073741825"},
		{4, "limit=0", ""},
		{4, "limit=10000&service=user", ""},
		{4, "service=..", ""},
		{4, "limit=+5", ""},
		{4, "limit=100000", ""},
		{4, "limit=99999999999999999999", ""},
		{4, "limit=-99999999999999999999", ""},
		{4, "before=0", ""},
		{4, "before=17&limit=2", ""},
		{4, "before=x", ""},
	} {
		f.Add(seed.route, seed.query, seed.lei)
	}
	srv := api.New(api.Config{
		Registry:    paramRegistry{},
		View:        paramView{},
		Cluster:     readyCluster{},
		Expirations: paramExpirations{},
	}).Handler()
	f.Fuzz(func(t *testing.T, route uint8, query, lastEventID string) {
		path := paramRoutes[int(route)%len(paramRoutes)]
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.URL.RawQuery = query
		if lastEventID != "" {
			req.Header.Set("Last-Event-ID", lastEventID)
		}
		q, _ := url.ParseQuery(query) // what the server sees, errors and all
		want400, wait := contractCheck(path, q, lastEventID)
		blocks := wait >= 50*time.Millisecond && !want400 && isList(path) && revisionParamOK(q.Get("index")) && mustInt(q.Get("index")) > paramRev

		// A blocking query is cut short by the request's context; it
		// must not end on its own before that.
		hold := 5 * time.Millisecond
		began := time.Now() // before the deadline is set: took >= hold
		ctx, cancel := context.WithTimeout(context.Background(), hold)
		defer cancel()
		if !blocks {
			cancel()
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req.WithContext(ctx))
		took := time.Since(began)

		body := rec.Body.String()
		switch {
		case rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable:
			t.Fatalf("%s?%s (Last-Event-ID %q): %d %s", path, query, lastEventID, rec.Code, body)
		case rec.Code >= 400 && !strings.Contains(body, `"error":{"code":`):
			t.Fatalf("%s?%s: %d without the error JSON: %s", path, query, rec.Code, body)
		case rec.Code == http.StatusBadRequest && !want400:
			t.Fatalf("%s?%s (Last-Event-ID %q): 400 for parameters the contract accepts: %s", path, query, lastEventID, body)
		case rec.Code != http.StatusBadRequest && want400:
			t.Fatalf("%s?%s (Last-Event-ID %q): %d for malformed parameters, want 400: %s", path, query, lastEventID, rec.Code, body)
		case blocks && took < hold:
			t.Fatalf("%s?%s: a blocking query with wait %v returned after %v", path, query, wait, took)
		}
	})
}

func isList(path string) bool { return path == paramRoutes[0] || path == paramRoutes[1] }

// contractCheck applies the contract's rules to the parameters a route
// reads: whether the request must be a 400, and the blocking wait it asks
// for (default 60 s, capped at 300 s).
func contractCheck(path string, q url.Values, lastEventID string) (bad bool, wait time.Duration) {
	switch {
	case isList(path):
		if !revisionParamOK(q.Get("index")) || !revisionParamOK(q.Get("min_revision")) {
			return true, 0
		}
		// A revision beyond the cluster's (the fake's paramRev) is no
		// revision yet: future_revision.
		if mr := q.Get("min_revision"); mr != "" && mustInt(mr) > paramRev {
			return true, 0
		}
		if path == paramRoutes[0] && !filterOK(q) {
			return true, 0
		}
		wait = 60 * time.Second
		if w := q.Get("wait"); w != "" {
			d, ok := waitOK(w)
			if !ok {
				return true, 0
			}
			wait = min(d, 300*time.Second)
		}
		return false, wait
	case strings.HasSuffix(path, "/watch"):
		v := lastEventID
		if v == "" {
			v = q.Get("after")
		}
		return !eventIDOK(v) || !filterOK(q), 0
	default: // expirations
		if s := q.Get("service"); s != "" && registry.ValidateService(s) != nil {
			return true, 0
		}
		// A whole number from 1; above the maximum (even beyond an
		// int) it is clamped, not refused.
		if l := q.Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			tooBig := errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(l, "-")
			if !tooBig && (err != nil || n < 1) {
				return true, 0
			}
		}
		// before: a revision from 1; one beyond int64 bounds nothing.
		if b := q.Get("before"); b != "" {
			n, err := strconv.ParseInt(b, 10, 64)
			tooBig := errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(b, "-")
			if !tooBig && (err != nil || n < 1) {
				return true, 0
			}
		}
		return false, 0
	}
}

// revisionParamOK: absent, or a whole number >= 0 that fits a revision.
func revisionParamOK(v string) bool {
	if v == "" {
		return true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return err == nil && n >= 0
}

// filterOK: the instance filters of the contract: status given at most
// once, one of up, draining, out_of_service, any; meta.<key> keys 1-128
// bytes of printable UTF-8, at most 64 terms (repeats count).
func filterOK(q url.Values) bool {
	if vs, ok := q["status"]; ok {
		if len(vs) != 1 || !slices.Contains([]string{"up", "draining", "out_of_service", "any"}, vs[0]) {
			return false
		}
	}
	terms := 0
	for k, vs := range q {
		key, ok := strings.CutPrefix(k, "meta.")
		if !ok {
			continue
		}
		terms += len(vs)
		if len(vs) == 0 {
			continue
		}
		if key == "" || len(key) > 128 || !utf8.ValidString(key) {
			return false
		}
		for _, r := range key {
			if r < 0x20 || r == 0x7f {
				return false
			}
		}
	}
	return terms <= 64
}

// eventIDOK: absent, or an event id: "<revision>" or "<revision>.<index>",
// digits only (no sign), the revision fitting an int64 and the index at
// most 2^30.
func eventIDOK(v string) bool {
	if v == "" {
		return true
	}
	rev, idx, dotted := strings.Cut(v, ".")
	digits := func(s string) bool {
		return s != "" && strings.Trim(s, "0123456789") == ""
	}
	if !digits(rev) {
		return false
	}
	if _, err := strconv.ParseInt(rev, 10, 64); err != nil {
		return false
	}
	if !dotted {
		return true
	}
	if !digits(idx) {
		return false
	}
	n, err := strconv.ParseInt(idx, 10, 64)
	return err == nil && n <= 1<<30
}

func mustInt(v string) int64 {
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// waitOK: bare seconds or a Go duration, not negative. A number of
// seconds too large for a Duration is still a valid wait: it is capped.
func waitOK(w string) (time.Duration, bool) {
	if n, err := strconv.Atoi(w); err == nil && n >= 0 {
		return time.Duration(min(n, 300)) * time.Second, true
	}
	d, err := time.ParseDuration(w)
	if err != nil || d < 0 {
		return 0, false
	}
	return d, true
}
