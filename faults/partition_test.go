//go:build e2e

package faults

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/regd/regd/internal/e2e"
	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/internal/poll"
)

// TestE2EFaultPartition isolates the leader from the other two members
// (TCP proxies in front of every peer URL; see internal/tcpproxy). The
// majority elects a leader and keeps taking writes; the isolated member
// turns /readyz 503, answers writes 503 within a few seconds instead of
// hanging, and closes its SSE streams. Short-TTL instances registered
// before the partition expire during it and are reported by the majority;
// after healing, the isolated member catches up and every member's ledger
// has each expiry exactly once.
func TestE2EFaultPartition(t *testing.T) {
	bin := e2e.Build(t)
	c := e2e.StartCluster(t, bin, e2e.ClusterOptions{Proxies: true})
	l := c.Leader(leaderWait)
	iso := c.Members[l]
	var maj []int
	for i := range c.Members {
		if i != l {
			maj = append(maj, i)
		}
	}
	a, b := maj[0], maj[1]

	const nLong, nPre, nDuring = 10, 6, 5
	for i := range nLong {
		if _, err := register(iso.URL(), "long", fmt.Sprintf("l%d", i), 3600, map[string]string{"k": "v"}); err != nil {
			t.Fatal(err)
		}
	}
	preLease := map[string]string{}
	wantExpired := map[ledgertest.Expiry]string{}
	for i := range nPre {
		in, err := register(c.URL(a), "pre", fmt.Sprintf("p%d", i), 3, nil)
		if err != nil {
			t.Fatal(err)
		}
		preLease[in.ID] = in.LeaseID
		wantExpired[ledgertest.Expiry{Service: in.Service, ID: in.ID, Lease: in.LeaseID}] = in.Address
	}
	// Every member has applied the setup before the cut.
	for i := range c.Members {
		poll.Until(t, 5*time.Second, "setup visible on "+c.Members[i].Name, func() error {
			got, err := list(c.URL(i), "pre")
			if err == nil && len(got) != nPre {
				err = fmt.Errorf("%d of %d", len(got), nPre)
			}
			return err
		})
	}

	// A watch stream on the member about to be isolated.
	streamCtx, stopStream := context.WithCancel(t.Context())
	defer stopStream()
	streamEnded := make(chan time.Time, 1)
	{
		req, _ := http.NewRequestWithContext(streamCtx, http.MethodGet, iso.URL()+"/v1/services/long/watch", nil)
		resp, err := (&http.Client{}).Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("watch on %s: %v %v", iso.Name, resp, err)
		}
		go func() {
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
			}
			streamEnded <- time.Now()
		}()
	}

	// The partition.
	cut := time.Now()
	c.Isolate(l)

	var wg sync.WaitGroup
	// The isolated member's readiness.
	var notReady time.Duration
	wg.Go(func() {
		_ = poll.Wait(20*time.Second, func() error { // notReady stays 0 on timeout: checked below
			if ok, _ := ready(iso.URL()); ok {
				return errors.New("still ready")
			}
			notReady = time.Since(cut)
			return nil
		})
	})
	// Writes on the isolated member: each must end in a 503, within a few
	// seconds; none may succeed (there is no quorum to commit it).
	type minorityWrite struct {
		sent   time.Duration
		took   time.Duration
		status int
		code   string
		err    error
	}
	var (
		minMu     sync.Mutex
		minWrites []minorityWrite
	)
	// One write every 250 ms, each on its own connection, so that a write
	// that hangs does not delay the next.
	isoCtx, stopIsoWrites := context.WithCancel(context.Background())
	var isoWriters sync.WaitGroup
	isoWriters.Go(func() {
		for n := 0; isoCtx.Err() == nil; n++ {
			isoWriters.Go(func() {
				hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{}}
				sent := time.Now()
				status, body, err := call(context.Background(), hc, http.MethodPut, iso.URL()+"/v1/services/minority/instances/w"+strconv.Itoa(n), registerBody("10.3.0.1:80", 3600, nil))
				minMu.Lock()
				minWrites = append(minWrites, minorityWrite{sent.Sub(cut), time.Since(sent), status, errorCode(body), err})
				minMu.Unlock()
			})
			select {
			case <-isoCtx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	})

	// The majority elects a leader and takes writes.
	newLeader := c.LeaderAmong(leaderWait, a, b)
	elected := time.Since(cut)
	var writable time.Duration
	poll.Until(t, 10*time.Second, "a write on the majority", func() error {
		_, err := register(c.URL(a), "majority", "first", 3600, nil)
		writable = time.Since(cut)
		return err
	})
	for i := range nDuring {
		if _, err := register(c.URL(maj[i%2]), "during", fmt.Sprintf("d%d", i), 3600, nil); err != nil {
			t.Fatalf("write on the majority during the partition: %v", err)
		}
	}
	code, body, err := call(t.Context(), client, http.MethodDelete, c.URL(b)+"/v1/services/long/instances/l0", "")
	if err != nil || code != http.StatusNoContent {
		t.Fatalf("deregister on the majority: %d %s %v", code, body, err)
	}

	// The isolated member's stream closes; a new one is refused.
	var streamClosed time.Duration
	select {
	case at := <-streamEnded:
		streamClosed = at.Sub(cut)
	case <-time.After(15 * time.Second):
		t.Fatalf("the watch stream on isolated %s is still open 15 s after the cut", iso.Name)
	}
	wg.Wait()
	if notReady == 0 {
		t.Fatalf("isolated %s still answers /readyz 200 after 20 s", iso.Name)
	}
	if code, body, err := get(iso.URL() + "/v1/services/long/watch"); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("new watch on isolated %s: %d %s %v, want 503", iso.Name, code, body, err)
	}
	// Reads: a default (linearizable) list is refused; a stale one is
	// served from what the member has.
	if code, body, err := get(iso.URL() + "/v1/services/long/instances"); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("list on isolated %s: %d %s %v, want 503", iso.Name, code, body, err)
	}
	if code, body, err := get(iso.URL() + "/v1/services/long/instances?stale"); err != nil || code != http.StatusOK {
		t.Errorf("stale list on isolated %s: %d %s %v, want 200", iso.Name, code, body, err)
	}
	if code, body, err := call(t.Context(), client, http.MethodPut, iso.URL()+"/v1/services/long/instances/l1/heartbeat", ""); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("heartbeat on isolated %s: %d %s %v, want 503", iso.Name, code, body, err)
	}

	// The short instances run out during the partition; the majority's
	// leader reports them.
	var preReported time.Duration
	poll.Until(t, 20*time.Second, "the majority reports the short instances' expiry", func() error {
		es, err := ledgertest.Read(c.URL(newLeader), url.Values{"service": {"pre"}})
		if err == nil && len(es) < nPre {
			err = fmt.Errorf("%d of %d reported", len(es), nPre)
		}
		for _, e := range es {
			preReported = max(preReported, e.ExpiredAt.Sub(cut))
		}
		return err
	})
	stopIsoWrites()
	isoWriters.Wait()
	partitioned := time.Since(cut)

	// Heal; the isolated member catches up.
	healed := time.Now()
	c.Heal()
	var readyAgain, caughtUp time.Duration
	poll.Until(t, 30*time.Second, iso.Name+" ready again", func() error {
		if ok, why := ready(iso.URL()); !ok {
			return fmt.Errorf("/readyz %s", why)
		}
		readyAgain = time.Since(healed)
		return nil
	})
	poll.Until(t, 30*time.Second, iso.Name+" caught up", func() error {
		for _, svc := range []string{"long", "pre", "during", "majority", "minority"} {
			want, err := list(c.URL(newLeader), svc)
			if err != nil {
				return err
			}
			got, err := list(iso.URL(), svc)
			if err != nil {
				return err
			}
			if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))) {
				return fmt.Errorf("%s: %s lists %v, %s lists %v", svc, iso.Name, slices.Sorted(maps.Keys(got)), c.Members[newLeader].Name, slices.Sorted(maps.Keys(want)))
			}
		}
		caughtUp = time.Since(healed)
		return nil
	})
	if _, err := register(iso.URL(), "healed", "h", 3600, nil); err != nil {
		t.Errorf("write on %s after healing: %v", iso.Name, err)
	}

	// Exactly once, on every member, reported by the majority.
	exactlyOnce(t, c, 30*time.Second, ledgertest.Expected{Want: wantExpired, Each: func(e ledgertest.Entry) error {
		if e.ReportedBy == iso.Name {
			return fmt.Errorf("reported by the isolated %s", iso.Name)
		}
		return nil
	}})

	// No write on the minority succeeded, each answered 503 in time.
	slices.SortFunc(minWrites, func(x, y minorityWrite) int { return int(x.sent - y.sent) })
	var first503, worst time.Duration
	statuses := &counter{}
	for _, w := range minWrites {
		switch {
		case w.err != nil:
			statuses.add("transport")
			t.Errorf("write on isolated %s sent %v after the cut: %v", iso.Name, ms(w.sent), w.err)
		default:
			statuses.add(strconv.Itoa(w.status) + " " + w.code)
		}
		if w.sent < 200*time.Millisecond {
			continue // may have been committed just before the cut
		}
		if w.err == nil && w.status != http.StatusServiceUnavailable {
			t.Errorf("write on isolated %s sent %v after the cut answered %d %s, want 503", iso.Name, ms(w.sent), w.status, w.code)
		}
		if w.status == http.StatusServiceUnavailable && (first503 == 0 || w.sent+w.took < first503) {
			first503 = w.sent + w.took
		}
		worst = max(worst, w.took)
	}
	if worst > 5*time.Second {
		t.Errorf("a write on isolated %s took %v to answer, want a few seconds at most", iso.Name, worst)
	}
	figure(t, "leader %s isolated: /readyz 503 after %s; the earliest 503 to a write came %s after the cut, every write answered 503 within %s; SSE stream closed after %s",
		iso.Name, ms(notReady), ms(first503), ms(worst), ms(streamClosed))
	figure(t, "writes on the isolated member during %s of partition: %s", ms(partitioned), statuses.String())
	figure(t, "majority elected %s after %s, first write accepted after %s; the %d TTL-3 instances registered before the cut were reported by the majority, the last %s after the cut",
		c.Members[newLeader].Name, ms(elected), ms(writable), nPre, ms(preReported))
	figure(t, "after healing: %s ready again after %s, caught up (lists equal the leader's) after %s; %d expiries reported once each on every member",
		iso.Name, ms(readyAgain), ms(caughtUp), nPre)
}
