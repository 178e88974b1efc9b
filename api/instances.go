package api

import (
	"context"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/regd/regd/registry"
)

// Headers of the drain handshake's answer.
const (
	// HeaderObserved is "<delivered>/<subscribers>": how many of the
	// subscribers the change concerned (watch streams and blocking
	// queries, on the members that answered) were written it in time.
	HeaderObserved = "X-Regd-Observed"
	// HeaderObservedMembers is "<answered>/<members>": how many of the
	// cluster's voting members answered; a member that did not (down,
	// cut off) is in neither count of X-Regd-Observed.
	HeaderObservedMembers = "X-Regd-Observed-Members"
)

// waitObserved reads ?wait_observed=D: a duration ("30s", "1500ms") or bare
// seconds, at most registry.MaxObserveWait (larger ones are capped, as
// ?wait is); absent or 0: no handshake.
func waitObserved(c echo.Context) (time.Duration, error) {
	v := c.QueryParam("wait_observed")
	if v == "" {
		return 0, nil
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(min(n, int(registry.MaxObserveWait/time.Second))) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, invalidParameter("wait_observed %s must be a duration such as 10s or 1500ms (at most 60s)", registry.QuoteInput(v))
	}
	return min(d, registry.MaxObserveWait), nil
}

// observeContext is the context a handshake waits in: the request's, ended
// early when the server shuts down (the answer then says how far it got).
func (s *Server) observeContext(c echo.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(c.Request().Context())
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// setObserved sets the handshake's headers.
func setObserved(c echo.Context, o registry.Observed) {
	h := c.Response().Header()
	h.Set(HeaderObserved, strconv.Itoa(o.Delivered)+"/"+strconv.Itoa(o.Subscribers))
	h.Set(HeaderObservedMembers, strconv.Itoa(o.Acked)+"/"+strconv.Itoa(o.Members))
}

// mergePatchType is the media type of a JSON merge patch (RFC 7396 §4).
const mergePatchType = "application/merge-patch+json"

// checkPatchType refuses a PATCH body in another patch format (RFC 5789
// §2.2: 415, with Accept-Patch naming the ones the resource takes), such as
// JSON Patch (RFC 6902, application/json-patch+json), whose operations list
// would otherwise be misread. application/json, merge-patch+json, none,
// and what curl -d sends are read as a merge patch.
func checkPatchType(c echo.Context) error {
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	switch {
	case err != nil:
	case mt == mergePatchType, mt == echo.MIMEApplicationJSON, mt == echo.MIMEApplicationForm, mt == echo.MIMETextPlain:
		return nil
	}
	c.Response().Header().Set("Accept-Patch", mergePatchType+", "+echo.MIMEApplicationJSON)
	return registry.Errorf(registry.KindUnsupportedMedia, registry.CodeUnsupportedMediaType,
		"Content-Type %s is not a patch format this route takes; send a JSON merge patch (RFC 7396) as %s or %s",
		registry.QuoteInput(ct), mergePatchType, echo.MIMEApplicationJSON)
}

// register is PUT /v1/services/{service}/instances/{id}: 201 when new, 200
// when it replaced a live instance.
func (s *Server) register(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	r, err := decodeRegistration(body)
	if err != nil {
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

// heartbeat is PUT .../instances/{id}/heartbeat: 200 {"ttl": seconds left}.
func (s *Server) heartbeat(c echo.Context) error {
	ttl, err := s.cfg.Registry.Heartbeat(c.Request().Context(), c.Param("service"), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]int64{"ttl": ttl})
}

// deregister is DELETE .../instances/{id}: 204. With ?wait_observed=D,
// the drain handshake (observe.go in registry): the answer waits until
// every subscriber the removal concerns has been written it, or D ends,
// and says how far it got (X-Regd-Observed).
func (s *Server) deregister(c echo.Context) error {
	wait, err := waitObserved(c)
	if err != nil {
		return err
	}
	service, id := c.Param("service"), c.Param("id")
	var rev int64
	if wait > 0 {
		var obs registry.Observed
		ctx, cancel := s.observeContext(c)
		defer cancel()
		rev, obs, err = s.cfg.Registry.DeregisterObserved(ctx, service, id, wait)
		if err == nil {
			setObserved(c, obs)
		}
	} else {
		rev, err = s.cfg.Registry.Deregister(c.Request().Context(), service, id)
	}
	if err != nil {
		return err
	}
	setRevision(c, rev)
	return c.NoContent(http.StatusNoContent)
}

// patchInstance is PATCH .../instances/{id}: a JSON merge patch (RFC 7396)
// of status, weight and metadata; 200 with the instance. The lease, TTL
// and address stay. ?wait_observed=D as for deregister.
func (s *Server) patchInstance(c echo.Context) error {
	if err := checkPatchType(c); err != nil {
		return err
	}
	wait, err := waitObserved(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	p, err := decodePatch(body)
	if err != nil {
		return err
	}
	service, id := c.Param("service"), c.Param("id")
	var inst registry.Instance
	if wait > 0 {
		var obs registry.Observed
		ctx, cancel := s.observeContext(c)
		defer cancel()
		inst, obs, err = s.cfg.Registry.PatchObserved(ctx, service, id, p, wait)
		if err == nil {
			setObserved(c, obs)
		}
	} else {
		inst, err = s.cfg.Registry.Patch(c.Request().Context(), service, id, p)
	}
	if err != nil {
		return err
	}
	setRevision(c, inst.Revision)
	return c.JSON(http.StatusOK, inst)
}

// getInstance is GET .../instances/{id}.
func (s *Server) getInstance(c echo.Context) error {
	inst, err := s.cfg.Registry.Get(c.Request().Context(), c.Param("service"), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, inst)
}

// listInstances is GET /v1/services/{service}/instances: the instances
// that ?status= and ?meta.<key>= select (default: up ones), sorted by id; a
// blocking query with ?index=&wait= (reads.go) wakes when a change of this
// service touched an instance they select.
func (s *Server) listInstances(c echo.Context) error {
	service := c.Param("service")
	if err := registry.ValidateService(service); err != nil {
		return err
	}
	o, err := parseReadOptions(c)
	if err != nil {
		return err
	}
	if o, err = withFilter(c, o); err != nil {
		return err
	}
	if err := s.catchUp(c, o); err != nil {
		return err
	}
	w := s.blockFilter(c, service, o)
	instances, rev, shared := s.cfg.View.InstancesJSON(service, o.filter)
	setRevision(c, rev)
	cacheKey := ""
	if shared {
		cacheKey = service + "?status=" + o.filter.Status
	}
	werr := s.writeList(c, service, cacheKey, instances, rev)
	if w != nil {
		// The drain handshake counts this query as delivered once its
		// answer, with the change, is on its way to the client.
		if werr == nil {
			werr = http.NewResponseController(c.Response().Writer).Flush()
		}
		if werr != nil {
			rev = 0
		}
		w.Done(rev)
	}
	return nil
}
