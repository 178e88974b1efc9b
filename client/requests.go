package client

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// ClientOptions tune a Client.
type ClientOptions struct {
	// FailFast ends a request at once when no node of Config.Addrs could
	// be connected to in one round (every one refused the connection, did
	// not resolve or could not be dialled): nothing listens there, and a
	// person at a terminal would rather hear it now. Without it (New), such
	// a request is retried with backoff until its context ends, like every
	// other failure another attempt may cure; with it, those still are.
	// The regd command line sets it.
	FailFast bool
}

// NewWithOptions returns a Client of the cluster cfg names, tuned by opts.
func NewWithOptions(cfg Config, opts ClientOptions) *Client {
	return &Client{c: newConn(cfg), opts: opts}
}

// isDialError reports whether err is a failure to connect: the node was
// never reached, so nothing of the request was applied.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// Registration is what registering an instance sends (PUT
// /v1/services/{service}/instances/{id}); zero fields are left to regd's
// defaults.
type Registration struct {
	// Address is "host:port" (required).
	Address string
	// TTL in whole seconds, 2–3600; 0: regd's default, 10.
	TTL int
	// Metadata: at most 64 pairs and 4 KiB.
	Metadata map[string]string
	// Weight, 0–10000; nil: regd's default, 100.
	Weight *int
	// Status is StatusUp, StatusDraining or StatusOutOfService; "": up.
	Status string
	// Check, when set, makes regd keep the instance alive by probing it
	// (no heartbeats; TTL 0 then means at least what the check needs);
	// nil: the instance must be heartbeaten.
	Check *Check
}

func (r Registration) body() map[string]any {
	b := map[string]any{"address": r.Address}
	if r.TTL != 0 {
		b["ttl"] = r.TTL
	}
	if len(r.Metadata) > 0 {
		b["metadata"] = maps.Clone(r.Metadata)
	}
	if r.Weight != nil {
		b["weight"] = *r.Weight
	}
	if r.Status != "" {
		b["status"] = r.Status
	}
	if r.Check != nil {
		b["check"] = *r.Check
	}
	return b
}

// Register registers (or registers again) one instance, once: nothing
// heartbeats it afterwards, so its lease runs out after the TTL unless
// something renews it (a Registrar keeps an instance of its own alive) or
// regd checks it (Registration.Check: a database, a program without a
// client). A 400 (a bad name, address, TTL, metadata, or check: code
// "invalid_check") is returned at once as an *APIError.
// created is true when regd answered 201 (a new instance), false for 200
// (it replaced a live one, or a retry found the first attempt's
// registration: registering is idempotent).
func (c *Client) Register(ctx context.Context, service, id string, reg Registration) (inst Instance, created bool, err error) {
	err = c.attempts(ctx, func(base string) error {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		status, err := c.c.do(rctx, http.MethodPut, base, instancePath(service, id), reg.body(), &inst)
		created = status == http.StatusCreated
		return err
	})
	return inst, created, err
}

// DeregisterKnown is Deregister for an instance the caller believes is
// registered: regd's 404 is returned (IsNotFound) instead of being taken
// for success, unless an earlier attempt reached a node and failed
// (a timeout, a 503): its answer was lost and it may have removed the
// instance, so the 404 counts as its success.
func (c *Client) DeregisterKnown(ctx context.Context, service, id string, wait time.Duration) (Observed, error) {
	return c.deregister(ctx, service, id, wait, true)
}

// ServiceSummary is one service of GET /v1/services.
type ServiceSummary struct {
	Name      string `json:"name"`
	Instances int    `json:"instances"` // all, whatever their status
	Up        int    `json:"up"`        // those with status up
}

// ServiceList is GET /v1/services: every service with instances, sorted
// by name.
type ServiceList struct {
	Services []ServiceSummary `json:"services"`
	Revision int64            `json:"revision"`
}

// Services lists the services that have instances.
func (c *Client) Services(ctx context.Context) (ServiceList, error) {
	var out ServiceList
	err := c.get(ctx, "/v1/services", &out)
	return out, err
}

// ListOptions select the instances of a list.
type ListOptions struct {
	// Status is one status, or "any"; "": regd's default, up instances only.
	Status string
	// Metadata: only instances with every one of these key=value pairs.
	Metadata map[string]string
}

func (o ListOptions) query() string {
	q := url.Values{}
	if o.Status != "" {
		q.Set("status", o.Status)
	}
	for _, k := range slices.Sorted(maps.Keys(o.Metadata)) {
		q.Set("meta."+k, o.Metadata[k])
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// Instances lists one service's instances that opts select, sorted by id
// (GET /v1/services/{service}/instances).
func (c *Client) Instances(ctx context.Context, service string, opts ListOptions) (InstanceList, error) {
	var out InstanceList
	err := c.get(ctx, "/v1/services/"+url.PathEscape(service)+"/instances"+opts.query(), &out)
	return out, err
}

// Expiration is one expiry report of GET /v1/expirations.
type Expiration struct {
	Service string `json:"service"`
	ID      string `json:"id"`
	Address string `json:"address"`
	LeaseID string `json:"lease_id"`
	// ExpiredAt is when the reporting member saw the lease end.
	ExpiredAt  time.Time `json:"expired_at"`
	ReportedBy string    `json:"reported_by"` // the reporting member's name
	Revision   int64     `json:"revision"`    // of the deletion the expiry caused
	// Cause is "ttl" (heartbeats stopped) or "check_failed" (a health
	// check run by the registry failed), with the last check's Output.
	Cause  string `json:"cause"`
	Output string `json:"output,omitempty"`
	// Deadline is when the lease was due to run out (last renewal + TTL,
	// as the leader's lessor knew it, typically within ±250 ms); nil when
	// the reporting leader had not sampled the lease (docs/api.md,
	// "Expirations"). ReportedAt is when the report was written; nil in
	// reports of older versions.
	Deadline   *time.Time `json:"deadline,omitempty"`
	ReportedAt *time.Time `json:"reported_at,omitempty"`
}

// ExpirationList is GET /v1/expirations' answer.
type ExpirationList struct {
	Expirations []Expiration `json:"expirations"`
}

// Expirations lists expiry reports, newest first: of service only when it
// is not "", at most limit (0: regd's default, 100; regd caps it).
func (c *Client) Expirations(ctx context.Context, service string, limit int) (ExpirationList, error) {
	q := url.Values{}
	if service != "" {
		q.Set("service", service)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/v1/expirations"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out ExpirationList
	err := c.get(ctx, path, &out)
	return out, err
}

// get reads path into out, with the Client's failover.
func (c *Client) get(ctx context.Context, path string, out any) error {
	return c.attempts(ctx, func(base string) error {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := c.c.do(rctx, http.MethodGet, base, path, nil, out)
		return err
	})
}
