package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/regd/regd/registry"
)

// register is PUT /v1/services/{service}/instances/{id}: 201 when new, 200
// when it replaced a live instance.
func (s *Server) register(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	r, err := decodeRegistration(body)
	if err != nil {
		return err
	}
	inst, created, err := s.cfg.Registry.Register(c.Request().Context(), c.Param("service"), c.Param("id"), r)
	if err != nil {
		return err
	}
	setRevision(c, inst.Revision)
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return c.JSON(status, inst)
}

// heartbeat is PUT .../instances/{id}/heartbeat: 200 {"ttl": seconds left}.
func (s *Server) heartbeat(c echo.Context) error {
	ttl, err := s.cfg.Registry.Heartbeat(c.Request().Context(), c.Param("service"), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]int64{"ttl": ttl})
}

// deregister is DELETE .../instances/{id}: 204.
func (s *Server) deregister(c echo.Context) error {
	rev, err := s.cfg.Registry.Deregister(c.Request().Context(), c.Param("service"), c.Param("id"))
	if err != nil {
		return err
	}
	setRevision(c, rev)
	return c.NoContent(http.StatusNoContent)
}

// getInstance is GET .../instances/{id}.
func (s *Server) getInstance(c echo.Context) error {
	inst, err := s.cfg.Registry.Get(c.Request().Context(), c.Param("service"), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, inst)
}

// listInstances is GET /v1/services/{service}/instances, sorted by id; a
// blocking query with ?index=&wait= (reads.go) wakes when this service
// changes.
func (s *Server) listInstances(c echo.Context) error {
	service := c.Param("service")
	if err := registry.ValidateService(service); err != nil {
		return err
	}
	o, err := parseReadOptions(c)
	if err != nil {
		return err
	}
	if err := s.catchUp(c, o); err != nil {
		return err
	}
	s.block(c, service, o)
	instances, rev := s.cfg.View.InstancesJSON(service)
	setRevision(c, rev)
	return s.writeList(c, service, instances, rev)
}
