// Package client is a Go client for regd, the etcd-backed service registry.
// It depends on nothing but the standard library.
//
// A service instance keeps itself registered with a [Registrar]: it
// registers, heartbeats every TTL/3, registers again when regd answers a
// heartbeat with 404 (the instance expired or was removed), moves on to the
// next node when one fails, and deregisters on Close.
//
//	reg := client.NewRegistrar(client.Config{Addrs: []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
//		"user", "user-1", "10.0.0.5:9000", client.RegistrarOptions{TTL: 10})
//	if err := reg.Start(ctx); err != nil {
//		return err
//	}
//	defer reg.Close(context.Background())
//
// A consumer follows a service's instances with a [Discovery]: it lists
// them once, then follows the watch stream (Server-Sent Events) and keeps
// an up-to-date copy. When a stream ends (its node went away, lost its
// leader or shut down) it reconnects to the next node and resumes with
// Last-Event-ID, so no change is missed and none is seen twice; when the
// history it asks for is gone, regd sends the full list (a reset) and the
// copy is replaced, with callbacks for the differences.
//
//	d := client.NewDiscovery(client.Config{Addrs: addrs}, "user")
//	d.OnRegister(func(in client.Instance) { log.Println("up", in.ID, in.Address) })
//	d.OnDeregister(func(in client.Instance, reason string) { log.Println("down", in.ID, reason) })
//	if err := d.Start(ctx); err != nil {
//		return err
//	}
//	defer d.Close()
//	if in, ok := d.Pick(); ok {
//		dial(in.Address)
//	}
//
// A Discovery follows the up instances: one drained or taken out of
// service leaves it (OnDeregister with ReasonStatus) and comes back when it
// is up again.
//
// A graceful shutdown drains first and knows when every client has seen
// it (regd's drain handshake: no guessed sleeps), then finishes the work
// in flight and deregisters:
//
//	obs, err := reg.Drain(ctx, 30*time.Second) // at most 60 s
//	if err == nil && !obs.Complete() {
//		log.Printf("only %s saw the drain in time", obs)
//	}
//	// ... finish in-flight work ...
//	reg.Close(ctx)
//
// A [Client] sends single requests: drain or undrain any instance
// (SetStatus, Patch), deregister with the same wait, and renew up to 1000
// instances in one request (Heartbeats), for agents and sidecars that keep
// many instances registered.
//
// Something that cannot heartbeat (a database, a vendor program) is
// registered once with a [Check] that regd runs itself: while the check
// passes regd keeps the lease alive, and after its failures in a row regd
// removes the instance (an expiry with cause "check_failed").
//
//	_, _, err := client.New(cfg).Register(ctx, "pg", "primary", client.Registration{
//		Address: "10.0.0.5:5432",
//		Check:   &client.Check{TCP: "10.0.0.5:5432", Interval: 5 * time.Second},
//	})
//
// Start's context bounds only the initial registration or list; the
// background work (heartbeats, the watch) runs until Close.
//
// Failover: when a node cannot serve — the connection fails (it is down,
// or shutting down: regd closes its listener first), or it answers 503
// with code "unavailable" (shutting down, not ready, cut off from its
// quorum) or "storage_unwritable" (its own disk) — the request goes to the
// next node at once, until every node has been tried; then the client
// backs off (100 ms doubling to a few seconds) before the next round.
// Answers that no other node would change sooner wait for the backoff
// first: 503 "storage_full" (etcd's NOSPACE alarm binds every member),
// "overloaded", 429, 408 and other 5xx. regd retries what a leader change
// interrupts itself, so during a rolling restart (docs/operations.md) only
// requests to the member being stopped fail over; the watch resumes on
// the next node with Last-Event-ID, missing nothing. regd's command line
// (package cli: `regd ls`, `regd drain`, `regd watch`, `regd run`, ...) is
// built on this package, so it behaves the same.
//
// Against a regd with access tokens (--auth-token-file), set Config.Token:
// a write token for a Registrar; a read token for a Discovery, needed only
// with --auth-reads token. A missing, unknown or read-only token makes
// Start fail at once with regd's 401 or 403 (IsAuthError), which is not
// retried on the other nodes.
package client
