package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/regd/regd/internal/freeport"
	"github.com/regd/regd/internal/regdtest"
)

type targetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

func sdTargets(t *testing.T, m *regdtest.Member, query string) (int, http.Header, []targetGroup, []byte) {
	t.Helper()
	code, h, body := regdtest.Do(t, http.MethodGet, m.URL("/v1/prometheus/targets"+query), nil)
	var groups []targetGroup
	if code == http.StatusOK {
		regdtest.MustJSON(t, body, &groups)
	}
	return code, h, groups, body
}

// TestPrometheusTargets: the http_sd_configs answer, its labels and
// filters, and hostile input to the route.
func TestPrometheusTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	put := func(svc, id string, body map[string]any) {
		t.Helper()
		if code, _, out := regdtest.Do(t, http.MethodPut, m.URL("/v1/services/"+svc+"/instances/"+id), body); code != http.StatusCreated {
			t.Fatalf("register: %d %s", code, out)
		}
	}

	code, h, groups, body := sdTargets(t, m, "")
	if code != http.StatusOK || string(bytes.TrimSpace(body)) != "[]" || h.Get("X-Regd-Revision") == "" {
		t.Fatalf("empty registry: %d %s %v; want 200 [] with a revision", code, body, h)
	}
	put("web", "w2", map[string]any{"address": "[2001:db8::2]:9100", "metadata": map[string]string{"app.kubernetes.io/name": "shop", "app-kubernetes-io-name": "other", "zone": "a", "ünï": "x"}})
	put("web", "w1", map[string]any{"address": "10.0.0.1:9100"})
	put("db", "d1", map[string]any{"address": "db.example.com:9187", "status": "draining"})
	put("api", "a1", map[string]any{"address": "10.0.0.3:9100", "metadata": map[string]string{"zone": "b"}})

	_, _, groups, _ = sdTargets(t, m, "")
	want := []targetGroup{
		{Targets: []string{"10.0.0.3:9100"}, Labels: map[string]string{"__meta_regd_service": "api", "__meta_regd_instance_id": "a1", "__meta_regd_status": "up", "__meta_regd_metadata_zone": "b"}},
		{Targets: []string{"10.0.0.1:9100"}, Labels: map[string]string{"__meta_regd_service": "web", "__meta_regd_instance_id": "w1", "__meta_regd_status": "up"}},
		{Targets: []string{"[2001:db8::2]:9100"}, Labels: map[string]string{"__meta_regd_service": "web", "__meta_regd_instance_id": "w2", "__meta_regd_status": "up",
			// "app-kubernetes-io-name" < "app.kubernetes.io/name": the latter wins
			"__meta_regd_metadata_app_kubernetes_io_name": "shop", "__meta_regd_metadata_zone": "a", "__meta_regd_metadata__n_": "x"}}, // one "_" per character
	}
	if fmt.Sprint(groups) != fmt.Sprint(want) {
		t.Errorf("targets\n%v\nwant\n%v", groups, want)
	}
	for _, tt := range []struct{ query, want string }{
		{"?service=web", "[10.0.0.1:9100 [2001:db8::2]:9100]"},
		{"?service=nope", "[]"},
		{"?status=draining", "[db.example.com:9187]"},
		{"?status=any&service=db", "[db.example.com:9187]"},
		{"?meta.zone=a", "[[2001:db8::2]:9100]"},
		{"?stale", "[10.0.0.3:9100 10.0.0.1:9100 [2001:db8::2]:9100]"},
	} {
		_, _, groups, body := sdTargets(t, m, tt.query)
		var got []string
		for _, g := range groups {
			got = append(got, g.Targets...)
		}
		if fmt.Sprint(got) != tt.want && !(tt.want == "[]" && len(got) == 0) {
			t.Errorf("%s: targets %v, want %s (%s)", tt.query, got, tt.want, body)
		}
	}
	if _, _, groups, _ := sdTargets(t, m, "?status=draining"); len(groups) != 1 || groups[0].Labels["__meta_regd_status"] != "draining" {
		t.Errorf("draining target's labels: %v", groups)
	}

	// Hostile input: 400 with the error JSON, never a 500.
	for _, q := range []string{
		"?service=", "?service=a/b", "?service=" + strings.Repeat("x", 129), "?service=..", "?service=a&service=b",
		"?service=%00", "?status=up&status=any", "?status=bogus", "?status=", "?min_revision=-1", "?min_revision=x",
		"?meta.=x", "?meta.%01=x",
	} {
		code, _, _, body := sdTargets(t, m, q)
		var e struct {
			Error struct{ Code, Message string }
		}
		if code != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || e.Error.Code == "" {
			t.Errorf("%s: %d %s, want 400 with the error JSON", q, code, body)
		}
	}
	if code, _, _ := regdtest.Do(t, http.MethodHead, m.URL("/v1/prometheus/targets"), nil); code != http.StatusOK {
		t.Errorf("HEAD: %d", code)
	}
	if code, h, _ := regdtest.Do(t, http.MethodPost, m.URL("/v1/prometheus/targets"), "[]"); code != http.StatusMethodNotAllowed || !strings.Contains(h.Get("Allow"), "GET") {
		t.Errorf("POST: %d Allow %q, want 405 with Allow", code, h.Get("Allow"))
	}
}

// TestPrometheusScrapesRegistry runs the real Prometheus server (Debian's
// package) with http_sd_configs pointed at regd: its /api/v1/targets lists
// the registered instances with their labels and scrapes them, and drops
// an expired one and a deregistered one.
func TestPrometheusScrapesRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster and Prometheus")
	}
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("the prometheus binary is not installed (Debian package prometheus; .ci/run installs it): the http_sd_configs test needs the real consumer")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]

	// Three scrape targets: tiny HTTP servers that count their scrapes.
	type target struct {
		srv     *httptest.Server
		scrapes atomic.Int64
	}
	targets := map[string]*target{}
	for _, id := range []string{"keep", "expire", "dereg"} {
		tg := &target{}
		tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tg.scrapes.Add(1)
			fmt.Fprintf(w, "# TYPE up_test gauge\nup_test{id=%q} 1\n", id)
		}))
		t.Cleanup(tg.srv.Close)
		targets[id] = tg
		ttl := 60
		if id == "expire" {
			ttl = 2
		}
		body := map[string]any{"address": strings.TrimPrefix(tg.srv.URL, "http://"), "ttl": ttl, "metadata": map[string]string{"team": "core", "app.name": id}}
		if code, _, out := regdtest.Do(t, http.MethodPut, m.URL("/v1/services/shop/instances/"+id), body); code != http.StatusCreated {
			t.Fatalf("register: %d %s", code, out)
		}
	}
	// "expire" is kept alive until the test lets it run out.
	stopBeat := make(chan struct{})
	go func() {
		for {
			select {
			case <-stopBeat:
				return
			case <-time.After(500 * time.Millisecond):
				http.DefaultClient.Do(mustRequest(http.MethodPut, m.URL("/v1/services/shop/instances/expire/heartbeat")))
			}
		}
	}()
	defer func() {
		select {
		case <-stopBeat:
		default:
			close(stopBeat)
		}
	}()

	dir := t.TempDir()
	promAddr := freeport.Addr(t)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 500ms
scrape_configs:
  - job_name: regd
    http_sd_configs:
      - url: %s
        refresh_interval: 1s
`, m.URL("/v1/prometheus/targets"))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus logs:\n%s", logs.String())
		}
	})

	type active struct {
		DiscoveredLabels map[string]string `json:"discoveredLabels"`
		Labels           map[string]string `json:"labels"`
		Health           string            `json:"health"`
	}
	activeTargets := func() (map[string]active, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+promAddr+"/api/v1/targets?state=active", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var out struct {
			Data struct {
				ActiveTargets []active `json:"activeTargets"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return nil, err
		}
		byID := map[string]active{}
		for _, a := range out.Data.ActiveTargets {
			byID[a.DiscoveredLabels["__meta_regd_instance_id"]] = a
		}
		return byID, nil
	}
	ids := func(m map[string]active) []string {
		var out []string
		for id := range m {
			out = append(out, id)
		}
		slices.Sort(out)
		return out
	}

	regdtest.Eventually(t, 30*time.Second, func() error {
		got, err := activeTargets()
		if err != nil {
			return err
		}
		if fmt.Sprint(ids(got)) != "[dereg expire keep]" {
			return fmt.Errorf("active targets %v", ids(got))
		}
		for id, a := range got {
			want := map[string]string{
				"__address__":                   strings.TrimPrefix(targets[id].srv.URL, "http://"),
				"__meta_regd_service":           "shop",
				"__meta_regd_instance_id":       id,
				"__meta_regd_status":            "up",
				"__meta_regd_metadata_team":     "core",
				"__meta_regd_metadata_app_name": id,
				"job":                           "regd",
			}
			for k, v := range want {
				if a.DiscoveredLabels[k] != v {
					return fmt.Errorf("%s: discovered label %s=%q, want %q (all: %v)", id, k, a.DiscoveredLabels[k], v, a.DiscoveredLabels)
				}
			}
			if a.Health != "up" || targets[id].scrapes.Load() == 0 {
				return fmt.Errorf("%s: health %q after %d scrapes", id, a.Health, targets[id].scrapes.Load())
			}
		}
		return nil
	})

	close(stopBeat) // "expire" runs out in 2 s
	if code, _, out := regdtest.Do(t, http.MethodDelete, m.URL("/v1/services/shop/instances/dereg"), nil); code != http.StatusNoContent {
		t.Fatalf("deregister: %d %s", code, out)
	}
	began := time.Now()
	regdtest.Eventually(t, 30*time.Second, func() error {
		got, err := activeTargets()
		if err != nil {
			return err
		}
		if fmt.Sprint(ids(got)) != "[keep]" {
			return fmt.Errorf("active targets %v, want [keep]", ids(got))
		}
		return nil
	})
	t.Logf("Prometheus dropped the deregistered and the expired target %v after", time.Since(began).Round(time.Millisecond))
}

func mustRequest(method, url string) *http.Request {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		panic(err)
	}
	return req
}
