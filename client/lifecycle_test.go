package client_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/regd/regd/client"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
)

// TestDrain: a Registrar drains its instance with the handshake's wait; a
// Discovery on another member has let it go (OnDeregister "status") by
// then, and takes it back when it is undrained; a re-registration after
// the drain keeps the status; Client.Heartbeats renews many and reports
// the unknown; Client.Deregister with a wait.
func TestDrain(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := regdtest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	weight := 7
	reg := client.NewRegistrar(cfgFor(c, 0), "dr", "d1", "10.0.0.5:9000", client.RegistrarOptions{TTL: 30, Weight: &weight})
	if err := reg.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer reg.Close(context.Background())
	if in := reg.Instance(); in.Status != client.StatusUp || in.Weight != 7 {
		t.Fatalf("registered %+v", in)
	}
	d := client.NewDiscovery(cfgFor(c, 1), "dr")
	rec := record(d)
	if err := d.Start(ctx); err != nil {
		t.Fatalf("Discovery.Start: %v", err)
	}
	defer d.Close()
	if rec.registered("d1") != 1 {
		t.Fatal("d1 not discovered")
	}

	obs, err := reg.Drain(ctx, 10*time.Second)
	if err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if !obs.Complete() || obs.Subscribers < 1 || obs.Members != 3 {
		t.Fatalf("Drain observed %s, want every subscriber (at least the Discovery's stream) on 3 members", obs)
	}
	// The Discovery's stream was written the change before the answer;
	// its callback follows the read.
	poll.Until(t, 5*time.Second, "the drain reaches the discovery", func() error {
		if !slices.Equal(rec.reasons("d1"), []string{client.ReasonStatus}) || len(d.Instances()) != 0 {
			return fmt.Errorf("reasons %v, instances %v", rec.reasons("d1"), d.Instances())
		}
		return nil
	})
	if in := reg.Instance(); in.Status != client.StatusDraining || in.Weight != 7 {
		t.Fatalf("after Drain: %+v", in)
	}

	cl := client.New(cfgFor(c, 2, 1))
	if _, _, err := cl.SetStatus(ctx, "dr", "d1", client.StatusUp, 10*time.Second); err != nil {
		t.Fatalf("undrain: %v", err)
	}
	poll.Until(t, 5*time.Second, "the undrain reaches the discovery", func() error {
		if rec.registered("d1") != 2 || len(d.Instances()) != 1 {
			return fmt.Errorf("OnRegister(d1) %d times, instances %v", rec.registered("d1"), d.Instances())
		}
		return nil
	})

	res, err := cl.Heartbeats(ctx, []client.InstanceRef{{Service: "dr", ID: "d1"}, {Service: "dr", ID: "nobody"}, {Service: "bad name", ID: "x"}})
	if err != nil {
		t.Fatalf("Heartbeats: %v", err)
	}
	if res[0].Err != nil || res[0].TTL < 25 || !client.IsNotFound(res[1].Err) || res[2].Err == nil || client.IsNotFound(res[2].Err) {
		t.Fatalf("heartbeats: %+v", res)
	}

	obs, err = cl.Deregister(ctx, "dr", "d1", 10*time.Second)
	if err != nil || !obs.Complete() || obs.Subscribers < 1 {
		t.Fatalf("Deregister: %s %v", obs, err)
	}
	poll.Until(t, 5*time.Second, "the deregistration reaches the discovery", func() error {
		if r := rec.reasons("d1"); !slices.Equal(r, []string{client.ReasonStatus, client.ReasonDeregister}) {
			return fmt.Errorf("reasons %v", r)
		}
		return nil
	})
	// Gone already: no error.
	if _, err := cl.Deregister(ctx, "dr", "d1", 0); err != nil {
		t.Fatalf("second Deregister: %v", err)
	}
}
