package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/checktest"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
)

// TestScreenshots writes a PNG of each page of the UI, as a write token
// sees it on a three-member cluster (with an instance drained from the
// page, one out of service, two expiries, and orders' instances checked by
// the registry, one of them failing: the Health column), to the directory in
// $REGD_UI_SCREENSHOTS: `make screenshots` writes docs/ui/, which the README
// shows. Without the variable it skips; it is not part of `make test`.
func TestScreenshots(t *testing.T) {
	dir := os.Getenv("REGD_UI_SCREENSHOTS")
	if dir == "" {
		t.Skip("set REGD_UI_SCREENSHOTS=DIR (or run `make screenshots`) to write the UI's screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bctx := startBrowser(t, 1280, 800)
	c := regdtest.StartCluster(t, 3, regdtest.Options{Auth: api.NewAuth(tokens, false)})
	origin := "http://" + c.Members[0].HTTPAddr

	// orders' instances have HTTP checks the registry runs, against a
	// loopback backend; orders-2's fails (20 failures allowed, 5 s
	// apart: it stays listed, "failing", for the whole run).
	backend := checktest.NewHTTP(t)
	backend.Set("orders-2", checktest.Failing)
	for i, zone := range []string{"a", "a", "b", "c"} {
		weight := 100
		if i == 3 {
			weight = 50 // a canary
		}
		id := fmt.Sprintf("orders-%d", i+1)
		register(t, origin, "orders", id, map[string]any{
			"address": fmt.Sprintf("10.0.1.%d:8080", i+11), "ttl": 120, "weight": weight,
			"metadata": map[string]string{"zone": zone, "version": "2.3.1", "protocol": "http"},
			"check":    map[string]any{"http": backend.URL(id), "interval": "5s", "failures": 20},
		})
	}
	for i := range 2 {
		register(t, origin, "users", fmt.Sprintf("users-%d", i+1), map[string]any{"address": fmt.Sprintf("users-%d.internal:9000", i+1), "ttl": 120, "metadata": map[string]string{"zone": "a"}})
	}
	for i := range 3 {
		register(t, origin, "payments", fmt.Sprintf("pay-%d", i+1), map[string]any{"address": fmt.Sprintf("10.0.3.%d:7000", i+1), "ttl": 60})
	}
	register(t, origin, "payments", "pay-4", map[string]any{"address": "10.0.3.4:7000", "ttl": 60, "status": "out_of_service"})
	register(t, origin, "search", "search-1", map[string]any{"address": "[fd00::12]:9200", "ttl": 120})
	// Two instances that stop heartbeating, for the expiry reports.
	register(t, origin, "cart", "cart-1", map[string]any{"address": "10.0.4.1:8000", "ttl": 2})
	register(t, origin, "orders", "orders-9", map[string]any{"address": "10.0.1.99:8080", "ttl": 2, "metadata": map[string]string{"zone": "b"}})
	// Every check probed once (the first probes spread over the
	// interval): each of orders' rows shows its health.
	poll.Until(t, 20*time.Second, "a health result for each of orders' instances", func() error {
		status, _, b := rest(t, http.MethodGet, origin+"/v1/services/orders/instances?status=any", readToken, nil)
		var l struct {
			Instances []struct {
				ID     string
				Health *struct{ Status string }
			}
		}
		if status != 200 || json.Unmarshal(b, &l) != nil {
			return fmt.Errorf("orders: %d %s", status, b)
		}
		for _, in := range l.Instances {
			if in.Health == nil && in.ID != "orders-9" {
				return fmt.Errorf("%s not checked yet", in.ID)
			}
		}
		return nil
	})
	poll.Until(t, 30*time.Second, "the two expiry reports for the screenshots", func() error {
		status, _, b := rest(t, http.MethodGet, origin+"/v1/expirations", readToken, nil)
		var l struct{ Expirations []json.RawMessage }
		if status != 200 || json.Unmarshal(b, &l) != nil || len(l.Expirations) < 2 {
			return fmt.Errorf("expirations: %d %s", status, b)
		}
		return nil
	})

	tb := openTab(t, bctx, origin)
	// The window's size includes what headless Chromium keeps for its
	// own frame; the page gets exactly 1280×800.
	tb.do("desktop viewport", chromedp.EmulateViewport(1280, 800))
	tb.navigate(origin + "/ui/")
	tb.waitJS("the overview", `document.querySelectorAll('tr[data-member]').length === 3`, 10*time.Second)
	tb.setToken(writeToken, "write")
	tb.waitJS("the note to go", `document.querySelector('[data-field="note"]').textContent === ""`, 15*time.Second)
	shot := func(tb *tab, name string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
		defer cancel()
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", p, len(png))
	}

	// A service: orders-3 drained from the page, with the handshake's
	// answer in the note and among the page's changes.
	tb.navigate(origin + "/ui/#/services/orders")
	tb.waitJS("the instances", rowJS("orders-3")+`?.querySelector('button[data-action="drain"]') && document.querySelector('[data-field="stream"]').dataset.state === "live"`, 10*time.Second)
	tb.click(`tr[data-instance-id="orders-3"] button[data-action="drain"]`)
	tb.waitJS("the drain confirmation", `document.querySelector('dialog[open] #wait-observed')`, 5*time.Second)
	shot(tb, "drain-confirm.png")
	tb.click(`dialog[open] button[data-action="confirm"]`)
	tb.waitJS("the drain's handshake", `!document.querySelector('dialog[open]') && document.querySelector('.recent [data-field="handshake"]') &&
		document.querySelector('[data-field="note"]').textContent.includes('subscribers')`, 15*time.Second)
	shot(tb, "service.png")
	tb.waitJS("the note to go", `document.querySelector('[data-field="note"]').textContent === ""`, 15*time.Second)

	pages := []struct{ file, hash, ready string }{
		{"overview.png", "#/", `document.querySelectorAll('tr[data-member]').length === 3 && document.querySelector('[data-field="readiness"]') && document.querySelector('[data-field="alarms"]')`},
		{"services.png", "#/services", `document.querySelector('tr[data-service="orders"] [data-field="up"]')?.textContent === "3"`},
		{"expirations.png", "#/expirations", `document.querySelectorAll('tr[data-expiry] [data-field="cause"]').length >= 2`},
	}
	for _, p := range pages {
		tb.navigate(origin + "/ui/" + p.hash)
		tb.waitJS(p.file, p.ready, 10*time.Second)
		shot(tb, p.file)
	}

	// A phone, in a tab of its own (a new tab has no token: what a
	// reader sees).
	phone := openTab(t, bctx, origin)
	phone.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	phone.navigate(origin + "/ui/#/services/orders")
	phone.waitJS("the instances", rowJS("orders-3")+`?.dataset.status === "draining" && document.querySelector('[data-field="stream"]').dataset.state === "live"`, 10*time.Second)
	shot(phone, "service-phone.png")
}
