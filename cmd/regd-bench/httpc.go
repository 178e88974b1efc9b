package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/regd/regd/internal/loadgen"
)

// requestTimeout bounds one request; regd answers 503 within a few seconds
// when it has no quorum, so this only catches a hung server.
const requestTimeout = 15 * time.Second

// httpc is the one HTTP client every system is measured with: per address
// a fasthttp client (loadgen.Client) of keep-alive HTTP/1.1 connections,
// as many as workers, so no measured request pays for a new connection
// once warm, and a request allocates next to nothing: the load tool shares
// the machine's cores with the servers it measures. Watch streams of the
// side-by-side notify workload go through net/http (stream).
type httpc struct {
	conns   int
	mu      sync.Mutex
	pools   map[string]*loadgen.Client
	stream  *http.Client // watch streams: no overall timeout
	streamT *http.Transport
}

func newHTTPC(conns int) *httpc {
	tr := &http.Transport{
		Proxy:               nil, // never through a proxy from the environment
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0, // no global cap
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &httpc{conns: conns, pools: map[string]*loadgen.Client{}, stream: &http.Client{Transport: tr}, streamT: tr}
}

func (h *httpc) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.pools {
		p.Close()
	}
	h.streamT.CloseIdleConnections()
}

// pool is the client of host:port.
func (h *httpc) pool(addr string) *loadgen.Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.pools[addr]
	if p == nil {
		p = loadgen.NewClient(addr, "", h.conns, 16<<10, requestTimeout)
		h.pools[addr] = p
	}
	return p
}

// splitURL splits http://host:port/path into host:port and /path.
func splitURL(url string) (addr, path string, err error) {
	rest, ok := strings.CutPrefix(url, "http://")
	if !ok {
		return "", "", fmt.Errorf("%q: only http:// URLs are supported", url)
	}
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return rest, "/", nil
	}
	return rest[:i], rest[i:], nil
}

var jsonHeader = []string{"Content-Type: application/json"}

// do sends one request and hands the status and the whole body to check,
// whose error is the operation's.
func (h *httpc) do(ctx context.Context, method, url string, body []byte, check func(status int, body []byte) error) error {
	var hdr []string
	if body != nil {
		hdr = jsonHeader
	}
	return h.doConn(ctx, method, url, hdr, body, func(r *loadgen.Reply) error { return check(r.Status, r.Body) })
}

// doConn is do with request header lines, handing check the whole reply
// (Status, Header, Body).
func (h *httpc) doConn(ctx context.Context, method, url string, header []string, body []byte, check func(*loadgen.Reply) error) error {
	addr, path, err := splitURL(url)
	if err != nil {
		return err
	}
	return h.pool(addr).Do(ctx, method, path, header, body, check)
}

// statusErr is the error for an unexpected status, with the start of the
// body for the error samples.
func statusErr(status int, body []byte) error {
	msg := strings.TrimSpace(string(body))
	if len(msg) > 160 {
		msg = msg[:160] + "..."
	}
	return &loadgen.StatusError{Code: status, Msg: msg}
}

// expect accepts the given statuses.
func expect(codes ...int) func(int, []byte) error {
	return func(status int, body []byte) error {
		for _, c := range codes {
			if status == c {
				return nil
			}
		}
		return statusErr(status, body)
	}
}

// openStream sends a streaming request (SSE, etcd's /v3/watch) and returns
// the response once its status says the stream is open; any other status
// is an error carrying the body.
func (h *httpc) openStream(req *http.Request) (*http.Response, error) {
	resp, err := h.stream.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return nil, statusErr(resp.StatusCode, b.Bytes())
	}
	return resp, nil
}
