package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/regd/regd/registry"
)

// maxHeartbeatsBody caps the body of a batch heartbeat: 1000 items of two
// 128-character names and their JSON, with room to spare. Other routes
// keep Config.MaxBodyBytes.
const maxHeartbeatsBody = 512 << 10

// heartbeatsBody is the body of PUT /v1/heartbeats.
type heartbeatsBody struct {
	Instances []registry.HeartbeatItem `json:"instances"`
}

// heartbeatResult is one item of the answer: ttl, or the error a single
// heartbeat of the instance would have answered.
type heartbeatResult struct {
	Service string       `json:"service"`
	ID      string       `json:"id"`
	TTL     *int64       `json:"ttl,omitempty"`
	Error   *errorDetail `json:"error,omitempty"`
}

// heartbeats is PUT /v1/heartbeats: renew up to 1000 instances in one
// request (agents and sidecars keeping many), 200 with one result per
// item in the same order, each with the meaning of the single heartbeat
// (ttl, or an error: not_found, invalid_service_name, no_lease, ...).
// When no item could reach the cluster, the whole answer is the 503 a
// single heartbeat gives, so that clients move to another node as they
// do for a single one.
func (s *Server) heartbeats(c echo.Context) error {
	body, err := readBodyUpTo(c, max(maxHeartbeatsBody, s.cfg.MaxBodyBytes))
	if err != nil {
		return err
	}
	var req heartbeatsBody
	if err := decodeJSON(body, &req); err != nil {
		return err
	}
	if n := len(req.Instances); n == 0 || n > registry.MaxHeartbeatBatch {
		return invalidJSON("field \"instances\" holds %d items; a batch heartbeat takes 1 to %d", n, registry.MaxHeartbeatBatch)
	}
	results := s.cfg.Registry.Heartbeats(c.Request().Context(), req.Instances)
	out := struct {
		Results []heartbeatResult `json:"results"`
	}{Results: make([]heartbeatResult, len(results))}
	var unavailable error
	allUnavailable := true
	for i, r := range results {
		item := req.Instances[i]
		res := heartbeatResult{Service: item.Service, ID: item.ID}
		if r.Err == nil {
			ttl := r.TTL
			res.TTL = &ttl
			allUnavailable = false
		} else {
			status, detail := s.itemError(r.Err)
			if status == http.StatusServiceUnavailable {
				unavailable = r.Err
			} else {
				allUnavailable = false
			}
			res.Error = &detail
		}
		out.Results[i] = res
	}
	if allUnavailable && unavailable != nil {
		return unavailable
	}
	return c.JSON(http.StatusOK, out)
}
