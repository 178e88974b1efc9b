package registry

import (
	"strconv"
	"strings"
)

// EventID names one event of the watch stream, and a position to resume
// after (the SSE id and Last-Event-ID; contract v2: "SSE event ids are
// unique per event"). One etcd revision can change several instances (a
// plain client's transaction, keys sharing a lease that ends), so the
// revision alone does not name an event: an event is its revision and its
// index among the events of that revision, in the order etcd applied the
// changes, which is the same on every member.
//
// Text form: "<revision>" for the only event of its revision, and as a
// position "after everything of that revision" (what ids were before, and
// what a list's revision means); "<revision>.<index>" for an event of a
// revision with several (index from 0). Clients treat ids as opaque.
type EventID struct {
	Rev int64
	// Index is the event's place among its revision's events, from 0;
	// WholeRevision as a position means "after every event of Rev".
	Index int
}

// WholeRevision is the Index of a position after all of a revision.
const WholeRevision = -1

// maxEventIndex bounds the index part of an id: etcd applies at most a
// few thousand operations in one transaction (--max-txn-ops, 128 by
// default), and a lease can hold many keys, but not billions.
const maxEventIndex = 1 << 30

// AfterRevision is the position after every event of rev.
func AfterRevision(rev int64) EventID { return EventID{Rev: rev, Index: WholeRevision} }

func (e EventID) String() string {
	if e.Index == WholeRevision {
		return strconv.FormatInt(e.Rev, 10)
	}
	return strconv.FormatInt(e.Rev, 10) + "." + strconv.Itoa(e.Index)
}

// AppendText appends the text form to b (encoding.TextAppender).
func (e EventID) AppendText(b []byte) ([]byte, error) {
	b = strconv.AppendInt(b, e.Rev, 10)
	if e.Index != WholeRevision {
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(e.Index), 10)
	}
	return b, nil
}

// ParseEventID reads an id in either text form: digits, optionally a dot
// and more digits; no signs, spaces or exponents.
func ParseEventID(s string) (EventID, bool) {
	revPart, idxPart, dotted := strings.Cut(s, ".")
	rev, ok := parseDigits(revPart, 1<<63-1)
	if !ok {
		return EventID{}, false
	}
	if !dotted {
		return AfterRevision(rev), true
	}
	idx, ok := parseDigits(idxPart, maxEventIndex)
	if !ok {
		return EventID{}, false
	}
	return EventID{Rev: rev, Index: int(idx)}, true
}

func parseDigits(s string, limit int64) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > limit {
		return 0, false
	}
	return n, true
}

// ID is the event's id: its revision alone when it is the only event of
// its revision, else revision and index.
func (e Event) ID() EventID {
	if e.Batch <= 1 {
		return AfterRevision(e.Revision)
	}
	return EventID{Rev: e.Revision, Index: e.Index}
}

// follows reports whether e comes after position p.
func (e Event) follows(p EventID) bool {
	if e.Revision != p.Rev {
		return e.Revision > p.Rev
	}
	return p.Index != WholeRevision && e.Index > p.Index
}
