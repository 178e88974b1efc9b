package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/regd/regd/internal/loadgen"
)

// inst is one instance a run registers.
type inst struct {
	service, id, addr string
	lease             int64 // etcd twin: the lease it was put with
	// lastOK is when the client last had a successful renewal's answer
	// (UnixNano; the scale workloads' keeper sets it).
	lastOK atomic.Int64
}

// backend is one system under test. Every call goes through target t, an
// index into the system's addresses.
type backend interface {
	name() string
	ntargets() int
	register(ctx context.Context, t int, in *inst, ttl int) error
	heartbeat(ctx context.Context, t int, in *inst) error
	list(ctx context.Context, t int, service string) error
	// count lists the service and returns how many instances it has.
	count(ctx context.Context, t int, service string) (int, error)
	// deregister removes the instance; an unknown one is not an error.
	deregister(ctx context.Context, t int, in *inst) error
	// watch streams the service's registrations until ctx ends, calling
	// ready once the stream is established (every later registration
	// will be seen) and onEvent for each new or replaced instance.
	watch(ctx context.Context, t int, service string, ready func(), onEvent func(id string, at time.Time)) error
}

// ---- regd: the REST API ----

type regdBackend struct {
	h       *httpc
	targets []string
}

func (r *regdBackend) name() string  { return "regd" }
func (r *regdBackend) ntargets() int { return len(r.targets) }

func (r *regdBackend) instURL(t int, service, id string) string {
	return "http://" + r.targets[t] + "/v1/services/" + service + "/instances/" + id
}

func (r *regdBackend) register(ctx context.Context, t int, in *inst, ttl int) error {
	body := []byte(`{"address":"` + in.addr + `","ttl":` + strconv.Itoa(ttl) + `}`)
	return r.h.do(ctx, http.MethodPut, r.instURL(t, in.service, in.id), body, expect(http.StatusCreated, http.StatusOK))
}

func (r *regdBackend) heartbeat(ctx context.Context, t int, in *inst) error {
	return r.h.do(ctx, http.MethodPut, r.instURL(t, in.service, in.id)+"/heartbeat", nil, expect(http.StatusOK))
}

func (r *regdBackend) listURL(t int, service string) string {
	return "http://" + r.targets[t] + "/v1/services/" + service + "/instances"
}

func (r *regdBackend) list(ctx context.Context, t int, service string) error {
	return r.h.do(ctx, http.MethodGet, r.listURL(t, service), nil, expect(http.StatusOK))
}

func (r *regdBackend) count(ctx context.Context, t int, service string) (int, error) {
	var n int
	err := r.h.do(ctx, http.MethodGet, r.listURL(t, service), nil, func(status int, body []byte) error {
		if status != http.StatusOK {
			return statusErr(status, body)
		}
		var l struct {
			Instances []json.RawMessage `json:"instances"`
		}
		if err := json.Unmarshal(body, &l); err != nil {
			return fmt.Errorf("decode list: %w", err)
		}
		n = len(l.Instances)
		return nil
	})
	return n, err
}

func (r *regdBackend) deregister(ctx context.Context, t int, in *inst) error {
	return r.h.do(ctx, http.MethodDelete, r.instURL(t, in.service, in.id), nil, expect(http.StatusNoContent, http.StatusNotFound))
}

func (r *regdBackend) watch(ctx context.Context, t int, service string, ready func(), onEvent func(string, time.Time)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.targets[t]+"/v1/services/"+service+"/watch", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := r.h.openStream(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// regd subscribes before it sends the headers: from here on, every
	// change is on the stream.
	ready()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var event string
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			if event == "register" && len(data) > 0 {
				if id, ok := jsonStringField(data, `"id":"`); ok {
					onEvent(id, time.Now())
				}
			}
			event, data = "", data[:0]
		case bytes.HasPrefix(line, []byte("event: ")):
			event = string(line[len("event: "):])
		case bytes.HasPrefix(line, []byte("data: ")):
			data = append(data[:0], line[len("data: "):]...)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return fmt.Errorf("watch stream ended")
}

// jsonStringField finds the first `"name":"value"` in compact JSON written
// by encoding/json and returns value (no escapes expected: instance ids
// are [A-Za-z0-9._-]). Scanning instead of decoding keeps the client's cost
// per event small: 64 subscribers decode every event 64 times, on the same
// machine as the server.
func jsonStringField(b []byte, key string) (string, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return "", false
	}
	rest := b[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return "", false
	}
	return string(rest[:j]), true
}

// ---- plain etcd through the JSON gateway of the member's client URL ----

type etcdBackend struct {
	h      *httpc
	urls   []string
	prefix string // e.g. "/BENCH/"
}

func (e *etcdBackend) name() string  { return "etcd" }
func (e *etcdBackend) ntargets() int { return len(e.urls) }

func (e *etcdBackend) key(service, id string) []byte { return []byte(e.prefix + service + "/" + id) }

// serviceRange is [key, range_end) of the service's keys.
func (e *etcdBackend) serviceRange(service string) (key, end []byte) {
	return []byte(e.prefix + service + "/"), []byte(e.prefix + service + "0") // '0' follows '/'
}

// i64 reads the gateway's int64s, which protojson writes as strings.
type i64 int64

func (v *i64) UnmarshalJSON(b []byte) error {
	b = bytes.Trim(b, `"`)
	n, err := strconv.ParseInt(string(b), 10, 64)
	*v = i64(n)
	return err
}

// gwError is the gateway's error body.
type gwError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *etcdBackend) post(ctx context.Context, t int, path string, req any, check func(int, []byte) error) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	return e.h.do(ctx, http.MethodPost, e.urls[t]+path, body, check)
}

func (e *etcdBackend) register(ctx context.Context, t int, in *inst, ttl int) error {
	var grant struct {
		ID  i64 `json:"ID"`
		TTL i64 `json:"TTL"`
	}
	err := e.post(ctx, t, "/v3/lease/grant", map[string]any{"TTL": ttl}, func(status int, body []byte) error {
		if status != http.StatusOK {
			return statusErr(status, body)
		}
		return json.Unmarshal(body, &grant)
	})
	if err != nil {
		return err
	}
	if grant.ID == 0 {
		return &loadgen.StatusError{Class: "no_lease", Msg: "lease grant returned no ID"}
	}
	in.lease = int64(grant.ID)
	put := struct {
		Key   []byte `json:"key"`
		Value []byte `json:"value"`
		Lease string `json:"lease"`
	}{e.key(in.service, in.id), []byte(in.addr), strconv.FormatInt(in.lease, 10)}
	return e.post(ctx, t, "/v3/kv/put", put, expect(http.StatusOK))
}

func (e *etcdBackend) heartbeat(ctx context.Context, t int, in *inst) error {
	body := []byte(`{"ID":"` + strconv.FormatInt(in.lease, 10) + `"}`)
	return e.h.do(ctx, http.MethodPost, e.urls[t]+"/v3/lease/keepalive", body, func(status int, body []byte) error {
		if status != http.StatusOK {
			return statusErr(status, body)
		}
		// A stream of one message: {"result":{...,"ID":"..","TTL":".."}}
		// or {"error":{...}}.
		var ka struct {
			Result *struct {
				TTL i64 `json:"TTL"`
			} `json:"result"`
			Error *gwError `json:"error"`
		}
		if err := json.Unmarshal(bytes.TrimSpace(body), &ka); err != nil {
			return fmt.Errorf("decode keepalive: %w", err)
		}
		switch {
		case ka.Error != nil:
			return &loadgen.StatusError{Class: "grpc:" + strconv.Itoa(ka.Error.Code), Msg: ka.Error.Message}
		case ka.Result == nil || ka.Result.TTL <= 0:
			// etcd's answer for a lease that does not exist.
			return &loadgen.StatusError{Class: "ttl0", Msg: "keepalive of an unknown lease"}
		}
		return nil
	})
}

func (e *etcdBackend) rangeReq(service string, countOnly bool) any {
	key, end := e.serviceRange(service)
	return struct {
		Key       []byte `json:"key"`
		RangeEnd  []byte `json:"range_end"`
		CountOnly bool   `json:"count_only,omitempty"`
	}{key, end, countOnly}
}

func (e *etcdBackend) list(ctx context.Context, t int, service string) error {
	return e.post(ctx, t, "/v3/kv/range", e.rangeReq(service, false), expect(http.StatusOK))
}

func (e *etcdBackend) count(ctx context.Context, t int, service string) (int, error) {
	var n int
	err := e.post(ctx, t, "/v3/kv/range", e.rangeReq(service, false), func(status int, body []byte) error {
		if status != http.StatusOK {
			return statusErr(status, body)
		}
		var r struct {
			Kvs   []json.RawMessage `json:"kvs"`
			Count i64               `json:"count"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return fmt.Errorf("decode range: %w", err)
		}
		if int(r.Count) != len(r.Kvs) {
			return fmt.Errorf("range returned %d of %d keys", len(r.Kvs), r.Count)
		}
		n = len(r.Kvs)
		return nil
	})
	return n, err
}

func (e *etcdBackend) deregister(ctx context.Context, t int, in *inst) error {
	if in.lease == 0 {
		return nil // never put
	}
	// Revoking the lease deletes its key; an unknown lease is gone already.
	return e.post(ctx, t, "/v3/lease/revoke", map[string]string{"ID": strconv.FormatInt(in.lease, 10)}, func(status int, body []byte) error {
		if status == http.StatusOK || bytes.Contains(body, []byte("lease not found")) {
			return nil
		}
		return statusErr(status, body)
	})
}

func (e *etcdBackend) watch(ctx context.Context, t int, service string, ready func(), onEvent func(string, time.Time)) error {
	key, end := e.serviceRange(service)
	body, _ := json.Marshal(map[string]any{"create_request": map[string]any{"key": key, "range_end": end}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.urls[t]+"/v3/watch", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.h.openStream(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	idPrefix := len(key)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	created := false
	// One line per watch response: {"result":{"header":{..},"events":[
	// {"kv":{"key":"<base64>",...}}, {"type":"DELETE","kv":{...}}]}}; puts
	// carry no type (PUT is protobuf's zero value). Scanned, not decoded:
	// see jsonStringField.
	kvKey := []byte(`"kv":{"key":"`)
	del := []byte(`"type":"DELETE",`)
	var dec []byte
	for sc.Scan() {
		line := sc.Bytes()
		at := time.Now()
		if !created {
			if bytes.Contains(line, []byte(`"created":true`)) {
				created = true
				ready()
				continue
			}
			if bytes.Contains(line, []byte(`"error"`)) {
				return fmt.Errorf("watch: %s", line)
			}
		}
		for rest := line; ; {
			i := bytes.Index(rest, kvKey)
			if i < 0 {
				break
			}
			isDel := bytes.HasSuffix(rest[:i], del)
			rest = rest[i+len(kvKey):]
			j := bytes.IndexByte(rest, '"')
			if j < 0 {
				break
			}
			if !isDel {
				dec = dec[:0]
				dec, err = base64.StdEncoding.AppendDecode(dec, rest[:j])
				if err == nil && len(dec) > idPrefix {
					onEvent(string(dec[idPrefix:]), at)
				}
			}
			rest = rest[j:]
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return fmt.Errorf("watch stream ended")
}
