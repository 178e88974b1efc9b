// Package ui serves regd's web UI: a few static files embedded in the binary
// (assets/), served under /ui/. The page is a client of the public REST API
// and nothing else: it reads /v1/cluster, /v1/services, the watch streams and
// /v1/expirations with the token the user enters, exactly as curl would, so
// the UI can never show or do what the API would refuse. The package
// therefore knows nothing of the registry; it imports no regd package and no
// etcd code, and is wired beside the API in internal/server.
//
// The assets use Preact and htm, vendored as ES modules under
// assets/vendor/ (see ui/README.md and scripts/vendor-ui.sh); there is no
// build step: the files are served as they are in the repository.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// Path is where the UI is served. Links inside the page are relative, but
// the redirects below and the API's mount use it.
const Path = "/ui/"

//go:embed assets
var assets embed.FS

// ContentSecurityPolicy is sent with every UI response. The page loads
// only its own files and talks only to its own origin: no inline script or
// style (the HTML has none, and Preact sets styles through the DOM, which
// CSP does not restrict), no eval, no plugins, no framing by another page
// (clickjacking of the deregister button), no form posts elsewhere, and
// Trusted Types with no policy, so that even a bug that passed a string to
// innerHTML would throw instead of running markup from instance metadata.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; " +
	"frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'"

// file is one embedded asset, prepared once at start.
type file struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the UI. It answers GET and HEAD under Path; anything else
// is 405 (with Allow) or 404 in the REST API's error JSON.
type Handler struct {
	files map[string]file // by path below Path, "" is index.html
}

// New returns the UI handler. It panics only if the embedded assets are
// broken, which the package's tests rule out for any build.
func New() *Handler {
	h := &Handler{files: map[string]file{}}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "assets/")
		sum := sha256.Sum256(body)
		h.files[name] = file{
			body:        body,
			contentType: contentType(name),
			etag:        `"` + hex.EncodeToString(sum[:12]) + `"`,
		}
		return nil
	})
	if err != nil {
		panic("ui: reading the embedded assets: " + err.Error())
	}
	h.files[""] = h.files["index.html"]
	return h
}

// contentType is by extension, with a fixed table rather than the system's
// MIME database (which differs between machines): a script served with the
// wrong type is refused by the browser, given nosniff.
func contentType(name string) string {
	switch path.Ext(name) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	}
	return "text/plain; charset=utf-8" // the vendored LICENSE and VERSIONS files
}

// setSecurityHeaders is applied to every response, errors included.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY") // for browsers without frame-ancestors
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// ServeHTTP serves Path and the files below it; Path without its slash
// redirects to it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	setSecurityHeaders(hdr)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		writeError(w, r, http.StatusMethodNotAllowed, "method_not_allowed",
			"the web UI answers GET and HEAD only")
		return
	}
	p := r.URL.Path
	if p == strings.TrimSuffix(Path, "/") {
		// A relative Location would resolve against /ui, not /ui/;
		// the absolute path keeps the query out (tokens never travel
		// in URLs, and nothing else should either).
		http.Redirect(w, r, Path, http.StatusMovedPermanently)
		return
	}
	name, ok := strings.CutPrefix(p, Path)
	f, found := h.files[name]
	if !ok || !found {
		writeError(w, r, http.StatusNotFound, "route_not_found",
			"no such page or file in the web UI; the UI is at "+Path)
		return
	}
	hdr.Set("Content-Type", f.contentType)
	hdr.Set("ETag", f.etag)
	// The files change only with the binary, and their names carry no
	// version: the browser may keep them but must revalidate (a 304 by
	// ETag), so that an upgraded node never runs yesterday's page.
	hdr.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
}

// writeError answers in the REST API's error shape, so that a client that
// strays into the UI's path gets the same kind of answer as anywhere else.
func writeError(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]map[string]string{"error": {"code": code, "message": message}})
}
