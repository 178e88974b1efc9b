package api_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/regd/regd/api"
)

// TestPprof: the profiler is served only when enabled.
func TestPprof(t *testing.T) {
	for _, tc := range []struct {
		name    string
		enabled bool
		path    string
		status  int
		body    string
	}{
		{"index when enabled", true, "/debug/pprof/", http.StatusOK, "goroutine"},
		{"named profile when enabled", true, "/debug/pprof/goroutine?debug=1", http.StatusOK, "goroutine profile"},
		{"cmdline when enabled", true, "/debug/pprof/cmdline", http.StatusOK, ""},
		{"index when disabled", false, "/debug/pprof/", http.StatusNotFound, "route_not_found"},
		{"cpu profile when disabled", false, "/debug/pprof/profile?seconds=1", http.StatusNotFound, "route_not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(api.New(api.Config{Cluster: readyCluster{}, EnablePprof: tc.enabled}).Handler())
			defer srv.Close()
			resp, err := srv.Client().Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.body) {
				t.Fatalf("GET %s: %d %.200s; want %d containing %q", tc.path, resp.StatusCode, b, tc.status, tc.body)
			}
		})
	}
}
