package dns_test

import (
	"context"
	"net"
	"testing"

	mdns "github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/regd/regd/dns"
	"github.com/regd/regd/internal/regdtest"
)

// answerWriter is a DNS server's side of one exchange, in memory: what
// the handler writes, packed as it would go out.
type answerWriter struct {
	tcp     bool
	msgs    []*mdns.Msg
	packed  [][]byte
	packErr error
}

func (w *answerWriter) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
}
func (w *answerWriter) RemoteAddr() net.Addr {
	if w.tcp {
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}
	}
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}
}
func (w *answerWriter) WriteMsg(m *mdns.Msg) error {
	b, err := m.Pack()
	w.msgs, w.packed = append(w.msgs, m), append(w.packed, b)
	if err != nil && w.packErr == nil {
		w.packErr = err
	}
	return err
}
func (w *answerWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *answerWriter) Close() error                { return nil }
func (w *answerWriter) TsigStatus() error           { return nil }
func (w *answerWriter) TsigTimersOnly(bool)         {}
func (w *answerWriter) Hijack()                     {}

// FuzzDNSQuery is the query path from a parsed message to its answer
// (name parsing, lookup in a real node's view, records, truncation), over
// every query a message can hold: exactly one answer, that packs, that
// fits the transport, with the question's id and name, records owned by
// the name asked, and an SOA with every empty NOERROR or NXDOMAIN answer.
// `go test` runs the seeds; `go test -fuzz FuzzDNSQuery ./dns/` explores.
func FuzzDNSQuery(f *testing.F) {
	c := regdtest.StartCluster(f, 1)
	m := c.Members[0]
	register(f, m, "web", "w1", map[string]any{"address": "10.0.0.1:80", "metadata": map[string]string{"zone": "a", "k": `\"quoted\"`}})
	register(f, m, "web", "W2", map[string]any{"address": "[2001:db8::2]:81", "weight": 0})
	register(f, m, "web", "h3", map[string]any{"address": "db.example.com:82"})
	register(f, m, "Web", "w4", map[string]any{"address": "10.0.0.4:84"})
	register(f, m, "a_b", "x.y", map[string]any{"address": "10.0.0.5:85"})
	registerMany(f, m, "big", "i", 60)
	pc, ln, err := dns.Listen("127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	srv, err := dns.Start(dns.Config{View: m.Server().View(), PacketConn: pc, Listener: ln, Logger: zap.NewNop()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close(context.Background()) })

	for _, q := range validQueries(f) {
		f.Add(q, false)
		f.Add(q, true)
	}
	for _, name := range []string{"_big._tcp.service.regd.", "big.service.regd.", `a\_b.service.regd.`, "x\\.y.a_b.instance.regd.", "_tcp.service.regd.", "web.instance.regd.", "..", "."} {
		q := new(mdns.Msg)
		q.SetQuestion(name, mdns.TypeANY)
		if b, err := q.Pack(); err == nil {
			f.Add(b, false)
		}
	}

	f.Fuzz(func(t *testing.T, raw []byte, tcp bool) {
		req := new(mdns.Msg)
		if err := req.Unpack(raw); err != nil || req.Response {
			return // miekg/dns drops or refuses these before any handler
		}
		w := &answerWriter{tcp: tcp}
		srv.ServeDNS(w, req)
		if len(w.msgs) != 1 {
			t.Fatalf("%d answers written", len(w.msgs))
		}
		if w.packErr != nil {
			t.Fatalf("the answer does not pack: %v", w.packErr)
		}
		r, b := w.msgs[0], w.packed[0]
		limit := mdns.MaxMsgSize
		if !tcp {
			limit = mdns.MinMsgSize
			if opt := req.IsEdns0(); opt != nil {
				limit = min(max(int(opt.UDPSize()), mdns.MinMsgSize), 4096)
			}
		}
		if len(b) > limit {
			t.Fatalf("answer of %d octets, the transport takes %d", len(b), limit)
		}
		if r.Id != req.Id || !r.Response {
			t.Fatalf("answer id %d response %v to query id %d", r.Id, r.Response, req.Id)
		}
		if len(req.Question) != 1 {
			if r.Rcode != mdns.RcodeFormatError && r.Rcode != mdns.RcodeNotImplemented && r.Rcode != mdns.RcodeBadVers {
				t.Fatalf("%d questions answered %s", len(req.Question), mdns.RcodeToString[r.Rcode])
			}
			return
		}
		q := req.Question[0]
		for _, rr := range r.Answer {
			if rr.Header().Name != q.Name {
				t.Fatalf("record %v owned by %q, asked %q", rr, rr.Header().Name, q.Name)
			}
		}
		if (r.Rcode == mdns.RcodeSuccess || r.Rcode == mdns.RcodeNameError) && len(r.Answer) == 0 && !r.Truncated {
			if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != mdns.TypeSOA {
				t.Fatalf("empty %s answer to %s without the SOA: %v", mdns.RcodeToString[r.Rcode], q.Name, r)
			}
		}
	})
}
