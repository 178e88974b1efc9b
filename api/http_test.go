package api_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawClient sends requests as written and shows answers as sent: it
// neither asks for nor undoes compression of its own (so GET and HEAD,
// gzip and not, are compared on the wire bytes), returns redirects as they
// are instead of following them, and its timeout is what a request that
// must not hang is held to.
var rawClient = &http.Client{
	Transport:     &http.Transport{DisableCompression: true},
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

type wireAnswer struct {
	status int
	header http.Header
	body   []byte // as sent
	stream bool   // text/event-stream; a GET's body is then not read
}

// sendRaw sends method to url with body ("" none) and headers (name,
// value, ...). The body of the answer is read to its end, except a GET's
// event stream, of which only the headers are taken.
func sendRaw(t *testing.T, method, url, body string, headers ...string) wireAnswer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := rawClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	a := wireAnswer{status: resp.StatusCode, header: resp.Header, stream: strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")}
	if method != http.MethodGet || !a.stream {
		if a.body, err = io.ReadAll(resp.Body); err != nil {
			t.Fatalf("%s %s: the answer did not end: %v", method, url, err)
		}
	}
	return a
}
