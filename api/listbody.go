package api

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
)

// writeList writes {"service":..,"instances":..,"revision":..} around the
// view's shared, pre-encoded instances, without copying them.
func (s *Server) writeList(c echo.Context, service string, instances []byte, rev int64) error {
	name, err := json.Marshal(service)
	if err != nil {
		return err
	}
	head := make([]byte, 0, len(name)+32)
	head = append(head, `{"service":`...)
	head = append(head, name...)
	head = append(head, `,"instances":`...)
	tail := make([]byte, 0, 32)
	tail = append(tail, `,"revision":`...)
	tail = strconv.AppendInt(tail, rev, 10)
	tail = append(tail, "}\n"...)

	w := c.Response()
	w.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	w.Header().Set(echo.HeaderContentLength, strconv.Itoa(len(head)+len(instances)+len(tail)))
	w.WriteHeader(http.StatusOK)
	for _, part := range [][]byte{head, instances, tail} {
		if _, err := w.Write(part); err != nil {
			return nil // the client is gone
		}
	}
	return nil
}
