package node

import (
	"errors"
	"fmt"
	"os"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// DefaultRevisionBump is how far a restore moves the revision past the
// snapshot's (etcdutl's --bump-revision). It must exceed every revision
// the old cluster can have reached after the snapshot, so that no revision
// a client saw there (an SSE event id, an ?index=) is ever reused for other
// changes; a billion is etcd's own advice, and leaves room for 9e9 more
// restores before int64 ends.
const DefaultRevisionBump = 1_000_000_000

// RestoreConfig says what to restore and for which member: the new
// member's name, peer URLs and initial cluster as it will be started.
type RestoreConfig struct {
	Snapshot       string // file written by GET /v1/snapshot or etcdctl snapshot save
	DataDir        string // must not exist yet, or be empty
	Name           string
	PeerURLs       []string
	InitialCluster string
	ClusterToken   string
	// RevisionBump moves the revision forward (0: DefaultRevisionBump);
	// the restored history is then marked compacted at the new revision,
	// so watchers of the old cluster that resume get a reset (etcdutl's
	// --bump-revision and --mark-compacted).
	RevisionBump uint64
	Logger       *zap.Logger
}

// Restore makes a data dir from a snapshot with etcd's own restore code
// (etcdutl snapshot restore): it checks the snapshot's SHA-256, writes the
// bbolt file, a WAL and a raft snapshot for the new membership, bumps the
// revision and marks it compacted. regd then starts on the data dir as on
// any other (the flags --name, --initial-advertise-peer-urls and
// --initial-cluster must match what was restored).
func Restore(cfg RestoreConfig) error {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.RevisionBump == 0 {
		cfg.RevisionBump = DefaultRevisionBump
	}
	if _, err := os.Stat(cfg.Snapshot); err != nil {
		return fmt.Errorf("snapshot %s: %w", cfg.Snapshot, errors.Unwrap(err))
	}
	return snapshot.NewV3(cfg.Logger).Restore(snapshot.RestoreConfig{
		SnapshotPath:        cfg.Snapshot,
		Name:                cfg.Name,
		OutputDataDir:       cfg.DataDir,
		PeerURLs:            cfg.PeerURLs,
		InitialCluster:      cfg.InitialCluster,
		InitialClusterToken: cfg.ClusterToken,
		RevisionBump:        cfg.RevisionBump,
		MarkCompacted:       true,
	})
}
