package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/regd/regd/api"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// ---- a tiny Server-Sent Events client ----

// sseEvent is one dispatched event, or one comment line (Comment set,
// the other fields empty).
type sseEvent struct {
	ID, Event, Data string
	Comment         string
	At              time.Time // when the client read it
}

func (e sseEvent) String() string {
	if e.Comment != "" {
		return ": " + e.Comment
	}
	return fmt.Sprintf("id=%s event=%s data=%.120s", e.ID, e.Event, e.Data)
}

// rev is the revision of the event's id ("<revision>" or
// "<revision>.<index>").
func (e sseEvent) rev(t testing.TB) int64 {
	t.Helper()
	id, ok := registry.ParseEventID(e.ID)
	if !ok {
		t.Fatalf("event id %q is not an event id (%s)", e.ID, e)
	}
	return id.Rev
}

func (e sseEvent) instance(t testing.TB) registry.Instance {
	t.Helper()
	var inst registry.Instance
	if err := json.Unmarshal([]byte(e.Data), &inst); err != nil {
		t.Fatalf("event data is not an instance: %v (%s)", err, e)
	}
	return inst
}

// sseStream reads one event stream in the background.
type sseStream struct {
	Resp   *http.Response
	events chan sseEvent
	done   chan struct{} // closed when the body ended
	err    error         // why it ended (nil: EOF); read after done
	cancel context.CancelFunc
}

// sseClient has no timeout: streams live as long as the test wants.
var sseClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}

// dialSSE sends the request and returns the response as it is, whatever its
// status. lastEventID "" sends no Last-Event-ID.
func dialSSE(t testing.TB, url, lastEventID string) (*http.Response, context.CancelFunc) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	return dialSSERequest(t, req)
}

// dialSSERequest sends req as a stream request (Accept: text/event-stream,
// cancelled by the returned function) and returns the response as it is.
func dialSSERequest(t testing.TB, req *http.Request) (*http.Response, context.CancelFunc) {
	t.Helper()
	return dialSSEWith(t, sseClient, req)
}

// dialSSEWith is dialSSERequest through client.
func dialSSEWith(t testing.TB, client *http.Client, req *http.Request) (*http.Response, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(req.Context())
	req = req.WithContext(ctx)
	req.Header.Set("Accept", "text/event-stream")
	// Headers come at once for a stream; a request that hangs before
	// them is a failure, not something to wait out.
	timer := time.AfterFunc(15*time.Second, cancel)
	resp, err := client.Do(req)
	timer.Stop()
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	return resp, cancel
}

// openSSE opens a stream and fails the test unless it is 200 text/event-stream.
func openSSE(t testing.TB, url, lastEventID string) *sseStream {
	t.Helper()
	resp, cancel := dialSSE(t, url, lastEventID)
	return startSSE(t, url, resp, cancel)
}

// startSSE reads a dialled stream; it fails the test unless the response
// is 200 text/event-stream.
func startSSE(t testing.TB, url string, resp *http.Response, cancel context.CancelFunc) *sseStream {
	t.Helper()
	lastEventID := resp.Request.Header.Get("Last-Event-ID")
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s (Last-Event-ID %q): %d %s", url, lastEventID, resp.StatusCode, body)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: Content-Type %q, want text/event-stream", url, resp.Header.Get("Content-Type"))
	}
	s := &sseStream{Resp: resp, events: make(chan sseEvent, 4096), done: make(chan struct{}), cancel: cancel}
	go s.read()
	t.Cleanup(s.Close)
	return s
}

func (s *sseStream) read() {
	defer close(s.done)
	defer s.Resp.Body.Close()
	sc := bufio.NewScanner(s.Resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var ev sseEvent
	var data []string
	hasData := false
	send := func(e sseEvent) bool {
		e.At = time.Now()
		select {
		case s.events <- e:
			return true
		default:
			s.err = fmt.Errorf("test reader: more than %d unread events", cap(s.events))
			return false
		}
	}
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.ID != "" || ev.Event != "" || hasData {
				ev.Data = strings.Join(data, "\n")
				if !send(ev) {
					return
				}
			}
			ev, data, hasData = sseEvent{}, nil, false
		case strings.HasPrefix(line, ":"):
			if !send(sseEvent{Comment: strings.TrimPrefix(strings.TrimPrefix(line, ":"), " ")}) {
				return
			}
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				ev.ID = value
			case "event":
				ev.Event = value
			case "data":
				data, hasData = append(data, value), true
			}
		}
	}
	s.err = sc.Err()
}

// Close ends the stream from the client side.
func (s *sseStream) Close() {
	s.cancel()
	<-s.done
}

// nextAny returns the next event or comment, failing the test when none
// arrives within timeout or the stream ends first.
func (s *sseStream) nextAny(t testing.TB, timeout time.Duration) sseEvent {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case e := <-s.events:
		return e
	case <-s.done:
		select {
		case e := <-s.events:
			return e
		default:
		}
		t.Fatalf("stream ended (%v) while waiting for an event", s.err)
	case <-timer.C:
		t.Fatalf("no event within %s", timeout)
	}
	panic("unreachable")
}

// next returns the next event, skipping comments.
func (s *sseStream) next(t testing.TB, timeout time.Duration) sseEvent {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		e := s.nextAny(t, time.Until(deadline))
		if e.Comment == "" {
			return e
		}
	}
}

// expect reads the next event and checks its type, instance and id.
func (s *sseStream) expect(t testing.TB, typ, service, id string, rev int64) sseEvent {
	t.Helper()
	e := s.next(t, 10*time.Second)
	inst := e.instance(t)
	if e.Event != typ || inst.Service != service || inst.ID != id || (rev != 0 && e.rev(t) != rev) {
		t.Fatalf("got %s; want %s of %s/%s at revision %d", e, typ, service, id, rev)
	}
	return e
}

// ended waits until the server ends the stream, reporting whether it did
// within timeout.
func (s *sseStream) ended(timeout time.Duration) bool {
	select {
	case <-s.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// ---- REST helpers ----

func wRegister(t testing.TB, m *regdtest.Member, service, id, addr string, ttl int) registry.Instance {
	t.Helper()
	code, hdr, body := regdtest.Do(t, http.MethodPut, m.URL("/v1/services/"+service+"/instances/"+id), map[string]any{"address": addr, "ttl": ttl})
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("register %s/%s on %s: %d %s", service, id, m.Name, code, body)
	}
	var inst registry.Instance
	regdtest.MustJSON(t, body, &inst)
	if h := hdr.Get(api.HeaderRevision); h != strconv.FormatInt(inst.Revision, 10) {
		t.Fatalf("register: X-Regd-Revision %q, body revision %d", h, inst.Revision)
	}
	return inst
}

func wDeregister(t testing.TB, m *regdtest.Member, service, id string) int64 {
	t.Helper()
	code, hdr, body := regdtest.Do(t, http.MethodDelete, m.URL("/v1/services/"+service+"/instances/"+id), nil)
	if code != http.StatusNoContent {
		t.Fatalf("deregister %s/%s: %d %s", service, id, code, body)
	}
	rev, err := strconv.ParseInt(hdr.Get(api.HeaderRevision), 10, 64)
	if err != nil || rev < 1 {
		t.Fatalf("deregister: X-Regd-Revision %q", hdr.Get(api.HeaderRevision))
	}
	return rev
}

// wErrorCode is the code of a contract error body, or "" if it is not one.
func wErrorCode(body []byte) string {
	var e struct {
		Error struct{ Code, Message string }
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Message == "" {
		return ""
	}
	return e.Error.Code
}

func headerRev(t testing.TB, h http.Header) int64 {
	t.Helper()
	n, err := strconv.ParseInt(h.Get(api.HeaderRevision), 10, 64)
	if err != nil || n < 1 {
		t.Fatalf("X-Regd-Revision %q, want a revision >= 1", h.Get(api.HeaderRevision))
	}
	return n
}
