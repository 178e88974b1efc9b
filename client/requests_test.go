package client_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/regd/regd/client"
	"github.com/regd/regd/internal/regdtest"
)

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestClientRequests: Client's one-shot requests (what the command line
// sends) against a real node: Register (created, then replaced; weight 0
// and a status are sent, not left to defaults), Services, Instances with
// status and metadata filters, DeregisterKnown against Deregister for an
// unknown instance, Expirations with a service and a limit.
func TestClientRequests(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := regdtest.StartCluster(t, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cl := client.New(cfgFor(c, 0))

	zero := 0
	in, created, err := cl.Register(ctx, "shop", "s1", client.Registration{Address: "10.0.0.1:80", TTL: 30, Weight: &zero,
		Status: client.StatusDraining, Metadata: map[string]string{"zone": "a"}})
	if err != nil || !created || in.Weight != 0 || in.Status != client.StatusDraining || in.TTL != 30 || in.Metadata["zone"] != "a" {
		t.Fatalf("Register = %+v, created %v, %v", in, created, err)
	}
	if _, created, err = cl.Register(ctx, "shop", "s1", client.Registration{Address: "10.0.0.1:80", TTL: 30}); err != nil || created {
		t.Fatalf("Register again: created %v, %v; want a replacement", created, err)
	}
	for i, zone := range []string{"a", "b"} {
		if _, _, err := cl.Register(ctx, "shop", fmt.Sprintf("s%d", i+2), client.Registration{Address: "10.0.0.2:80", TTL: 30, Metadata: map[string]string{"zone": zone}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := cl.Register(ctx, "shop", "s9", client.Registration{Address: "no port"}); client.IsNotFound(err) || err == nil {
		t.Fatalf("Register with a bad address: %v, want regd's 400", err)
	}

	sl, err := cl.Services(ctx)
	if err != nil || !slices.Equal(sl.Services, []client.ServiceSummary{{Name: "shop", Instances: 3, Up: 3}}) || sl.Revision == 0 {
		t.Fatalf("Services = %+v, %v", sl, err)
	}
	ids := func(opts client.ListOptions) []string {
		t.Helper()
		l, err := cl.Instances(ctx, "shop", opts)
		if err != nil || l.Service != "shop" || l.Revision == 0 {
			t.Fatalf("Instances(%+v) = %+v, %v", opts, l, err)
		}
		var out []string
		for _, in := range l.Instances {
			out = append(out, in.ID)
		}
		return out
	}
	for _, tc := range []struct {
		opts client.ListOptions
		want []string
	}{
		{client.ListOptions{}, []string{"s1", "s2", "s3"}},
		{client.ListOptions{Metadata: map[string]string{"zone": "a"}}, []string{"s2"}},
		{client.ListOptions{Status: "any", Metadata: map[string]string{"zone": "b"}}, []string{"s3"}},
	} {
		if got := ids(tc.opts); !slices.Equal(got, tc.want) {
			t.Errorf("Instances(%+v) = %v, want %v", tc.opts, got, tc.want)
		}
	}

	if _, err := cl.DeregisterKnown(ctx, "shop", "nope", 0); !client.IsNotFound(err) {
		t.Errorf("DeregisterKnown of an unknown instance: %v, want a 404", err)
	}
	if _, err := cl.Deregister(ctx, "shop", "nope", 0); err != nil {
		t.Errorf("Deregister of an unknown instance: %v, want none", err)
	}
	if _, err := cl.DeregisterKnown(ctx, "shop", "s3", 0); err != nil {
		t.Errorf("DeregisterKnown(s3): %v", err)
	}

	for _, id := range []string{"e1", "e2"} {
		if _, _, err := cl.Register(ctx, "gone", id, client.Registration{Address: "10.0.0.3:80", TTL: 2}); err != nil {
			t.Fatal(err)
		}
	}
	regdtest.Eventually(t, 20*time.Second, func() error {
		l, err := cl.Expirations(ctx, "gone", 0)
		if err != nil || len(l.Expirations) != 2 {
			return fmt.Errorf("%+v %v", l, err)
		}
		return nil
	})
	l, err := cl.Expirations(ctx, "gone", 1)
	if err != nil || len(l.Expirations) != 1 || l.Expirations[0].Cause != "ttl" || l.Expirations[0].ExpiredAt.IsZero() || l.Expirations[0].Service != "gone" {
		t.Fatalf("Expirations(gone, 1) = %+v, %v", l, err)
	}
	if l, err := cl.Expirations(ctx, "shop", 0); err != nil || len(l.Expirations) != 0 {
		t.Fatalf("Expirations(shop) = %+v, %v: a deregistration was reported", l, err)
	}
}

// TestClientFailFast: with FailFast, a request that can connect to no
// node fails before its context ends; one node down is failed over.
// Without it the request is retried until the context ends.
func TestClientFailFast(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := regdtest.StartCluster(t, 1)
	down := closedAddr(t)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ff := client.NewWithOptions(client.Config{Addrs: []string{down, down}}, client.ClientOptions{FailFast: true})
	if _, err := ff.Services(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("FailFast with nothing listening: %v (context: %v), want the dial error before the context ends", err, ctx.Err())
	}
	ff = client.NewWithOptions(client.Config{Addrs: []string{down, c.Members[0].HTTPAddr}}, client.ClientOptions{FailFast: true})
	if _, err := ff.Services(ctx); err != nil {
		t.Fatalf("FailFast with the second node up: %v", err)
	}

	short, cancel2 := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel2()
	if _, err := client.New(client.Config{Addrs: []string{down}}).Services(short); err == nil || short.Err() == nil {
		t.Fatalf("without FailFast: %v (context: %v), want retries until the context ended", err, short.Err())
	}
}
