// Command regd is a self-contained service registry: an embedded etcd member
// and a REST API in one binary. `regd` with no flags is a working single-node
// registry; see README.md for clusters.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		cancel(fmt.Errorf("received %s", sig))
		<-sigs
		fmt.Fprintln(os.Stderr, "regd: second signal; exiting without a clean shutdown")
		os.Exit(1)
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}
