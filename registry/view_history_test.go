package registry

import (
	"encoding/json"
	"testing"
)

// TestViewHistoryTrimIsAmortized guards against trimming the event history
// on every event once it is full: that copied the whole history per event,
// under the view's lock, and a long-lived node fell behind its own watch.
func TestViewHistoryTrimIsAmortized(t *testing.T) {
	const size = 1024
	v := NewView(&Store{}, ViewOptions{History: size})
	e := Event{Type: EventRegister, Instance: Instance{Service: "user", ID: "u1"}, Data: json.RawMessage(`{}`)}
	rev := int64(1)
	publish := func() {
		rev++
		e.Revision = rev
		v.mu.Lock()
		v.publish(e)
		v.mu.Unlock()
	}
	for range 4 * size {
		publish()
	}
	if n := len(v.history); n < size || n > size+size/4 {
		t.Fatalf("history holds %d events, want %d to %d", n, size, size+size/4)
	}
	if allocs := testing.AllocsPerRun(4*size, publish); allocs != 0 {
		t.Fatalf("publish with a full history allocates %.0f times per event; trimming must be amortized", allocs)
	}
	// Every event above the floor is still there, none below it.
	if first := v.history[0].Revision; first != v.floor+1 {
		t.Fatalf("history starts at revision %d, floor is %d", first, v.floor)
	}
}
