package loadgen

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

type gotEvent struct{ id, typ, data string }

func parseAll(t *testing.T, pieces []string) ([]gotEvent, []string, string) {
	t.Helper()
	var evs []gotEvent
	var comments []string
	p := &SSEParser{
		OnEvent:   func(e *SSEEvent) { evs = append(evs, gotEvent{string(e.ID), string(e.Type), string(e.Data)}) },
		OnComment: func(c []byte) { comments = append(comments, string(c)) },
	}
	for _, s := range pieces {
		p.Feed([]byte(s))
	}
	return evs, comments, string(p.LastEventID())
}

func TestSSEParser(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stream   string
		want     []gotEvent
		comments []string
		lastID   string
	}{
		{
			name:   "regd frame",
			stream: "id: 7\nevent: register\ndata: {\"id\":\"a\"}\n\n",
			want:   []gotEvent{{"7", "register", `{"id":"a"}`}},
			lastID: "7",
		},
		{
			name:   "multi-line data joined with LF, last LF removed",
			stream: "data: one\ndata:two\ndata:  three\n\n",
			want:   []gotEvent{{"", "message", "one\ntwo\n three"}},
		},
		{
			name:   "id persists; event type does not",
			stream: "id: 1\nevent: expire\ndata: a\n\ndata: b\n\nid: 2:x\ndata: c\n\n",
			want:   []gotEvent{{"1", "expire", "a"}, {"1", "message", "b"}, {"2:x", "message", "c"}},
			lastID: "2:x",
		},
		{
			name:     "comments, retry, unknown fields, no-colon field",
			stream:   ": keepalive\n\nretry: 100\nfoo: bar\ndata\n\n: closing: slow\n\n",
			want:     []gotEvent{{"", "message", ""}},
			comments: []string{" keepalive", " closing: slow"},
		},
		{
			name:   "no data: nothing dispatched, but the id is taken",
			stream: "id: 9\nevent: x\n\ndata: y\n\n",
			want:   []gotEvent{{"9", "message", "y"}},
			lastID: "9",
		},
		{
			name:   "id with NUL ignored; empty id clears",
			stream: "id: 3\ndata: a\n\nid: 4\x005\ndata: b\n\nid\ndata: c\n\n",
			want:   []gotEvent{{"3", "message", "a"}, {"3", "message", "b"}, {"", "message", "c"}},
		},
		{
			name:   "CRLF and lone CR line ends",
			stream: "id: 5\r\nevent: deregister\r\ndata: x\r\r\ndata: y\rdata: z\r\n\n",
			want:   []gotEvent{{"5", "deregister", "x"}, {"5", "message", "y\nz"}},
			lastID: "5",
		},
		{
			name:   "an incomplete last event is not dispatched",
			stream: "data: a\n\ndata: b\n",
			want:   []gotEvent{{"", "message", "a"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Whole, then cut at every position, then one byte at a time:
			// the events must not depend on how the stream arrives.
			splits := [][]string{{tc.stream}}
			for i := 1; i < len(tc.stream); i++ {
				splits = append(splits, []string{tc.stream[:i], tc.stream[i:]})
			}
			splits = append(splits, strings.Split(tc.stream, ""))
			for _, pieces := range splits {
				got, comments, lastID := parseAll(t, pieces)
				if !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
					t.Fatalf("pieces %q: events %+v, want %+v", pieces, got, tc.want)
				}
				if !reflect.DeepEqual(comments, tc.comments) && !(len(comments) == 0 && len(tc.comments) == 0) {
					t.Fatalf("pieces %q: comments %q, want %q", pieces, comments, tc.comments)
				}
				if lastID != tc.lastID {
					t.Fatalf("pieces %q: last id %q, want %q", pieces, lastID, tc.lastID)
				}
			}
		})
	}
}

func TestSSEParserResetKeepsLastID(t *testing.T) {
	var got []gotEvent
	p := &SSEParser{OnEvent: func(e *SSEEvent) { got = append(got, gotEvent{string(e.ID), string(e.Type), string(e.Data)}) }}
	p.Feed([]byte("id: 4\ndata: a\n\nid: 5\nevent: register\ndata: partial"))
	p.Reset() // the connection broke mid-event
	if string(p.LastEventID()) != "5" {
		t.Fatalf("last id %q", p.LastEventID())
	}
	p.Feed([]byte("data: b\n\n"))
	want := []gotEvent{{"4", "message", "a"}, {"5", "message", "b"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events %+v, want %+v", got, want)
	}
	p.SetLastEventID([]byte("77"))
	p.Feed([]byte("data: c\n\n"))
	if got[2].id != "77" {
		t.Fatalf("seeded id: %+v", got[2])
	}
}

// The parser's steady state allocates nothing: 10,000 parsers on one
// machine must not feed the garbage collector per event.
func TestSSEParserSteadyStateAllocs(t *testing.T) {
	p := &SSEParser{OnEvent: func(*SSEEvent) {}}
	frame := []byte(fmt.Sprintf("id: 123\nevent: register\ndata: %s\n\n", strings.Repeat("x", 300)))
	p.Feed(frame)
	if n := testing.AllocsPerRun(100, func() { p.Feed(frame[:50]); p.Feed(frame[50:]) }); n != 0 {
		t.Fatalf("%v allocations per event", n)
	}
}
