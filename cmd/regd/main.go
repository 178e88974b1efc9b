// Command regd is a self-contained service registry: an embedded etcd member
// and a REST API in one binary. `regd` with no flags is a working single-node
// registry; see README.md for clusters. The same binary is the client: a
// first argument that names a command (`regd members`, `regd snapshot
// save`, ...) runs package cli instead of the server.
package main

import (
	"os"

	"github.com/regd/regd/cli"
)

func main() {
	if len(os.Args) > 1 && cli.IsCommand(os.Args[1]) {
		os.Exit(runClient(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
	}
	os.Exit(run(signalContext(), os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}
