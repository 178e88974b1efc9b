package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/regd/regd/registry"
)

// This file is the one place that maps errors to HTTP: every handler and
// middleware returns an error (a *registry.Error with a code from the one
// list in registry/errors.go), and handleError writes it. Nothing else in
// api writes an error body; api/errcodes_test.go (run by `make lint`)
// checks that, and that no code is written as a literal.

// statusOf is the one map from error kind to HTTP status.
var statusOf = map[registry.Kind]int{
	registry.KindInvalid:          http.StatusBadRequest,
	registry.KindUnauthenticated:  http.StatusUnauthorized,
	registry.KindPermissionDenied: http.StatusForbidden,
	registry.KindNotFound:         http.StatusNotFound,
	registry.KindRequestTimeout:   http.StatusRequestTimeout,
	registry.KindConflict:         http.StatusConflict,
	registry.KindUnsupportedMedia: http.StatusUnsupportedMediaType,
	registry.KindTooLarge:         http.StatusRequestEntityTooLarge,
	registry.KindTooMany:          http.StatusTooManyRequests,
	registry.KindInternal:         http.StatusInternalServerError,
	registry.KindUnavailable:      http.StatusServiceUnavailable,
}

// errorBody is the contract's error JSON.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// handleError is echo's error handler, through which every error of every
// request leaves (observe hands them over): echo's own (no route, wrong
// method), the middleware's refusals and the handlers' errors. Anything that
// is not a classified error is a bug: logged once here, and shown to the
// client as a generic 500.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, shown := classify(err)
	s.logError(err, status, shown)
	writeErrorBody(c.Response(), c.Request(), status, shown)
}

// WriteError writes err to w as the contract's error JSON,
// {"error":{"code","message"}}, with the status its kind maps to, exactly as
// the API's own error exit does (no body for a HEAD request). It is for the
// few answers regd gives outside the API's router, such as the REST port of
// a node waiting for its data dir to become writable: with err a
// *registry.Error (e.g. KindUnavailable, registry.CodeStorageUnwritable),
// the client sees what the API would answer. Headers such as Retry-After
// are the caller's to set first. It logs nothing: an error that is not a
// *registry.Error becomes a generic 500 "internal", whose cause the caller
// logs.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	status, shown := classify(err)
	writeErrorBody(w, r, status, shown)
}

// itemError is err as one item of a batch answer shows it (PUT
// /v1/heartbeats): the contract's {"code","message"} and the status a
// single request would have answered, logged like one when it is a bug.
func (s *Server) itemError(err error) (int, errorDetail) {
	status, shown := classify(err)
	if status == http.StatusInternalServerError {
		s.logError(err, status, shown)
	}
	return status, errorDetail{Code: shown.Code, Message: shown.Message}
}

// classify maps err to its status and to the error the client is shown.
func classify(err error) (int, *registry.Error) {
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case http.StatusNotFound:
			return he.Code, &registry.Error{Code: registry.CodeRouteNotFound, Message: "no such route; see /v1/openapi.json or the README for the API"}
		case http.StatusMethodNotAllowed:
			return he.Code, &registry.Error{Code: registry.CodeMethodNotAllowed, Message: "method not allowed on this route; the Allow header lists the ones that are"}
		case http.StatusRequestEntityTooLarge:
			return he.Code, &registry.Error{Code: registry.CodeBodyTooLarge, Message: "request body is too large"}
		}
		if he.Code >= 400 && he.Code < 500 {
			return he.Code, &registry.Error{Code: registry.CodeBadRequest, Message: http.StatusText(he.Code)}
		}
	}
	re := registry.AsError(err)
	status, ok := statusOf[re.Kind]
	if !ok || status == http.StatusInternalServerError {
		return http.StatusInternalServerError, &registry.Error{Kind: registry.KindInternal, Code: registry.CodeInternal,
			Message: "internal error; the server log has the details", Err: err}
	}
	return status, re
}

// logError logs what an operator must hear about, once per request.
func (s *Server) logError(err error, status int, shown *registry.Error) {
	switch {
	case status == http.StatusInternalServerError:
		s.lg.Error("internal error", zap.Error(err))
	case shown.Code == registry.CodeStorageFull || shown.Code == registry.CodeStorageUnwritable:
		// The disk guard and etcd's alarm log the cause once; a line per
		// refused write would flood the log of a node short of disk.
		s.lg.Debug("write refused for storage", zap.Error(shown.Err))
	case status == http.StatusServiceUnavailable && shown.Err != nil:
		s.lg.Warn("cluster unavailable", zap.Error(shown.Err))
	}
}

// writeErrorBody writes {"error":{"code","message"}} with Content-Length,
// and for a HEAD request the same headers without the body.
func writeErrorBody(w http.ResponseWriter, r *http.Request, status int, shown *registry.Error) {
	body, err := json.Marshal(errorBody{Error: errorDetail{Code: shown.Code, Message: shown.Message}})
	if err != nil { // two strings always encode
		body = nil
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	h.Set(echo.HeaderContentLength, strconv.Itoa(len(body)))
	h.Del(echo.HeaderContentEncoding)
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// Errors the API raises itself, with the codes of the one list.

func invalidParameter(format string, args ...any) error {
	return registry.Errorf(registry.KindInvalid, registry.CodeInvalidParameter, format, args...)
}

func invalidJSON(format string, args ...any) error {
	return registry.Errorf(registry.KindInvalid, registry.CodeInvalidJSON, format, args...)
}

func unavailable(msg string) error {
	return registry.Errorf(registry.KindUnavailable, registry.CodeUnavailable, "%s", msg)
}
