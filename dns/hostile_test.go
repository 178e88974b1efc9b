package dns_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/regd/regd/dns"
	"github.com/regd/regd/internal/regdtest"
)

// validQueries are well-formed queries of every kind, the seeds of the
// mutations below and of FuzzDNSQuery.
func validQueries(t testing.TB) [][]byte {
	var out [][]byte
	for _, q := range []struct {
		name  string
		qtype uint16
		edns  bool
	}{
		{"web.service.regd.", mdns.TypeA, false},
		{"_web._tcp.service.regd.", mdns.TypeSRV, true},
		{"w1.web.instance.regd.", mdns.TypeTXT, false},
		{"W1.WEB.instance.regd.", mdns.TypeANY, true},
		{"regd.", mdns.TypeSOA, false},
		{"nope.service.regd.", mdns.TypeAAAA, true},
		{"example.com.", mdns.TypeA, false},
	} {
		m := new(mdns.Msg)
		m.SetQuestion(q.name, q.qtype)
		if q.edns {
			m.SetEdns0(1232, true)
		}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestDNSHostilePackets sends a seeded fuzz of raw packets over UDP and
// TCP (random bytes, valid queries with bytes flipped, cut or grown,
// lengths that lie, connections that stall): the node neither crashes
// nor stalls, and answers a valid query correctly after each round.
func TestDNSHostilePackets(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := regdtest.StartCluster(t, 1, regdtest.Options{DNS: true})
	m := c.Members[0]
	register(t, m, "web", "w1", map[string]any{"address": "10.0.0.1:80", "metadata": map[string]string{"zone": "a"}})
	addr := m.DNSAddr
	// A valid query is answered, as a resolver asks: over UDP a lost
	// datagram (a flood may fill the socket's buffer) is asked again, 3 s
	// a try.
	healthy := func(when string) {
		t.Helper()
		for _, net := range []string{"udp", "tcp"} {
			regdtest.Await(t, 10*time.Second, func() error {
				r, err := exchange(addr, query{name: "web.service.regd.", qtype: mdns.TypeA, net: net})
				if err == nil && !slices.Equal(records(r.Answer), []string{"A 10.0.0.1"}) {
					err = fmt.Errorf("answer %v", r)
				}
				if err != nil {
					return fmt.Errorf("after %s, a valid query over %s: %w", when, net, err)
				}
				return nil
			})
		}
	}
	healthy("start")
	var err error

	// A new seed each run, logged; REGD_DNS_FUZZ_SEED replays one.
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("REGD_DNS_FUZZ_SEED"); s != "" {
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("REGD_DNS_FUZZ_SEED: %v", err)
		}
	}
	t.Logf("seed %d (REGD_DNS_FUZZ_SEED replays it)", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	valid := validQueries(t)
	packet := func() []byte {
		if rng.IntN(2) == 0 {
			b := make([]byte, rng.IntN(600))
			for i := range b {
				b[i] = byte(rng.UintN(256))
			}
			return b
		}
		b := slices.Clone(valid[rng.IntN(len(valid))])
		switch rng.IntN(4) {
		case 0: // cut
			b = b[:rng.IntN(len(b)+1)]
		case 1: // grown with garbage
			for range rng.IntN(64) {
				b = append(b, byte(rng.UintN(256)))
			}
		}
		for range 1 + rng.IntN(4) { // flipped
			if len(b) > 0 {
				b[rng.IntN(len(b))] = byte(rng.UintN(256))
			}
		}
		return b
	}

	udp, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for range 3000 {
		if _, err := udp.Write(packet()); err != nil {
			t.Fatalf("udp write: %v", err)
		}
	}
	healthy("3000 UDP packets")

	for i := range 200 {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatalf("tcp %d: %v", i, err)
		}
		p := packet()
		n := uint16(len(p))
		if i%4 == 0 { // a length that lies
			n = uint16(rng.UintN(65536))
		}
		conn.Write(binary.BigEndian.AppendUint16(nil, n))
		conn.Write(p)
		conn.Close()
	}
	healthy("200 TCP connections of garbage")

	// A connection that sends nothing, or half a message, is closed by
	// the server (read timeout 2 s), not held.
	for _, send := range [][]byte{nil, {0, 40, 1, 2}} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(send)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		_, err = io.ReadAll(conn)
		conn.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("a stalled connection (sent %v) was still open after 10 s", send)
		}
		t.Logf("stalled connection (sent %v) closed by the server after %v", send, time.Since(start).Round(time.Millisecond))
	}
	healthy("stalled connections")
}

// TestDNSConnectionBounds: the TCP listener holds at most MaxTCPConns
// connections at once, and none for longer than ConnLifetime however busy
// it is.
func TestDNSConnectionBounds(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	register(t, m, "web", "w1", map[string]any{"address": "10.0.0.1:80"})
	pc, ln, err := dns.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const lifetime = 700 * time.Millisecond
	srv, err := dns.Start(dns.Config{View: m.Server().View(), PacketConn: pc, Listener: ln, Logger: zap.NewNop(),
		Metrics: prometheus.NewRegistry(), MaxTCPConns: 2, ConnLifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	addr := ln.Addr().String()

	// A busy connection: a query every 50 ms. It is closed at its lifetime.
	busy, err := mdns.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	start := time.Now()
	q := new(mdns.Msg)
	q.SetQuestion("web.service.regd.", mdns.TypeA)
	for {
		if err := busy.WriteMsg(q); err == nil {
			if _, err = busy.ReadMsg(); err == nil {
				if time.Since(start) > 5*lifetime {
					t.Fatalf("a busy connection was still served after %v; lifetime %v", time.Since(start), lifetime)
				}
				time.Sleep(50 * time.Millisecond)
				continue
			}
		}
		break
	}
	if took := time.Since(start); took < lifetime-50*time.Millisecond {
		t.Fatalf("the busy connection closed after %v, before its lifetime %v", took, lifetime)
	} else {
		t.Logf("busy connection closed after %v (lifetime %v)", took.Round(time.Millisecond), lifetime)
	}

	// Two idle connections fill the cap: a third is not served until one
	// of them goes.
	idle1, _ := net.Dial("tcp", addr)
	idle2, _ := net.Dial("tcp", addr)
	defer idle1.Close()
	defer idle2.Close()
	third, err := mdns.Dial("tcp", addr) // the kernel accepts it into the backlog
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	third.SetDeadline(time.Now().Add(10 * time.Second))
	if err := third.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		idle1.Close()
	}()
	began := time.Now()
	r, err := third.ReadMsg()
	if err != nil || !slices.Equal(records(r.Answer), []string{"A 10.0.0.1"}) {
		t.Fatalf("the third connection: %v %v", r, err)
	}
	if waited := time.Since(began); waited < 250*time.Millisecond {
		t.Errorf("the third connection was answered after %v, while two others held the cap of 2", waited)
	}
}
