//go:build e2e

package faults

import (
	"fmt"
	"maps"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/regd/regd/internal/e2e"
	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/internal/poll"
)

// TestE2EFaultKillAll: instances with a long TTL survive SIGKILL of all
// three members at once and a restart, with their lease, address and
// metadata; deregistered ones stay gone and are never reported; short-TTL
// instances that ran out while the cluster was down are reported exactly
// once after it comes back.
func TestE2EFaultKillAll(t *testing.T) {
	bin := e2e.Build(t)
	c := e2e.StartCluster(t, bin, e2e.ClusterOptions{})
	c.Leader(leaderWait)

	const long, short, gone = 60, 6, 10
	want := map[string]instance{}
	for i := range long {
		md := map[string]string{"n": fmt.Sprint(i), "zone": "z" + fmt.Sprint(i%3)}
		in, err := register(c.URL(i%3), "durable", fmt.Sprintf("d%02d", i), 3600, md)
		if err != nil {
			t.Fatal(err)
		}
		want[in.ID] = in
	}
	for i := range gone {
		id := fmt.Sprintf("d%02d", i)
		code, body, err := call(t.Context(), client, http.MethodDelete, c.URL((i+1)%3)+"/v1/services/durable/instances/"+id, "")
		if err != nil || code != http.StatusNoContent {
			t.Fatalf("deregister %s: %d %s %v", id, code, body, err)
		}
		delete(want, id)
	}
	wantExpired := map[ledgertest.Expiry]string{}
	for i := range short {
		in, err := register(c.URL(i%3), "brief", fmt.Sprintf("b%d", i), 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		wantExpired[ledgertest.Expiry{Service: in.Service, ID: in.ID, Lease: in.LeaseID}] = in.Address
	}

	// All three at once, right after the last acknowledgement: whatever
	// was acknowledged must already be on disk.
	var wg sync.WaitGroup
	for i := range c.Members {
		wg.Go(func() { c.Kill(i) })
	}
	wg.Wait()
	killed := time.Now()
	// The scenario is the time itself: the short leases run out (by the
	// clock) while no member runs. What follows shows it happened: no
	// member reported anything before the restart, and every short
	// instance is reported once after it.
	time.Sleep(3 * time.Second)

	restarted := time.Now()
	for i := range c.Members {
		c.Start(i)
	}
	for i := range c.Members {
		c.WaitReady(i, readyTimeout)
	}
	readyAfter := time.Since(restarted)
	leader := c.Leader(leaderWait)
	var writable time.Duration
	poll.Until(t, 10*time.Second, "a write after the restart", func() error {
		_, err := register(c.URL(leader), "probe", "p", 3600, nil)
		writable = time.Since(restarted)
		return err
	})

	for i := range c.Members {
		got, err := list(c.URL(i), "durable")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Errorf("%s lists %d durable instances, want %d", c.Members[i].Name, len(got), len(want))
		}
		for id, w := range want {
			g, ok := got[id]
			switch {
			case !ok:
				t.Errorf("%s: %s lost", c.Members[i].Name, id)
			case g.LeaseID != w.LeaseID || g.Address != w.Address || !maps.Equal(g.Metadata, w.Metadata) || g.TTL != 3600 ||
				g.RegisteredAt == nil || w.RegisteredAt == nil || !g.RegisteredAt.Equal(*w.RegisteredAt) || g.Revision != w.Revision:
				t.Errorf("%s: %s changed across the restart:\nbefore %+v\nafter  %+v", c.Members[i].Name, id, w, g)
			}
		}
		for id := range got {
			if _, ok := want[id]; !ok {
				t.Errorf("%s: deregistered %s is back", c.Members[i].Name, id)
			}
		}
	}
	// The leases came back too: heartbeats renew them.
	for id := range want {
		code, body, err := call(t.Context(), client, http.MethodPut, c.URL(0)+"/v1/services/durable/instances/"+id+"/heartbeat", "")
		if err != nil || code != http.StatusOK {
			t.Errorf("heartbeat %s after the restart: %d %s %v", id, code, body, err)
		}
	}

	var lastReport time.Time
	for _, e := range exactlyOnce(t, c, 20*time.Second, ledgertest.Expected{Want: wantExpired, Each: func(e ledgertest.Entry) error {
		if e.ExpiredAt.Before(restarted) {
			return fmt.Errorf("reported at %v, before the restart at %v: a member survived the kill", e.ExpiredAt, restarted)
		}
		return nil
	}}) {
		if e.ExpiredAt.After(lastReport) {
			lastReport = e.ExpiredAt
		}
	}
	for i := range c.Members {
		if got, err := list(c.URL(i), "brief"); err != nil || len(got) != 0 {
			t.Errorf("%s still lists short instances after their expiry: %v %v", c.Members[i].Name, got, err)
		}
	}
	figure(t, "SIGKILL of all 3 members: %d of %d long-TTL instances intact on every node, %d deregistered ones still gone; all ready %s after the restart, first write accepted after %s",
		len(want), len(want), gone, ms(readyAfter), ms(writable))
	figure(t, "%d TTL-2 instances that ran out during the %s outage reported once each, the last %s after the restart",
		short, ms(restarted.Sub(killed)), ms(lastReport.Sub(restarted)))
}
