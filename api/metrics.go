package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	streams  prometheus.Gauge
}

// newHTTPMetrics registers on reg, not the default registry, so that several
// regd nodes can live in one test process.
func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regd_http_requests_total",
			Help: "REST requests by method, route template and status code (watch streams counted when they end).",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "regd_http_request_duration_seconds",
			Help:    "REST request latency by method and route template; watch streams are not timed.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method", "route"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "regd_watch_streams",
			Help: "Watch streams (Server-Sent Events) open on this node; blocking queries are not counted.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.streams)
	return m
}

// observe counts and times a request. A stream's duration is how long its
// client stayed, not a latency: it would only push the histogram's top
// bucket, so streams are counted but not timed.
func (m *httpMetrics) observe(method, route string, k class, status int, d time.Duration) {
	m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	if k != classStream {
		m.duration.WithLabelValues(method, route).Observe(d.Seconds())
	}
}

// metricsHandler is GET /metrics: Prometheus text (compressed by promhttp
// itself when the client asks).
func (s *Server) metricsHandler() echo.HandlerFunc {
	return echo.WrapHandler(promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{}))
}

// observe is the outermost middleware: it hands every error to the one
// error exit (handleError) so the status is final, then counts, times and
// logs the request. The log has the path, never the query string or
// headers: tokens travel in the Authorization header, and nothing that
// identifies a client beyond its address is logged.
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
		r := c.Request()
		l := requestLine{method: r.Method, path: r.URL.Path, route: route, remote: r.RemoteAddr,
			status: c.Response().Status, class: s.routeOf(c).class, shed: c.Get(ctxShed) != nil}
		// A stream that outlives its handler (detach.go) is counted and
		// logged when it ends.
		atEnd(c, func() { s.endRequest(l, time.Since(start)) })
		return nil
	}
}

// requestLine is what the metrics and the log keep of a request: read
// before its handler returns, because echo reuses the context afterwards.
type requestLine struct {
	method, path, route, remote string
	status                      int
	class                       class
	shed                        bool
}

func (s *Server) endRequest(l requestLine, elapsed time.Duration) {
	s.metrics.observe(l.method, l.route, l.class, l.status, elapsed)
	s.logRequest(l, elapsed)
}

func (s *Server) logRequest(l requestLine, elapsed time.Duration) {
	level := zap.DebugLevel
	switch {
	case l.shed:
		// Refused by a limit: logged in summary by shed, never one line
		// per request (a flood must not turn into a flood of log lines).
	case l.status >= 500 && l.status != http.StatusServiceUnavailable:
		level = zap.ErrorLevel
	case l.status >= 500:
		level = zap.WarnLevel
	}
	if ce := s.lg.Check(level, "request"); ce != nil {
		ce.Write(
			zap.String("method", l.method),
			zap.String("path", l.path),
			zap.String("route", l.route),
			zap.Int("status", l.status),
			zap.Duration("took", elapsed),
			zap.String("remote", l.remote),
		)
	}
}
