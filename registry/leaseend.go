package registry

import (
	"context"
	"encoding/json"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Expiry causes (contract v2: expiry reports gain `cause`).
const (
	// ExpiryCauseTTL: the lease ran out (heartbeats stopped), or a plain
	// etcd client revoked it (the two look the same in etcd's history).
	ExpiryCauseTTL = "ttl"
	// ExpiryCauseCheckFailed: a health check the registry runs failed
	// its allowed number of times in a row, and the registry ended the
	// lease (Store.EndLease).
	ExpiryCauseCheckFailed = "check_failed"
)

// maxEndOutput bounds the check output a lease's end carries into the
// ledger.
const maxEndOutput = 4096

// LeaseEnd is why a lease ended: a cause, and the output of the check
// that failed for ExpiryCauseCheckFailed.
type LeaseEnd struct {
	Cause  string `json:"cause"`
	Output string `json:"output,omitempty"`
}

// decodeLeaseEnd reads the cause a lease marker held when etcd deleted
// it. Markers are empty unless EndLease wrote one, just before it revoked
// the lease.
func decodeLeaseEnd(prev *mvccpb.KeyValue) (LeaseEnd, bool) {
	if prev == nil || len(prev.Value) == 0 {
		return LeaseEnd{}, false
	}
	var e LeaseEnd
	if json.Unmarshal(prev.Value, &e) != nil || e.Cause == "" {
		return LeaseEnd{}, false
	}
	return e, true
}

// EndLease ends lease for the reason given, and the expiry of every
// instance on it is reported with that cause: the lease's marker is
// rewritten with the cause (on the lease, so it is deleted with the
// lease's keys, in the revision of their deletion, where the ledger reads
// it from history), then the lease is revoked. It is how a registry-run
// health check removes an instance whose checks failed
// (ExpiryCauseCheckFailed, with the last check's output, cut to 4 KiB).
// A lease already gone is KindNotFound.
func (s *Store) EndLease(ctx context.Context, lease int64, end LeaseEnd) error {
	end.Output = cutOutput(end.Output)
	buf, err := json.Marshal(end)
	if err != nil {
		return AsError(err)
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if _, err := s.cli.Put(ctx, s.keys.LeaseMarker(lease), string(buf), clientv3.WithLease(clientv3.LeaseID(lease))); err != nil {
		return AsError(err)
	}
	if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(lease)); err != nil {
		return AsError(err)
	}
	return nil
}
