package api

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/regd/regd/registry"
)

// statusOf is the one map from error kind to HTTP status.
var statusOf = map[registry.Kind]int{
	registry.KindInvalid:     http.StatusBadRequest,
	registry.KindNotFound:    http.StatusNotFound,
	registry.KindConflict:    http.StatusConflict,
	registry.KindTooLarge:    http.StatusRequestEntityTooLarge,
	registry.KindUnavailable: http.StatusServiceUnavailable,
	registry.KindInternal:    http.StatusInternalServerError,
	registry.KindTooMany:     http.StatusTooManyRequests,
}

// API-level codes; domain codes are in registry.
const (
	codeRouteNotFound    = "route_not_found"
	codeMethodNotAllowed = "method_not_allowed"
	codeBodyTooLarge     = "body_too_large"
	codeInvalidJSON      = "invalid_json"
	codeInvalidParameter = "invalid_parameter"
)

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// handleError writes every error, echo's own included, as the contract's
// error JSON. Anything that is not a classified error is a bug: logged once
// here, and shown to the client as a generic 500.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, detail := s.classify(err)
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	_ = c.JSON(status, errorBody{Error: detail})
}

func (s *Server) classify(err error) (int, errorDetail) {
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case http.StatusNotFound:
			return he.Code, errorDetail{codeRouteNotFound, "no such route; see /v1/openapi.json or the README for the API"}
		case http.StatusMethodNotAllowed:
			return he.Code, errorDetail{codeMethodNotAllowed, "method not allowed on this route; the Allow header lists the ones that are"}
		case http.StatusRequestEntityTooLarge:
			return he.Code, errorDetail{codeBodyTooLarge, "request body is too large"}
		}
		if he.Code >= 400 && he.Code < 500 {
			return he.Code, errorDetail{"bad_request", http.StatusText(he.Code)}
		}
	}
	re := registry.AsError(err)
	status, ok := statusOf[re.Kind]
	if !ok {
		status = http.StatusInternalServerError
	}
	switch {
	case status == http.StatusInternalServerError:
		s.lg.Error("internal error", zap.Error(err))
		return status, errorDetail{registry.CodeInternal, "internal error; the server log has the details"}
	case status == http.StatusServiceUnavailable && (re.Code == registry.CodeStorageFull || re.Code == registry.CodeStorageUnwritable):
		// The disk guard and etcd's alarm log the cause once; a line per
		// refused write would flood the log of a node short of disk.
		s.lg.Debug("write refused for storage", zap.Error(re.Err))
	case status == http.StatusServiceUnavailable && re.Err != nil:
		s.lg.Warn("cluster unavailable", zap.Error(re.Err))
	}
	return status, errorDetail{re.Code, re.Message}
}

func badRequest(code, format string, args ...any) error {
	return registry.Errorf(registry.KindInvalid, code, format, args...)
}
