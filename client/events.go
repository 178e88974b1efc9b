package client

import "encoding/json"

// Types of the events a Discovery passes to OnEvent: the list Start begins
// with, then the watch stream's own event types.
const (
	EventList       = "list"       // the list Start begins with (GET .../instances)
	EventReset      = "reset"      // the history to resume from was gone: the full list
	EventRegister   = "register"   // registered, or registered again (an upsert)
	EventUpdate     = "update"     // changed in place (PATCH: status, weight, metadata)
	EventDeregister = "deregister" // deregistered through the API
	EventExpire     = "expire"     // its lease ran out
)

// Event is one change a Discovery applied, as regd sent it.
type Event struct {
	// Type is one of the Event* constants, or a type this client does not
	// know (applied as nothing; passed on all the same).
	Type string
	// ID is the event's id as regd sent it: opaque, what a reconnect
	// resumes after ("" when the event had none). For EventList, the
	// list's revision.
	ID string
	// Data is the event's JSON as regd sent it: the instance for instance
	// events; for EventList and EventReset the service's list
	// ({"service","instances","revision"}, as InstanceList).
	Data json.RawMessage
}

// OnEvent adds a callback for every change the Discovery applies, after
// the OnRegister and OnDeregister callbacks of that change: first the list
// Start begins with (EventList), then each event of the watch stream, across
// reconnects (an event is never passed twice; a reconnect that resumes finds
// nothing to pass, one that could not resume passes an EventReset with the
// full list). It is what a program needs that acts once per change rather
// than once per instance, or that shows the events themselves (`regd
// watch`). Callbacks run as OnRegister's do.
func (d *Discovery) OnEvent(f func(Event)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onEvent = append(d.onEvent, f)
}

// notify calls the OnEvent callbacks; never with d.mu held.
func (d *Discovery) notify(ev Event) {
	d.mu.Lock()
	fs := d.onEvent
	d.mu.Unlock()
	for _, f := range fs {
		f(ev)
	}
}

// List is the current instances (as Instances) with the revision they
// reflect (as Revision), read together: the list a program that acts once
// per change hands on.
func (d *Discovery) List() InstanceList {
	d.mu.Lock()
	s, rev := d.sortedLocked(), d.rev
	d.mu.Unlock()
	out := InstanceList{Service: d.service, Instances: make([]Instance, len(s)), Revision: rev}
	for i, in := range s {
		out.Instances[i] = in.clone()
	}
	return out
}
