package api

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// listServices is GET /v1/services: every service with its instance
// counts (all, and up), sorted by name; a blocking query with
// ?index=&wait= (reads.go) wakes when the set of services or a count
// changes.
func (s *Server) listServices(c echo.Context) error {
	o, err := parseReadOptions(c)
	if err != nil {
		return err
	}
	if err := s.catchUp(c, o); err != nil {
		return err
	}
	s.block(c, o)
	list := s.cfg.View.Services()
	setRevision(c, list.Revision)
	return c.JSON(http.StatusOK, list)
}
