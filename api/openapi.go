package api

import (
	_ "embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// openAPIDoc is the OpenAPI 3.0 description of the whole REST API. It is
// written by hand; openapi_test.go holds it to the route table.
//
//go:embed openapi.json
var openAPIDoc []byte

func (s *Server) openapi(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "no-cache")
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, openAPIDoc)
}
