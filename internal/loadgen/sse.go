package loadgen

import "bytes"

// SSEEvent is one dispatched Server-Sent Event. Its slices belong to the
// parser and are valid only during the callback.
type SSEEvent struct {
	ID   []byte // the last event ID as of this event ("" if none was ever set)
	Type []byte // "message" when the event named none
	Data []byte // data lines joined with "\n", the final newline removed
}

// SSEParser turns a text/event-stream body, fed in pieces of any size,
// into events, following the WHATWG HTML "event stream interpretation":
// lines end in CRLF, LF or CR; a line starting with ':' is a comment;
// "field: value" loses one space after the colon; "data" lines accumulate
// joined by LF; "id" sets the last event ID (ignored if it contains NUL) and
// persists across events; an empty line dispatches the event unless it has
// no data. "retry" and unknown fields are ignored.
//
// It allocates only while a line or an event grows beyond what it has seen
// before, so one parser per connection costs about the largest event.
type SSEParser struct {
	// OnEvent is called for every dispatched event.
	OnEvent func(*SSEEvent)
	// OnComment, if set, is called with each comment line's text after
	// the ':' (regd sends ": keepalive" and ": closing: <reason>").
	OnComment func([]byte)

	line   []byte // the current line when it spans Feed calls
	skipLF bool   // the previous piece ended in CR: a leading LF is its pair
	data   []byte
	typ    []byte
	lastID []byte
	ev     SSEEvent
}

var eventMessage = []byte("message")

// Feed parses the next piece of the stream.
func (p *SSEParser) Feed(b []byte) {
	if p.skipLF && len(b) > 0 {
		p.skipLF = false
		if b[0] == '\n' {
			b = b[1:]
		}
	}
	for len(b) > 0 {
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			p.line = append(p.line, b...)
			return
		}
		line := b[:i]
		if len(p.line) > 0 {
			p.line = append(p.line, line...)
			line = p.line
		}
		if b[i] == '\r' {
			if i+1 < len(b) {
				if b[i+1] == '\n' {
					i++
				}
			} else {
				p.skipLF = true
			}
		}
		b = b[i+1:]
		p.processLine(line)
		p.line = p.line[:0]
	}
}

// LastEventID is the ID a reconnecting client sends as Last-Event-ID.
func (p *SSEParser) LastEventID() []byte { return p.lastID }

// SetLastEventID seeds the last event ID (a resumed stream).
func (p *SSEParser) SetLastEventID(id []byte) { p.lastID = append(p.lastID[:0], id...) }

// Reset forgets a partial line and event (the connection broke); the last
// event ID is kept, as a reconnecting client does.
func (p *SSEParser) Reset() {
	p.line, p.data, p.typ, p.skipLF = p.line[:0], p.data[:0], p.typ[:0], false
}

func (p *SSEParser) processLine(line []byte) {
	if len(line) == 0 {
		p.dispatch()
		return
	}
	if line[0] == ':' {
		if p.OnComment != nil {
			p.OnComment(line[1:])
		}
		return
	}
	field, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) { // no allocation: the compiler compares in place
	case "data":
		p.data = append(p.data, value...)
		p.data = append(p.data, '\n')
	case "event":
		p.typ = append(p.typ[:0], value...)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.lastID = append(p.lastID[:0], value...)
		}
	}
}

func (p *SSEParser) dispatch() {
	if len(p.data) == 0 {
		p.typ = p.typ[:0]
		return
	}
	p.ev.ID = p.lastID
	p.ev.Data = p.data[:len(p.data)-1]
	p.ev.Type = p.typ
	if len(p.typ) == 0 {
		p.ev.Type = eventMessage
	}
	if p.OnEvent != nil {
		p.OnEvent(&p.ev)
	}
	p.data, p.typ = p.data[:0], p.typ[:0]
}
