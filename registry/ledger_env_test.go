package registry_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// ledgerEnv is a bare etcd member (no regd around it) with a Store and a
// Ledger over it; the test decides when a consumer runs, so it can write
// history first and have it consumed later, as a new leader would.
type ledgerEnv struct {
	t   *testing.T
	cli *clientv3.Client
	st  *registry.Store
	l   *registry.Ledger

	mu       sync.Mutex
	reports  []registry.Report
	unmarked []int64
}

func newLedgerEnv(t *testing.T) *ledgerEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	n := regdtest.StartEtcd(t)
	st := registry.NewStore(n.Client(), registry.Options{Prefix: "/service/"})
	return &ledgerEnv{t: t, cli: n.Client(), st: st, l: registry.NewLedger(st)}
}

func (e *ledgerEnv) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// consume runs a consumer (as the reporter does: Run again after it
// returns) until the returned stop is called.
func (e *ledgerEnv) consume() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	c := e.consumer()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := c.Run(ctx); err != nil && ctx.Err() == nil {
				e.t.Logf("consumer: %v", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(stop)
	return stop
}

// consumer is a consumer that records what it reports in e.
func (e *ledgerEnv) consumer() *registry.Consumer {
	return e.l.NewConsumer(registry.ConsumerOptions{
		ReportedBy: "solo",
		CursorIdle: 50 * time.Millisecond,
		Reported: func(r registry.Report) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.reports = append(e.reports, r)
		},
		Unmarked: func(lease int64) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.unmarked = append(e.unmarked, lease)
		},
	})
}

func (e *ledgerEnv) register(service, id, addr string, ttl int64) registry.Instance {
	e.t.Helper()
	in, _, err := e.st.Register(e.ctx(), service, id, registry.Registration{Address: addr, TTL: &ttl})
	if err != nil {
		e.t.Fatalf("register %s/%s: %v", service, id, err)
	}
	return in
}

func (e *ledgerEnv) grant(ttl int64) clientv3.LeaseID {
	e.t.Helper()
	l, err := e.cli.Grant(e.ctx(), ttl)
	if err != nil {
		e.t.Fatal(err)
	}
	return l.ID
}

func (e *ledgerEnv) put(key, value string, lease clientv3.LeaseID) int64 {
	e.t.Helper()
	resp, err := e.cli.Put(e.ctx(), key, value, clientv3.WithLease(lease))
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.Header.Revision
}

// compactToHead writes a key outside the registry and compacts history up
// to it, as a plain client could: past the cursor of a consumer that has
// not seen it. It returns the compaction revision.
func (e *ledgerEnv) compactToHead() int64 {
	e.t.Helper()
	head := e.put("/other/compact", "x", 0)
	if _, err := e.cli.Compact(e.ctx(), head); err != nil {
		e.t.Fatal(err)
	}
	return head
}

func (e *ledgerEnv) revoke(lease int64) int64 {
	e.t.Helper()
	resp, err := e.cli.Revoke(e.ctx(), clientv3.LeaseID(lease))
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.Header.Revision
}

// barrier puts a lease-less instance and waits until the cursor has passed
// it: the positive marker that the consumer has gone through everything
// before it.
func (e *ledgerEnv) barrier(name string) {
	e.t.Helper()
	rev := e.put("/service/barrier/"+name, "10.9.9.9:9", 0)
	poll.Until(e.t, 10*time.Second, "the cursor passes the barrier", func() error {
		cur, err := e.l.Cursor(e.ctx())
		if err != nil {
			return err
		}
		if cur < rev {
			return fmt.Errorf("cursor at %d, barrier at %d", cur, rev)
		}
		return nil
	})
}

func (e *ledgerEnv) reported() []registry.Report {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.reports)
}

// ledgerIs checks the ledger and the consumer's reports: exactly want
// (service/id@lease → address), each once. The consumer calls Reported
// after the commit that wrote the entries and moved the cursor, so a
// barrier can pass before the last reports are in: it polls, for up to
// 10 s. Entries and reports are never taken back, so a ledger or report
// too many fails at the deadline as surely as a missing one.
func (e *ledgerEnv) ledgerIs(want map[expiry]string) error {
	e.t.Helper()
	return poll.Wait(10*time.Second, func() error { return e.checkLedger(want) })
}

func (e *ledgerEnv) checkLedger(want map[expiry]string) error {
	es, err := e.l.Expirations(e.ctx(), registry.ExpirationQuery{Limit: 10000})
	if err != nil {
		return err
	}
	got := map[expiry]string{}
	for _, x := range es {
		if _, dup := got[expiryOf(x)]; dup {
			return fmt.Errorf("%s in the ledger twice", expiryOf(x))
		}
		got[expiryOf(x)] = x.Address
		if x.ReportedBy != "solo" || x.ExpiredAt.IsZero() || x.Revision == 0 {
			return fmt.Errorf("entry with unfilled fields: %+v", x)
		}
	}
	reps := map[expiry]int{}
	for _, r := range e.reported() {
		reps[expiryOf(r.Expiration)]++
	}
	for k, a := range want {
		if got[k] != a {
			return fmt.Errorf("ledger has %s at %q, want %q (ledger %v)", k, got[k], a, got)
		}
		if reps[k] != 1 {
			return fmt.Errorf("%s reported %d times to the caller", k, reps[k])
		}
	}
	if len(got) != len(want) || len(reps) != len(want) {
		return fmt.Errorf("ledger %v, reports %v; want %v", got, reps, want)
	}
	return nil
}

// expiry names one expiry: an instance under one lease.
type expiry = ledgertest.Expiry

func exp(service, id string, lease int64) expiry {
	return expiry{Service: service, ID: id, Lease: registry.FormatLease(lease)}
}

func expiryOf(x registry.Expiration) expiry {
	return expiry{Service: x.Service, ID: x.ID, Lease: x.LeaseID}
}

func leaseOf(t *testing.T, in registry.Instance) int64 { return parseLease(t, in.LeaseID) }
