package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"slices"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/regd/regd/registry"
)

// readBody reads the request body, at most MaxBodyBytes (413 beyond).
// The Content-Type is not checked: curl -d sends a form type by default.
func (s *Server) readBody(c echo.Context) ([]byte, error) {
	return readBodyUpTo(c, s.cfg.MaxBodyBytes)
}

// readBodyUpTo reads the request body, at most limit bytes (413 beyond).
func readBodyUpTo(c echo.Context, limit int64) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(c.Request().Body, limit+1))
	if err != nil {
		return nil, invalidJSON("could not read the request body")
	}
	if int64(len(body)) > limit {
		return nil, registry.Errorf(registry.KindTooLarge, registry.CodeBodyTooLarge, "request body is over %d bytes", limit)
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

// decodePatch reads the body of PATCH .../instances/{id}: a JSON merge
// patch (RFC 7396) of the instance's status, weight and metadata. The body
// is one JSON object (a merge patch that is no object would replace the
// whole instance); its members are status (a string, or null for the
// default, up), weight (a whole number, or null for the default, 100) and
// metadata (an object of strings, where null removes that key; or null,
// which removes every key). Anything else, and a member of the wrong type,
// is 400 invalid_json; the values themselves are checked by the registry
// (invalid_status, invalid_weight, invalid_metadata).
func decodePatch(body []byte) (registry.Patch, error) {
	var p registry.Patch
	var members map[string]json.RawMessage
	if err := decodeJSON(body, &members); err != nil {
		return p, err
	}
	if members == nil {
		return p, invalidJSON("request body is null; expected a JSON merge patch object such as {\"status\":\"draining\"}")
	}
	isNull := func(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }
	// Members in a fixed order, so that a body with several problems
	// always names the same one.
	for _, name := range slices.Sorted(maps.Keys(members)) {
		raw := members[name]
		switch name {
		case "status":
			if isNull(raw) {
				p.ResetStatus = true
				continue
			}
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return p, invalidJSON("field \"status\" must be a string (up, draining, out_of_service) or null")
			}
			p.Status = &v
		case "weight":
			if isNull(raw) {
				p.ResetWeight = true
				continue
			}
			var v int64
			if err := json.Unmarshal(raw, &v); err != nil {
				return p, invalidJSON("field \"weight\" must be a whole number (0-%d) or null", registry.MaxWeight)
			}
			p.Weight = &v
		case "metadata":
			if isNull(raw) {
				p.ResetMetadata = true
				continue
			}
			var md map[string]*string
			if err := json.Unmarshal(raw, &md); err != nil {
				return p, invalidJSON("field \"metadata\" must be an object of strings (null removes a key) or null")
			}
			p.Metadata = md
		default:
			return p, invalidJSON("unknown field %s; a patch may change status, weight and metadata", registry.QuoteInput(name))
		}
	}
	return p, nil
}
