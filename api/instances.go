package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/regd/regd/registry"
)

func (s *Server) register(c echo.Context) error {
	var r registry.Registration
	if err := s.decodeJSON(c, &r); err != nil {
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

func (s *Server) heartbeat(c echo.Context) error {
	ttl, err := s.cfg.Registry.Heartbeat(c.Request().Context(), c.Param("service"), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]int64{"ttl": ttl})
}

func (s *Server) deregister(c echo.Context) error {
	rev, err := s.cfg.Registry.Deregister(c.Request().Context(), c.Param("service"), c.Param("id"))
	if err != nil {
		return err
	}
	setRevision(c, rev)
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) getInstance(c echo.Context) error {
	inst, err := s.cfg.Registry.Get(c.Request().Context(), c.Param("service"), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, inst)
}

func (s *Server) listExpirations(c echo.Context) error {
	service := c.QueryParam("service")
	if service != "" {
		if err := registry.ValidateService(service); err != nil {
			return err
		}
	}
	limit := 100
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return badRequest(codeInvalidParameter, "limit %q must be a whole number from 1 to 10000", v)
		}
		limit = n
	}
	if s.cfg.Expirations == nil {
		return unavailable("the expiry ledger is not available on this node")
	}
	list, err := s.cfg.Expirations.Expirations(c.Request().Context(), service, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"expirations": list})
}

// decodeJSON reads one JSON object from the body into v: strictly, so a
// misspelt field ("tll") is an error rather than a silently ignored default.
// The Content-Type is not checked: curl -d sends a form type by default.
func (s *Server) decodeJSON(c echo.Context, v any) error {
	body, err := io.ReadAll(io.LimitReader(c.Request().Body, s.cfg.MaxBodyBytes+1))
	if err != nil {
		return badRequest(codeInvalidJSON, "could not read the request body")
	}
	if int64(len(body)) > s.cfg.MaxBodyBytes {
		return registry.Errorf(registry.KindTooLarge, codeBodyTooLarge, "request body is over %d bytes", s.cfg.MaxBodyBytes)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest(codeInvalidJSON, "request body is empty; expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(codeInvalidJSON, "request body is not valid JSON for this request: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest(codeInvalidJSON, "request body has data after the JSON object")
	}
	return nil
}

// jsonProblem turns encoding/json's errors into text that names the field
// without Go type names.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return "field " + strconv.Quote(te.Field) + " has the wrong type (" + te.Value + ")"
		}
		return "expected a JSON object, got " + te.Value
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return "syntax error at byte " + strconv.FormatInt(se.Offset, 10)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "the JSON ends too early"
	}
	return err.Error()
}
