package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/regd/regd/api"
)

// fetchResult is what the page's fetch() saw.
type fetchResult struct {
	Status       int    `json:"status"`
	Revision     string `json:"revision"`
	Authenticate string `json:"authenticate"`
	Error        string `json:"error"`
}

// fetchScript calls url from the page, with a bearer token and a JSON body
// when given (which makes the browser send a preflight first), and returns
// what the page can read of the answer, or the error fetch() threw.
func fetchScript(method, url, token, body string) string {
	return fmt.Sprintf(`(async () => {
		try {
			const headers = {};
			if (%[3]q) headers["Authorization"] = "Bearer " + %[3]q;
			const init = {method: %[1]q, headers};
			if (%[4]q) { headers["Content-Type"] = "application/json"; init.body = %[4]q; }
			const r = await fetch(%[2]q, init);
			return {status: r.status, revision: r.headers.get("X-Regd-Revision") || "",
				authenticate: r.headers.get("WWW-Authenticate") || ""};
		} catch (e) {
			return {error: String(e)};
		}
	})()`, method, url, token, body)
}

// TestCORSInBrowser: what a page served elsewhere can do, in Chromium. A
// page of a listed origin registers with a write token (a request that
// needs a preflight, answered although tokens are required), reads the
// exposed revision header, and reads a 401's WWW-Authenticate; the same
// request from a page of an unlisted origin is blocked by the browser.
func TestCORSInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Chromium")
	}
	var browser string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		t.Skip("no Chromium on this machine (Debian: apt-get install chromium)")
	}
	html := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<!doctype html><title>regd cors test</title>")
	})
	listed := httptest.NewServer(html)
	t.Cleanup(listed.Close)
	unlisted := httptest.NewServer(html)
	t.Cleanup(unlisted.Close)

	cfg := withFakes(api.Config{Auth: api.NewAuth(testTokens, true), CORSAllowedOrigins: []string{listed.URL}})
	s := api.New(cfg)
	t.Cleanup(s.Close)
	var preflights atomic.Int64
	regd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			preflights.Add(1)
		}
		s.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(regd.Close)

	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox)...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancel)

	fetch := func(page, method, path, token, body string) fetchResult {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
			t.Fatalf("open %s: %v", page, err)
		}
		res, err := chromedp.Run(ctx, chromedp.Evaluate[fetchResult](fetchScript(method, regd.URL+path, token, body), chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("fetch from %s: %v", page, err)
		}
		return res
	}

	res := fetch(listed.URL, http.MethodPut, "/v1/services/user/instances/u1", writeToken, registerBody)
	if res.Status != http.StatusCreated || res.Revision == "" || res.Error != "" {
		t.Fatalf("PUT from the listed origin: %+v; want 201 with a readable X-Regd-Revision", res)
	}
	if preflights.Load() == 0 {
		t.Fatal("the browser sent no preflight: the PUT did not test one")
	}
	res = fetch(listed.URL, http.MethodGet, "/v1/services", "", "")
	if res.Status != http.StatusUnauthorized || !strings.HasPrefix(res.Authenticate, "Bearer") {
		t.Fatalf("GET without a token from the listed origin: %+v; want a readable 401", res)
	}
	res = fetch(unlisted.URL, http.MethodPut, "/v1/services/user/instances/u1", writeToken, registerBody)
	if res.Error == "" || res.Status != 0 {
		t.Fatalf("PUT from an unlisted origin: %+v; want the browser to block it", res)
	}
}
