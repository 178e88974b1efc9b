package api

import (
	"net/http"
	"net/http/pprof"

	"github.com/labstack/echo/v4"
)

// class is what kind of request a route serves. Each route declares it once,
// in the route table below, and every rule that depends on it reads it from
// there: the token scope it needs (class.scope, auth.go), whether it counts
// against the in-flight cap or the per-client cap of long-lived requests
// (limits.go), whether its answers may be compressed (gzip.go) and whether
// its duration is a latency worth a histogram (metrics.go).
type class uint8

const (
	// classRead reads the registry or the node's state. Read scope (when
	// reads need tokens); counted in flight.
	classRead class = iota
	// classWrite changes the registry. Write scope; counted in flight.
	classWrite
	// classAdmin operates the cluster or the process. Admin scope;
	// counted in flight.
	classAdmin
	// classStream holds a response open and writes to it as things
	// happen (Server-Sent Events). Read scope; capped per client instead
	// of in flight; never compressed; not timed.
	classStream
	// classProbe is a health probe of load balancers and orchestrators:
	// no token, never shed (a busy node must not look dead).
	classProbe
	// classAsset is a file of the web UI: no token (a browser cannot send
	// one with a page load; the page sends it with its API requests);
	// counted in flight; compressible.
	classAsset
)

func (k class) String() string {
	return [...]string{"read", "write", "admin", "stream", "probe", "asset"}[k]
}

// route is one line of the route table.
type route struct {
	method, path string // path in echo's syntax: ":param", "*"
	class        class
	// blocking: the route answers blocking queries (?index=N&wait=D).
	// One that waits is capped per client like a stream instead of
	// counting in flight: it waits, it does not work.
	blocking bool
	handler  echo.HandlerFunc
}

type routeKey struct{ method, path string }

// routes is the whole REST API in one table. Adding a route is one line
// here, its handler in the file of its resource, and its entry in
// openapi.json (a test holds the two together). Every GET route also
// answers HEAD (mount adds it).
func (s *Server) routes() []route {
	rs := []route{
		{method: http.MethodGet, path: "/v1/services", class: classRead, blocking: true, handler: s.listServices},
		{method: http.MethodGet, path: "/v1/services/:service/instances", class: classRead, blocking: true, handler: s.listInstances},
		{method: http.MethodPut, path: "/v1/services/:service/instances/:id", class: classWrite, handler: s.register},
		{method: http.MethodGet, path: "/v1/services/:service/instances/:id", class: classRead, handler: s.getInstance},
		{method: http.MethodPatch, path: "/v1/services/:service/instances/:id", class: classWrite, handler: s.patchInstance},
		{method: http.MethodDelete, path: "/v1/services/:service/instances/:id", class: classWrite, handler: s.deregister},
		{method: http.MethodPut, path: "/v1/services/:service/instances/:id/heartbeat", class: classWrite, handler: s.heartbeat},
		{method: http.MethodPut, path: "/v1/heartbeats", class: classWrite, handler: s.heartbeats},
		{method: http.MethodGet, path: "/v1/services/:service/watch", class: classStream, handler: s.watchService},
		{method: http.MethodGet, path: "/v1/watch", class: classStream, handler: s.watchAll},
		{method: http.MethodGet, path: "/v1/expirations", class: classRead, handler: s.listExpirations},
		{method: http.MethodGet, path: "/v1/cluster", class: classRead, handler: s.clusterStatus},
		{method: http.MethodPost, path: "/v1/cluster/members", class: classAdmin, handler: s.addMember},
		{method: http.MethodPost, path: "/v1/cluster/members/:id/promote", class: classAdmin, handler: s.promoteMember},
		{method: http.MethodDelete, path: "/v1/cluster/members/:id", class: classAdmin, handler: s.removeMember},
		{method: http.MethodGet, path: "/v1/snapshot", class: classAdmin, handler: s.snapshot},
		{method: http.MethodGet, path: "/v1/export", class: classRead, handler: s.export},
		{method: http.MethodGet, path: "/v1/prometheus/targets", class: classRead, handler: s.prometheusTargets},
		{method: http.MethodGet, path: "/v1/auth/token", class: classRead, handler: s.tokenScope},
		{method: http.MethodGet, path: "/healthz", class: classProbe, handler: s.healthz},
		{method: http.MethodGet, path: "/readyz", class: classProbe, handler: s.readyz},
		{method: http.MethodGet, path: "/metrics", class: classRead, handler: s.metricsHandler()},
		{method: http.MethodGet, path: "/v1/openapi.json", class: classRead, handler: s.openapi},
	}
	if s.cfg.EnablePprof {
		rs = append(rs, pprofRoutes()...)
	}
	if s.cfg.UI != nil {
		rs = append(rs, uiRoutes(s.cfg.UI)...)
	}
	return rs
}

// pprofRoutes are served only with EnablePprof: they cost nothing when
// unused, but a profile holds a request open and reveals internals. They
// are reads (the same rule as /metrics), not streams: a profile is one
// answer, however long it takes.
func pprofRoutes() []route {
	wrap := func(h http.HandlerFunc) echo.HandlerFunc { return echo.WrapHandler(h) }
	return []route{
		{method: http.MethodGet, path: "/debug/pprof/*", class: classRead, handler: wrap(pprof.Index)},
		{method: http.MethodGet, path: "/debug/pprof/cmdline", class: classRead, handler: wrap(pprof.Cmdline)},
		{method: http.MethodGet, path: "/debug/pprof/profile", class: classRead, handler: wrap(pprof.Profile)},
		{method: http.MethodGet, path: "/debug/pprof/symbol", class: classRead, handler: wrap(pprof.Symbol)},
		{method: http.MethodGet, path: "/debug/pprof/trace", class: classRead, handler: wrap(pprof.Trace)},
	}
}

// mount adds the routes to echo's router, each GET route with its HEAD
// twin (RFC 9110 §9.3.2: the same status and headers, no content; load
// balancers and monitors probe with HEAD), and returns them by method and
// path. A HEAD runs the GET handler: net/http discards the body a handler
// writes for a HEAD request, after using its length for Content-Length as
// it would for the GET; stream handlers return after their headers
// (watch.go).
func (s *Server) mount(e *echo.Echo, rs []route) map[routeKey]*route {
	table := make(map[routeKey]*route, 2*len(rs))
	for i := range rs {
		r := &rs[i]
		e.Add(r.method, r.path, r.handler)
		table[routeKey{r.method, r.path}] = r
		if r.method == http.MethodGet {
			e.Add(http.MethodHead, r.path, r.handler)
			table[routeKey{http.MethodHead, r.path}] = r
		}
	}
	return table
}

// Requests that match no route (404, 405, an OPTIONS echo answers itself)
// are classed by method: a write to a path that does not exist is refused
// for want of a write token before routing can answer 404 or 405.
var (
	unmatchedRead  = route{class: classRead}
	unmatchedWrite = route{class: classWrite}
)

// routeOf is the route-table entry of the request's route.
func (s *Server) routeOf(c echo.Context) *route {
	method := c.Request().Method
	if r := s.table[routeKey{method, c.Path()}]; r != nil {
		return r
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return &unmatchedRead
	}
	return &unmatchedWrite
}
