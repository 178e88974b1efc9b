package registry

import (
	"context"
	"sync"
	"time"
)

// MaxHeartbeatBatch is the most instances one batch heartbeat renews (the
// contract: 1–1000 items).
const MaxHeartbeatBatch = 1000

// heartbeatParallel bounds the batch heartbeats' renewals in flight on one
// node, all batches together. A renewal is a round trip to the raft leader
// (node/renew.go: in process on the leader, pipelined over lease streams
// from a follower): in parallel, a batch costs a few round trips instead
// of one per instance. It was 32 while a follower's renewals went through
// etcd's forwarding, one HTTP request between members each, where more in
// flight only queued at the leader (16 batches of 1000 at once ran 512
// renewals in flight, each batch took 2.3 s, for no more renewals per
// second than one batch at a time); over the streams a renewal costs the
// leader a few microseconds, and 32 in flight capped a node at 32 per
// round trip: about 1,000 renewals a second once round trips took 30 ms
// during a wave of registrations (scripts/scale.sh liveness).
const heartbeatParallel = 128

// heartbeatSlotHold is how long one renewal holds its slot: one that has
// not answered by then stops counting against heartbeatParallel and goes
// on waiting. A renewal of a lease past its deadline waits at the leader
// until etcd has revoked it (lessor.Renew), seconds when thousands are due
// at once (etcd revokes about 1,000 a second); had those renewals kept
// their slots, the live instances behind them in the batches would wait
// too and run out in turn: one wave of expiries would feed the next.
const heartbeatSlotHold = 500 * time.Millisecond

// HeartbeatItem names one instance of a batch heartbeat.
type HeartbeatItem struct {
	Service string `json:"service"`
	ID      string `json:"id"`
}

// HeartbeatResult is one item's outcome: TTL (the seconds its lease now
// has) or Err, with the meaning of a single heartbeat (KindInvalid for a
// bad name, KindNotFound for an unknown or expired instance, KindConflict
// CodeNoLease, KindUnavailable).
type HeartbeatResult struct {
	TTL int64
	Err error
}

// Heartbeats renews the leases of items, each with the meaning of a single
// Heartbeat, results in the same order. Each lease is renewed once however
// many items name it (two ids on one lease, the same item twice). The
// renewals run in parallel (heartbeatParallel at once on this node, all
// batches together), each on the fast path of Heartbeat (the lease this
// node's view knows) with its fallback.
func (l *Local) Heartbeats(ctx context.Context, items []HeartbeatItem) []HeartbeatResult {
	out := make([]HeartbeatResult, len(items))
	type job struct {
		service, id string
		lease       int64 // the view's hint; 0: read the key
		items       []int
	}
	var jobs []*job
	byLease := make(map[int64]*job)
	byName := make(map[HeartbeatItem]*job)
	for i, it := range items {
		if err := validateNames(it.Service, it.ID); err != nil {
			out[i].Err = err
			continue
		}
		if j := byName[it]; j != nil {
			j.items = append(j.items, i)
			continue
		}
		lease, _ := l.view.leaseOf(it.Service, it.ID)
		if j := byLease[lease]; lease != 0 && j != nil {
			// Another instance on the same lease: one renewal. A stale
			// hint falls back per item below.
			j.items = append(j.items, i)
			byName[it] = j
			continue
		}
		j := &job{service: it.Service, id: it.ID, lease: lease, items: []int{i}}
		jobs = append(jobs, j)
		byName[it] = j
		if lease != 0 {
			byLease[lease] = j
		}
	}

	var wg sync.WaitGroup
	slots := l.renewals
	if slots == nil { // a Local not made by NewLocal
		slots = make(chan struct{}, heartbeatParallel)
	}
	for _, j := range jobs {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			for _, i := range j.items {
				out[i].Err = AsError(ctx.Err())
			}
			continue
		}
		wg.Go(func() {
			release := sync.OnceFunc(func() { <-slots })
			defer release()
			hold := time.AfterFunc(heartbeatSlotHold, release)
			defer hold.Stop()
			ttl, err := l.heartbeat(ctx, j.service, j.id, j.lease)
			first := j.items[0]
			out[first] = HeartbeatResult{TTL: ttl, Err: err}
			for _, i := range j.items[1:] {
				if err != nil && items[i] != items[first] {
					// The shared lease's renewal failed: this instance
					// may be on another lease by now; renew it alone.
					ttl, err := l.heartbeat(ctx, items[i].Service, items[i].ID, 0)
					out[i] = HeartbeatResult{TTL: ttl, Err: err}
					continue
				}
				out[i] = out[first]
			}
		})
	}
	wg.Wait()
	return out
}
