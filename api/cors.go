package api

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// CORS (the Fetch standard's cross-origin resource sharing) lets pages
// served elsewhere call the API from a browser: the contract's
// --cors-allowed-origins, Config.CORSAllowedOrigins here. echo's CORS
// middleware does the header work; regd decides which origins match (exactly
// a listed one, or any with "*"; no wildcard patterns) and which headers
// cross.

// corsMaxAge is how long, in seconds, a browser may reuse a preflight's
// answer: long enough to spare a round trip per request, short enough that
// a changed origin list takes effect within minutes.
const corsMaxAge = 600

// corsAllowHeaders are the request headers a page may send: the bearer
// token, the JSON body's type, and a watch stream's resume point.
var corsAllowHeaders = []string{echo.HeaderAuthorization, echo.HeaderContentType, "Last-Event-ID"}

// corsExposeHeaders are the response headers a page may read beyond the
// CORS-safelisted ones: the revision a list or write reflects, the drain
// handshake's counts (X-Regd-Observed, X-Regd-Observed-Members), the
// patch formats a 415 takes (Accept-Patch), when to retry a 429 or 503,
// and why a 401 or 403 refused.
var corsExposeHeaders = []string{HeaderRevision, HeaderObserved, HeaderObservedMembers, "Accept-Patch", echo.HeaderRetryAfter, echo.HeaderWWWAuthenticate}

// cors is the CORS middleware, nil when no origin is allowed. It runs
// before authentication: a preflight (OPTIONS with Origin and
// Access-Control-Request-Method) carries no credentials and is answered
// here, 204 with the route's methods (from the router, so HEAD is among
// them), whatever the route's class; an OPTIONS without
// Access-Control-Request-Method is not a preflight and goes on as any
// request. Every answer carries Vary: Origin, since it depends on it.
func (s *Server) cors() echo.MiddlewareFunc {
	if len(s.cfg.CORSAllowedOrigins) == 0 {
		return nil
	}
	anyOrigin := false
	allowed := make(map[string]bool, len(s.cfg.CORSAllowedOrigins))
	for _, o := range s.cfg.CORSAllowedOrigins {
		if o == "*" {
			anyOrigin = true
		}
		allowed[normalOrigin(o)] = true
	}
	return middleware.CORSWithConfig(middleware.CORSConfig{
		Skipper: func(c echo.Context) bool {
			r := c.Request()
			return r.Method == http.MethodOptions && r.Header.Get(echo.HeaderAccessControlRequestMethod) == ""
		},
		AllowOriginFunc: func(origin string) (bool, error) {
			return anyOrigin || allowed[origin], nil
		},
		AllowHeaders:  corsAllowHeaders,
		ExposeHeaders: corsExposeHeaders,
		MaxAge:        corsMaxAge,
	})
}

// normalOrigin is an origin as browsers serialise it in the Origin header
// (RFC 6454 §6.1): scheme and host in lower case, no trailing slash.
func normalOrigin(o string) string {
	return strings.ToLower(strings.TrimSuffix(o, "/"))
}
