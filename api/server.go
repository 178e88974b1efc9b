// Package api is regd's REST API over HTTP (echo). It translates requests to
// calls on small interfaces it declares itself and registry's errors to
// statuses; it holds no registry logic and imports no etcd server code.
//
// Where things are: the whole API is one route table (routes.go), in which
// each route declares its class (read, write, admin, stream, probe) once;
// authentication (auth.go), load limits (limits.go), compression (gzip.go)
// and metrics (metrics.go) read the class from there. Every error leaves
// through one exit (errors.go). Handlers live in one file per resource.
// Watch streams over HTTP/1.x outlive their handlers on connections taken
// from net/http (detach.go); Server.Wait is how shutdown waits for them.
package api

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/regd/regd/registry"
)

// Registry is the domain as the API uses it (registry.Local implements it).
type Registry interface {
	Register(ctx context.Context, service, id string, r registry.Registration) (registry.Instance, bool, error)
	Heartbeat(ctx context.Context, service, id string) (int64, error)
	// Heartbeats renews many instances, results in the order of items.
	Heartbeats(ctx context.Context, items []registry.HeartbeatItem) []registry.HeartbeatResult
	Deregister(ctx context.Context, service, id string) (int64, error)
	// Patch changes status, weight or metadata in place (a JSON merge
	// patch, registry.Patch).
	Patch(ctx context.Context, service, id string, p registry.Patch) (registry.Instance, error)
	// PatchObserved and DeregisterObserved run the drain handshake
	// (?wait_observed): they answer once every subscriber of the service
	// on every member was written the change, or when wait ends.
	PatchObserved(ctx context.Context, service, id string, p registry.Patch, wait time.Duration) (registry.Instance, registry.Observed, error)
	DeregisterObserved(ctx context.Context, service, id string, wait time.Duration) (int64, registry.Observed, error)
	Get(ctx context.Context, service, id string) (registry.Instance, error)
	// Revision is the cluster's current revision, read linearizably.
	Revision(ctx context.Context) (int64, error)
}

// View is the watch-fed, in-memory registry (registry.View implements it).
type View interface {
	// Rev is the revision the view reflects now.
	Rev() int64
	// WaitRev waits until the view reflects at least rev.
	WaitRev(ctx context.Context, rev int64) error
	// InstancesJSON is the service's instances that f selects as a JSON
	// array, and the revision the view reflects. shared: the array is
	// encoded once per change of the service (a new slice of Go memory
	// each time it changes, the same one until then: the gzip cache of
	// lists, listbody.go, relies on it); else it is made per call.
	InstancesJSON(service string, f registry.Filter) (encoded []byte, rev int64, shared bool)
	Services() registry.ServiceList
	// List is the service's instances that f selects, sorted by id;
	// service "": every service's, sorted by service then id.
	List(service string, f registry.Filter) registry.InstanceList
	// Changed is the revision of the service list's last change and a
	// channel closed at its next one (service "": the list).
	Changed(service string) (int64, <-chan struct{})
	// Block registers a blocking query of service's instances that f
	// selects after index (registry.Waiter).
	Block(service string, f registry.Filter, index int64) *registry.Waiter
	// Subscribe follows service's events that concern instances f
	// selects, after the position after (an event's id, or
	// registry.AfterRevision of a revision).
	Subscribe(ctx context.Context, service string, f registry.Filter, after registry.EventID) (*registry.Subscription, error)
	SubscribeFromList(ctx context.Context, service string, f registry.Filter) (registry.InstanceList, *registry.Subscription, error)
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
	Expirations(ctx context.Context, q registry.ExpirationQuery) ([]registry.Expiration, error)
}

// DefaultMaxBodyBytes caps request bodies. A registration is at most a few
// KiB (4 KiB of metadata plus an address), so this leaves room and no more.
const DefaultMaxBodyBytes = 64 << 10

// Config wires the API to the rest of regd.
type Config struct {
	Registry    Registry
	View        View
	Cluster     Cluster
	Expirations Expirations // nil: /v1/expirations answers 503
	// Membership, Backup and Exporter serve the operator's routes
	// (members.go); nil: those routes answer 503.
	Membership   Membership
	Backup       Backup
	Exporter     Exporter
	Logger       *zap.Logger
	Metrics      *prometheus.Registry // regd's own metrics are registered here
	Gatherer     prometheus.Gatherer  // what /metrics serves; nil: Metrics plus the default gatherer
	MaxBodyBytes int64

	// MaxWatchesPerClient caps the watch streams and blocking queries one
	// client IP may hold open at once (429 beyond); 0: DefaultMaxWatchesPerClient.
	MaxWatchesPerClient int
	// EnablePprof serves Go's profiler under /debug/pprof/, for measuring
	// a running node (subject to the same read rule as /metrics).
	EnablePprof bool
	KeepAlive   time.Duration // SSE keep-alive interval; 0: DefaultKeepAlive

	// Auth checks bearer tokens; nil: no authentication (every request
	// is allowed).
	Auth *Auth
	// CORSAllowedOrigins are the origins (scheme://host[:port], as browsers
	// send them in Origin) whose pages may call the API from a browser;
	// "*" allows any origin. nil or empty: no CORS headers at all, the
	// browser's same-origin policy applies. See cors.go; the command
	// checks --cors-allowed-origins before it gets here.
	CORSAllowedOrigins []string
	// UI serves the web UI under /ui/ (and / redirects browsers there);
	// nil: no UI. Its files need no token (classAsset).
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
	table    map[routeKey]*route // the route table by method and path template
	draining atomic.Bool
	metrics  *httpMetrics
	gzipped  gzipCache // compressed instance lists, by service

	closing   chan struct{}
	closeOnce sync.Once
	streams   *streamLimiter
	keepAlive time.Duration
	takenOver takenOver // watch streams that outlive their handlers
	sweepOnce sync.Once
	health    atomic.Pointer[healthState] // the node's readiness for streams (sweep)

	inflight     atomic.Int64
	shedCount    atomic.Int64
	shedLogged   atomic.Int64 // unix nanoseconds of the last shedding warning
	writeTimeout time.Duration
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
	if cfg.MaxWatchesPerClient == 0 {
		cfg.MaxWatchesPerClient = DefaultMaxWatchesPerClient
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
		streams:   &streamLimiter{open: make(map[string]int), max: cfg.MaxWatchesPerClient},
		keepAlive: cfg.KeepAlive,

		writeTimeout: max(cfg.WriteTimeout, 2*cfg.KeepAlive),
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	// observe sees every request, refused ones included, and is where
	// every error is written (errors.go). CORS answers preflights before
	// authentication: a browser sends them without credentials.
	// Authentication comes before the limits, so that requests without a
	// valid token never take a slot.
	mw := []echo.MiddlewareFunc{s.observe}
	if cors := s.cors(); cors != nil {
		mw = append(mw, cors)
	}
	e.Use(append(mw, s.authenticate, s.limit, s.compress)...)
	s.table = s.mount(e, s.routes())
	s.echo = e
	return s
}

// Routes lists the routes the server answers, as "METHOD /path" with echo's
// ":param" syntax, read back from echo's router: the route table's, and the
// HEAD twin of each GET route.
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

// Close tells long-lived requests (watch streams, blocking queries) to end
// now, so that the HTTP server's graceful shutdown does not wait on them.
// Watch streams on HTTP/1.x connections outlive their handlers, out of the
// HTTP server's sight: Wait waits for them.
func (s *Server) Close() { s.closeOnce.Do(func() { close(s.closing) }) }

// Closing is closed when the server shuts down.
func (s *Server) Closing() <-chan struct{} { return s.closing }

// HeaderRevision carries the etcd revision a response reflects.
const HeaderRevision = "X-Regd-Revision"

// setRevision sets X-Regd-Revision. etcd revisions start at 1, so a 0 here
// would mean a bug upstream; like Consul's index it is never sent as 0,
// because clients that block on it would spin.
func setRevision(c echo.Context, rev int64) {
	if rev < 1 {
		rev = 1
	}
	c.Response().Header().Set(HeaderRevision, strconv.FormatInt(rev, 10))
}
