package api

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/regd/regd/registry"
)

// Limits of GET /v1/expirations.
const (
	// DefaultExpirationsLimit is how many reports a request without
	// ?limit= gets.
	DefaultExpirationsLimit = 100
	// MaxExpirationsLimit caps ?limit=; a larger number is clamped to it
	// (the contract: "?limit= above the maximum is clamped to it, not
	// refused"), as Consul and etcd clamp their page sizes.
	MaxExpirationsLimit = 10000
)

// listExpirations is GET /v1/expirations[?service=][&limit=][&before=]: the
// expiry reports, newest first; ?before=<revision> pages (registry.
// Ledger.Expirations: a page never ends inside a revision).
func (s *Server) listExpirations(c echo.Context) error {
	service := c.QueryParam("service")
	if service != "" {
		if err := registry.ValidateService(service); err != nil {
			return err
		}
	}
	limit, err := expirationsLimit(c.QueryParam("limit"))
	if err != nil {
		return err
	}
	before, err := expirationsBefore(c.QueryParam("before"))
	if err != nil {
		return err
	}
	if s.cfg.Expirations == nil {
		return unavailable("the expiry ledger is not available on this node")
	}
	list, err := s.cfg.Expirations.Expirations(c.Request().Context(), registry.ExpirationQuery{Service: service, Limit: limit, Before: before})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"expirations": list})
}

// expirationsLimit reads ?limit=: absent, DefaultExpirationsLimit; a whole
// number from 1, clamped to MaxExpirationsLimit (also one too large for an
// int); anything else, 400 invalid_parameter.
func expirationsLimit(v string) (int, error) {
	if v == "" {
		return DefaultExpirationsLimit, nil
	}
	n, err := strconv.Atoi(v)
	if errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(v, "-") {
		return MaxExpirationsLimit, nil
	}
	if err != nil || n < 1 {
		return 0, invalidParameter("limit %q must be a whole number from 1 (at most %d are returned)", v, MaxExpirationsLimit)
	}
	return min(n, MaxExpirationsLimit), nil
}

// expirationsBefore reads ?before=: absent, 0 (from the newest); else a
// revision from 1, as etcd's revisions are (one too large for an int64
// is still a revision above every entry: no bound).
func expirationsBefore(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(v, "-") {
		return 0, nil
	}
	if err != nil || n < 1 {
		return 0, invalidParameter("before %q must be a revision, a whole number from 1 (the reports of revisions below it are returned)", v)
	}
	return n, nil
}
