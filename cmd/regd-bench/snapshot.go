package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/regd/regd/internal/loadgen"
)

// snapshotResult is part of target 4: what a consistent copy of the
// registry's etcd data costs.
type snapshotResult struct {
	Endpoint      string  `json:"endpoint"`
	Revision      int64   `json:"revision"`
	Keys          int64   `json:"registry_keys"` // under /service/ (count only)
	DBSizeMiB     float64 `json:"db_size_mib"`   // etcd's Status: the bbolt file
	DBInUseMiB    float64 `json:"db_in_use_mib"`
	SnapshotMiB   float64 `json:"snapshot_mib"`
	SnapshotSecs  float64 `json:"snapshot_seconds"`
	SnapshotFile  string  `json:"snapshot_file,omitempty"`
	ServerVersion string  `json:"server_version,omitempty"`
	// REST is GET /v1/snapshot (contract v2), when the server has it.
	RESTMiB  float64 `json:"rest_snapshot_mib,omitempty"`
	RESTSecs float64 `json:"rest_snapshot_seconds,omitempty"`
}

// snapshot takes a snapshot of the first --etcd member through clientv3's
// Maintenance.SnapshotWithVersion (what etcdctl snapshot save does) into
// --out, and, for comparison, through regd's GET /v1/snapshot when the
// server has it.
func (s *scaleRun) snapshot(ctx context.Context) error {
	o := s.o
	r := &snapshotResult{Endpoint: o.etcd[0]}
	s.res.Snapshot = r
	s.res.Params["snapshot_endpoint"] = o.etcd[0]
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{o.etcd[0]}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := c.Status(ctx, o.etcd[0])
	if err != nil {
		return fmt.Errorf("status of %s: %w", o.etcd[0], err)
	}
	r.DBSizeMiB, r.DBInUseMiB = float64(st.DbSize)/(1<<20), float64(st.DbSizeInUse)/(1<<20)
	if st.Header != nil {
		r.Revision = st.Header.Revision // the snapshot is at this revision or later
	}
	if g, err := c.Get(ctx, "/service/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err == nil {
		r.Keys = g.Count
	}

	out := o.out
	if out == "" {
		f, err := os.CreateTemp("", "regd-bench-snapshot-*.db")
		if err != nil {
			return err
		}
		out = f.Name()
		f.Close()
		defer os.Remove(out)
	} else {
		r.SnapshotFile = out
	}
	m0 := s.mark()
	start := time.Now()
	sr, err := c.SnapshotWithVersion(ctx)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	f, err := os.Create(out)
	if err != nil {
		sr.Snapshot.Close()
		return err
	}
	n, err := io.Copy(f, sr.Snapshot)
	sr.Snapshot.Close()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("snapshot into %s: %w", out, err)
	}
	r.SnapshotSecs = time.Since(start).Seconds()
	r.SnapshotMiB = float64(n) / (1 << 20)
	r.ServerVersion = sr.Version
	if sr.Header != nil && sr.Header.Revision > 0 {
		r.Revision = sr.Header.Revision
	}
	s.addPhase("snapshot", m0, s.mark())

	if len(o.targets) > 0 {
		start := time.Now()
		size, err := s.restSnapshot(ctx, o.targets[0])
		if err == nil {
			r.RESTSecs, r.RESTMiB = time.Since(start).Seconds(), float64(size)/(1<<20)
		} else {
			s.res.Notes = append(s.res.Notes, fmt.Sprintf("GET /v1/snapshot (contract v2) on %s: %v; the snapshot was taken through clientv3 only", o.targets[0], err))
		}
	}
	s.res.Goals = append(s.res.Goals, goal{Name: "snapshot size", Goal: "reported",
		Measured: fmt.Sprintf("%.1f MiB in %.1f s at revision %d (%d registry keys; bbolt file %.1f MiB, %.1f MiB in use)", r.SnapshotMiB, r.SnapshotSecs, r.Revision, r.Keys, r.DBSizeMiB, r.DBInUseMiB)})
	return nil
}

// restSnapshot reads GET /v1/snapshot to the end without keeping it and
// returns its size.
func (s *scaleRun) restSnapshot(ctx context.Context, target string) (int64, error) {
	st, err := loadgen.OpenStream(ctx, target, "", http.MethodGet, "/v1/snapshot", nil, 64<<10)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	if st.Status != http.StatusOK {
		return 0, statusErr(st.Status, st.Body)
	}
	return io.Copy(io.Discard, st)
}
