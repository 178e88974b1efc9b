package api

import (
	"mime"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/regd/regd/registry"
)

// uiRoutes mount the web UI (package ui, wired in internal/server) beside
// the API: its files under /ui/, and / sending a browser there. Like pprof,
// they exist only when Config.UI is set, so the route table that
// openapi.json describes stays the API's own. The UI's files need no token
// (classAsset): the page asks for one and sends it with its API requests.
func uiRoutes(ui http.Handler) []route {
	h := echo.WrapHandler(ui)
	return []route{
		{method: http.MethodGet, path: "/ui", class: classAsset, handler: h},
		{method: http.MethodGet, path: "/ui/*", class: classAsset, handler: h},
		{method: http.MethodGet, path: "/", class: classAsset, handler: toUI},
	}
}

// toUI redirects a browser at / to the UI. Anything that does not ask for
// HTML (curl sends */*, API clients application/json) gets the API's usual
// 404 route_not_found, whose message names the UI: / is not an API route.
// Not a redirect for every client, as Consul's agent does: HTTP clients
// follow redirects by default (Go's, Python's requests), so an API client
// or a probe that GETs / would get 200 and the UI's HTML where it expects
// the contract's JSON; curl without -L would get an empty 302.
func toUI(c echo.Context) error {
	if !acceptsHTML(c.Request().Header.Values(echo.HeaderAccept)) {
		return registry.Errorf(registry.KindNotFound, registry.CodeRouteNotFound,
			"/ is no API route: the web UI is at /ui/, the API is described at /v1/openapi.json")
	}
	return c.Redirect(http.StatusFound, "/ui/")
}

// acceptsHTML reports whether an Accept header lists text/html with a
// non-zero quality (RFC 9110 §12.5.1); wildcards do not count, or every curl
// would be redirected.
func acceptsHTML(values []string) bool {
	for _, v := range values {
		for _, r := range strings.Split(v, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(r))
			if err != nil || mt != "text/html" {
				continue
			}
			if q := params["q"]; q != "" && strings.Trim(q, "0.") == "" {
				continue // q=0: "not acceptable"
			}
			return true
		}
	}
	return false
}
