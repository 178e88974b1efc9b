package dns

import (
	"sync"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/regd/regd/registry"
)

// typeNone and typeOther label queries whose type is unknown (a message
// refused before it was parsed) or not one regd answers.
const (
	typeNone  = "none"
	typeOther = "other"
)

// countedTypes are the query types with a label of their own; others are
// typeOther, so that nobody can grow the metric by asking odd types.
var countedTypes = map[uint16]bool{
	mdns.TypeA: true, mdns.TypeAAAA: true, mdns.TypeSRV: true, mdns.TypeTXT: true,
	mdns.TypeSOA: true, mdns.TypeNS: true, mdns.TypeANY: true, mdns.TypeAXFR: true,
	mdns.TypeIXFR: true, mdns.TypeCNAME: true, mdns.TypePTR: true, mdns.TypeMX: true,
}

type metrics struct {
	queries   *prometheus.CounterVec
	truncated prometheus.Counter
	malformed prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, view View) *metrics {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regd_dns_queries_total",
			Help: "DNS queries answered, by query type (A, AAAA, SRV, TXT, ..., other; none when refused before parsing) and response code (NOERROR, NXDOMAIN, REFUSED, BADVERS, ...).",
		}, []string{"type", "rcode"}),
		truncated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regd_dns_truncated_total",
			Help: "DNS answers sent over UDP with the TC bit: too large for the client's buffer; the client asks again over TCP.",
		}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regd_dns_malformed_total",
			Help: "DNS messages that could not be parsed: dropped, or answered FORMERR when the header could be read.",
		}),
	}
	if reg != nil {
		u := &unservable{view: view}
		reg.MustRegister(m.queries, m.truncated, m.malformed, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "regd_dns_unservable_instances",
			Help: "Up instances DNS does not serve because their service name or id is not a DNS label (1-63 letters, digits and hyphens, not starting or ending with a hyphen).",
		}, u.count))
	}
	return m
}

// count records one answer.
func (m *metrics) count(req, resp *mdns.Msg) {
	t := typeNone
	if len(req.Question) == 1 {
		t = typeOther
		if qt := req.Question[0].Qtype; countedTypes[qt] {
			t = mdns.TypeToString[qt]
		}
	}
	m.queries.WithLabelValues(t, rcodeString(resp.Rcode)).Inc()
	if resp.Truncated {
		m.truncated.Inc()
	}
}

// rcodeString is the label of a response code. 16 is BADVERS in a DNS
// answer (RFC 6891 §6.1.3); miekg/dns's RcodeToString names it by TSIG's
// BADSIG (RFC 8945), which shares the value.
func rcodeString(rcode int) string {
	if rcode == mdns.RcodeBadVers {
		return "BADVERS"
	}
	if s, ok := mdns.RcodeToString[rcode]; ok {
		return s
	}
	return "other"
}

// unservable counts, when scraped, the up instances whose names DNS
// cannot serve. The count is kept for the view's revision: a scrape of an
// unchanged registry costs nothing, a changed one a pass over the up
// instances of the services whose names are servable (the others count
// whole, from the service list).
type unservable struct {
	view View
	mu   sync.Mutex
	rev  int64
	n    int
}

func (u *unservable) count() float64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	if rev := u.view.Rev(); rev != u.rev || rev == 0 {
		n := 0
		for _, s := range u.view.Services().Services {
			if !ServableName(s.Name) {
				n += s.Up
				continue
			}
			n += u.view.Count(s.Name, registry.Filter{}, func(inst registry.Instance) bool { return !ServableName(inst.ID) })
		}
		u.rev, u.n = rev, n
	}
	return float64(u.n)
}
