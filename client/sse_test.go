package client

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func readAll(t *testing.T, r io.Reader, maxLine int) ([]sseEvent, []string, error) {
	t.Helper()
	p := newSSEReader(r, maxLine)
	var comments []string
	p.onComment = func(c string) { comments = append(comments, c) }
	var evs []sseEvent
	for {
		ev, err := p.Next()
		if err != nil {
			return evs, comments, err
		}
		evs = append(evs, ev)
	}
}

func TestSSEParse(t *testing.T) {
	in := "\ufeff: hello\n\n" +
		"id: 5\nevent: register\ndata: {\"id\":\"a\"}\n\n" +
		"data: line1\r\ndata:line2\r\ndata\r\n\r\n" + // CRLF, no space, bare field
		"id: 7\revent: expire\rdata: x\r\r" + // CR only
		"event: ignored-no-data\nid: 8\n\n" + // no data: not dispatched
		"retry: 1000\nfoo: bar\ndata: y\n\n" +
		": closing: this node lost its leader\n\n" +
		"id: 9\ndata: incomplete" // no blank line: discarded
	for name, r := range map[string]io.Reader{
		"whole":    strings.NewReader(in),
		"bytewise": iotest.OneByteReader(strings.NewReader(in)),
	} {
		t.Run(name, func(t *testing.T) {
			evs, comments, err := readAll(t, r, 1<<20)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("err = %v, want unexpected EOF for the unterminated line", err)
			}
			want := []sseEvent{
				{ID: "5", HasID: true, Event: "register", Data: `{"id":"a"}`},
				{Event: "message", Data: "line1\nline2\n"},
				{ID: "7", HasID: true, Event: "expire", Data: "x"},
				{Event: "message", Data: "y"},
			}
			if len(evs) != len(want) {
				t.Fatalf("events = %+v, want %+v", evs, want)
			}
			for i := range want {
				if evs[i] != want[i] {
					t.Errorf("event %d = %+v, want %+v", i, evs[i], want[i])
				}
			}
			if len(comments) != 2 || comments[0] != "hello" || comments[1] != "closing: this node lost its leader" {
				t.Errorf("comments = %q", comments)
			}
		})
	}
}

func TestSSELineLimit(t *testing.T) {
	_, _, err := readAll(t, strings.NewReader("data: "+strings.Repeat("x", 200)+"\n\n"), 100)
	if !errors.Is(err, errLineTooLong) {
		t.Fatalf("err = %v, want errLineTooLong", err)
	}
	evs, _, err := readAll(t, strings.NewReader("data: "+strings.Repeat("x", 200)+"\n\n"), 1000)
	if err != io.EOF || len(evs) != 1 || len(evs[0].Data) != 200 {
		t.Fatalf("events %d, err %v", len(evs), err)
	}
}

// TestApplyResume: the resume point is the last event's id exactly as
// regd sent it (ids are opaque: "11.1" names the second event of revision
// 11), or the last list's revision; a reset calls back only for the
// differences.
func TestApplyResume(t *testing.T) {
	d := NewDiscovery(Config{}, "s")
	ev := func(eid, typ, id string) sseEvent {
		rev, _, _ := strings.Cut(eid, ".")
		return sseEvent{ID: eid, HasID: true, Event: typ,
			Data: `{"service":"s","id":"` + id + `","address":"h:1","lease_id":"1","revision":` + rev + `}`}
	}
	apply := func(e sseEvent) []call {
		t.Helper()
		d.mu.Lock()
		defer d.mu.Unlock()
		calls, err := d.applyLocked(e)
		if err != nil {
			t.Fatal(err)
		}
		return calls
	}
	d.mu.Lock()
	d.resetLocked(InstanceList{Service: "s", Revision: 10, Instances: []Instance{{ID: "a", Address: "h:1", LeaseID: "1", Revision: 3}}})
	d.mu.Unlock()
	if got := d.resumeFrom(); got != "10" {
		t.Fatalf("resume after list = %q, want 10", got)
	}
	if c := apply(ev("11.0", "register", "b")); len(c) != 1 || c[0].in.ID != "b" || c[0].reason != "" {
		t.Fatalf("calls = %+v", c)
	}
	if got := d.resumeFrom(); got != "11.0" {
		t.Fatalf("resume within revision 11 = %q, want 11.0", got)
	}
	if c := apply(ev("11.1", "register", "c")); len(c) != 1 {
		t.Fatal("a second event of the same revision was dropped")
	}
	if got := d.resumeFrom(); got != "11.1" {
		t.Fatalf("resume = %q, want 11.1", got)
	}
	if c := apply(ev("12", "expire", "a")); len(c) != 1 || c[0].reason != "expire" || c[0].in.ID != "a" {
		t.Fatalf("calls = %+v", c)
	}
	if c := apply(ev("13", "deregister", "nobody")); len(c) != 0 {
		t.Fatal("a deregistration of an unknown instance called back")
	}
	if got := d.Revision(); got != 13 {
		t.Fatalf("revision = %d", got)
	}
	// Reset: b unchanged, c gone, d new.
	bJSON := `{"service":"s","id":"b","address":"h:1","lease_id":"1","revision":11}`
	dJSON := `{"service":"s","id":"d","address":"h:2","lease_id":"2","revision":20}`
	c := apply(sseEvent{ID: "20", HasID: true, Event: "reset",
		Data: `{"service":"s","revision":20,"instances":[` + bJSON + `,` + dJSON + `]}`})
	if len(c) != 2 || c[0].in.ID != "c" || c[0].reason != ReasonReset || c[1].in.ID != "d" || c[1].reason != "" {
		t.Fatalf("reset calls = %+v", c)
	}
	ids := []string{}
	for _, in := range d.Instances() {
		ids = append(ids, in.ID)
	}
	if strings.Join(ids, ",") != "b,d" || d.Revision() != 20 || d.resumeFrom() != "20" {
		t.Fatalf("after reset: %v rev %d resume %q", ids, d.Revision(), d.resumeFrom())
	}
}
