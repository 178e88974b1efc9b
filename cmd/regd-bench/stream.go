package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/regd/regd/internal/loadgen"
)

// sseStream reads one Server-Sent Events stream over a raw connection: one
// goroutine (the caller's), one read buffer of bufSize and one parser, so
// that thousands fit in one process. A broken stream is reopened with
// Last-Event-ID, as the contract's clients do, so nothing is missed.
type sseStream struct {
	addr    string
	path    string
	localIP string
	bufSize int
	onEvent func(*loadgen.SSEEvent)
	// onOpen is called once, when the first open succeeds: regd
	// subscribes before it sends the headers, so every later change is on
	// the stream.
	onOpen func()

	reconnects int
	closing    string // the last ": closing: ..." comment
}

// errOpen wraps a failure to open the stream at all.
var errOpen = errors.New("open")

// run reads the stream until ctx ends (then nil), or until it cannot be
// reopened for 10 s.
func (s *sseStream) run(ctx context.Context) error {
	p := &loadgen.SSEParser{
		OnEvent: s.onEvent,
		OnComment: func(c []byte) {
			if bytes.HasPrefix(c, []byte(" closing")) {
				s.closing = string(c)
			}
		},
	}
	opened := false
	var failingSince time.Time
	for {
		err := s.once(ctx, p, &opened)
		if ctx.Err() != nil {
			return nil
		}
		if !opened {
			return fmt.Errorf("%w %s%s: %w", errOpen, s.addr, s.path, err)
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
		} else if time.Since(failingSince) > 10*time.Second {
			return fmt.Errorf("stream %s%s broken for 10s: %w", s.addr, s.path, err)
		}
		s.reconnects++
		p.Reset()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *sseStream) once(ctx context.Context, p *loadgen.SSEParser, opened *bool) error {
	hdr := []string{"Accept: text/event-stream"}
	if id := p.LastEventID(); len(id) > 0 {
		hdr = append(hdr, "Last-Event-ID: "+string(id))
	}
	st, err := loadgen.OpenStream(ctx, s.addr, s.localIP, http.MethodGet, s.path, hdr, s.bufSize)
	if err != nil {
		return err
	}
	defer st.Close()
	if st.Status != http.StatusOK {
		return statusErr(st.Status, st.Body)
	}
	if !*opened {
		*opened = true
		if s.onOpen != nil {
			s.onOpen()
		}
	}
	buf := make([]byte, s.bufSize)
	for {
		n, err := st.Read(buf)
		p.Feed(buf[:n])
		if err != nil {
			return err
		}
	}
}

// expiryMonitor counts the expire events of one watch stream on /v1/watch
// (every service) for the instances a run cares about.
type expiryMonitor struct {
	stream *sseStream
	match  func(service, id string, at time.Time)
	events atomic.Int64 // every event seen
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// startExpiryMonitor opens the stream on target and returns once it is
// open: every expiry from then on is seen. match is called, from the
// stream's goroutine, for each expire event.
func (s *scaleRun) startExpiryMonitor(ctx context.Context, target int, match func(service, id string, at time.Time)) (*expiryMonitor, error) {
	ctx, cancel := context.WithCancel(ctx)
	m := &expiryMonitor{match: match, cancel: cancel, done: make(chan error, 1)}
	open := make(chan struct{})
	m.stream = &sseStream{
		addr: s.o.targets[target], path: "/v1/watch", bufSize: 32 << 10,
		onOpen: func() { close(open) },
		onEvent: func(e *loadgen.SSEEvent) {
			m.events.Add(1)
			if string(e.Type) != "expire" {
				return
			}
			at := time.Now()
			svc, _ := jsonStringField(e.Data, `"service":"`)
			id, _ := jsonStringField(e.Data, `"id":"`)
			m.match(svc, id, at)
		},
	}
	go func() { m.done <- m.stream.run(ctx) }()
	select {
	case <-open:
		return m, nil
	case err := <-m.done:
		cancel()
		return nil, fmt.Errorf("expiry monitor: %w", err)
	case <-time.After(15 * time.Second):
		cancel()
		return nil, errors.New("expiry monitor: /v1/watch did not open within 15s")
	}
}

// stop closes the stream and returns its error, if it broke for good;
// it may be called more than once.
func (m *expiryMonitor) stop() error {
	m.once.Do(func() {
		m.cancel()
		m.err = <-m.done
	})
	return m.err
}

// ledgerEntry is one item of GET /v1/expirations.
type ledgerEntry struct {
	Service    string    `json:"service"`
	ID         string    `json:"id"`
	LeaseID    string    `json:"lease_id"`
	ExpiredAt  time.Time `json:"expired_at"`
	ReportedBy string    `json:"reported_by"`
	Revision   int64     `json:"revision"`
	// Deadline and ReportedAt: the lease's deadline as the leader's
	// lessor knew it, and when the entry was written (regd with
	// issue 17's ledger fields; absent before).
	Deadline   *time.Time `json:"deadline,omitempty"`
	ReportedAt *time.Time `json:"reported_at,omitempty"`
}

// ledgerLimit is the most entries GET /v1/expirations returns at once.
const ledgerLimit = 10000

// ledger reads GET /v1/expirations (service "" for all, newest first, at
// most ledgerLimit); full says the answer may have been cut at the limit.
func (s *scaleRun) ledger(ctx context.Context, target int, service string) (entries []ledgerEntry, full bool, err error) {
	path := fmt.Sprintf("/v1/expirations?limit=%d", ledgerLimit)
	if service != "" {
		path += "&service=" + service
	}
	b, err := s.request(ctx, http.MethodGet, target, path, nil, http.StatusOK)
	if err != nil {
		return nil, false, err
	}
	var l struct {
		Expirations []ledgerEntry `json:"expirations"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, false, fmt.Errorf("decode /v1/expirations: %w", err)
	}
	return l.Expirations, len(l.Expirations) >= ledgerLimit, nil
}

// ledgerOf reads the ledger of every service in services, with 16 requests
// at a time, each tried up to three times.
func (s *scaleRun) ledgerOf(ctx context.Context, services []string) (map[string][]ledgerEntry, []string, error) {
	var (
		mu    sync.Mutex
		out   = map[string][]ledgerEntry{}
		cut   []string
		first error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, 16)
	)
	for i, svc := range services {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			// A read that fails (503: the linearizable read timed out
			// while the members were still writing reports) is made
			// again on the next member, as a client would.
			var (
				es   []ledgerEntry
				full bool
				err  error
			)
			for attempt := range 3 {
				es, full, err = s.ledger(ctx, (i+attempt)%len(s.o.targets), svc)
				if err == nil || ctx.Err() != nil {
					break
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = fmt.Errorf("ledger of %s: %w", svc, err)
				}
				return
			}
			out[svc] = es
			if full {
				cut = append(cut, svc)
			}
		})
	}
	wg.Wait()
	return out, cut, first
}

// reportsOf sums regd_expirations_total over every target's /metrics for
// the services whose names start with prefix: the expiries reported so far
// (each member counts the reports it made while it led, so the sum counts
// each report once, unless a member restarted in between).
func (s *scaleRun) reportsOf(ctx context.Context, prefix string) (int64, error) {
	var total int64
	for t := range s.o.targets {
		b, err := s.request(ctx, http.MethodGet, t, "/metrics", nil, http.StatusOK)
		if err != nil {
			return 0, err
		}
		total += sumCounter(b, "regd_expirations_total", "service", prefix)
	}
	return total, nil
}

// sumCounter sums the samples of metric in Prometheus' text format whose
// label has a value starting with prefix.
func sumCounter(text []byte, metric, label, prefix string) int64 {
	var sum float64
	want := []byte(metric + "{")
	lbl := []byte(label + `="` + prefix)
	for _, line := range bytes.Split(text, []byte("\n")) {
		if !bytes.HasPrefix(line, want) {
			continue
		}
		end := bytes.LastIndexByte(line, '}')
		if end < 0 || !bytes.Contains(line[:end], lbl) {
			continue
		}
		v, err := strconv.ParseFloat(string(bytes.TrimSpace(line[end+1:])), 64)
		if err == nil {
			sum += v
		}
	}
	return int64(sum)
}
