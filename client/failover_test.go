package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/regd/regd/client"
	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
)

func TestFailoverClassification(t *testing.T) {
	refused := fmt.Errorf("dial: %w", syscall.ECONNREFUSED)
	shuttingDown := &client.APIError{StatusCode: http.StatusServiceUnavailable, Code: "unavailable", Message: "this node is shutting down; send the request to another member"}
	unwritable := &client.APIError{StatusCode: http.StatusServiceUnavailable, Code: "storage_unwritable"}
	full := &client.APIError{StatusCode: http.StatusServiceUnavailable, Code: "storage_full"}
	overloaded := &client.APIError{StatusCode: http.StatusServiceUnavailable, Code: "overloaded"}
	tooMany := &client.APIError{StatusCode: http.StatusTooManyRequests, Code: "too_many_streams"}
	notFound := &client.APIError{StatusCode: http.StatusNotFound, Code: "not_found"}
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{refused, true},
		{io.ErrUnexpectedEOF, true},
		{shuttingDown, true},
		{unwritable, true},
		{full, false},
		{overloaded, false},
		{tooMany, false},
		{notFound, false},
		{client.ErrBadToken, false},
	} {
		if got := client.Failover(tt.err); got != tt.want {
			t.Errorf("failover(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}

	// With three nodes: a node's failure sends the next attempt to the
	// next node at once, twice; the third in a row (every node tried)
	// pauses. A failure of the cluster pauses at once, and resets the
	// count.
	pauses := client.PauseAfter(3, refused, shuttingDown, refused, full, refused, errors.New("EOF"))
	for i, wantZero := range []bool{true, true, false, false, true, true} {
		if (pauses[i] == 0) != wantZero {
			t.Errorf("pause %d = %v, want zero: %v (all: %v)", i, pauses[i], wantZero, pauses)
		}
	}
	if got := client.PauseAfter(1, refused); got[0] == 0 {
		t.Errorf("one node: a failover pauses anyway (nowhere else to go), got %v", got)
	}
}

// failures records the Registrar's failed requests from its log.
type failures struct {
	mu   sync.Mutex
	list []failure
}

type failure struct {
	at        time.Time
	msg, node string
	err       string
}

func (f *failures) Enabled(context.Context, slog.Level) bool { return true }
func (f *failures) WithAttrs([]slog.Attr) slog.Handler       { return f }
func (f *failures) WithGroup(string) slog.Handler            { return f }
func (f *failures) Handle(_ context.Context, r slog.Record) error {
	if !strings.HasSuffix(r.Message, "failed") {
		return nil
	}
	fl := failure{at: time.Now(), msg: r.Message}
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "node":
			fl.node = a.Value.String()
		case "err":
			fl.err = a.Value.String()
		}
		return true
	})
	f.mu.Lock()
	f.list = append(f.list, fl)
	f.mu.Unlock()
	return nil
}

// TestClientRollingRestart: a Registrar and a Discovery configured with
// all three members live through a rolling restart (each member stopped
// gracefully and started again, the leader last): the instance keeps its
// lease (no heartbeat gap reached its 2 s TTL, it was never registered
// again), the Discovery never saw it leave, nothing was reported expired,
// and the only requests of the Registrar that failed were sent to the
// member being restarted (which it then left at once).
func TestClientRollingRestart(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := regdtest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	_, rec := startAttached(t, ctx, c, "roll")
	cfg := cfgFor(c, 0, 1, 2)
	failed := &failures{}
	cfg.Logger = slog.New(failed)
	reg := client.NewRegistrar(cfg, "roll", "keeper", "10.3.0.1:80", client.RegistrarOptions{TTL: 2})
	if err := reg.Start(ctx); err != nil {
		t.Fatalf("registrar Start: %v", err)
	}
	keeper := reg.Instance()
	poll.Until(t, 10*time.Second, "the discovery sees the keeper", func() error {
		if rec.registered("keeper") != 1 {
			return fmt.Errorf("the discovery has not seen the keeper yet")
		}
		return nil
	})

	leader := c.WaitLeader(t)
	order := []int{(leader + 1) % 3, (leader + 2) % 3, leader}
	type window struct {
		node     string
		from, to time.Time
	}
	var down []window
	for _, i := range order {
		from := time.Now()
		c.Stop(i)
		c.Restart(i)
		c.WaitLeader(t)
		down = append(down, window{"http://" + c.Members[i].HTTPAddr, from, time.Now()})
	}
	// Two more TTLs after the last restart: still the same registration.
	poll.Throughout(t, 4*time.Second, "the registrar keeps its registration", func() error {
		in, ok := listOf(t, c.Members[order[0]], "roll")["keeper"]
		if !ok || in.LeaseID != keeper.LeaseID {
			return fmt.Errorf("the registrar's instance expired or was registered again during the restarts: %+v %v", in, ok)
		}
		return nil
	})
	if got := rec.reasons("keeper"); len(got) != 0 || rec.registered("keeper") != 1 {
		t.Errorf("the discovery saw the keeper leave (%v) or come again (%d registrations)", got, rec.registered("keeper"))
	}
	failed.mu.Lock()
	for _, f := range failed.list {
		ok := false
		for _, w := range down {
			ok = ok || (f.node == w.node && !f.at.Before(w.from) && !f.at.After(w.to.Add(time.Second)))
		}
		if !ok {
			t.Errorf("%s on %s, which was not being restarted: %s", f.msg, f.node, f.err)
		}
	}
	t.Logf("requests that failed on the member being restarted: %d", len(failed.list))
	failed.mu.Unlock()
	if err := reg.Close(ctx); err != nil {
		t.Fatalf("registrar Close: %v", err)
	}
	// The deregistration arrives, and it is the only departure.
	poll.Until(t, 10*time.Second, "OnDeregister(keeper) for the Close", func() error {
		if got := rec.reasons("keeper"); len(got) != 1 || got[0] != client.ReasonDeregister {
			return fmt.Errorf("OnDeregister(keeper) reasons %v", got)
		}
		return nil
	})
	// Nothing of roll was reported expired. The positive marker: a canary
	// registered now expires and is reported on every member; a report of
	// the keeper would have come before it.
	canary := register(t, c.Members[order[0]], "roll", "canary", 2)
	c.WaitExpiries(t, 20*time.Second, ledgertest.Expected{
		Service:   "roll",
		Want:      map[ledgertest.Expiry]string{{Service: "roll", ID: "canary", Lease: canary.LeaseID}: canary.Address},
		Forbidden: map[string]bool{"roll/keeper": true, "roll/warm": true},
	})
}
