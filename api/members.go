package api

import (
	"context"
	"io"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/regd/regd/registry"
)

// Membership changes the cluster's members (cluster.Admin implements it
// over the embedded member). IDs are etcd's member IDs, as /v1/cluster
// shows them in hex.
type Membership interface {
	AddMember(ctx context.Context, req registry.MemberAdd) (registry.MemberAdded, error)
	PromoteMember(ctx context.Context, id uint64) (registry.MemberStatus, error)
	RemoveMember(ctx context.Context, id uint64) error
}

// Backup takes snapshots and exports (cluster.Admin, registry.Store).
type Backup interface {
	// Snapshot streams a snapshot of the backend in the format of
	// `etcdctl snapshot save`; the caller closes it.
	Snapshot(ctx context.Context) (io.ReadCloser, error)
}

// Exporter reads every instance at one revision (registry.Store).
type Exporter interface {
	Export(ctx context.Context) (registry.Export, error)
}

// notConfigured answers routes whose part of regd is not wired in (tests
// that build the API alone).
func notConfigured(what string) error {
	return unavailable(what + " is not available on this node")
}

// addMember is POST /v1/cluster/members: announce a member; the answer
// (201) says how to start it.
func (s *Server) addMember(c echo.Context) error {
	if s.cfg.Membership == nil {
		return notConfigured("membership")
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var req registry.MemberAdd
	if err := decodeJSON(body, &req); err != nil {
		return err
	}
	added, err := s.cfg.Membership.AddMember(c.Request().Context(), req)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, added)
}

// promoteMember is POST /v1/cluster/members/{id}/promote.
func (s *Server) promoteMember(c echo.Context) error {
	if s.cfg.Membership == nil {
		return notConfigured("membership")
	}
	id, err := memberID(c)
	if err != nil {
		return err
	}
	m, err := s.cfg.Membership.PromoteMember(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, m)
}

// removeMember is DELETE /v1/cluster/members/{id}: 204, or 409 when the
// removal would take the cluster's quorum away (cluster/DESIGN.md).
func (s *Server) removeMember(c echo.Context) error {
	if s.cfg.Membership == nil {
		return notConfigured("membership")
	}
	id, err := memberID(c)
	if err != nil {
		return err
	}
	if err := s.cfg.Membership.RemoveMember(c.Request().Context(), id); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// memberID parses the {id} of a member route: etcd's member ID in hex, as
// /v1/cluster and etcdctl show it.
func memberID(c echo.Context) (uint64, error) {
	raw := c.Param("id")
	id, err := strconv.ParseUint(raw, 16, 64)
	if err != nil || id == 0 || len(raw) > 16 {
		return 0, invalidParameter("member id %q: want the member's ID in hex, as GET /v1/cluster shows it", raw)
	}
	return id, nil
}

// snapshot is GET /v1/snapshot: a consistent snapshot of this member's
// backend, streamed as application/octet-stream in the format of
// `etcdctl snapshot save` (restore it with `regd snapshot restore`). A HEAD
// request gets the headers without taking a snapshot. A failure after the
// first byte cannot change the status any more: the connection is cut, so
// the client sees a short body (and restore's checksum would refuse it).
func (s *Server) snapshot(c echo.Context) error {
	if s.cfg.Backup == nil {
		return notConfigured("snapshot")
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, echo.MIMEOctetStream)
	h.Set(echo.HeaderContentDisposition, `attachment; filename="regd.snapshot"`)
	h.Set("Cache-Control", "no-store")
	if c.Request().Method == http.MethodHead {
		return c.NoContent(http.StatusOK)
	}
	rc, err := s.cfg.Backup.Snapshot(c.Request().Context())
	if err != nil {
		h.Del(echo.HeaderContentDisposition)
		return err
	}
	defer rc.Close()
	c.Response().WriteHeader(http.StatusOK)
	if _, err := io.Copy(c.Response(), rc); err != nil {
		s.lg.Warn("snapshot stream cut short", zap.Error(err))
		panic(http.ErrAbortHandler)
	}
	return nil
}

// export is GET /v1/export: every instance at one revision.
func (s *Server) export(c echo.Context) error {
	if s.cfg.Exporter == nil {
		return notConfigured("export")
	}
	ex, err := s.cfg.Exporter.Export(c.Request().Context())
	if err != nil {
		return err
	}
	setRevision(c, ex.Revision)
	return c.JSON(http.StatusOK, ex)
}
