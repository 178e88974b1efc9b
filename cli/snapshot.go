package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/regd/regd/internal/listflag"
)

// RestoreConfig is what `regd snapshot restore` asks of Env.Restore:
// the fields of node.RestoreConfig.
type RestoreConfig struct {
	Snapshot       string
	DataDir        string
	Name           string
	PeerURLs       []string
	InitialCluster string
	ClusterToken   string
	RevisionBump   uint64
}

// Defaults of snapshot restore's flags: the server's defaults of the flags
// of the same names, so that `regd` with no flags starts on the result.
const (
	defaultName      = "default"
	defaultPeerURL   = "http://127.0.0.1:2380"
	defaultToken     = "regd-cluster"
	defaultBump      = 1_000_000_000
	snapshotFileMode = 0o600 // the whole registry, tokens of other programs' keys included
)

type restoreFlags struct {
	dataDir, name, peers, initial, token string
	bump                                 uint64
}

func init() {
	register(&command{
		name:    "snapshot",
		summary: "save a snapshot of the cluster (admin token), or restore one into a new data dir",
		usage: `Usage:
  regd snapshot save FILE
  regd snapshot restore FILE --data-dir DIR [--name NAME] [--initial-advertise-peer-urls URLS]
                             [--initial-cluster NAME=URL,...] [--initial-cluster-token TOKEN]

save streams GET /v1/snapshot into FILE (through FILE.part, renamed when the
snapshot's checksum has been verified): a consistent copy of the whole etcd
backend in the format of 'etcdctl snapshot save'. It needs an admin token.

restore turns FILE into a new data dir with etcd's own restore code
(etcdutl snapshot restore), offline: the revision is bumped by --bump-revision
and marked compacted, so watch clients of the old cluster that resume get a
'reset' event instead of events they cannot place. Start regd on DIR with the
same --name, --initial-advertise-peer-urls and --initial-cluster. For a
cluster, restore the same FILE once per member, each with its own --name and
peer URLs and the same --initial-cluster (docs/operations.md).`,
		setup: func(fs *flag.FlagSet, c *call) {
			r := &restoreFlags{}
			fs.StringVar(&r.dataDir, "data-dir", "", "restore: the new data `dir` (must not exist, or be empty)")
			fs.StringVar(&r.name, "name", defaultName, "restore: the member's --name")
			fs.StringVar(&r.peers, "initial-advertise-peer-urls", defaultPeerURL, "restore: the member's peer `urls`")
			fs.StringVar(&r.initial, "initial-cluster", "", "restore: every member's `name=url`, comma-separated (default <name>=<initial-advertise-peer-urls>)")
			fs.StringVar(&r.token, "initial-cluster-token", defaultToken, "restore: the new cluster's `token`")
			fs.Uint64Var(&r.bump, "bump-revision", defaultBump, "restore: how far the revision moves past the snapshot's (more than the old cluster can have written since)")
			c.extra = r
		},
		run: runSnapshot,
	})
}

func runSnapshot(ctx context.Context, c *call, args []string) error {
	switch {
	case len(args) == 2 && args[0] == "save":
		return snapshotSave(ctx, c, args[1])
	case len(args) == 2 && args[0] == "restore":
		return snapshotRestore(c, args[1])
	case len(args) > 0 && (args[0] == "save" || args[0] == "restore"):
		return usagef("snapshot %s takes one FILE", args[0])
	case len(args) == 0:
		return usagef("snapshot needs an action: save or restore")
	default:
		return usagef("snapshot: unknown action %q (save or restore)", args[0])
	}
}

func snapshotSave(ctx context.Context, c *call, file string) error {
	a, err := c.admin()
	if err != nil {
		return err
	}
	part := file + ".part"
	f, err := os.OpenFile(part, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, snapshotFileMode)
	if err != nil {
		return err
	}
	n, err := a.Snapshot(ctx, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(part, file)
	}
	if err != nil {
		os.Remove(part)
		return err
	}
	return c.print(map[string]any{"file": file, "bytes": n}, func(w io.Writer) {
		fmt.Fprintf(w, "Saved a snapshot of %d bytes to %s.\n", n, file)
	})
}

func snapshotRestore(c *call, file string) error {
	r := c.extra.(*restoreFlags)
	if r.dataDir == "" {
		return usagef("snapshot restore needs --data-dir")
	}
	if c.env.Restore == nil {
		return fmt.Errorf("this build of regd cannot restore snapshots")
	}
	peers := listflag.Split(r.peers)
	initial := r.initial
	if initial == "" {
		var entries []string
		for _, p := range peers {
			entries = append(entries, r.name+"="+p)
		}
		initial = strings.Join(entries, ",")
	}
	if err := c.env.Restore(RestoreConfig{
		Snapshot:       file,
		DataDir:        r.dataDir,
		Name:           r.name,
		PeerURLs:       peers,
		InitialCluster: initial,
		ClusterToken:   r.token,
		RevisionBump:   r.bump,
	}); err != nil {
		return err
	}
	dir, _ := filepath.Abs(r.dataDir)
	flags := []string{
		"--name=" + r.name,
		"--data-dir=" + dir,
		"--initial-advertise-peer-urls=" + r.peers,
		"--listen-peer-urls=" + r.peers,
		"--initial-cluster=" + initial,
	}
	return c.print(map[string]any{"data_dir": dir, "name": r.name, "initial_cluster": initial, "revision_bump": r.bump, "flags": flags}, func(w io.Writer) {
		fmt.Fprintf(w, "Restored %s into %s (revision bumped by %d and marked compacted). Start regd on it with:\n\n  regd %s\n",
			file, dir, r.bump, strings.Join(flags, " \\\n    "))
	})
}
