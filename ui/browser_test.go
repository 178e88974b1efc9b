package ui_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/checktest"
	"github.com/regd/regd/internal/freeport"
	"github.com/regd/regd/internal/loadgen"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/node"
)

// The browser tests drive Debian's Chromium, headless, against real regd
// nodes (internal/regdtest), the way a person would: they load the page,
// click, type, and read what is shown. Every tab also records its console
// (errors and warnings, uncaught exceptions, the browser's own log) and
// every request it makes; a test fails on anything unexpected there, and on
// any request that goes anywhere but the regd under test.

const (
	readToken  = "ui-read-0123456789abcdef"
	writeToken = "ui-write-0123456789abcdef"
	adminToken = "ui-admin-0123456789abcdef"
)

var tokens = []api.Token{{Scope: api.ScopeRead, Secret: readToken}, {Scope: api.ScopeWrite, Secret: writeToken}, {Scope: api.ScopeAdmin, Secret: adminToken}}

// chromium finds the browser: $REGD_CHROMIUM, or chromium on the PATH.
func chromium() (string, error) {
	if p := os.Getenv("REGD_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium on the PATH and REGD_CHROMIUM is not set")
}

// startBrowser starts a headless Chromium for the test, or skips the test
// when there is none: the UI's browser tests need a browser, and .ci/run
// installs Debian's.
func startBrowser(t *testing.T, width, height int) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no cluster, no browser")
	}
	path, err := chromium()
	if err != nil {
		t.Skipf("skipping the browser test: %v (install it with `apt-get install chromium`; .ci/run does)", err)
	}
	// The flags keep Chromium from calling home (background networking,
	// component updates, sync, QUIC probes): this machine has no network,
	// and the test asserts that the page makes no outside request.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // the tests run as root in CI
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return bctx
}

// tab is one browser tab (its own sessionStorage, so its own token).
type tab struct {
	t      *testing.T
	ctx    context.Context
	origin string

	mu       sync.Mutex
	console  []string // errors, warnings and exceptions, as "source: text url"
	requests []string // every URL the page requested
	expected []string // substrings of console lines the test expects
}

func openTab(t *testing.T, bctx context.Context, origin string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(bctx)
	t.Cleanup(cancel)
	tb := &tab{t: t, ctx: ctx, origin: origin}
	if err := chromedp.Listen(ctx, tb.record); err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(tb.check) // runs before cancel (cleanups run last-in first-out)
	return tb
}

// record runs on chromedp's reading goroutine: it only appends.
func (tb *tab) record(ev any) {
	var line string
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		tb.mu.Lock()
		tb.requests = append(tb.requests, ev.Request.URL)
		tb.mu.Unlock()
		return
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeWarning && ev.Type != runtime.ConsoleAPICalledTypeAssert {
			return
		}
		var args []string
		for _, a := range ev.Args {
			if len(a.Value) > 0 {
				args = append(args, string(a.Value))
			} else {
				args = append(args, a.Description)
			}
		}
		line = "console." + string(ev.Type) + ": " + strings.Join(args, " ")
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		line = "exception: " + d.Text
		if d.Exception != nil {
			line += " " + d.Exception.Description
		}
	case *log.EventEntryAdded:
		e := ev.Entry
		if e.Level != log.EntryLevelError && e.Level != log.EntryLevelWarning {
			return
		}
		line = string(e.Source) + ": " + e.Text + " " + e.URL
	default:
		return
	}
	tb.mu.Lock()
	tb.console = append(tb.console, line)
	tb.mu.Unlock()
}

// expect declares console lines (by substring) that the test provokes on
// purpose, such as the browser's note of a 401 answer.
func (tb *tab) expect(substr string) {
	tb.mu.Lock()
	tb.expected = append(tb.expected, substr)
	tb.mu.Unlock()
}

// requested reports whether the page requested exactly this URL.
func (tb *tab) requested(u string) bool {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return slices.Contains(tb.requests, u)
}

// check fails the test on unexpected console lines and on requests that
// leave the regd under test.
func (tb *tab) check() {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	for _, line := range tb.console {
		if !slices.ContainsFunc(tb.expected, func(s string) bool { return strings.Contains(line, s) }) {
			tb.t.Errorf("browser console: %s", line)
		}
	}
	if len(tb.requests) == 0 {
		tb.t.Errorf("the tab made no request at all; the network events are not being seen")
	}
	for _, r := range tb.requests {
		u, err := url.Parse(r)
		if err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" || u.Host != strings.TrimPrefix(tb.origin, "http://") {
			tb.t.Errorf("the page requested %s: only %s may be asked", r, tb.origin)
		}
	}
}

// do runs actions with a deadline, failing the test on error.
func (tb *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("%s: %v", what, err)
	}
}

func (tb *tab) navigate(u string) { tb.t.Helper(); tb.do("navigate to "+u, chromedp.Navigate(u)) }

func (tb *tab) click(sel string) {
	tb.t.Helper()
	tb.do("click "+sel, chromedp.Click(chromedp.CSS(sel)))
}

func (tb *tab) typeInto(sel, text string) {
	tb.t.Helper()
	// Emptied the way a select-all and delete would: with an input event,
	// which the page listens to (chromedp.Clear sends none).
	q, _ := json.Marshal(sel)
	eval[bool](tb, `(() => { const el = document.querySelector(`+string(q)+`); el.value = ""; el.dispatchEvent(new Event("input", {bubbles: true})); return true; })()`)
	tb.do("type into "+sel, chromedp.SendKeys(chromedp.CSS(sel), text))
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](tb *tab, js string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitJS polls a JavaScript condition in the page until it is truthy.
func (tb *tab) waitJS(what, js string, timeout time.Duration) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('main') ? document.querySelector('main').innerText : document.body.innerText`))
		tb.t.Fatalf("waiting %s for %s (%s): %v\npage text:\n%s", timeout, what, js, err, body)
	}
}

// rowJS is a JavaScript expression for the table row of an instance.
func rowJS(id string) string { return `document.querySelector('tr[data-instance-id="` + id + `"]')` }

// setToken enters a token through the UI's own dialog and waits until the
// page shows its scope.
func (tb *tab) setToken(token, scope string) {
	tb.t.Helper()
	tb.click(`button[data-action="token"]`)
	tb.waitJS("the token dialog", `document.querySelector('dialog[open] #token-input') !== null`, 5*time.Second)
	tb.typeInto(`#token-input`, token)
	tb.click(`dialog[open] button[type="submit"]`)
	tb.waitJS("the "+scope+" scope", `document.querySelector('[data-field="scope"]').dataset.scope === "`+scope+`" && !document.querySelector('dialog[open]')`, 10*time.Second)
}

// rest sends one REST request with an optional token and JSON body.
func rest(t *testing.T, method, u, token string, body any) (int, http.Header, []byte) {
	t.Helper()
	return regdtest.DoToken(t, method, u, token, body)
}

func register(t *testing.T, origin, service, id string, body map[string]any) {
	t.Helper()
	status, _, b := rest(t, http.MethodPut, origin+"/v1/services/"+service+"/instances/"+id, writeToken, body)
	if status != http.StatusCreated && status != http.StatusOK {
		t.Fatalf("register %s/%s: %d %s", service, id, status, b)
	}
}

// hostile is instance metadata that would run script if the page ever
// treated it as HTML.
var hostile = map[string]string{
	"<b>zone</b>": `<img src=x onerror="window.__xss=1">`,
	"script":      `<script>window.__xss=2</script>`,
	"attr":        `"><svg onload="window.__xss=3">`,
	"href":        `javascript:window.__xss=4`,
}

// hasPatch reports whether the regd under test has the instance lifecycle
// (PATCH on instances, issue 12), read from its OpenAPI document as the UI
// reads it.
func hasPatch(t *testing.T, origin string) bool {
	t.Helper()
	status, _, b := rest(t, http.MethodGet, origin+"/v1/openapi.json", readToken, nil)
	if status != 200 {
		t.Fatalf("openapi: %d", status)
	}
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	_, ok := doc.Paths["/v1/services/{service}/instances/{id}"]["patch"]
	return ok
}

// TestBrowser drives the UI against one regd node whose reads are open and
// whose writes need a token: what each page shows, live updates, expiries
// and their cause, status and weight, write, read and admin tokens, hostile
// metadata, keyboard use, a phone-width screen, a learner and an alarm.
func TestBrowser(t *testing.T) {
	bctx := startBrowser(t, 1280, 800)
	// The disk guard's view of the node's free space: the "admin" subtest
	// plays it short, and the guard raises etcd's NOSPACE alarm, as in
	// faults/diskguard_test.go. Everything else is real.
	const minFree = 4 << 20
	var short atomic.Bool
	stat := func(string) (node.DiskUsage, error) {
		if short.Load() {
			return node.DiskUsage{Free: minFree / 2}, nil
		}
		return node.DiskUsage{Free: 100 * minFree}, nil
	}
	c := regdtest.StartCluster(t, 1, regdtest.Options{Auth: api.NewAuth(tokens, false), MinFreeBytes: minFree, DiskStat: stat})
	origin := "http://" + c.Members[0].HTTPAddr
	long := 3600
	register(t, origin, "orders", "o1", map[string]any{"address": "10.0.0.5:8080", "ttl": long, "metadata": map[string]string{"zone": "a", "version": "1.4.2"}})
	register(t, origin, "orders", "o2", map[string]any{"address": "10.0.0.6:8080", "ttl": long, "status": "draining", "weight": 50})
	register(t, origin, "orders", "x1", map[string]any{"address": "10.0.0.7:8080", "ttl": long, "metadata": hostile})
	register(t, origin, "users", "u1", map[string]any{"address": "users-1.internal:9000", "ttl": long})
	patch := hasPatch(t, origin)

	t.Run("pages", func(t *testing.T) {
		tb := openTab(t, bctx, origin)
		// A browser at / lands on the UI.
		tb.navigate(origin + "/")
		tb.waitJS("the redirect to /ui/", `location.pathname === "/ui/"`, 5*time.Second)
		tb.waitJS("the overview", `document.querySelector('[data-field="leader"]')?.textContent === "m0" &&
			document.querySelector('[data-field="readiness"]')?.textContent.includes("Ready") &&
			document.querySelector('tr[data-member="m0"]')?.textContent.includes("leader") &&
			document.querySelector('[data-field="services"]')?.textContent === "2" &&
			document.querySelector('[data-field="instances"]')?.textContent === "4 (3 up)" &&
			document.querySelector('[data-field="members"]')?.textContent === "1" &&
			document.querySelector('tr[data-member="m0"]')?.dataset.role === "leader" &&
			document.querySelector('[data-field="alarms"]')?.dataset.count === "0"`, 10*time.Second)
		if rev := eval[string](tb, `document.querySelector('[data-field="revision"]').textContent`); rev == "" || rev == "0" {
			t.Errorf("revision shown as %q", rev)
		}

		tb.click(`nav a[href="#/services"]`)
		// Up of total: o2 is draining.
		tb.waitJS("the service list", `document.querySelector('tr[data-service="orders"] [data-field="instances"]')?.textContent === "3" &&
			document.querySelector('tr[data-service="orders"] [data-field="up"]')?.textContent === "2" &&
			document.querySelector('tr[data-service="users"] [data-field="instances"]')?.textContent === "1" &&
			document.querySelector('tr[data-service="users"] [data-field="up"]')?.textContent === "1"`, 10*time.Second)
		if got := eval[string](tb, `document.querySelector('tr[data-service="orders"] td.num').innerText`); got != "2 / 3" {
			t.Errorf("orders shows %q, want 2 / 3", got)
		}
		if cur := eval[string](tb, `document.querySelector('nav a[aria-current="page"]').textContent`); cur != "Services" {
			t.Errorf("the nav marks %q as the current page", cur)
		}

		tb.click(`a[href="#/services/orders"]`)
		tb.waitJS("the instances of orders", rowJS("o1")+` && `+rowJS("o2")+` && `+rowJS("x1")+` &&
			document.querySelector('[data-field="stream"]').dataset.state === "live"`, 10*time.Second)
		o1 := eval[string](tb, rowJS("o1")+`.innerText`)
		for _, want := range []string{"10.0.0.5:8080", "zone=a", "version=1.4.2", "3600 s"} {
			if !strings.Contains(o1, want) {
				t.Errorf("row o1 %q lacks %q", o1, want)
			}
		}
		// Every status is listed (the API's lists default to up ones),
		// with its weight; without health checks there is no Health column.
		for id, want := range map[string][2]string{"o1": {"up", "100"}, "o2": {"draining", "50"}} {
			got := eval[[]string](tb, `[`+rowJS(id)+`.dataset.status, `+rowJS(id)+`.querySelector('[data-field="status"]').textContent, `+rowJS(id)+`.querySelector('[data-field="weight"]').textContent]`)
			if got[0] != want[0] || got[1] != want[0] || got[2] != want[1] {
				t.Errorf("row %s: status %q shown as %q, weight %q; want %s and %s", id, got[0], got[1], got[2], want[0], want[1])
			}
		}
		if cols := eval[string](tb, `[...document.querySelectorAll('table.instances th')].map(th => th.textContent).join(",")`); cols != "ID,Address,Status,Weight,Metadata,TTL,Registered" {
			t.Errorf("instance columns %q", cols)
		}
		if got := eval[string](tb, `document.querySelector('[data-field="counts"]').textContent`); got != "3 instances, 2 up" {
			t.Errorf("counts %q, want 3 instances, 2 up", got)
		}

		// Reads are open: without a token the page reads everything and
		// offers nothing to write.
		if n := eval[int](tb, `document.querySelectorAll('[data-action="deregister"],[data-action="drain"],[data-action="undrain"]').length`); n != 0 {
			t.Errorf("%d write controls shown without a token", n)
		}
		if label := eval[string](tb, `document.querySelector('[data-field="scope"]').textContent`); !strings.Contains(label, "read-only") {
			t.Errorf("scope label %q, want it to say read-only", label)
		}

		// Metadata is text, never markup: no element came out of it, the
		// characters are shown as they are, and nothing ran.
		tb.waitJS("hostile metadata shown as text", `(() => {
			const row = `+rowJS("x1")+`;
			const text = row.textContent;
			return row.querySelectorAll('img,script,svg,b,iframe,a').length === 0 &&
				text.includes('<img src=x onerror="window.__xss=1">') &&
				text.includes('<script>window.__xss=2</script>') &&
				text.includes('"><svg onload="window.__xss=3">') &&
				text.includes('<b>zone</b>') &&
				window.__xss === undefined;
		})()`, 5*time.Second)

		// At 1280×800 nothing overflows sideways.
		if w := eval[int](tb, `document.documentElement.scrollWidth`); w > 1280 {
			t.Errorf("page is %d px wide at a 1280 px window", w)
		}
	})

	t.Run("live", func(t *testing.T) {
		tb := openTab(t, bctx, origin)
		tb.navigate(origin + "/ui/#/services/orders")
		tb.waitJS("the live instance list", rowJS("o1")+` && document.querySelector('[data-field="stream"]').dataset.state === "live"`, 10*time.Second)
		// The page records when each row first appears (wall-clock ms, the
		// clock time.Now reads too), so the delay is measured without the
		// polling interval of the test.
		eval[bool](tb, `(() => {
			window.__seen = {};
			const note = () => {
				const now = performance.timeOrigin + performance.now();
				for (const tr of document.querySelectorAll('tr[data-instance-id]')) {
					if (!(tr.dataset.instanceId in window.__seen)) window.__seen[tr.dataset.instanceId] = now;
				}
			};
			note();
			new MutationObserver(note).observe(document.body, {childList: true, subtree: true, attributes: true, attributeFilter: ['data-instance-id']});
			return true;
		})()`)
		// Measured from the REST response and from the request's start:
		// the stream's event can reach the page before the response
		// reaches the test, so the first can be negative.
		var fromResp, fromSend []time.Duration
		for i := range 5 {
			id := fmt.Sprintf("live%d", i)
			sent := time.Now()
			register(t, origin, "orders", id, map[string]any{"address": fmt.Sprintf("10.0.1.%d:8080", i+1), "ttl": long})
			answered := time.Now()
			tb.waitJS("row "+id, `window.__seen["`+id+`"] !== undefined`, 10*time.Second)
			seen := time.UnixMicro(int64(eval[float64](tb, `window.__seen["`+id+`"]`) * 1000))
			fromResp = append(fromResp, seen.Sub(answered))
			fromSend = append(fromSend, seen.Sub(sent))
		}
		summary := func(d []time.Duration) string {
			slices.Sort(d)
			r := func(x time.Duration) time.Duration { return x.Round(100 * time.Microsecond) }
			return fmt.Sprintf("min %v, median %v, max %v", r(d[0]), r(d[len(d)/2]), r(d[len(d)-1]))
		}
		t.Logf("FIGURE registration -> row in the open page, over %d registrations: from the REST response %s; from sending the request %s",
			len(fromResp), summary(fromResp), summary(fromSend))

		// A PATCH shows in place: the row keeps its place with its new
		// status and weight, and the page's changes say what it became.
		if status, _, b := rest(t, http.MethodPatch, origin+"/v1/services/orders/instances/live1", writeToken, map[string]any{"status": "out_of_service", "weight": 0}); status != 200 {
			t.Fatalf("patch live1: %d %s", status, b)
		}
		tb.waitJS("row live1 out of service", rowJS("live1")+`?.dataset.status === "out_of_service" &&
			`+rowJS("live1")+`.querySelector('[data-field="weight"]').textContent === "0" &&
			[...document.querySelectorAll('.recent li')].some(li => li.textContent.includes('update') && li.textContent.includes('live1') && li.textContent.includes('now out_of_service, weight 0'))`, 10*time.Second)

		// A deregistration disappears.
		if status, _, b := rest(t, http.MethodDelete, origin+"/v1/services/orders/instances/live0", writeToken, nil); status != 204 {
			t.Fatalf("deregister: %d %s", status, b)
		}
		tb.waitJS("row live0 to go", `!`+rowJS("live0")+` && `+rowJS("live1"), 10*time.Second)

		// A draining instance that expires is reported too, and the expiry
		// page hears of it from a stream of every status (the default
		// stream carries up instances only). It expires beside e1 below,
		// while a second tab shows the expiry reports.
		ex := openTab(t, bctx, origin)
		ex.navigate(origin + "/ui/#/expirations?service=orders")
		ex.waitJS("the expiry reports", `document.querySelector('.empty') && document.querySelector('[data-field="scope"]').dataset.scope === "read"`, 10*time.Second)
		register(t, origin, "orders", "e2", map[string]any{"address": "10.0.2.2:8080", "ttl": 2, "status": "draining"})

		// An expiry disappears too, is listed as such among the page's
		// changes, and shows in the expiry reports.
		register(t, origin, "orders", "e1", map[string]any{"address": "10.0.2.1:8080", "ttl": 2})
		tb.waitJS("row e1", rowJS("e1")+` !== null`, 10*time.Second)
		tb.waitJS("row e1 to expire", `!`+rowJS("e1")+` && [...document.querySelectorAll('.recent li')].some(li => li.textContent.includes('expire') && li.textContent.includes('e1'))`, 20*time.Second)
		if !eval[bool](tb, `[...document.querySelectorAll('.recent li')].some(li => li.textContent.includes('deregister') && li.textContent.includes('live0'))`) {
			t.Errorf("the page's changes do not list the deregistration of live0")
		}
		tb.click(`a[href="#/expirations?service=orders"]`)
		tb.waitJS("the expiry report of e1", `document.querySelector('tr[data-expiry="orders/e1"]')?.textContent.includes('10.0.2.1:8080') &&
			document.querySelector('tr[data-expiry="orders/e1"] [data-field="cause"]')?.textContent === "ttl"`, 20*time.Second)
		if eval[bool](tb, `!!document.querySelector('tr[data-expiry="orders/live0"]')`) {
			t.Errorf("a deregistration is listed as an expiry")
		}

		// The filter: another service's reports do not include e1.
		tb.typeInto(`#expiry-service`, "users")
		tb.click(`form[role="search"] button[type="submit"]`)
		tb.waitJS("the empty list of users", `location.hash === "#/expirations?service=users" && document.querySelector('.empty')?.textContent.includes('users')`, 10*time.Second)
		if eval[bool](tb, `!!document.querySelector('tr[data-expiry="orders/e1"]')`) {
			t.Errorf("the expiry of orders/e1 is listed under users")
		}

		ex.waitJS("the expiry report of the draining e2", `document.querySelector('tr[data-expiry="orders/e2"] [data-field="cause"]')?.textContent === "ttl"`, 20*time.Second)
		if u := origin + "/v1/services/orders/watch?status=any"; !ex.requested(u) {
			t.Errorf("the expiry page did not follow %s", u)
		}
	})

	t.Run("health checks", func(t *testing.T) {
		// An instance the registry checks (TCP, one failure allowed): the
		// Health column appears with the probe's result, and once the port
		// closes the row goes and the expiry report says check_failed with
		// the probe's output.
		backend := checktest.NewTCP(t)
		addr := backend.Addr()
		register(t, origin, "db", "pg1", map[string]any{"address": addr,
			"check": map[string]any{"tcp": addr, "interval": "1s", "timeout": "500ms", "failures": 1}})
		tb := openTab(t, bctx, origin)
		tb.navigate(origin + "/ui/#/services/db")
		tb.waitJS("pg1 passing", rowJS("pg1")+`?.querySelector('[data-field="health"]')?.textContent === "passing"`, 15*time.Second)
		if cols := eval[string](tb, `[...document.querySelectorAll('table.instances th')].map(th => th.textContent).join(",")`); !strings.Contains(cols, "Health") {
			t.Errorf("instance columns %q lack Health", cols)
		}
		if title := eval[string](tb, rowJS("pg1")+`.querySelector('[data-field="health"]').title`); !strings.Contains(title, "TCP check of "+addr) {
			t.Errorf("health tooltip %q does not name the check", title)
		}
		backend.Down()
		tb.waitJS("pg1 removed", `!`+rowJS("pg1")+` && [...document.querySelectorAll('.recent li')].some(li => li.textContent.includes('expire') && li.textContent.includes('pg1'))`, 20*time.Second)
		tb.navigate(origin + "/ui/#/expirations?service=db")
		tb.waitJS("the check_failed report", `document.querySelector('tr[data-expiry="db/pg1"] [data-field="cause"]')?.textContent === "check_failed" &&
			document.querySelector('tr[data-expiry="db/pg1"] [data-field="output"]')?.textContent.includes("`+addr+`")`, 20*time.Second)
	})

	t.Run("write token", func(t *testing.T) {
		tb := openTab(t, bctx, origin)
		tb.navigate(origin + "/ui/#/services/orders")
		tb.waitJS("the instances", rowJS("o2")+` && document.querySelector('[data-field="scope"]').dataset.scope === "read"`, 10*time.Second)
		tb.setToken(writeToken, "write")
		tb.waitJS("write controls", rowJS("o2")+`?.querySelector('button[data-action="deregister"]')`, 10*time.Second)
		if strings.Contains(eval[string](tb, `location.href`), writeToken) {
			t.Errorf("the token is in the URL")
		}
		if eval[string](tb, `sessionStorage.getItem("regd.token")`) != writeToken {
			t.Errorf("the token is not in sessionStorage")
		}
		// Drain exists only where the API has PATCH (issue 12).
		drains := eval[int](tb, `document.querySelectorAll('button[data-action="drain"]').length`)
		if !patch && drains != 0 {
			t.Errorf("%d drain buttons, but this regd has no PATCH", drains)
		}
		if patch && drains == 0 {
			t.Errorf("no drain buttons, but this regd has PATCH")
		}

		// The keyboard: Enter on the button opens the confirmation with
		// the focus on Cancel; Escape closes it and gives the focus back.
		btn := rowJS("o2") + `.querySelector('button[data-action="deregister"]')`
		tb.do("focus the deregister button", chromedp.Focus(chromedp.CSS(`tr[data-instance-id="o2"] button[data-action="deregister"]`)))
		tb.do("press Enter", chromedp.KeyEvent("\r"))
		tb.waitJS("the confirmation", `document.querySelector('dialog[open]') && document.activeElement.textContent === "Cancel"`, 5*time.Second)
		tb.do("press Escape", chromedp.KeyEvent("\u001b"))
		tb.waitJS("the confirmation to close", `!document.querySelector('dialog[open]') && document.activeElement === `+btn, 5*time.Second)
		if status, _, _ := rest(t, http.MethodGet, origin+"/v1/services/orders/instances/o2", readToken, nil); status != 200 {
			t.Fatalf("o2 is gone after Escape: %d", status)
		}

		// Deregister for real, by clicking.
		tb.click(`tr[data-instance-id="o2"] button[data-action="deregister"]`)
		tb.waitJS("the confirmation", `document.querySelector('dialog[open]')?.textContent.includes('orders/o2')`, 5*time.Second)
		tb.click(`dialog[open] button[data-action="confirm"]`)
		tb.waitJS("row o2 to go", `!`+rowJS("o2")+` && `+rowJS("o1")+` && document.querySelector('[data-field="note"]').textContent.includes('Deregistered orders/o2')`, 10*time.Second)
		if status, _, b := rest(t, http.MethodGet, origin+"/v1/services/orders/instances/o2", readToken, nil); status != 404 {
			t.Fatalf("GET o2 after deregistering it in the UI: %d %s, want 404", status, b)
		}
		// The deregistration waited for the handshake (10 s, the dialog's
		// default): the page's change says who was sent it. This tab's
		// stream is one subscriber; a stream of a tab closed just before
		// may still count (TestBrowserDrain checks exact numbers).
		if patch {
			tb.waitJS("the deregistration's handshake", `(() => {
				const h = document.querySelector('li[data-change^="deregister:o2:"] [data-field="handshake"]');
				return h && Number(h.dataset.delivered) >= 1 && Number(h.dataset.subscribers) >= Number(h.dataset.delivered) && h.dataset.members === "1" && h.dataset.answered === "1";
			})()`, 10*time.Second)
		}
	})

	t.Run("read token", func(t *testing.T) {
		tb := openTab(t, bctx, origin)
		tb.navigate(origin + "/ui/#/services/orders")
		tb.waitJS("the instances", rowJS("o1"), 10*time.Second)
		tb.setToken(readToken, "read")
		tb.waitJS("the instances, read with the token", rowJS("o1")+` && document.querySelector('[data-field="stream"]').dataset.state === "live"`, 10*time.Second)
		if n := eval[int](tb, `document.querySelectorAll('[data-action="deregister"],[data-action="drain"],[data-action="undrain"],th .sr-only').length`); n != 0 {
			t.Errorf("%d write controls shown with a read token", n)
		}
		// The API refuses what the page does not offer.
		status, _, b := rest(t, http.MethodDelete, origin+"/v1/services/orders/instances/o1", readToken, nil)
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		if status != http.StatusForbidden || e.Error.Code != "forbidden" {
			t.Fatalf("DELETE with the read token: %d %s, want 403 forbidden", status, b)
		}
		if status, _, _ := rest(t, http.MethodGet, origin+"/v1/services/orders/instances/o1", readToken, nil); status != 200 {
			t.Fatalf("o1 after the refused DELETE: %d", status)
		}
	})

	t.Run("phone width", func(t *testing.T) {
		tb := openTab(t, bctx, origin)
		tb.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
		for _, page := range []struct{ hash, ready string }{
			{"#/services/orders", rowJS("x1") + ` && ` + rowJS("o1")},
			{"#/", `document.querySelector('tr[data-member="m0"]')`},
			{"#/services", `document.querySelector('tr[data-service="orders"]')`},
			{"#/expirations", `document.querySelector('tr[data-expiry="orders/e1"]')`},
		} {
			tb.navigate(origin + "/ui/" + page.hash)
			tb.waitJS(page.hash, page.ready, 10*time.Second)
			if w := eval[int](tb, `document.documentElement.scrollWidth`); w > 390 {
				t.Errorf("%s is %d px wide on a 390 px screen", page.hash, w)
			}
		}
		// Table cells carry their column's name as a label.
		if label := eval[string](tb, `getComputedStyle(document.querySelector('tr[data-expiry="orders/e1"] td'), '::before').content`); !strings.Contains(label, "Expired") {
			t.Errorf("phone layout: cell label %q, want the column name", label)
		}
	})

	// An admin token is a write token for the page: it sees the same
	// controls. The overview shows a learner (a real member, added and
	// never started) and etcd's NOSPACE alarm, which the node's disk guard
	// raises when its free space is played short; a drain is then refused
	// with 503 storage_full, said in the dialog.
	t.Run("admin token, learner, alarm", func(t *testing.T) {
		tb := openTab(t, bctx, origin)
		tb.expect("status of 503") // the refused drain
		tb.navigate(origin + "/ui/#/")
		tb.waitJS("the overview", `document.querySelector('tr[data-member="m0"]')`, 10*time.Second)
		tb.setToken(adminToken, "admin")
		if label := eval[string](tb, `document.querySelector('[data-field="scope"]').textContent`); label != "admin token" {
			t.Errorf("scope label %q, want admin token", label)
		}

		var added struct {
			Member struct {
				ID        string `json:"id"`
				IsLearner bool   `json:"is_learner"`
			} `json:"member"`
		}
		peer := "http://" + freeport.Addr(t)
		poll.Until(t, 15*time.Second, "the learner m9 added", func() error { // 503 while etcd refuses changes, just after a start
			status, _, b := rest(t, http.MethodPost, origin+"/v1/cluster/members", adminToken, map[string]any{"name": "m9", "peer_urls": []string{peer}, "learner": true})
			if status != http.StatusCreated {
				return fmt.Errorf("add a learner: %d %s", status, b)
			}
			return json.Unmarshal(b, &added)
		})
		if !added.Member.IsLearner || added.Member.ID == "" {
			t.Fatalf("added %+v, want a learner with an id", added.Member)
		}
		t.Cleanup(func() {
			if status, _, b := rest(t, http.MethodDelete, origin+"/v1/cluster/members/"+added.Member.ID, adminToken, nil); status != http.StatusNoContent {
				t.Errorf("remove the learner: %d %s", status, b)
			}
		})
		tb.do("reload", chromedp.Reload())
		learner := `document.querySelector('tr[data-member-id="` + added.Member.ID + `"]')`
		tb.waitJS("the learner", learner+`?.dataset.role === "learner" && `+learner+`.textContent.includes("not started") && `+learner+`.textContent.includes("`+peer+`") &&
			document.querySelector('tr[data-member="m0"]').dataset.role === "leader" &&
			document.querySelector('[data-field="members"]').textContent === "2 (1 learner)"`, 10*time.Second)

		short.Store(true)
		poll.Until(t, 10*time.Second, "the NOSPACE alarm raised", func() error {
			status, _, b := rest(t, http.MethodGet, origin+"/v1/cluster", readToken, nil)
			if status != 200 || !strings.Contains(string(b), "NOSPACE (member m0)") {
				return fmt.Errorf("no NOSPACE alarm yet: %d %s", status, b)
			}
			return nil
		})
		tb.do("reload", chromedp.Reload())
		tb.waitJS("the alarm", `document.querySelector('[data-field="alarms"]')?.dataset.count === "1" &&
			document.querySelector('[data-field="alarms"]').textContent.includes("NOSPACE (member m0)") &&
			document.querySelector('[data-field="alarms"]').textContent.includes("refuses writes") &&
			document.querySelector('[data-field="readiness"]').textContent.includes("Ready") &&
			document.querySelector('[data-field="readiness"]').textContent === "Ready with NOSPACE"`, 10*time.Second)

		tb.click(`nav a[href="#/services"]`)
		tb.click(`a[href="#/services/orders"]`)
		tb.click(`tr[data-instance-id="o1"] button[data-action="drain"]`)
		tb.waitJS("the drain confirmation", `document.querySelector('dialog[open] #wait-observed')`, 5*time.Second)
		tb.do("no wait", chromedp.SetValue(chromedp.CSS(`#wait-observed`), "0s"))
		tb.click(`dialog[open] button[data-action="confirm"]`)
		tb.waitJS("the refusal", `document.querySelector('dialog[open] .error')?.textContent.includes("storage_full")`, 10*time.Second)
		tb.do("press Escape", chromedp.KeyEvent("\u001b"))
		tb.waitJS("the dialog to close", `!document.querySelector('dialog[open]') && `+rowJS("o1")+`.dataset.status === "up"`, 5*time.Second)

		short.Store(false)
		poll.Until(t, 10*time.Second, "the NOSPACE alarm gone", func() error {
			status, _, b := rest(t, http.MethodGet, origin+"/v1/cluster", readToken, nil)
			if status != 200 || strings.Contains(string(b), "NOSPACE") {
				return fmt.Errorf("the alarm is still raised: %d %s", status, b)
			}
			return nil
		})
		tb.click(`nav a[href="#/"]`)
		tb.waitJS("no alarm", `document.querySelector('[data-field="alarms"]')?.dataset.count === "0"`, 10*time.Second)
	})
}

// TestBrowserTokenNeeded: where reads need a token, the page asks for one,
// says so when it is refused, and works once a valid one is entered.
func TestBrowserTokenNeeded(t *testing.T) {
	bctx := startBrowser(t, 1280, 800)
	c := regdtest.StartCluster(t, 1, regdtest.Options{Auth: api.NewAuth(tokens, true)})
	origin := "http://" + c.Members[0].HTTPAddr
	register(t, origin, "orders", "o1", map[string]any{"address": "10.0.0.5:8080", "ttl": 3600})

	tb := openTab(t, bctx, origin)
	// The browser logs each 401 answer; these are the point of the test.
	tb.expect("status of 401")
	tb.navigate(origin + "/ui/#/services/orders")
	tb.waitJS("the token prompt", `document.querySelector('h1')?.textContent.includes('needs a token') && document.querySelector('[data-action="enter-token"]')`, 10*time.Second)
	if n := eval[int](tb, `document.querySelectorAll('tr').length`); n != 0 {
		t.Errorf("%d table rows shown without a token", n)
	}
	tb.click(`[data-action="enter-token"]`)
	tb.waitJS("the token dialog", `document.activeElement?.id === "token-input"`, 5*time.Second)
	tb.typeInto(`#token-input`, "wrong-0123456789abcdef")
	tb.click(`dialog[open] button[type="submit"]`)
	tb.waitJS("the refusal", `document.querySelector('#token-error')?.textContent.includes('refused')`, 10*time.Second)
	if eval[string](tb, `sessionStorage.getItem("regd.token") || ""`) != "" {
		t.Errorf("a refused token was kept")
	}
	tb.typeInto(`#token-input`, readToken)
	tb.click(`dialog[open] button[type="submit"]`)
	tb.waitJS("the instances", rowJS("o1")+` && document.querySelector('[data-field="scope"]').dataset.scope === "read"`, 10*time.Second)
	if n := eval[int](tb, `document.querySelectorAll('[data-action="deregister"]').length`); n != 0 {
		t.Errorf("%d deregister buttons with a read token", n)
	}
	// A reload keeps the token (sessionStorage), not in the URL.
	tb.do("reload", chromedp.Reload())
	tb.waitJS("the instances after a reload", rowJS("o1"), 10*time.Second)
}

// watcher is a watch stream the test holds open on a node, as another
// client of the service would: a subscriber the drain handshake counts.
type watcher struct {
	mu     sync.Mutex
	events []string // "<type> <id> <status>" ("reset" for the list)
}

// follow opens the stream at u with the read token, and returns once its
// first event (the ?reset=1 list) arrived: from then on it is subscribed.
func follow(t *testing.T, u string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+readToken)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("watch %s: %v", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		resp.Body.Close()
		t.Fatalf("watch %s: %d", u, resp.StatusCode)
	}
	w := &watcher{}
	p := &loadgen.SSEParser{OnEvent: func(e *loadgen.SSEEvent) {
		var d struct{ ID, Status string }
		_ = json.Unmarshal(e.Data, &d)
		w.mu.Lock()
		w.events = append(w.events, strings.TrimSpace(string(e.Type)+" "+d.ID+" "+d.Status))
		w.mu.Unlock()
	}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			p.Feed(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	w.wait(t, "reset")
	return w
}

// wait waits until the stream has received the event.
func (w *watcher) wait(t *testing.T, event string) {
	t.Helper()
	poll.Until(t, 10*time.Second, "the test's stream receives "+event, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if !slices.Contains(w.events, event) {
			return fmt.Errorf("the test's stream has %q, not %q", w.events, event)
		}
		return nil
	})
}

// TestBrowserDrain drains, undrains and deregisters instances from the UI
// of m0 in a three-member cluster, with the drain handshake. The service
// has two subscribers: the page's own stream on m0 and a stream this test
// holds on m1 (a second tab's service list, a blocking query of
// /v1/services, is none). So the page must say 2/2 subscribers and 3/3
// members, and the test's stream must have been sent each change. It needs
// the instance lifecycle (PATCH, issue 12): until the API has it, the test
// skips, and TestBrowser checks that the UI shows no drain controls.
func TestBrowserDrain(t *testing.T) {
	// The document is the one the API embeds and serves (TestOpenAPIServed
	// holds them equal); reading the file spares a cluster to find out.
	raw, err := os.ReadFile("../api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if _, ok := doc.Paths["/v1/services/{service}/instances/{id}"]["patch"]; !ok {
		t.Skip("this regd has no PATCH on instances yet (instance lifecycle, issue 12); the UI hides drain until it does")
	}
	bctx := startBrowser(t, 1280, 800)
	c := regdtest.StartCluster(t, 3, regdtest.Options{Auth: api.NewAuth(tokens, false)})
	origin := "http://" + c.Members[0].HTTPAddr
	register(t, origin, "orders", "d1", map[string]any{"address": "10.0.0.5:8080", "ttl": 3600})
	register(t, origin, "orders", "d2", map[string]any{"address": "10.0.0.6:8080", "ttl": 3600})
	get := func(id string) (status string, revision int64) {
		code, _, b := rest(t, http.MethodGet, origin+"/v1/services/orders/instances/"+id, readToken, nil)
		var inst struct {
			Status   string
			Revision int64
		}
		if code != 200 || json.Unmarshal(b, &inst) != nil {
			t.Fatalf("GET %s: %d %s", id, code, b)
		}
		return inst.Status, inst.Revision
	}
	other := follow(t, c.Members[1].URL("/v1/services/orders/watch?reset=1"))

	list := openTab(t, bctx, origin)
	list.navigate(origin + "/ui/#/services")
	upOfTotal := func(up, total int) string {
		return fmt.Sprintf(`document.querySelector('tr[data-service="orders"] [data-field="up"]')?.textContent === "%d" &&
			document.querySelector('tr[data-service="orders"] [data-field="instances"]')?.textContent === "%d"`, up, total)
	}
	list.waitJS("orders, 2 of 2 up", upOfTotal(2, 2), 10*time.Second)

	// The token is entered on the overview, which opens no stream, so that
	// the page's one subscriber is the service page's stream.
	tb := openTab(t, bctx, origin)
	tb.navigate(origin + "/ui/#/")
	tb.waitJS("the overview", `document.querySelectorAll('tr[data-member]').length === 3`, 10*time.Second)
	tb.setToken(writeToken, "write")
	tb.click(`nav a[href="#/services"]`)
	tb.click(`a[href="#/services/orders"]`)
	tb.waitJS("the live instances", rowJS("d1")+` && `+rowJS("d2")+` && document.querySelector('[data-field="stream"]').dataset.state === "live"`, 10*time.Second)

	tb.click(`tr[data-instance-id="d1"] button[data-action="drain"]`)
	tb.waitJS("the drain confirmation", `document.querySelector('dialog[open] #wait-observed')`, 5*time.Second)
	tb.do("wait 5s", chromedp.SetValue(chromedp.CSS(`#wait-observed`), "5s"))
	// The race a loaded machine found: the browser fires a dialog's close
	// event in a task of its own, queued when the dialog closes, and input
	// (a click) can run before it. Undrain is clicked here at the earliest
	// moment a person could: in the microtask after the drain's dialog left
	// the page, once the row offers Undrain. The undrain dialog must still
	// be open after the drain dialog's close event (the marker).
	eval[bool](tb, `(() => {
		const old = document.querySelector('dialog[open]');
		const r = window.__race = {};
		old.addEventListener('close', () => { r.oldClosed = true; });
		new MutationObserver((_, obs) => {
			const undrain = document.querySelector('tr[data-instance-id="d1"] button[data-action="undrain"]');
			if (old.isConnected || !undrain) return;
			obs.disconnect();
			r.beforeOldClosed = !r.oldClosed;
			undrain.click();
			r.clicked = true;
		}).observe(document.body, {childList: true, subtree: true});
		return true;
	})()`)
	tb.click(`dialog[open] button[data-action="confirm"]`)
	tb.waitJS("the drain's handshake", `document.querySelector('[data-field="note"]').textContent === "orders/d1 is now draining. Every subscriber was sent the change (2/2 subscribers, 3/3 members)." &&
		`+rowJS("d1")+`?.dataset.status === "draining"`, 15*time.Second)
	status, rev := get("d1")
	if status != "draining" {
		t.Fatalf("status over REST after the UI's drain: %q", status)
	}
	handshake := func(change string) string {
		return eval[string](tb, `(() => {
			const h = document.querySelector('li[data-change="`+change+`"] [data-field="handshake"]');
			return h ? [h.dataset.delivered, h.dataset.subscribers, h.dataset.answered, h.dataset.members].join(" ") + " " + h.textContent.trim().replace(/\s+/g, " ") : "none";
		})()`)
	}
	tb.waitJS("the drain among the page's changes", `document.querySelector('li[data-change="update:d1:`+fmt.Sprint(rev)+`"]')`, 10*time.Second)
	if got, want := handshake(fmt.Sprintf("update:d1:%d", rev)), "2 2 3 3 seen by 2/2 · members 3/3"; got != want {
		t.Errorf("the drain's handshake among the page's changes: %q, want %q", got, want)
	}
	other.wait(t, "update d1 draining")
	list.waitJS("orders, 1 of 2 up", upOfTotal(1, 2), 10*time.Second)

	tb.waitJS("the drain dialog's close event and the click on Undrain", `window.__race.oldClosed && window.__race.clicked`, 10*time.Second)
	if !eval[bool](tb, `!!document.querySelector('dialog[open] #wait-observed') && document.querySelector('dialog[open] h2').textContent.startsWith('Undrain')`) {
		t.Fatalf("the undrain dialog is not open after the drain dialog's close event (clicked before that event: %v)", eval[bool](tb, `window.__race.beforeOldClosed`))
	}
	if !eval[bool](tb, `window.__race.beforeOldClosed`) {
		t.Logf("the page showed Undrain only after the drain dialog's close event: the race was not played this time")
	}
	// Undrain without the handshake: the answer says nothing about it.
	tb.do("no wait", chromedp.SetValue(chromedp.CSS(`#wait-observed`), "0s"))
	tb.click(`dialog[open] button[data-action="confirm"]`)
	tb.waitJS("the undrain", rowJS("d1")+`?.dataset.status === "up" && document.querySelector('[data-field="note"]').textContent === "orders/d1 is now up."`, 15*time.Second)
	status, rev = get("d1")
	if status != "up" {
		t.Fatalf("status over REST after the UI's undrain: %q", status)
	}
	tb.waitJS("the undrain among the page's changes", `document.querySelector('li[data-change="update:d1:`+fmt.Sprint(rev)+`"]')`, 10*time.Second)
	if got := handshake(fmt.Sprintf("update:d1:%d", rev)); got != "none" {
		t.Errorf("an undrain without a wait shows a handshake: %q", got)
	}
	other.wait(t, "update d1 up")
	list.waitJS("orders, 2 of 2 up again", upOfTotal(2, 2), 10*time.Second)

	// Deregister with the handshake.
	_, rev = get("d2")
	tb.waitJS("the undrain dialog closed", `!document.querySelector('dialog[open]')`, 5*time.Second)
	tb.click(`tr[data-instance-id="d2"] button[data-action="deregister"]`)
	tb.waitJS("the deregister confirmation", `document.querySelector('dialog[open] #wait-observed')`, 5*time.Second)
	tb.do("wait 5s", chromedp.SetValue(chromedp.CSS(`#wait-observed`), "5s"))
	tb.click(`dialog[open] button[data-action="confirm"]`)
	tb.waitJS("the deregistration's handshake", `!`+rowJS("d2")+` &&
		document.querySelector('[data-field="note"]').textContent === "Deregistered orders/d2. Every subscriber was sent the change (2/2 subscribers, 3/3 members)."`, 15*time.Second)
	if code, _, b := rest(t, http.MethodGet, origin+"/v1/services/orders/instances/d2", readToken, nil); code != http.StatusNotFound {
		t.Fatalf("GET d2 after the UI's deregistration: %d %s", code, b)
	}
	tb.waitJS("the deregistration among the page's changes", `document.querySelector('li[data-change="deregister:d2:`+fmt.Sprint(rev)+`"]')`, 10*time.Second)
	if got, want := handshake(fmt.Sprintf("deregister:d2:%d", rev)), "2 2 3 3 seen by 2/2 · members 3/3"; got != want {
		t.Errorf("the deregistration's handshake among the page's changes: %q, want %q", got, want)
	}
	other.wait(t, "deregister d2 up")
	list.waitJS("orders, 1 of 1 up", upOfTotal(1, 1), 10*time.Second)
}

// TestServedByRegd: the UI as a real node serves it, through the API's
// middleware: security headers, no token needed for the files even where
// reads need one, and the API's own answers unchanged.
func TestServedByRegd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no cluster")
	}
	c := regdtest.StartCluster(t, 1, regdtest.Options{Auth: api.NewAuth(tokens, true)})
	origin := "http://" + c.Members[0].HTTPAddr
	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/vendor/htm.js", "/ui/nope"} {
		status, h, _ := rest(t, http.MethodGet, origin+p, "", nil)
		if want := map[bool]int{true: 404, false: 200}[p == "/ui/nope"]; status != want {
			t.Errorf("GET %s: %d, want %d", p, status, want)
		}
		checkSecurityHeaders(t, p, h)
	}
	if status, _, _ := rest(t, http.MethodGet, origin+"/v1/services", "", nil); status != 401 {
		t.Errorf("GET /v1/services without a token: %d, want 401 (the UI must not open the API)", status)
	}
	// / sends a browser to the UI; curl (Accept: */*) and API clients
	// get the JSON 404, which names the UI, not a redirect they would
	// follow into HTML.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, accept := range []string{"text/html,application/xhtml+xml,*/*;q=0.8", "*/*", "application/json", ""} {
		req, err := http.NewRequest(http.MethodGet, origin+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.HasPrefix(accept, "text/html") {
			if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
				t.Errorf("GET / by a browser: %d Location %q, want 302 /ui/", resp.StatusCode, resp.Header.Get("Location"))
			}
			continue
		}
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), `"code":"route_not_found"`) || !strings.Contains(string(b), "/ui/") {
			t.Errorf("GET / with Accept %q: %d %s, want 404 route_not_found naming /ui/", accept, resp.StatusCode, b)
		}
	}
	status, _, b := rest(t, http.MethodGet, origin+"/v1/auth/token", readToken, nil)
	if status != 200 || !strings.Contains(string(b), `"scope":"read"`) {
		t.Errorf("GET /v1/auth/token with the read token: %d %s", status, b)
	}
}

// TestBrowserOutage: what the page says when the cluster loses its quorum
// and when its node goes away, and that it recovers by itself, resuming
// its watch stream, when they come back.
func TestBrowserOutage(t *testing.T) {
	bctx := startBrowser(t, 1280, 800)
	c := regdtest.StartCluster(t, 3)
	origin := "http://" + c.Members[0].HTTPAddr
	register(t, origin, "orders", "o1", map[string]any{"address": "10.0.0.5:8080", "ttl": 3600})

	tb := openTab(t, bctx, origin)
	// While its node is down the browser logs each refused connection.
	tb.expect("ERR_CONNECTION_REFUSED")
	tb.expect("status of 503")
	tb.navigate(origin + "/ui/#/services/orders")
	live := rowJS("o1") + ` && document.querySelector('[data-field="stream"]').dataset.state === "live" && !document.querySelector('.problem')`
	tb.waitJS("the live instances", live, 10*time.Second)

	// Without a quorum the node closes its streams and refuses new ones
	// with 503; the page says why and keeps trying.
	c.Stop(1)
	c.Stop(2)
	tb.waitJS("the no-quorum state", `document.querySelector('.problem[data-status="503"]')?.textContent.includes('cannot serve')`, 20*time.Second)
	c.RestartAll(1, 2)
	c.WaitLeader(t)
	tb.waitJS("recovery after the quorum is back", live, 20*time.Second)
	register(t, origin, "orders", "o2", map[string]any{"address": "10.0.0.6:8080", "ttl": 3600})
	tb.waitJS("a registration after the recovery", rowJS("o2"), 10*time.Second)

	// The node itself goes away (a shutdown): unreachable, then back.
	c.Stop(0)
	tb.waitJS("the unreachable state", `document.querySelector('.problem[data-status="0"]')?.textContent.includes('cannot be reached') &&
		document.querySelector('[data-field="stream"]').dataset.state === "retrying"`, 20*time.Second)
	register(t, "http://"+c.Members[1].HTTPAddr, "orders", "o3", map[string]any{"address": "10.0.0.7:8080", "ttl": 3600})
	c.Restart(0)
	// The stream resumes after the last event the page saw: the
	// registration made while its node was down arrives.
	tb.waitJS("recovery after the node is back", live+` && `+rowJS("o2")+` && `+rowJS("o3"), 20*time.Second)
}
