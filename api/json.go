package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/regd/regd/registry"
)

// readBody reads the request body, at most MaxBodyBytes (413 beyond).
// The Content-Type is not checked: curl -d sends a form type by default.
func (s *Server) readBody(c echo.Context) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(c.Request().Body, s.cfg.MaxBodyBytes+1))
	if err != nil {
		return nil, invalidJSON("could not read the request body")
	}
	if int64(len(body)) > s.cfg.MaxBodyBytes {
		return nil, registry.Errorf(registry.KindTooLarge, registry.CodeBodyTooLarge, "request body is over %d bytes", s.cfg.MaxBodyBytes)
	}
	return body, nil
}

// decodeJSON reads one JSON object from body into v: strictly, so a
// misspelt field ("tll") is an error rather than a silently ignored default,
// and data after the object is refused.
func decodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return invalidJSON("request body is empty; expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidJSON("request body is not valid JSON for this request: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalidJSON("request body has data after the JSON object")
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

// decodeRegistration is the body of PUT .../instances/{id}. Metadata values
// are strings: encoding/json decodes {"k":null} into a map[string]string as
// "" without a word, which would store a value the client never sent, so
// a null value is refused (400 invalid_metadata). The check reads the body
// a second time only when some value came out empty, which is rare.
func decodeRegistration(body []byte) (registry.Registration, error) {
	var r registry.Registration
	if err := decodeJSON(body, &r); err != nil {
		return r, err
	}
	for _, v := range r.Metadata {
		if v == "" {
			return r, rejectNullMetadata(body)
		}
	}
	return r, nil
}

func rejectNullMetadata(body []byte) error {
	var probe struct {
		Metadata map[string]*string `json:"metadata"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return invalidJSON("request body is not valid JSON for this request: %s", jsonProblem(err))
	}
	for k, v := range probe.Metadata {
		if v == nil {
			return registry.Errorf(registry.KindInvalid, registry.CodeInvalidMetadata,
				"metadata value of key %s is null; values are strings (send \"\" for an empty one, or leave the key out)", registry.QuoteInput(k))
		}
	}
	return nil
}
