package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// asyncResult is the outcome of a request made in the background.
type asyncResult struct {
	code    int
	hdr     http.Header
	body    []byte
	err     error
	elapsed time.Duration
	at      time.Time // when the whole answer was read
}

// asyncGet sends GET url in a goroutine; the result arrives on the channel.
// It must not call t: the test may have moved on.
func asyncGet(ctx context.Context, url string) <-chan asyncResult {
	ch := make(chan asyncResult, 1)
	go func() {
		begin := time.Now()
		var r asyncResult
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err == nil {
			var resp *http.Response
			if resp, err = sseClient.Do(req); err == nil {
				r.code, r.hdr = resp.StatusCode, resp.Header
				r.body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
		}
		r.at = time.Now()
		r.err, r.elapsed = err, r.at.Sub(begin)
		ch <- r
	}()
	return ch
}

// stillPending fails the test if the background request has returned. It
// looks once: call it after a positive marker that whatever could have
// woken the request has been through the server (viewApplied).
func stillPending(t *testing.T, ch <-chan asyncResult, why string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("blocking query returned after %s (%s): %d %s %v", r.elapsed, why, r.code, r.body, r.err)
	default:
	}
}

// viewApplied waits until m's view has applied rev. The view wakes the
// blocking queries a write concerns while it applies the write, so after
// this a query that is still registered as waiting was not woken by it.
func viewApplied(t *testing.T, m *regdtest.Member, rev int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Server().View().WaitRev(ctx, rev); err != nil {
		t.Fatalf("%s's view did not apply revision %d: %v", m.Name, rev, err)
	}
}

// await waits up to d for the background request's result.
func await(t *testing.T, ch <-chan asyncResult, d time.Duration, what string) asyncResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(d):
		t.Fatalf("%s: no answer within %s", what, d)
	}
	panic("unreachable")
}

// decodeList checks a 200 list answer (body revision equal to the header,
// both > 0) and decodes it.
func decodeList[T registry.InstanceList | registry.ServiceList](t *testing.T, code int, hdr http.Header, body []byte) T {
	t.Helper()
	if code != http.StatusOK {
		t.Fatalf("list: %d %s", code, body)
	}
	var out T
	regdtest.MustJSON(t, body, &out)
	var rev int64
	switch l := any(out).(type) {
	case registry.InstanceList:
		rev = l.Revision
	case registry.ServiceList:
		rev = l.Revision
	}
	if h := headerRev(t, hdr); rev != h {
		t.Fatalf("list: body revision %d, X-Regd-Revision %d", rev, h)
	}
	return out
}

func listInstances(t *testing.T, m *regdtest.Member, service, query string) registry.InstanceList {
	t.Helper()
	code, hdr, body := regdtest.Do(t, http.MethodGet, m.URL("/v1/services/"+service+"/instances"+query), nil)
	return decodeList[registry.InstanceList](t, code, hdr, body)
}

func ids(l registry.InstanceList) string {
	var out []string
	for _, inst := range l.Instances {
		out = append(out, inst.ID)
	}
	return strings.Join(out, ",")
}

func TestBlockingQueries(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	base := m.URL("/v1/services/web/instances")

	// First, while the cluster is quiet (no registration yet, so the
	// expiry reporter has no cursor to move; StartCluster waited for the
	// check owner's claim): a wait that ends answers the same list at the
	// same revision.
	l := listInstances(t, m, "web", "")
	r0 := l.Revision
	if r0 < 1 || len(l.Instances) != 0 {
		t.Fatalf("empty service: %+v", l)
	}
	begin := time.Now()
	timedOut := listInstances(t, m, "web", fmt.Sprintf("?index=%d&wait=1s", r0))
	if d := time.Since(begin); d < 900*time.Millisecond || d > 3*time.Second {
		t.Fatalf("?index=%d&wait=1s answered after %s, want about 1s", r0, d)
	}
	if timedOut.Revision != r0 || len(timedOut.Instances) != 0 {
		t.Fatalf("after the wait: %+v, want the same empty list at %d", timedOut, r0)
	}
	// Bare seconds are a wait too.
	begin = time.Now()
	listInstances(t, m, "web", fmt.Sprintf("?index=%d&wait=1", r0))
	if d := time.Since(begin); d < 900*time.Millisecond || d > 3*time.Second {
		t.Fatalf("?wait=1 answered after %s, want about 1s", d)
	}

	w0 := wRegister(t, m, "web", "w0", "10.1.0.1:80", 120)
	l = listInstances(t, m, "web", "")
	r := l.Revision
	if r < w0.Revision || ids(l) != "w0" {
		t.Fatalf("list after registering w0: %+v", l)
	}

	t.Run("WakesOnlyOnItsService", func(t *testing.T) {
		blocked := asyncGet(context.Background(), fmt.Sprintf("%s?index=%d&wait=5s", base, r))
		waitWaiting(t, m, "web", 1)
		notWoken := func(why string, marker int64) {
			t.Helper()
			viewApplied(t, m, marker)
			if n := m.Server().View().Waiting("web"); n != 1 {
				t.Fatalf("%s: %d blocking queries of web still wait, want 1", why, n)
			}
			stillPending(t, blocked, why)
		}
		o := wRegister(t, m, "other", "o1", "10.1.0.9:80", 120)
		notWoken("a change to another service", o.Revision)
		if code, _, body := regdtest.Do(t, http.MethodPut, m.URL("/v1/services/web/instances/w0/heartbeat"), nil); code != http.StatusOK {
			t.Fatalf("heartbeat: %d %s", code, body)
		}
		// A later write elsewhere is the marker that the view has seen
		// whatever the heartbeat wrote.
		o2 := wRegister(t, m, "other", "o2", "10.1.0.10:80", 120)
		notWoken("a heartbeat", o2.Revision)
		registered := time.Now()
		w1 := wRegister(t, m, "web", "w1", "10.1.0.2:80", 120)
		res := await(t, blocked, 2*time.Second, "blocking query after a change to its service")
		if res.err != nil {
			t.Fatal(res.err)
		}
		got := decodeList[registry.InstanceList](t, res.code, res.hdr, res.body)
		if ids(got) != "w0,w1" || got.Revision < w1.Revision || got.Revision <= r {
			t.Fatalf("woken list %+v; want w0,w1 at a revision >= %d", got, w1.Revision)
		}
		if got.Revision <= o2.Revision {
			t.Fatalf("woken list at %d, before the other service's change at %d", got.Revision, o2.Revision)
		}
		t.Logf("woken %s after the registration", time.Since(registered).Round(time.Millisecond))
		r = got.Revision
	})

	t.Run("IndexAlreadyPassed", func(t *testing.T) {
		// An index older than the service's last change answers at once.
		begin := time.Now()
		got := listInstances(t, m, "web", fmt.Sprintf("?index=%d&wait=5s", w0.Revision-1))
		if time.Since(begin) > 2*time.Second || ids(got) != "w0,w1" {
			t.Fatalf("stale index: %+v after %s", got, time.Since(begin))
		}
	})

	t.Run("WaitIsCapped", func(t *testing.T) {
		for _, w := range []string{"1h", "301s", "100000"} {
			got := listInstances(t, m, "web", "?wait="+w) // no index: answers at once
			if ids(got) != "w0,w1" {
				t.Fatalf("?wait=%s: %+v", w, got)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		blocked := asyncGet(ctx, fmt.Sprintf("%s?index=%d&wait=1h", base, r))
		// Accepted, not refused: it waits inside its handler.
		waitWaiting(t, m, "web", 1)
		stillPending(t, blocked, "wait=1h must be accepted and capped, not refused")
		cancel()
		await(t, blocked, 5*time.Second, "cancelled request")
	})

	t.Run("MalformedParameters", func(t *testing.T) {
		for _, path := range []string{"/v1/services/web/instances", "/v1/services"} {
			for _, q := range []string{"index=abc", "index=-1", "index=1.5", "wait=soon", "wait=-5s", "wait=-5", "min_revision=x", "min_revision=-2"} {
				code, hdr, body := regdtest.Do(t, http.MethodGet, m.URL(path+"?"+q), nil)
				if code != http.StatusBadRequest || wErrorCode(body) != "invalid_parameter" || !isJSONType(hdr) {
					t.Errorf("GET %s?%s: %d %s, want 400 invalid_parameter", path, q, code, body)
				}
			}
		}
	})

	t.Run("ServiceList", func(t *testing.T) {
		code, hdr, body := regdtest.Do(t, http.MethodGet, m.URL("/v1/services"), nil)
		sl := decodeList[registry.ServiceList](t, code, hdr, body)
		blocked := asyncGet(context.Background(), fmt.Sprintf("%s?index=%d&wait=5s", m.URL("/v1/services"), sl.Revision))
		// Re-registering changes no name and no count.
		re := wRegister(t, m, "web", "w1", "10.1.0.3:80", 120)
		viewApplied(t, m, re.Revision)
		if changed, _ := m.Server().View().Changed(""); changed != sl.Revision {
			t.Fatalf("the view counts the re-registration at %d as a change of the service list (listed at %d)", changed, sl.Revision)
		}
		stillPending(t, blocked, "a re-registration changes no count")
		n := wRegister(t, m, "newsvc", "n1", "10.1.0.4:80", 120)
		res := await(t, blocked, 2*time.Second, "blocking service list after a new service")
		if res.err != nil {
			t.Fatal(res.err)
		}
		got := decodeList[registry.ServiceList](t, res.code, res.hdr, res.body)
		if got.Revision < n.Revision || fmt.Sprint(got.Services) != "[{newsvc 1 1} {other 2 2} {web 2 2}]" {
			t.Fatalf("woken service list %+v; want newsvc, other, web at >= %d", got, n.Revision)
		}
	})
}

func isJSONType(h http.Header) bool {
	return strings.HasPrefix(h.Get("Content-Type"), "application/json")
}

// requestsServed is regd_http_requests_total for GET route with status 200.
func requestsServed(t *testing.T, m *regdtest.Member, route string) int {
	t.Helper()
	code, _, body := regdtest.Do(t, http.MethodGet, m.URL("/metrics"), nil)
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "regd_http_requests_total{") && strings.Contains(line, `route="`+route+`"`) &&
			strings.Contains(line, `method="GET"`) && strings.Contains(line, `code="200"`) {
			f := strings.Fields(line)
			n, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metrics line %q", line)
			}
			return int(n)
		}
	}
	return 0
}

// TestBlockingQueryShutdown: an abandoned blocking query is freed at once,
// and a shutdown ends the ones still blocked instead of waiting them out.
func TestBlockingQueryShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	const route = "/v1/services/:service/instances"
	l := listInstances(t, m, "sd", "")
	url := fmt.Sprintf("%s?index=%d&wait=60s", m.URL("/v1/services/sd/instances"), l.Revision)
	served := requestsServed(t, m, route)
	if served < 1 {
		t.Fatalf("regd_http_requests_total for %s is %d after a list", route, served)
	}

	abandonCtx, abandon := context.WithCancel(context.Background())
	abandoned := asyncGet(abandonCtx, url)
	blocked := asyncGet(context.Background(), url)
	// Both wait inside the handler (the positive marker), and nothing
	// changed to wake them.
	waitWaiting(t, m, "sd", 2)
	stillPending(t, abandoned, "nothing changed")
	stillPending(t, blocked, "nothing changed")
	abandon()
	if res := await(t, abandoned, 5*time.Second, "abandoned request"); res.err == nil {
		t.Fatalf("abandoned request answered %d %s", res.code, res.body)
	}
	// The server notices the client left and ends the handler: it is
	// counted as served long before its 60s wait.
	poll.Until(t, 5*time.Second, "the abandoned query counted as served", func() error {
		if n := requestsServed(t, m, route); n != served+1 {
			return fmt.Errorf("requests served %d, want %d (the abandoned one)", n, served+1)
		}
		return nil
	})
	waitWaiting(t, m, "sd", 1) // the abandoned one has left the view too
	stillPending(t, blocked, "nothing changed")

	begin := time.Now()
	c.Stop(0)
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("shutdown took %s with a blocked query", d)
	}
	// The shutdown wakes it (api.Server.Close comes before the HTTP
	// server's graceful shutdown, which lets it finish): it answers the
	// list as it is, it is not cut off.
	res := await(t, blocked, time.Until(begin.Add(5*time.Second)), "blocked query during shutdown")
	t.Logf("blocked query ended %s after shutdown began: %d %v", time.Since(begin).Round(time.Millisecond), res.code, res.err)
	if res.err != nil {
		t.Fatalf("the blocked query was cut off by the shutdown: %v", res.err)
	}
	decodeList[registry.InstanceList](t, res.code, res.hdr, res.body)
}

// TestReadYourWrites: min_revision makes a read on one member reflect a
// write made through another; stale serves a member's view as it is, even
// without a quorum.
func TestReadYourWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member cluster")
	}
	c := regdtest.StartCluster(t, 3)
	m0, m1, m2 := c.Members[0], c.Members[1], c.Members[2]

	inst := wRegister(t, m0, "ryw", "i1", "10.2.0.1:80", 120)
	n := strconv.FormatInt(inst.Revision, 10)
	for _, q := range []string{"?min_revision=" + n, "?stale&min_revision=" + n, "?stale=true&min_revision=" + n} {
		for _, m := range []*regdtest.Member{m1, m2} {
			got := listInstances(t, m, "ryw", q)
			if ids(got) != "i1" || got.Revision < inst.Revision || got.Instances[0].Revision != inst.Revision {
				t.Fatalf("%s%s: %+v; want i1 at >= %d", m.Name, q, got, inst.Revision)
			}
		}
	}
	poll.Until(t, 5*time.Second, "?stale on m2 lists i1", func() error {
		if got := listInstances(t, m2, "ryw", "?stale"); ids(got) != "i1" {
			return fmt.Errorf("?stale on m2: %+v", got)
		}
		return nil
	})

	// A min_revision beyond the cluster's current revision is refused at
	// once on every member and route (400 future_revision, as etcd's
	// ErrFutureRev), not held for the 5 s catch-up and answered 503; up to
	// it, it is answered. The cluster is settled: nothing but the test
	// writes, so the head read here stays the head.
	head := listInstances(t, m0, "ryw", "").Revision
	for _, m := range []*regdtest.Member{m0, m1, m2} {
		for _, route := range []string{"/v1/services/ryw/instances", "/v1/services", "/v1/prometheus/targets"} {
			for _, q := range []string{"?min_revision=", "?stale&min_revision="} {
				for _, n := range []int64{head + 1, head + 1000, 1 << 62} {
					u := m.URL(route + q + strconv.FormatInt(n, 10))
					begin := time.Now()
					code, _, body := regdtest.Do(t, http.MethodGet, u, nil)
					if code != http.StatusBadRequest || wErrorCode(body) != registry.CodeFutureRevision ||
						!strings.Contains(string(body), fmt.Sprintf("current revision %d", head)) {
						t.Fatalf("%s (head %d): %d %s; want 400 future_revision naming the head", u, head, code, body)
					}
					if d := time.Since(begin); d > 2*time.Second {
						t.Fatalf("%s: the 400 took %s: it waited for the view", u, d)
					}
				}
				u := m.URL(route + q + strconv.FormatInt(head, 10))
				if code, hdr, body := regdtest.Do(t, http.MethodGet, u, nil); code != http.StatusOK || hdr.Get(api.HeaderRevision) != strconv.FormatInt(head, 10) {
					t.Fatalf("%s (the head): %d %s %s; want 200 at the head", u, code, hdr.Get(api.HeaderRevision), body)
				}
			}
		}
	}
	if now := listInstances(t, m0, "ryw", "").Revision; now != head {
		t.Fatalf("the refused reads moved the revision from %d to %d", head, now)
	}

	// A blocking query on one member wakes on a write through another.
	l := listInstances(t, m1, "ryw", "")
	blocked := asyncGet(context.Background(), fmt.Sprintf("%s?index=%d&wait=5s", m1.URL("/v1/services/ryw/instances"), l.Revision))
	i2 := wRegister(t, m0, "ryw", "i2", "10.2.0.2:80", 120)
	res := await(t, blocked, 2*time.Second, "blocking query on m1 after a write through m0")
	if got := decodeList[registry.InstanceList](t, res.code, res.hdr, res.body); ids(got) != "i1,i2" || got.Revision < i2.Revision {
		t.Fatalf("woken list on m1: %+v", got)
	}

	// Without a quorum, m2 still answers stale reads from its view; a
	// default (linearizable) read is 503 within a few seconds.
	c.Kill(0)
	c.Kill(1)
	begin := time.Now()
	code, _, body := regdtest.Do(t, http.MethodGet, m2.URL("/v1/services/ryw/instances"), nil)
	if code != http.StatusServiceUnavailable || wErrorCode(body) != "unavailable" {
		t.Fatalf("linearizable read without a quorum: %d %s, want 503 unavailable", code, body)
	}
	if d := time.Since(begin); d > 6*time.Second {
		t.Fatalf("linearizable read without a quorum took %s", d)
	}
	for _, q := range []string{"?stale", "?stale&min_revision=" + strconv.FormatInt(i2.Revision, 10)} {
		begin := time.Now()
		got := listInstances(t, m2, "ryw", q)
		if ids(got) != "i1,i2" || time.Since(begin) > time.Second {
			t.Fatalf("%s without a quorum: %+v after %s", q, got, time.Since(begin))
		}
	}
	// Beyond what the view has applied, min_revision needs the cluster's
	// head to tell a future revision from a lagging view: without a
	// quorum it is 503, even with stale.
	code, _, body = regdtest.Do(t, http.MethodGet, m2.URL("/v1/services/ryw/instances?stale&min_revision="+strconv.FormatInt(1<<40, 10)), nil)
	if code != http.StatusServiceUnavailable || wErrorCode(body) != registry.CodeUnavailable {
		t.Fatalf("min_revision beyond the view without a quorum: %d %s, want 503 unavailable", code, body)
	}
	code, _, body = regdtest.Do(t, http.MethodGet, m2.URL("/v1/services?stale"), nil)
	var sl registry.ServiceList
	if code != http.StatusOK || json.Unmarshal(body, &sl) != nil || len(sl.Services) != 1 || sl.Services[0].Instances != 2 {
		t.Fatalf("/v1/services?stale without a quorum: %d %s", code, body)
	}
}
