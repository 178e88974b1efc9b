package api_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/regd/regd/internal/poll"
	"github.com/regd/regd/internal/regdtest"
)

// watchMemStreams is how many streams (or blocking queries) the memory
// benchmark holds open at once.
const watchMemStreams = 2000

// BenchmarkWatchMemory is the server's memory per watch stream and per
// blocking query (issue 17, target 2: RSS per subscriber): it opens
// watchMemStreams of them over loopback against a real one-member cluster
// and reports what the process's Go stacks (StackInuse) and heap
// (HeapInuse) grew by, after a GC, per stream, and the goroutines per
// stream.
//
// Client and server share the process; the client's part is kept out of
// the figure: each stream's client is a raw TCP connection that wrote its
// request, read the response head (for a stream) into a buffer on the
// stack, and reads nothing more, with no goroutine of its own. What such
// a connection costs, a control measures: watchMemStreams connections to
// a bare listener that only accepts and keeps them (two sockets each,
// the client's and the accepted one, of the same make); half its
// growth per connection is subtracted as the client's. The accepted side
// of a real stream is the server's, and stays in the figure.
//
// Each client connects from its own loopback address (127.1.x.y, Linux
// routes all of 127/8 to lo), so that the per-client cap of watch streams
// (64 by default) is not reached. Run it with -benchtime=1x; every
// iteration measures once.
func BenchmarkWatchMemory(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("needs 127/8 on the loopback interface (Linux)")
	}
	c := regdtest.StartCluster(b, 1)
	m := c.Members[0]
	rev := wRegister(b, m, "bench", "i0", "10.9.0.1:80", 60).Revision
	control := controlConnCost(b, watchMemStreams)
	b.Logf("control: %.0f B per client connection (half of a connected pair)", control)
	idle := cpuOver(idleWindow)
	b.Logf("idle: the process used %s of CPU in %s with nothing held", idle, idleWindow)

	b.Run("sse", func(b *testing.B) {
		for b.Loop() {
			measureHeld(b, m.HTTPAddr, control, idle, "GET /v1/services/bench/watch HTTP/1.1\r\nHost: regd\r\n\r\n", true, func() error { return nil })
		}
	})
	b.Run("blocking", func(b *testing.B) {
		req := "GET /v1/services/bench/instances?index=" + strconv.FormatInt(rev, 10) + "&wait=300s HTTP/1.1\r\nHost: regd\r\n\r\n"
		for b.Loop() {
			measureHeld(b, m.HTTPAddr, control, idle, req, false, func() error {
				if n := m.Server().View().Waiting("bench"); n < watchMemStreams {
					return fmt.Errorf("%d of %d blocking queries waiting", n, watchMemStreams)
				}
				return nil
			})
		}
	})
}

// idleWindow is how long the process's CPU is read while nothing changes.
const idleWindow = 5 * time.Second

// cpuOver is the CPU time (user and system) the process uses in d.
func cpuOver(d time.Duration) time.Duration {
	used := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := used()
	time.Sleep(d) // a measuring window, not synchronisation
	return used() - start
}

// memNow is the process's Go stacks and heap in use, after a collection,
// and its goroutines.
func memNow() (stack, heap uint64, goroutines int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.StackInuse, ms.HeapInuse, runtime.NumGoroutine()
}

// dialFrom connects to addr from the i-th loopback address 127.1.x.y.
func dialFrom(i int, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 1, byte(i/200), byte(1+i%200))}}
	return d.Dial("tcp", addr)
}

// controlConnCost is what one raw client connection costs the process:
// half the growth of n connected pairs to a listener that keeps its
// accepted connections in a slice.
func controlConnCost(b *testing.B, n int) float64 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, n)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- conn
		}
	}()
	clients := make([]net.Conn, 0, n)
	servers := make([]net.Conn, 0, n)
	stack0, heap0, _ := memNow()
	for i := range n {
		conn, err := dialFrom(i, ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		clients = append(clients, conn)
		servers = append(servers, <-accepted)
	}
	stack1, heap1, _ := memNow()
	for i := range clients {
		clients[i].Close()
		servers[i].Close()
	}
	return (float64(stack1+heap1) - float64(stack0+heap0)) / float64(n) / 2
}

// measureHeld opens watchMemStreams connections that send req, waits until
// the server holds them all (the response head read when head is set,
// then ready returns nil and the goroutine count settles), and reports
// the server's bytes and goroutines per held request.
func measureHeld(b *testing.B, addr string, control float64, idle time.Duration, req string, head bool, ready func() error) {
	stack0, heap0, g0 := memNow()
	conns := make([]net.Conn, 0, watchMemStreams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		// The next measurement starts once the server has let go of
		// these: their goroutines are gone.
		poll.Until(b, time.Minute, "the server ends the closed requests", func() error {
			if n := runtime.NumGoroutine(); n > g0+watchMemStreams/100 {
				return fmt.Errorf("%d goroutines, %d before", n, g0)
			}
			return nil
		})
	}()
	for i := range watchMemStreams {
		conn, err := dialFrom(i, addr)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, conn)
		if _, err := conn.Write([]byte(req)); err != nil {
			b.Fatal(err)
		}
		if head {
			if err := readHead(conn); err != nil {
				b.Fatalf("stream %d: %v", i, err)
			}
		}
	}
	poll.Until(b, time.Minute, "the server holds every request", ready)
	// The server's goroutines settle (a stream's handler returns once it
	// has handed its connection over): three equal counts in a row.
	last, same := -1, 0
	poll.Until(b, time.Minute, "the goroutine count settles", func() error {
		n := runtime.NumGoroutine()
		if n == last {
			same++
		} else {
			last, same = n, 0
		}
		if same < 3 {
			return errors.New("still changing")
		}
		return nil
	})
	stack1, heap1, g1 := memNow()
	n := float64(watchMemStreams)
	stack := float64(stack1) - float64(stack0)
	heap := float64(heap1) - float64(heap0) - control*n
	b.ReportMetric((stack+heap)/n, "server-B/stream")
	b.ReportMetric(stack/n, "stack-B/stream")
	b.ReportMetric(heap/n, "heap-B/stream")
	b.ReportMetric(float64(g1-g0)/n, "goroutines/stream")
	// What the held requests cost while nothing changes: timers, the
	// streams' health ticks and their looks at their sockets.
	held := cpuOver(idleWindow)
	cpu := float64(held-idle) / float64(time.Microsecond) / n / idleWindow.Seconds()
	b.ReportMetric(cpu, "idle-cpu-µs/stream/s")
	b.Logf("%d held: server %.1f KiB per stream (stacks %.1f KiB, heap %.1f KiB after the client's %.0f B), %.2f goroutines per stream; idle CPU %s in %s (%s with nothing held): %.2f µs per stream per second",
		watchMemStreams, (stack+heap)/n/1024, stack/n/1024, heap/n/1024, control, float64(g1-g0)/n, held, idleWindow, idle, cpu)
}

// readHead reads a response head up to its blank line, a byte at a time
// into a small buffer (nothing of the body is taken), and checks its status.
func readHead(conn net.Conn) error {
	var buf [2048]byte
	n := 0
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer conn.SetReadDeadline(time.Time{})
	for !bytes.HasSuffix(buf[:n], []byte("\r\n\r\n")) {
		if n == len(buf) {
			return errors.New("response head too long")
		}
		if _, err := conn.Read(buf[n : n+1]); err != nil {
			return err
		}
		n++
	}
	if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("answer %q", buf[:bytes.IndexByte(buf[:n], '\r')])
	}
	return nil
}
