package registry

import (
	"context"
	"encoding/json"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// HistoryClockKey holds the revision clock: a short list of (wall time,
// revision) samples that the leader's compactor appends to, so that any
// member that becomes leader knows which revision was current an hour ago
// (--history-retention) without having watched it happen. It sorts
// outside Keys.HistoryRange for every prefix that does not start with
// "/_regd/h": the view and the reporter do not see it change.
const HistoryClockKey = InternalPrefix + "history/clock"

// HistorySample says that at wall time At (the sampling leader's clock)
// the cluster's revision was Rev.
type HistorySample struct {
	At  time.Time `json:"at"`
	Rev int64     `json:"rev"`
}

// RevisionClock reads the revision clock's samples, oldest first, without
// writing: what a new leader compacts by at once.
func (s *Store) RevisionClock(ctx context.Context) ([]HistorySample, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	samples, _, _, err := s.readClock(ctx)
	return samples, err
}

// readClock reads the revision clock: its samples, the key's ModRevision
// (0 when there is none yet) and the cluster's revision as of the read.
func (s *Store) readClock(ctx context.Context) (samples []HistorySample, modRev, rev int64, err error) {
	resp, err := s.cli.Get(ctx, HistoryClockKey)
	if err != nil {
		return nil, 0, 0, AsError(err)
	}
	if kv := firstKV(resp.Kvs); kv != nil {
		modRev = kv.ModRevision
		_ = json.Unmarshal(kv.Value, &samples) // a corrupt clock starts over
	}
	return samples, modRev, resp.Header.Revision, nil
}

// RecordRevision appends a sample of the current revision at now to the
// revision clock, drops samples older than keep except the newest of those
// (the compactor's target), and returns the samples, oldest first. Two
// leaders at once (a deposed one that has not noticed yet) cannot both
// write: the write compares the key's ModRevision, and the loser gets a
// KindConflict error and writes nothing.
func (s *Store) RecordRevision(ctx context.Context, now time.Time, keep time.Duration) ([]HistorySample, error) {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	samples, modRev, rev, err := s.readClock(ctx)
	if err != nil {
		return nil, err
	}
	if n := len(samples); n > 0 && samples[n-1].Rev > rev {
		samples = nil // a restore moved the revision: the old samples say nothing
	}
	samples = append(samples, HistorySample{At: now.UTC(), Rev: rev})
	cut := 0
	for i := range samples {
		if now.Sub(samples[i].At) >= keep {
			cut = i // the newest sample at least keep old stays
		}
	}
	samples = samples[cut:]
	buf, err := json.Marshal(samples)
	if err != nil {
		return nil, err
	}
	txn, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(HistoryClockKey), "=", modRev)).
		Then(clientv3.OpPut(HistoryClockKey, string(buf))).Commit()
	if err != nil {
		return nil, AsError(err)
	}
	if !txn.Succeeded {
		return nil, Errorf(KindConflict, CodeConflict, "the revision clock was written concurrently")
	}
	return samples, nil
}
