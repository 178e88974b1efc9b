package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Instance statuses (regd's instance lifecycle). Discovery follows the up
// instances of its service.
const (
	StatusUp           = "up"
	StatusDraining     = "draining"
	StatusOutOfService = "out_of_service"
)

// Observed is the outcome of a drain handshake (?wait_observed): of the
// subscribers the change concerned (watch streams and blocking queries on
// the members that answered), how many were written it before the answer,
// and how many of the cluster's voting members answered.
type Observed struct {
	Delivered, Subscribers int
	Acked, Members         int
}

// Complete reports whether every member answered and every subscriber
// had the change: a deploy script may stop the instance.
func (o Observed) Complete() bool {
	return o.Members > 0 && o.Acked == o.Members && o.Delivered == o.Subscribers
}

func (o Observed) String() string {
	return fmt.Sprintf("%d/%d subscribers, %d/%d members", o.Delivered, o.Subscribers, o.Acked, o.Members)
}

// Patch is a change of an instance in place (a JSON merge patch, RFC 7396):
// nil fields stay as they are; a nil value in Metadata removes that key.
type Patch struct {
	Status   *string
	Weight   *int
	Metadata map[string]*string
}

func (p Patch) body() map[string]any {
	b := map[string]any{}
	if p.Status != nil {
		b["status"] = *p.Status
	}
	if p.Weight != nil {
		b["weight"] = *p.Weight
	}
	if p.Metadata != nil {
		b["metadata"] = p.Metadata
	}
	return b
}

// InstanceRef names one instance, for Client.Heartbeats.
type InstanceRef struct {
	Service string `json:"service"`
	ID      string `json:"id"`
}

// HeartbeatResult is one instance's outcome in a batch heartbeat: TTL, or
// Err, an *APIError with the meaning of a single heartbeat (IsNotFound:
// register it again).
type HeartbeatResult struct {
	InstanceRef
	TTL int64
	Err error
}

// Client sends single requests to a regd cluster, trying the nodes in turn
// on failures that another node may not have: what deploy scripts and
// agents need beside Registrar and Discovery (drain and undrain with the
// drain handshake, deregistration, batch heartbeats). Its methods are safe
// for concurrent use.
type Client struct {
	c    *conn
	opts ClientOptions
	node atomic.Uint64
}

// New returns a Client of the cluster cfg names.
func New(cfg Config) *Client { return &Client{c: newConn(cfg)} }

// attempts runs f on the nodes in turn until it succeeds, a retry cannot
// help, or ctx ends: a node that cannot serve is left for the next one at
// once (failover), and once every node has been tried the client backs off
// (the pacer, as Registrar and Discovery do). With FailFast, a round in
// which no node could be connected to ends the attempts.
func (c *Client) attempts(ctx context.Context, f func(base string) error) error {
	p := pacer{bo: backoff{base: 100 * time.Millisecond, max: 2 * time.Second}, nodes: len(c.c.bases)}
	unreachable := 0 // nodes in a row that could not be connected to
	for {
		i := c.node.Load()
		err := f(c.c.node(int(i % uint64(len(c.c.bases)))))
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		if isDialError(err) {
			unreachable++
		} else {
			unreachable = 0
		}
		if c.opts.FailFast && unreachable >= len(c.c.bases) {
			return err
		}
		c.node.CompareAndSwap(i, i+1)
		if !sleep(ctx, p.next(err)) {
			return err
		}
	}
}

// SetStatus changes the instance's status in place (StatusDraining to
// drain, StatusUp to undrain); see Patch.
func (c *Client) SetStatus(ctx context.Context, service, id, status string, wait time.Duration) (Instance, Observed, error) {
	return c.Patch(ctx, service, id, Patch{Status: &status}, wait)
}

// Patch changes status, weight or metadata of an instance in place: its
// lease, TTL and address stay, heartbeats go on. With wait > 0 (at most
// 60 s) regd answers once every subscriber of the service on every member
// has been written the change, or when wait ends (Observed says how far
// it got); give ctx at least wait plus a few seconds.
func (c *Client) Patch(ctx context.Context, service, id string, p Patch, wait time.Duration) (Instance, Observed, error) {
	var inst Instance
	var obs Observed
	err := c.attempts(ctx, func(base string) error {
		resp, err := c.send(ctx, http.MethodPatch, base, instancePath(service, id)+waitQuery(wait), "application/merge-patch+json", p.body(), wait)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		obs = observedOf(resp.Header)
		return json.NewDecoder(resp.Body).Decode(&inst)
	})
	return inst, obs, err
}

// Deregister removes an instance now; with wait > 0, after every
// subscriber the removal concerns has been written it (see Patch). An
// instance already gone is no error (a retry after a lost answer finds it
// gone; Observed is then zero).
func (c *Client) Deregister(ctx context.Context, service, id string, wait time.Duration) (Observed, error) {
	return c.deregister(ctx, service, id, wait, false)
}

// deregister is Deregister; with known, regd's 404 is an error unless an
// earlier attempt reached a node (its answer was lost, so it may have
// removed the instance): then it is taken as that attempt's success.
func (c *Client) deregister(ctx context.Context, service, id string, wait time.Duration, known bool) (Observed, error) {
	var obs Observed
	reached := false // an earlier attempt got to a node, and may have been applied
	err := c.attempts(ctx, func(base string) error {
		resp, err := c.send(ctx, http.MethodDelete, base, instancePath(service, id)+waitQuery(wait), "", nil, wait)
		if IsNotFound(err) && (!known || reached) {
			return nil
		}
		if err != nil {
			reached = reached || !isDialError(err)
			return err
		}
		resp.Body.Close()
		obs = observedOf(resp.Header)
		return nil
	})
	return obs, err
}

// Heartbeats renews up to 1000 instances' leases in one request, results in
// the order of items. A failure of the whole request (no node reachable,
// a 400 for a malformed batch) is the error; per-instance outcomes are in
// the results.
func (c *Client) Heartbeats(ctx context.Context, items []InstanceRef) ([]HeartbeatResult, error) {
	var out struct {
		Results []struct {
			Service string `json:"service"`
			ID      string `json:"id"`
			TTL     *int64 `json:"ttl"`
			Error   *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		} `json:"results"`
	}
	err := c.attempts(ctx, func(base string) error {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := c.c.do(rctx, http.MethodPut, base, "/v1/heartbeats", map[string]any{"instances": items}, &out)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(out.Results) != len(items) {
		return nil, fmt.Errorf("regd: %d heartbeat results for %d instances", len(out.Results), len(items))
	}
	res := make([]HeartbeatResult, len(items))
	for i, r := range out.Results {
		res[i].InstanceRef = items[i]
		switch {
		case r.Error != nil:
			status := http.StatusBadRequest
			switch r.Error.Code {
			case "not_found":
				status = http.StatusNotFound
			case "no_lease":
				status = http.StatusConflict
			case "unavailable", "overloaded", "storage_full", "storage_unwritable":
				status = http.StatusServiceUnavailable
			}
			res[i].Err = &APIError{StatusCode: status, Code: r.Error.Code, Message: r.Error.Message}
		case r.TTL != nil:
			res[i].TTL = *r.TTL
		}
	}
	return res, nil
}

// send sends one request; a non-2xx answer is an *APIError. The timeout is
// the usual 10 s plus the handshake's wait.
func (c *Client) send(ctx context.Context, method, base, path, contentType string, body any, wait time.Duration) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		buf, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(buf)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second+wait)
	req, err := c.c.newRequest(rctx, method, base+path, rd)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.c.hc.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer cancel()
		defer resp.Body.Close()
		return nil, apiError(resp)
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

func waitQuery(wait time.Duration) string {
	if wait <= 0 {
		return ""
	}
	return "?wait_observed=" + url.QueryEscape(wait.String())
}

// observedOf reads X-Regd-Observed and X-Regd-Observed-Members.
func observedOf(h http.Header) Observed {
	var o Observed
	o.Delivered, o.Subscribers = fraction(h.Get("X-Regd-Observed"))
	o.Acked, o.Members = fraction(h.Get("X-Regd-Observed-Members"))
	return o
}

func fraction(s string) (int, int) {
	a, b, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0
	}
	x, err1 := strconv.Atoi(a)
	y, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil {
		return 0, 0
	}
	return x, y
}
