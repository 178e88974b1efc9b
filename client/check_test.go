package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/regd/regd/client"
	"github.com/regd/regd/internal/checktest"
	"github.com/regd/regd/internal/regdtest"
)

// TestRegisterWithCheck: Client.Register with a Check registers an
// instance that regd keeps alive (no heartbeats), a Discovery sees its
// health, and it goes (an expiry) when the check fails; a bad check is a
// 400 invalid_check at once. A Registrar takes a Check too.
func TestRegisterWithCheck(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := regdtest.StartCluster(t, 1)
	web := checktest.NewHTTP(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cl := client.New(cfgFor(c, 0))

	in, _, err := cl.Register(ctx, "pg", "p1", client.Registration{
		Address: "127.0.0.1:5432",
		Check:   &client.Check{HTTP: web.URL("p1"), Interval: time.Second, Failures: 2},
	})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if in.Check == nil || in.Check.HTTP != web.URL("p1") || in.Check.Interval != time.Second || in.Check.Timeout != 500*time.Millisecond || in.Check.Failures != 2 || in.TTL < 5 {
		t.Fatalf("registered %+v check %+v", in, in.Check)
	}

	d := client.NewDiscovery(cfgFor(c, 0), "pg")
	rec := record(d)
	if err := d.Start(ctx); err != nil {
		t.Fatalf("Discovery.Start: %v", err)
	}
	defer d.Close()
	regdtest.Eventually(t, 20*time.Second, func() error {
		got := d.Instances()
		if len(got) != 1 || got[0].Health == nil || got[0].Health.Status != client.HealthPassing {
			return fmt.Errorf("instances %+v", got)
		}
		return nil
	})
	web.Set("p1", checktest.Failing)
	regdtest.Eventually(t, 20*time.Second, func() error {
		if !slices.Equal(rec.reasons("p1"), []string{client.ReasonExpire}) || len(d.Instances()) != 0 {
			return fmt.Errorf("reasons %v, instances %v", rec.reasons("p1"), d.Instances())
		}
		return nil
	})

	_, _, err = cl.Register(ctx, "pg", "p2", client.Registration{Address: "127.0.0.1:5432", Check: &client.Check{TCP: "127.0.0.1:1", HTTP: web.URL("p2")}})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 400 || ae.Code != "invalid_check" {
		t.Fatalf("two targets: %v, want 400 invalid_check", err)
	}

	reg := client.NewRegistrar(cfgFor(c, 0), "pg", "p3", "127.0.0.1:5433", client.RegistrarOptions{Check: &client.Check{TCP: web.Addr(), Interval: 2 * time.Second}})
	if err := reg.Start(ctx); err != nil {
		t.Fatalf("Registrar.Start: %v", err)
	}
	defer reg.Close(context.Background())
	if got := reg.Instance(); got.Check == nil || got.Check.TCP != web.Addr() || got.Check.Interval != 2*time.Second || got.Check.Timeout != time.Second {
		t.Fatalf("Registrar's instance %+v check %+v", got, got.Check)
	}
}
