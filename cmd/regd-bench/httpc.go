package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/regd/regd/internal/loadgen"
)

// requestTimeout bounds one request; regd answers 503 within a few seconds
// when it has no quorum, so this only catches a hung server.
const requestTimeout = 15 * time.Second

// httpc is the one HTTP client both systems are measured with: a shared
// keep-alive transport whose idle pool holds a connection per worker and
// per stream, so no measured request pays for a new connection once warm.
type httpc struct {
	c      *http.Client // request/response
	stream *http.Client // watch streams: no overall timeout
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
	return &httpc{
		c:      &http.Client{Transport: tr, Timeout: requestTimeout},
		stream: &http.Client{Transport: tr},
	}
}

func (h *httpc) close() { h.c.Transport.(*http.Transport).CloseIdleConnections() }

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// do sends one request and hands the status and the whole body to check,
// whose error is the operation's. The body is always read to the end so the
// connection goes back to the pool.
func (h *httpc) do(ctx context.Context, method, url string, body []byte, check func(status int, body []byte) error) error {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 4<<20 {
			bufPool.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return err
	}
	return check(resp.StatusCode, buf.Bytes())
}

// statusErr is the error for an unexpected status, with the start of the
// body for the error samples.
func statusErr(status int, body []byte) error {
	msg := string(body)
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
