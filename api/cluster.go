package api

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// clusterStatus is GET /v1/cluster: this member, the leader, the members.
// It answers without a quorum (the status is read from this member).
func (s *Server) clusterStatus(c echo.Context) error {
	st, err := s.cfg.Cluster.Status(c.Request().Context())
	if err != nil {
		return err
	}
	setRevision(c, st.Revision)
	return c.JSON(http.StatusOK, st)
}
