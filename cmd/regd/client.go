package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/regd/regd/cli"
	"github.com/regd/regd/node"
)

// runClient runs a client command (package cli). It wires in what the
// command line needs of the server's packages: the offline restore of a
// snapshot, which is etcd's own code (node.Restore). SIGINT and SIGTERM end
// ctx (watch stops; regd run handles them itself and passes them on); its
// command reads regd's stdin.
func runClient(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return cli.Main(ctx, args, cli.Env{Stdin: os.Stdin, Stdout: stdout, Stderr: stderr, Getenv: getenv, Restore: restore})
}

func restore(rc cli.RestoreConfig) error {
	return node.Restore(node.RestoreConfig{
		Snapshot:       rc.Snapshot,
		DataDir:        rc.DataDir,
		Name:           rc.Name,
		PeerURLs:       rc.PeerURLs,
		InitialCluster: rc.InitialCluster,
		ClusterToken:   rc.ClusterToken,
		RevisionBump:   rc.RevisionBump,
	})
}
