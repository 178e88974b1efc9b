package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultAddr is the node used when Config.Addrs is empty: regd's dev mode.
const DefaultAddr = "127.0.0.1:8080"

// Config says how to reach a regd cluster.
type Config struct {
	// Addrs are the REST addresses of regd nodes, "host:port" or
	// "http://host:port" (https works too). Requests go to one node at a
	// time; a failing node is left for the next one. Empty: DefaultAddr.
	Addrs []string
	// HTTPClient sends the requests; nil: a client of its own. Its Timeout,
	// if any, also cuts watch streams (they resume without loss, but a
	// Timeout of zero avoids needless reconnects): per-request deadlines are
	// set by this package through contexts.
	HTTPClient *http.Client
	// Logger receives what the client does on its own (retries, failovers,
	// re-registrations); nil: nothing is logged.
	Logger *slog.Logger
	// Token, when not empty, is sent as "Authorization: Bearer <token>" on
	// every request, watch streams included: a write token for a
	// Registrar; for a Discovery a read token is enough, and none is needed
	// unless regd runs with --auth-reads token. White space around it (the
	// newline at the end of a token file) is ignored; a token that is not
	// printable ASCII without spaces fails every request at once. The token
	// is never logged. regd's 401 and 403 answers (see IsAuthError) are
	// final: Start returns them at once and they are not retried on other
	// nodes, which answer the same.
	Token string
}

// Instance is one registered instance, as regd returns it.
type Instance struct {
	Service  string            `json:"service"`
	ID       string            `json:"id"`
	Address  string            `json:"address"`
	Metadata map[string]string `json:"metadata"`
	// Status is StatusUp, StatusDraining or StatusOutOfService.
	Status string `json:"status"`
	// Weight is the instance's relative share of traffic, 0–10000
	// (default 100).
	Weight int `json:"weight"`
	// TTL is the lease's TTL in seconds as granted; 0 for a key written by
	// a plain etcd client without a lease.
	TTL int64 `json:"ttl"`
	// LeaseID is the etcd lease, in decimal.
	LeaseID string `json:"lease_id"`
	// Revision is the etcd revision of the instance's last registration
	// or update.
	Revision int64 `json:"revision"`
	// RegisteredAt is zero for keys written by plain etcd clients.
	RegisteredAt time.Time `json:"registered_at,omitzero"`
	// Check is the health check regd runs for the instance; nil: none.
	Check *Check `json:"check,omitempty"`
	// Health is what regd last published of it; nil before the first
	// probe, and without a check.
	Health *Health `json:"health,omitempty"`
}

func (in Instance) clone() Instance {
	in.Metadata = maps.Clone(in.Metadata)
	if in.Check != nil {
		c := *in.Check
		in.Check = &c
	}
	if in.Health != nil {
		h := *in.Health
		in.Health = &h
	}
	return in
}

// InstanceList is one service's instances at one revision: the body of
// GET /v1/services/{service}/instances and of a watch stream's reset event.
type InstanceList struct {
	Service   string     `json:"service"`
	Instances []Instance `json:"instances"`
	Revision  int64      `json:"revision"`
}

// APIError is an error answer of regd: {"error":{"code","message"}}.
type APIError struct {
	StatusCode int    // HTTP status
	Code       string // regd's error code, e.g. "not_found"
	Message    string
}

func (e *APIError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("regd: HTTP %d: %s", e.StatusCode, e.Message)
	}
	return fmt.Sprintf("regd: HTTP %d %s: %s", e.StatusCode, e.Code, e.Message)
}

// IsNotFound reports whether err is regd's 404 for an unknown or expired
// instance.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound
}

// IsAuthError reports whether err is regd's 401 (no token where one is
// needed, or a token regd does not know) or 403 (a read token on a write):
// Config.Token must change. Every node of a cluster answers the same, so
// the client does not try another node for it.
func IsAuthError(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && (ae.StatusCode == http.StatusUnauthorized || ae.StatusCode == http.StatusForbidden)
}

// ErrBadToken is returned for every request when Config.Token cannot be a
// bearer token: it holds a space or a character that is not printable
// ASCII. The error does not repeat the token.
var ErrBadToken = errors.New("regd client: Config.Token must be printable ASCII without spaces")

// retryable reports whether another attempt (possibly on another node) may
// succeed: transport errors, 5xx, 408 and 429. Other 4xx answers mean the
// request itself is wrong, 401 and 403 that the token is (IsAuthError).
func retryable(err error) bool {
	if errors.Is(err, ErrBadToken) {
		return false
	}
	var ae *APIError
	if !errors.As(err, &ae) {
		return true
	}
	return ae.StatusCode >= 500 || ae.StatusCode == http.StatusRequestTimeout || ae.StatusCode == http.StatusTooManyRequests
}

// Codes of regd's 503 answers that say this node, not the cluster, cannot
// serve (regd's registry/errors.go has every code).
const (
	// codeUnavailable: the node is shutting down, not ready, or cut off
	// from its quorum.
	codeUnavailable = "unavailable"
	// codeStorageUnwritable: the node cannot write its own data dir.
	codeStorageUnwritable = "storage_unwritable"
)

// failover reports whether err says that the node in use, not the request
// or the cluster, failed: the connection failed (refused, reset or closed:
// the node is down or shutting down, and regd's graceful stop closes its
// listener before anything else), or the node answered 503 unavailable
// (shutting down, not ready, no quorum on its side) or 503
// storage_unwritable (its own disk). Another node is tried at once. Other
// retryable answers are retried after a pause: 503 storage_full (etcd's
// NOSPACE alarm binds every member), 503 overloaded, 429, 408 and other
// 5xx.
func failover(err error) bool {
	if !retryable(err) {
		return false
	}
	var ae *APIError
	if !errors.As(err, &ae) {
		return true
	}
	return ae.StatusCode == http.StatusServiceUnavailable && (ae.Code == codeUnavailable || ae.Code == codeStorageUnwritable)
}

// pacer decides the pause before the next attempt after a failure: none
// after a failover (the next attempt goes to another node) until every
// node has been tried once since the last pause; otherwise the backoff's
// next delay.
type pacer struct {
	bo    backoff
	nodes int // how many nodes there are to fail over to
	quick int // attempts without a pause since the last one
}

func (p *pacer) next(err error) time.Duration {
	if failover(err) && p.quick < p.nodes-1 {
		p.quick++
		return 0
	}
	p.quick = 0
	return p.bo.next()
}

func (p *pacer) reset() {
	p.bo.reset()
	p.quick = 0
}

// conn is what Registrar and Discovery share: the nodes, the HTTP client,
// the logger and the token.
type conn struct {
	bases []string
	hc    *http.Client
	log   *slog.Logger
	// auth is the Authorization header, "" without a token; authErr is
	// ErrBadToken for a token that cannot be sent.
	auth    string
	authErr error
}

func newConn(cfg Config) *conn {
	c := &conn{hc: cfg.HTTPClient, log: cfg.Logger}
	if tok := strings.TrimSpace(cfg.Token); tok != "" {
		c.auth = "Bearer " + tok
		for i := 0; i < len(tok); i++ {
			if tok[i] < 0x21 || tok[i] > 0x7e {
				c.authErr = ErrBadToken
				break
			}
		}
	}
	if c.hc == nil {
		c.hc = &http.Client{}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	addrs := cfg.Addrs
	if len(addrs) == 0 {
		addrs = []string{DefaultAddr}
	}
	for _, a := range addrs {
		c.bases = append(c.bases, baseURL(a))
	}
	return c
}

// baseURL turns "host:port" or "http://host:port/" into "http://host:port".
func baseURL(addr string) string {
	addr = strings.TrimSpace(addr)
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return strings.TrimRight(addr, "/")
}

func (c *conn) node(i int) string { return c.bases[i%len(c.bases)] }

// newRequest is http.NewRequestWithContext plus the token, for every
// request this package sends.
func (c *conn) newRequest(ctx context.Context, method, target string, body io.Reader) (*http.Request, error) {
	if c.authErr != nil {
		return nil, c.authErr
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	return req, nil
}

func instancePath(service, id string) string {
	return "/v1/services/" + url.PathEscape(service) + "/instances/" + url.PathEscape(id)
}

// do sends one request to base+path with an optional JSON body and decodes
// a 2xx JSON answer into out (when not nil). A non-2xx answer is an
// *APIError.
func (c *conn) do(ctx context.Context, method, base, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		buf, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(buf)
	}
	req, err := c.newRequest(ctx, method, base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // keep the connection reusable
		resp.Body.Close()
	}()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, apiError(resp)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("regd: %s %s: decode answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

func apiError(resp *http.Response) error {
	e := &APIError{StatusCode: resp.StatusCode}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	} else {
		e.Message = strings.TrimSpace(string(raw))
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	return e
}

// backoff is capped exponential backoff with jitter: each delay is drawn
// from [d/2, d], d doubling from base up to max.
type backoff struct {
	base, max time.Duration
	n         int
}

func (b *backoff) next() time.Duration {
	d := b.base
	for i := 0; i < b.n && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	b.n++
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }

// sleep waits d or until ctx ends; it reports whether the wait was full.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
