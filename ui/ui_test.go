package ui_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/regd/regd/ui"
)

// checkSecurityHeaders asserts the headers every UI response carries.
func checkSecurityHeaders(t *testing.T, where string, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "require-trusted-types-for 'script'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("%s: Content-Security-Policy %q lacks %q", where, csp, want)
		}
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "*", "data:", "http:", "https:"} {
		if strings.Contains(csp, bad) {
			t.Errorf("%s: Content-Security-Policy %q allows %q", where, csp, bad)
		}
	}
	for k, want := range map[string]string{
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "no-referrer",
		"X-Frame-Options":        "DENY",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %s %q, want %q", where, k, got, want)
		}
	}
}

// TestHandler: what the handler answers, hostile paths included; every
// answer has the security headers, none is a 500 or a directory listing.
func TestHandler(t *testing.T) {
	ts := httptest.NewServer(ui.New())
	defer ts.Close()
	index, err := fs.ReadFile(os.DirFS("assets"), "index.html")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path string
		header             map[string]string
		status             int
		ctype              string // prefix of Content-Type
		body               []byte // exact body, when set
		location           string
		code               string // error code
	}{
		{name: "index", method: "GET", path: "/ui/", status: 200, ctype: "text/html; charset=utf-8", body: index},
		{name: "index by name", method: "GET", path: "/ui/index.html", status: 200, ctype: "text/html"},
		{name: "script", method: "GET", path: "/ui/app.js", status: 200, ctype: "text/javascript"},
		{name: "vendored module", method: "GET", path: "/ui/vendor/preact.js", status: 200, ctype: "text/javascript"},
		{name: "stylesheet", method: "GET", path: "/ui/app.css", status: 200, ctype: "text/css"},
		{name: "icon", method: "GET", path: "/ui/favicon.svg", status: 200, ctype: "image/svg+xml"},
		{name: "licence", method: "GET", path: "/ui/vendor/LICENSE.preact", status: 200, ctype: "text/plain"},
		{name: "HEAD", method: "HEAD", path: "/ui/app.js", status: 200, ctype: "text/javascript", body: []byte{}},
		{name: "no slash", method: "GET", path: "/ui", status: 301, location: "/ui/"},
		{name: "no slash, query dropped", method: "GET", path: "/ui?x=1", status: 301, location: "/ui/"},
		{name: "unknown file", method: "GET", path: "/ui/nope.js", status: 404, code: "route_not_found"},
		{name: "directory", method: "GET", path: "/ui/vendor/", status: 404, code: "route_not_found"},
		{name: "directory without slash", method: "GET", path: "/ui/vendor", status: 404, code: "route_not_found"},
		{name: "dot segments", method: "GET", path: "/ui/../ui/app.js", status: 404, code: "route_not_found"},
		{name: "encoded dot segments", method: "GET", path: "/ui/%2e%2e/%2e%2e/etc/passwd", status: 404, code: "route_not_found"},
		{name: "double slash", method: "GET", path: "/ui//app.js", status: 404, code: "route_not_found"},
		{name: "backslash", method: "GET", path: `/ui/..%5capp.js`, status: 404, code: "route_not_found"},
		{name: "NUL", method: "GET", path: "/ui/app.js%00.html", status: 404, code: "route_not_found"},
		{name: "script in the path", method: "GET", path: "/ui/%3Cscript%3Ealert(1)%3C%2Fscript%3E", status: 404, code: "route_not_found"},
		{name: "long path", method: "GET", path: "/ui/" + strings.Repeat("a/", 2000), status: 404, code: "route_not_found"},
		{name: "outside the prefix", method: "GET", path: "/v1/services", status: 404, code: "route_not_found"},
		{name: "embedded dir name", method: "GET", path: "/ui/assets/app.js", status: 404, code: "route_not_found"},
		{name: "POST", method: "POST", path: "/ui/", status: 405, code: "method_not_allowed"},
		{name: "DELETE", method: "DELETE", path: "/ui/app.js", status: 405, code: "method_not_allowed"},
		{name: "revalidation", method: "GET", path: "/ui/app.js", header: map[string]string{"If-None-Match": "*"}, status: 304},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, ts.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body %.200s", resp.StatusCode, tt.status, body)
			}
			checkSecurityHeaders(t, tt.method+" "+tt.path, resp.Header)
			if ct := resp.Header.Get("Content-Type"); tt.ctype != "" && !strings.HasPrefix(ct, tt.ctype) {
				t.Errorf("Content-Type %q, want %q", ct, tt.ctype)
			}
			if tt.body != nil && !bytes.Equal(body, tt.body) {
				t.Errorf("body differs from the asset (%d bytes, want %d)", len(body), len(tt.body))
			}
			if got := resp.Header.Get("Location"); got != tt.location {
				t.Errorf("Location %q, want %q", got, tt.location)
			}
			if tt.status == 200 {
				if resp.Header.Get("ETag") == "" || resp.Header.Get("Cache-Control") != "no-cache" {
					t.Errorf("ETag %q, Cache-Control %q: want an ETag and no-cache", resp.Header.Get("ETag"), resp.Header.Get("Cache-Control"))
				}
			}
			if tt.code != "" {
				var e struct {
					Error struct{ Code, Message string } `json:"error"`
				}
				if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != tt.code || e.Error.Message == "" {
					t.Errorf("body %s, want the error JSON with code %q", body, tt.code)
				}
				if strings.Contains(string(body), "<") {
					t.Errorf("error body echoes markup: %s", body)
				}
			}
			if tt.status == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow %q, want \"GET, HEAD\"", resp.Header.Get("Allow"))
			}
		})
	}

	// The ETag revalidates: a second load of an unchanged file is a 304.
	resp, err := http.Get(ts.URL + "/ui/app.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req, _ := http.NewRequest("GET", ts.URL+"/ui/app.js", nil)
	req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation with the ETag: %d, want 304", resp2.StatusCode)
	}
}

// TestAssetsHaveNoInlineCode: the CSP forbids inline script and style, so
// the HTML must have none (the browser test would see the page break, this
// says why); every module import resolves to an embedded file.
func TestAssetsHaveNoInlineCode(t *testing.T) {
	html, err := os.ReadFile("assets/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range regexp.MustCompile(`(?is)<script\b[^>]*>`).FindAll(html, -1) {
		if !bytes.Contains(tag, []byte(" src=")) {
			t.Errorf("inline script: %s", tag)
		}
	}
	for _, re := range []string{`(?i)<style\b`, `(?i)\sstyle=`, `(?i)\son[a-z]+=`, `(?i)javascript:`} {
		if m := regexp.MustCompile(re).Find(html); m != nil {
			t.Errorf("index.html has %q, which the CSP refuses", m)
		}
	}
	imports := regexp.MustCompile(`(?:from\s*|import\s*)["'](\.[^"']+)["']`)
	err = filepath.WalkDir("assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(p) != ".js" {
			return err
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(src, []byte("innerHTML")) && !strings.Contains(p, "vendor") {
			t.Errorf("%s uses innerHTML; render text through Preact instead", p)
		}
		for _, m := range imports.FindAllSubmatch(src, -1) {
			target := filepath.Join(filepath.Dir(p), string(m[1]))
			if _, err := os.Stat(target); err != nil {
				t.Errorf("%s imports %s, which is not in the assets", p, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestVendoredFiles: the vendored files are the ones scripts/vendor-ui.sh
// fetched (their sha256 is in VERSIONS), each with its licence.
func TestVendoredFiles(t *testing.T) {
	f, err := os.Open("assets/vendor/VERSIONS")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sums, pkgs := 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case fields[0] == "package":
			if len(fields) != 4 || !strings.HasPrefix(fields[3], "sha512-") {
				t.Errorf("VERSIONS: bad package line %q", line)
			}
			pkgs++
		case len(fields) == 2:
			b, err := os.ReadFile(filepath.Join("assets/vendor", fields[1]))
			if err != nil {
				t.Errorf("VERSIONS lists %s: %v", fields[1], err)
				continue
			}
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != fields[0] {
				t.Errorf("%s was changed after vendoring (sha256 differs from VERSIONS); run scripts/vendor-ui.sh", fields[1])
			}
			sums++
		default:
			t.Errorf("VERSIONS: unexpected line %q", line)
		}
	}
	if pkgs != 2 || sums != 5 {
		t.Fatalf("VERSIONS lists %d packages and %d files, want 2 and 5", pkgs, sums)
	}
}

// TestAssetSize keeps the UI small: everything a browser loads, raw and
// gzip-compressed, against a budget. The figure is logged (go test -v).
func TestAssetSize(t *testing.T) {
	const budget = 96 << 10 // raw bytes
	var raw, gz int
	var names []string
	err := filepath.WalkDir("assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasPrefix(filepath.Base(p), "LICENSE") || filepath.Base(p) == "VERSIONS" {
			return nil // served, but never loaded by the page
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = w.Write(b)
		_ = w.Close()
		raw += len(b)
		gz += buf.Len()
		names = append(names, filepath.ToSlash(strings.TrimPrefix(p, "assets/")))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ui assets: %d files, %d bytes, %d bytes gzip-compressed (%s)", len(names), raw, gz, strings.Join(names, " "))
	if raw > budget {
		t.Fatalf("the UI's assets are %d bytes, over the budget of %d", raw, budget)
	}
}
