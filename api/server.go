// Package api is regd's REST API over HTTP (echo). It translates requests to
// calls on small interfaces it declares itself and registry's errors to
// statuses; it holds no registry logic and imports no etcd server code.
package api

import (
	"context"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/regd/regd/registry"
)

// Registry is the domain as the API uses it (registry.Store implements it).
type Registry interface {
	Register(ctx context.Context, service, id string, r registry.Registration) (registry.Instance, bool, error)
	Heartbeat(ctx context.Context, service, id string) (int64, error)
	Deregister(ctx context.Context, service, id string) (int64, error)
	Get(ctx context.Context, service, id string) (registry.Instance, error)
	// Revision is the cluster's current revision, read linearizably.
	Revision(ctx context.Context) (int64, error)
}

// Cluster answers readiness and cluster status.
type Cluster interface {
	// Ready is nil when the node can serve: its embedded member is up,
	// knows a leader, and has a working disk. The error says why not.
	Ready() error
	Status(ctx context.Context) (registry.ClusterStatus, error)
}

// Expirations reads the expiry ledger.
type Expirations interface {
	Expirations(ctx context.Context, service string, limit int) ([]registry.Expiration, error)
}

// DefaultMaxBodyBytes caps request bodies. A registration is at most a few
// KiB (4 KiB of metadata plus an address), so this leaves room and no more.
const DefaultMaxBodyBytes = 64 << 10

// Config wires the API to the rest of regd.
type Config struct {
	Registry     Registry
	View         View
	Cluster      Cluster
	Expirations  Expirations // nil: /v1/expirations answers 503
	Logger       *zap.Logger
	Metrics      *prometheus.Registry // regd's own metrics are registered here
	Gatherer     prometheus.Gatherer  // what /metrics serves; nil: Metrics plus the default gatherer
	MaxBodyBytes int64

	// StreamsPerClient caps the watch streams and blocking queries one
	// client IP may hold open at once (429 beyond); 0: DefaultStreamsPerClient.
	StreamsPerClient int
	// EnablePprof serves Go's profiler under /debug/pprof/, for measuring
	// a running node (subject to the same read rule as /metrics).
	EnablePprof bool
	KeepAlive   time.Duration // SSE keep-alive interval; 0: DefaultKeepAlive

	// Auth checks bearer tokens; nil: no authentication (every request
	// is allowed).
	Auth *Auth
	// UI serves the web UI under /ui/ (and / redirects browsers there);
	// nil: no UI. It gets GET and HEAD under /ui without a token.
	UI http.Handler
	// MaxInFlight caps requests handled at once, watch streams, blocking
	// queries and health probes excepted (503 overloaded beyond);
	// 0: DefaultMaxInFlight; negative: no cap.
	MaxInFlight int
	// BodyTimeout bounds reading a request body (408 beyond);
	// 0: DefaultBodyTimeout.
	BodyTimeout time.Duration
	// WriteTimeout bounds each write of a response (the connection is
	// closed beyond); 0: DefaultWriteTimeout. At least twice KeepAlive is
	// used, so idle watch streams are never cut.
	WriteTimeout time.Duration
}

// Server is the HTTP handler of the REST API.
type Server struct {
	cfg      Config
	lg       *zap.Logger
	echo     *echo.Echo
	draining atomic.Bool
	metrics  *httpMetrics

	closing   chan struct{}
	closeOnce sync.Once
	streams   *streamLimiter
	keepAlive time.Duration

	inflight     atomic.Int64
	shedCount    atomic.Int64
	shedLogged   atomic.Int64 // unix nanoseconds of the last shedding warning
	writeTimeout time.Duration
}

type route struct {
	method, path string
	handler      echo.HandlerFunc
}

// New builds the API.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.Gatherers{cfg.Metrics, prometheus.DefaultGatherer}
	}
	if cfg.StreamsPerClient == 0 {
		cfg.StreamsPerClient = DefaultStreamsPerClient
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	s := &Server{
		cfg:       cfg,
		lg:        cfg.Logger,
		metrics:   newHTTPMetrics(cfg.Metrics),
		closing:   make(chan struct{}),
		streams:   &streamLimiter{open: make(map[string]int), max: cfg.StreamsPerClient},
		keepAlive: cfg.KeepAlive,

		writeTimeout: max(cfg.WriteTimeout, 2*cfg.KeepAlive),
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	// observe sees every request, refused ones included; authentication
	// comes before the limits, so that requests without a valid token
	// never take a slot.
	e.Use(s.observe, s.authenticate, s.limit)
	routes := s.routes()
	if cfg.EnablePprof {
		routes = append(routes, pprofRoutes()...)
	}
	if cfg.UI != nil {
		routes = append(routes, uiRoutes(cfg.UI)...)
	}
	for _, r := range routes {
		e.Add(r.method, r.path, r.handler)
	}
	s.echo = e
	return s
}

// routes is the whole REST API in one table.
func (s *Server) routes() []route {
	metrics := echo.WrapHandler(promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{}))
	return []route{
		{http.MethodGet, "/v1/services", s.listServices},
		{http.MethodGet, "/v1/services/:service/instances", s.listInstances},
		{http.MethodPut, "/v1/services/:service/instances/:id", s.register},
		{http.MethodGet, "/v1/services/:service/instances/:id", s.getInstance},
		{http.MethodDelete, "/v1/services/:service/instances/:id", s.deregister},
		{http.MethodPut, "/v1/services/:service/instances/:id/heartbeat", s.heartbeat},
		{http.MethodGet, "/v1/services/:service/watch", s.watchService},
		{http.MethodGet, "/v1/watch", s.watchAll},
		{http.MethodGet, "/v1/expirations", s.listExpirations},
		{http.MethodGet, "/v1/cluster", s.clusterStatus},
		{http.MethodGet, "/v1/auth/token", s.tokenScope},
		{http.MethodGet, "/healthz", s.healthz},
		{http.MethodGet, "/readyz", s.readyz},
		{http.MethodGet, "/metrics", metrics},
		{http.MethodGet, "/v1/openapi.json", s.openapi},
	}
}

// pprofRoutes are served only with EnablePprof: they cost nothing when
// unused, but a profile holds a request open and reveals internals.
func pprofRoutes() []route {
	return []route{
		{http.MethodGet, "/debug/pprof/*", echo.WrapHandler(http.HandlerFunc(pprof.Index))},
		{http.MethodGet, "/debug/pprof/cmdline", echo.WrapHandler(http.HandlerFunc(pprof.Cmdline))},
		{http.MethodGet, "/debug/pprof/profile", echo.WrapHandler(http.HandlerFunc(pprof.Profile))},
		{http.MethodGet, "/debug/pprof/symbol", echo.WrapHandler(http.HandlerFunc(pprof.Symbol))},
		{http.MethodGet, "/debug/pprof/trace", echo.WrapHandler(http.HandlerFunc(pprof.Trace))},
	}
}

// Routes lists the routes the server answers, as "METHOD /path" with echo's
// ":param" syntax, read back from echo's router.
func (s *Server) Routes() []string {
	var out []string
	for _, r := range s.echo.Routes() {
		if r.Method == echo.RouteNotFound {
			continue
		}
		out = append(out, r.Method+" "+r.Path)
	}
	return out
}

// Handler is the API as an http.Handler.
func (s *Server) Handler() http.Handler { return s.echo }

// Drain makes /readyz answer 503 so load balancers stop sending traffic
// while in-flight requests finish.
func (s *Server) Drain() { s.draining.Store(true) }

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	switch {
	case s.draining.Load():
		return unavailable("this node is shutting down")
	}
	if err := s.cfg.Cluster.Ready(); err != nil {
		return unavailable(err.Error())
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) clusterStatus(c echo.Context) error {
	st, err := s.cfg.Cluster.Status(c.Request().Context())
	if err != nil {
		return err
	}
	setRevision(c, st.Revision)
	return c.JSON(http.StatusOK, st)
}

func unavailable(msg string) error {
	return registry.Errorf(registry.KindUnavailable, registry.CodeUnavailable, "%s", msg)
}

// setRevision sets X-Regd-Revision. etcd revisions start at 1, so a 0 here
// would mean a bug upstream; like Consul's index it is never sent as 0,
// because clients that block on it would spin.
func setRevision(c echo.Context, rev int64) {
	if rev < 1 {
		rev = 1
	}
	c.Response().Header().Set(HeaderRevision, strconv.FormatInt(rev, 10))
}

// HeaderRevision carries the etcd revision a response reflects.
const HeaderRevision = "X-Regd-Revision"

// observe counts, times and logs every request. The log has the path, never
// the query string or headers: tokens travel in the Authorization header,
// and nothing that identifies a client beyond its address is logged.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err) // writes the response now, so the status below is final
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		status := c.Response().Status
		elapsed := time.Since(start)
		s.metrics.observe(c.Request().Method, route, status, elapsed)
		s.logRequest(c, route, status, elapsed)
		return nil
	}
}

func (s *Server) logRequest(c echo.Context, route string, status int, elapsed time.Duration) {
	level := zap.DebugLevel
	switch {
	case c.Get(ctxShed) != nil:
		// Refused by a limit: logged in summary by shed, never one line
		// per request (a flood must not turn into a flood of log lines).
	case status >= 500 && status != http.StatusServiceUnavailable:
		level = zap.ErrorLevel
	case status >= 500:
		level = zap.WarnLevel
	}
	if ce := s.lg.Check(level, "request"); ce != nil {
		r := c.Request()
		ce.Write(
			zap.String("method", r.Method),
			zap.String("path", r.URL.Path),
			zap.String("route", route),
			zap.Int("status", status),
			zap.Duration("took", elapsed),
			zap.String("remote", r.RemoteAddr),
		)
	}
}

// Close tells long-lived requests (watch streams, blocking queries) to end
// now, so that the HTTP server's graceful shutdown does not wait on them.
func (s *Server) Close() { s.closeOnce.Do(func() { close(s.closing) }) }

// Closing is closed when the server shuts down.
func (s *Server) Closing() <-chan struct{} { return s.closing }
