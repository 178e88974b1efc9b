package cluster_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/regd/regd/internal/ledgertest"
	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
	"github.com/regd/regd/registry"
)

// TestDeletionCasesAcrossCompactionAndLeaderChanges runs every case of
// cluster/DESIGN.md's "Why a key disappeared" table at once, each in its
// own service, in three steps with disruptions in between:
//
//	step A   REST registrations and plain puts that later steps change
//	         ─ external compaction to the head (past the cursor: the new
//	           leader reconciles) and move-leader
//	step B   deregister, re-register, plain deletes, overwrites, revokes,
//	         short leases that expire later, a re-registration racing an
//	         expiry
//	         ─ regd's own compaction (never past the cursor), the leader
//	           killed (no hand-over) and restarted
//	step C   wait for the expiries
//	         ─ full-cluster restart, external compaction, move-leader
//	         and a later expiry as the positive marker
//
// Then every member's ledger must hold exactly the expiries of the table,
// each once, and no bookkeeping may be left of the removed instances.
func TestDeletionCasesAcrossCompactionAndLeaderChanges(t *testing.T) {
	needsCluster(t)
	t.Parallel()
	c := startCluster(t, 3)
	c.WaitLeader(t)
	cli := c.EtcdClientAll(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := func(i int) *regdtest.Member { return c.Members[i%3] }
	want := map[key]string{}
	forbidden := map[string]bool{}
	wantInst := func(in registry.Instance) { want[keyOfInstance(in)] = in.Address }
	grant := func(ttl int64) clientv3.LeaseID {
		t.Helper()
		l, err := cli.Grant(ctx, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return l.ID
	}
	put := func(k, v string, lease clientv3.LeaseID) {
		t.Helper()
		var opts []clientv3.OpOption
		if lease != 0 {
			opts = append(opts, clientv3.WithLease(lease))
		}
		if _, err := cli.Put(ctx, "/service/"+k, v, opts...); err != nil {
			t.Fatal(err)
		}
	}
	del := func(k string) {
		t.Helper()
		if resp, err := cli.Delete(ctx, "/service/"+k); err != nil || resp.Deleted != 1 {
			t.Fatalf("delete %s: %v %+v", k, err, resp)
		}
	}
	markerAttached := func(leases ...clientv3.LeaseID) {
		t.Helper()
		for _, l := range leases {
			regdtest.WaitLeaseMarker(t, cli, int64(l))
		}
	}

	// ---- step A ----
	reregFirst := register(t, m(0), "h-rereg", "i", "10.20.0.1:80", 30)
	register(t, m(1), "h-dereg", "i", "10.20.1.1:80", 30)
	forbidden["h-dereg/i"] = true
	owNoLease := register(t, m(2), "h-ow-nolease", "i", "10.20.2.1:80", 30)
	forbidden["h-ow-nolease/i"] = true
	owLease := register(t, m(0), "h-ow-lease", "i", "10.20.3.1:80", 30)
	delRest := register(t, m(1), "h-del-rest", "i", "10.20.4.1:80", 30)
	forbidden["h-del-rest/i"] = true
	put("h-p-nolease/i", "10.20.5.1:80", 0)
	forbidden["h-p-nolease/i"] = true
	pDel := grant(30)
	put("h-p-del/i", "10.20.6.1:80", pDel)
	forbidden["h-p-del/i"] = true
	pRevoke := grant(30)
	put("h-p-revoke/i", "10.20.7.1:80", pRevoke)
	want[key{Service: "h-p-revoke", ID: "i", Lease: registry.FormatLease(int64(pRevoke))}] = "10.20.7.1:80"

	c.CompactToHead(t, cli)
	c.MoveLeader(t, (c.WaitLeader(t)+1)%3)
	markerAttached(pDel, pRevoke)

	// ---- step B ----
	wantInst(register(t, m(1), "h-rest", "i", "10.20.8.1:80", 2))
	reregSecond := register(t, m(2), "h-rereg", "i", "10.20.0.2:80", 2)
	if reregSecond.LeaseID == reregFirst.LeaseID {
		t.Fatalf("re-registration kept lease %s", reregFirst.LeaseID)
	}
	wantInst(reregSecond)
	deregister(t, m(0), "h-dereg", "i")
	pExp := grant(4)
	put("h-p-exp/i", " 10.20.9.1:80\n", pExp) // trimmed, still an address
	want[key{Service: "h-p-exp", ID: "i", Lease: registry.FormatLease(int64(pExp))}] = "10.20.9.1:80"
	del("h-p-nolease/i")
	del("h-p-del/i")
	if _, err := cli.Revoke(ctx, pRevoke); err != nil {
		t.Fatal(err)
	}
	put("h-ow-nolease/i", "10.20.2.2:80", 0)
	owPlain := grant(4)
	put("h-ow-lease/i", "10.20.3.2:80", owPlain)
	want[key{Service: "h-ow-lease", ID: "i", Lease: registry.FormatLease(int64(owPlain))}] = "10.20.3.2:80"
	del("h-del-rest/i")
	garbage := grant(4)
	put("h-garbage/i", "not an address", garbage)
	forbidden["h-garbage/i"] = true
	naming := grant(4)
	em, err := endpoints.NewManager(cli, "/service/h-naming")
	if err != nil {
		t.Fatal(err)
	}
	if err := em.AddEndpoint(ctx, "/service/h-naming/i", endpoints.Endpoint{Addr: "10.20.10.1:80", Metadata: map[string]any{"zone": "a"}}, clientv3.WithLease(naming)); err != nil {
		t.Fatal(err)
	}
	want[key{Service: "h-naming", ID: "i", Lease: registry.FormatLease(int64(naming))}] = "10.20.10.1:80"
	raceOld, raceCreated := reregisterRacingExpiry(t, ctx, cli, m(0), "h-race", "i")
	if raceCreated {
		want[keyOfInstance(raceOld)] = raceOld.Address // it expired before the re-registration
	}
	markerAttached(pExp, owPlain, naming)
	// The meta records of the REST keys that plain clients overwrote or
	// deleted are gone, and regd revoked the leases it granted them.
	for _, in := range []registry.Instance{owNoLease, owLease, delRest} {
		id, _ := parseLeaseID(in.LeaseID)
		regdtest.WaitLeaseGone(t, cli, id)
	}

	leader := c.WaitLeader(t)
	if done, err := registry.NewLedger(c.Members[leader].Server().Store()).CompactHistory(ctx, 1<<62); err != nil || done == 0 {
		t.Fatalf("regd's compaction: %d %v", done, err)
	}
	c.Kill(leader)
	c.WaitLeader(t)
	c.Restart(leader)

	// ---- step C ----
	c.WaitExpiries(t, 30*time.Second, ledgertest.Expected{Want: want, Forbidden: forbidden})
	c.Stop(c.WaitLeader(t))
	for _, i := range c.Running() {
		c.Stop(i)
	}
	c.RestartAll(0, 1, 2)
	c.CompactToHead(t, cli)
	c.MoveLeader(t, (c.WaitLeader(t)+1)%3)
	barrier := register(t, m(0), "h-barrier", "i", "10.20.11.1:80", 2)
	wantInst(barrier)
	final := c.WaitExpiries(t, 30*time.Second, ledgertest.Expected{Want: want, Forbidden: forbidden})
	t.Logf("%d expiries, each once on every member; the re-registration racing its expiry found it %s",
		len(final), map[bool]string{true: "expired (reported once)", false: "live (never reported)"}[raceCreated])

	// No bookkeeping is left of the removed instances: no meta record,
	// no marker of an ended lease.
	resp, err := cli.Get(ctx, registry.InternalPrefix+"meta/h-", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if !strings.HasPrefix(string(kv.Key), registry.InternalPrefix+"meta/h-race/") {
			t.Errorf("meta record left behind: %s", kv.Key)
		}
	}
}

// reregisterRacingExpiry registers service/id with TTL 2, waits for its
// lease's last second and registers it again. It returns the first
// registration and whether the second one created the instance (the first
// had expired: its expiry must be reported once) or replaced it (the first
// lease never is). The second registration is then deregistered.
func reregisterRacingExpiry(t *testing.T, ctx context.Context, cli *clientv3.Client, m *regdtest.Member, service, id string) (registry.Instance, bool) {
	t.Helper()
	first := register(t, m, service, id, "10.20.12.1:80", 2)
	lease, _ := parseLeaseID(first.LeaseID)
	poll.Until(t, 5*time.Second, "the lease's last second", func() error {
		ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(lease))
		if err != nil {
			return err
		}
		if ttl.TTL > 0 {
			return fmt.Errorf("%d s left", ttl.TTL)
		}
		return nil
	})
	code, _, body := regdtest.Do(t, http.MethodPut, instanceURL(m, service, id), map[string]any{"address": "10.20.12.2:80", "ttl": 30})
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("re-register %s/%s: %d %s", service, id, code, body)
	}
	deregister(t, m, service, id)
	return first, code == http.StatusCreated
}
