// Package faults holds regd's fault tests: real regd processes on loopback
// ports, killed with SIGKILL, stopped with SIGTERM and started again in
// rolling restarts, partitioned through TCP proxies in front of their peer
// URLs, and given a full or read-only disk, while clients keep using them. The tests are in files built with the e2e tag and run with
// `make test` (go test -race -tags e2e ./...); alone:
//
//	go test -race -count=1 -tags e2e -v ./faults/
//
// Each test prints its figures (ops/s under faults, requests failed by
// status, time to 503 on the minority side, time to recover) as lines that
// start with "faults:"; docs/reliability.md records them.
//
// The package has no code of its own: this file exists so that it builds
// without the e2e tag.
package faults
