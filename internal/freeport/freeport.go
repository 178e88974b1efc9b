// Package freeport hands out loopback TCP ports for tests. It picks them
// below the kernel's ephemeral range (32768+ on Linux), where the OS also
// places the local ends of outgoing connections: a port reserved with ":0"
// and released can be taken by any client socket before the server binds
// it. Below that range only other listeners compete, and each port is
// checked by binding it, as Consul's freeport does.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

const (
	low  = 10000
	high = 32000
)

var (
	mu    sync.Mutex
	given = make(map[int]bool)
)

// Port returns a loopback port that was free a moment ago and that this
// process has not handed out before.
func Port(tb testing.TB) int {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		p := low + rand.IntN(high-low)
		if given[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		given[p] = true
		return p
	}
	tb.Fatalf("freeport: no free port in %d-%d", low, high)
	return 0
}

// Addr is Port as "127.0.0.1:port".
func Addr(tb testing.TB) string {
	tb.Helper()
	return fmt.Sprintf("127.0.0.1:%d", Port(tb))
}
