package client

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
)

// sseEvent is one dispatched Server-Sent Event.
type sseEvent struct {
	ID    string // the block's own id field; "" when it had none
	HasID bool
	Event string // "message" when the block named none
	Data  string // data lines joined by "\n"
}

// errLineTooLong ends a stream whose line exceeds the reader's limit.
var errLineTooLong = errors.New("regd client: SSE line too long")

// sseReader parses an event stream as the HTML standard describes it:
// lines end in LF, CRLF or CR; a line starting with ':' is a comment; a
// field is "name: value" (one space after the colon is dropped) or a bare
// name; a blank line dispatches the event; a block without data is not
// dispatched; an incomplete block at EOF is discarded.
type sseReader struct {
	r         *bufio.Reader
	max       int          // longest line accepted
	onComment func(string) // optional, gets the comment without ':'
	onLine    func()       // optional, called for every line (liveness)
	first     bool
	pendingCR bool // the previous line ended in CR: skip an LF that follows
}

func newSSEReader(r io.Reader, maxLine int) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 64<<10), max: maxLine, first: true}
}

// readLine returns the next line without its terminator.
func (p *sseReader) readLine() (string, error) {
	var buf []byte
	for {
		b, err := p.r.ReadByte()
		if err != nil {
			if err == io.EOF && len(buf) > 0 {
				// An unterminated last line cannot complete an event.
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
		if p.pendingCR {
			p.pendingCR = false
			if b == '\n' {
				continue
			}
		}
		switch b {
		case '\n':
			return string(buf), nil
		case '\r':
			p.pendingCR = true
			return string(buf), nil
		}
		buf = append(buf, b)
		// Copy the rest of the line in bulk.
		chunk, _ := p.r.Peek(p.r.Buffered())
		if i := bytes.IndexAny(chunk, "\r\n"); i >= 0 {
			chunk = chunk[:i]
		}
		buf = append(buf, chunk...)
		_, _ = p.r.Discard(len(chunk))
		if len(buf) > p.max {
			return "", errLineTooLong
		}
	}
}

// Next returns the next event, or the error that ended the stream (io.EOF
// for a clean end).
func (p *sseReader) Next() (sseEvent, error) {
	var (
		ev      sseEvent
		data    strings.Builder
		hasData bool
	)
	for {
		line, err := p.readLine()
		if err != nil {
			return sseEvent{}, err
		}
		if p.onLine != nil {
			p.onLine()
		}
		if p.first {
			p.first = false
			line = strings.TrimPrefix(line, "\ufeff")
		}
		if line == "" {
			if !hasData {
				ev = sseEvent{} // nothing to dispatch; start over
				continue
			}
			ev.Data = data.String()
			if ev.Event == "" {
				ev.Event = "message"
			}
			return ev, nil
		}
		if line[0] == ':' {
			if p.onComment != nil {
				p.onComment(strings.TrimPrefix(line[1:], " "))
			}
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "event":
			ev.Event = value
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		case "id":
			if !strings.ContainsRune(value, 0) {
				ev.ID, ev.HasID = value, true
			}
		default: // "retry" and unknown fields are ignored
		}
	}
}
