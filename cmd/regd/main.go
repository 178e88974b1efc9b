// Command regd is a self-contained service registry: an embedded etcd member
// and a REST API in one binary. `regd` with no flags is a working single-node
// registry; see README.md for clusters.
package main

import "os"

func main() {
	os.Exit(run(signalContext(), os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}
