package api

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// The health probes (class probe: no token, never shed). Load balancers
// and monitors also probe with HEAD, which every GET route answers.

// healthz is liveness: 200 while the process runs.
func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is readiness: 200 when the embedded member is ready and knows a
// leader; 503 otherwise (etcd's CORRUPT alarm included, named in the
// message), and from the moment a shutdown begins (Drain).
func (s *Server) readyz(c echo.Context) error {
	if s.draining.Load() {
		return unavailable("this node is shutting down")
	}
	if err := s.cfg.Cluster.Ready(); err != nil {
		return unavailable(err.Error())
	}
	// Alarms that leave the node ready (NOSPACE: reads, heartbeats and
	// watches go on) are named in the body, for the operator.
	if a, ok := s.cfg.Cluster.(interface{ Alarms() []string }); ok {
		if alarms := a.Alarms(); len(alarms) > 0 {
			return c.JSON(http.StatusOK, map[string]any{"status": "ready", "alarms": alarms})
		}
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}
