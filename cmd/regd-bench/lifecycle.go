package main

// The instance-lifecycle workloads (issue 12), regd only (plain etcd has no
// drain handshake and no batch heartbeat to compare with):
//
//	drain       --subscribers watch streams on one service, spread over
//	            the targets; --count PATCHes of one instance (drain, undrain,
//	            drain, ...), first without ?wait_observed, then with it; the
//	            figure is each PATCH's latency, request to answer, and with
//	            the wait every answer must say every subscriber saw it
//	heartbeats  --k instances registered first; single heartbeats at
//	            --concurrency for --duration, then batch heartbeats
//	            (PUT /v1/heartbeats, --batch-size items each) the same way;
//	            the figure is instances renewed per second of each

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/regd/regd/internal/loadgen"
)

// lifecycleWorkloads are run by runLifecycle, not by the twin machinery.
var lifecycleWorkloads = []string{"drain", "heartbeats"}

// drainWait is the ?wait_observed of the measured drains: long enough that
// a healthy cluster always finishes before it; a drain that takes it all
// counts as an error.
const drainWait = 10 * time.Second

// lifecycleReport is what --json prints for these workloads.
type lifecycleReport struct {
	Workload    string                    `json:"workload"`
	Label       string                    `json:"label,omitempty"`
	Targets     []string                  `json:"targets"`
	Subscribers int                       `json:"subscribers,omitempty"`
	K           int                       `json:"k,omitempty"`
	BatchSize   int                       `json:"batch_size,omitempty"`
	Concurrency int                       `json:"concurrency"`
	RunID       string                    `json:"run_id"`
	StartedAt   time.Time                 `json:"started_at"`
	Phases      map[string]*loadgen.Stats `json:"phases"`
	// Renewals is instances renewed per second, per heartbeat phase.
	Renewals map[string]float64 `json:"renewals_per_sec,omitempty"`
	Notes    []string           `json:"notes,omitempty"`
}

// runLifecycle runs a lifecycle workload against regd and prints its
// report; the result is the exit code.
func runLifecycle(ctx context.Context, o *options, stdout, stderr io.Writer) int {
	b := newBench(o, stderr)
	defer b.h.close()
	rep := &lifecycleReport{Workload: o.workload, Label: o.label, Targets: o.targets, Concurrency: o.concurrency,
		RunID: b.runID, StartedAt: time.Now().UTC(), Phases: map[string]*loadgen.Stats{}}
	if err := b.waitReady(ctx); err != nil {
		fmt.Fprintf(stderr, "regd-bench: %v\n", err)
		return exitFailed
	}
	var err error
	switch o.workload {
	case "drain":
		rep.Subscribers = o.subscribers
		err = b.drain(ctx, rep)
	case "heartbeats":
		rep.K, rep.BatchSize = o.k, min(o.batch, o.k)
		err = b.batchHeartbeats(ctx, rep)
	}
	if err != nil {
		rep.Notes = append(rep.Notes, err.Error())
	}
	return finish(o, stdout, stderr, rep, true, func(w io.Writer) { writeLifecycleTable(w, rep) }, err)
}

func writeLifecycleTable(w io.Writer, rep *lifecycleReport) {
	fmt.Fprintf(w, "%s against %s (run %s)\n", rep.Workload, strings.Join(rep.Targets, ","), rep.RunID)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "phase\tops\tops/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\tinstances/s\terrors")
	for _, name := range []string{"patch", "patch+wait_observed", "single", "batch"} {
		st := rep.Phases[name]
		if st == nil {
			continue
		}
		renew := "-"
		if r, ok := rep.Renewals[name]; ok {
			renew = fmt.Sprintf("%.0f", r)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\n", name, st.Ops, st.OpsPerSec,
			loadgen.FormatMs(st.Latency.P50), loadgen.FormatMs(st.Latency.P90), loadgen.FormatMs(st.Latency.P99),
			loadgen.FormatMs(st.Latency.Max), renew, orDash(st.ErrorString()))
	}
	tw.Flush()
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

// lcService is the run's service of a lifecycle workload.
func (b *bench) lcService(what string) string {
	return fmt.Sprintf("%s-%s-%s", b.o.service, b.runID, what)
}

func (b *bench) lcRegister(ctx context.Context, t int, service, id string, seq int64) error {
	body, _ := json.Marshal(map[string]any{"address": address(seq), "ttl": b.preTTL()})
	return b.h.do(ctx, http.MethodPut, "http://"+b.o.targets[t]+"/v1/services/"+service+"/instances/"+id, body, expect(http.StatusCreated, http.StatusOK))
}

func (b *bench) lcDeregister(service string, ids []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var g errgroup.Group
	g.SetLimit(32)
	for i, id := range ids {
		g.Go(func() error {
			_ = b.h.do(ctx, http.MethodDelete, "http://"+b.o.targets[i%len(b.o.targets)]+"/v1/services/"+service+"/instances/"+id, nil, expect(http.StatusNoContent, http.StatusNotFound))
			return nil
		})
	}
	_ = g.Wait()
}

// drain measures PATCH latency without and with the drain handshake, with
// --subscribers streams open on the service.
func (b *bench) drain(ctx context.Context, rep *lifecycleReport) error {
	o := b.o
	svc := b.lcService("drain")
	if err := b.lcRegister(ctx, 0, svc, "target", 1); err != nil {
		return fmt.Errorf("register the drained instance: %w", err)
	}
	defer b.lcDeregister(svc, []string{"target"})

	// The subscribers: default streams (up instances), which every drain
	// and undrain concerns. They read and count update events.
	sctx, stopStreams := context.WithCancel(ctx)
	var (
		wg      sync.WaitGroup
		updates atomic.Int64
		opened  = make(chan error, o.subscribers)
	)
	defer func() { stopStreams(); wg.Wait() }()
	for i := range o.subscribers {
		t := i % len(o.targets)
		wg.Go(func() {
			req, err := http.NewRequestWithContext(sctx, http.MethodGet, "http://"+o.targets[t]+"/v1/services/"+svc+"/watch", nil)
			if err != nil {
				opened <- err
				return
			}
			resp, err := b.h.openStream(req)
			opened <- err
			if err != nil {
				return
			}
			defer resp.Body.Close()
			rd := bufio.NewReaderSize(resp.Body, 64<<10)
			for {
				line, err := rd.ReadSlice('\n')
				if err != nil && err != bufio.ErrBufferFull {
					return
				}
				if bytes.Equal(line, []byte("event: update\n")) {
					updates.Add(1)
				}
			}
		})
	}
	for range o.subscribers {
		if err := <-opened; err != nil {
			return fmt.Errorf("open a watch stream (regd allows %d per client IP and node): %w", 64, err)
		}
	}
	b.logf("drain: %d streams open over %d targets", o.subscribers, len(o.targets))

	count := o.count
	if count == 0 {
		count = 50
	}
	var short atomic.Int64
	patch := func(wait time.Duration) loadgen.Op {
		return func(ctx context.Context, _ int, seq int64) (int, error) {
			status := "draining"
			if seq%2 == 1 {
				status = "up"
			}
			url := "http://" + o.targets[int(seq)%len(o.targets)] + "/v1/services/" + svc + "/instances/target"
			if wait > 0 {
				url += "?wait_observed=" + wait.String()
			}
			hdr := []string{"Content-Type: application/merge-patch+json"}
			body := []byte(`{"status":"` + status + `"}`)
			return 0, b.h.doConn(ctx, http.MethodPatch, url, hdr, body, func(c *loadgen.Reply) error {
				if c.Status != http.StatusOK {
					return statusErr(c.Status, c.Body)
				}
				if wait > 0 {
					want := fmt.Sprintf("%d/%d", o.subscribers, o.subscribers)
					got, members := string(c.Header("X-Regd-Observed")), string(c.Header("X-Regd-Observed-Members"))
					if got != want || members != fmt.Sprintf("%d/%d", len(o.targets), len(o.targets)) {
						short.Add(1)
						return fmt.Errorf("observed %s (members %s), want %s", got, members, want)
					}
				}
				return nil
			})
		}
	}
	// One drain at a time: the handshake's latency, not its throughput.
	for _, phase := range []struct {
		name string
		wait time.Duration
	}{{"patch", 0}, {"patch+wait_observed", drainWait}} {
		b.logf("drain: %s, %d PATCHes, one at a time", phase.name, count)
		res, err := loadgen.Run(ctx, loadgen.Config{Concurrency: 1, Count: count}, patch(phase.wait))
		if res != nil {
			rep.Phases[phase.name] = loadgen.FromResult(res, nil)
		}
		if err != nil {
			return err
		}
	}
	if n := short.Load(); n > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d drains with the wait answered before every subscriber had them", n))
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("%d update events read by the %d streams (%d PATCHes each)", updates.Load(), o.subscribers, 2*count))
	return nil
}

// batchHeartbeats measures instances renewed per second by single and by
// batch heartbeats, over the same --k instances.
func (b *bench) batchHeartbeats(ctx context.Context, rep *lifecycleReport) error {
	o := b.o
	svc := b.lcService("hb")
	ids := make([]string, o.k)
	for i := range ids {
		ids[i] = fmt.Sprintf("h%d", i)
	}
	b.logf("heartbeats: registering %d instances", o.k)
	var g errgroup.Group
	g.SetLimit(32)
	for i, id := range ids {
		g.Go(func() error { return b.lcRegister(ctx, i%len(o.targets), svc, id, int64(i)) })
	}
	defer b.lcDeregister(svc, ids)
	if err := g.Wait(); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	nt := int64(len(o.targets))
	single := func(ctx context.Context, _ int, seq int64) (int, error) {
		return 0, b.h.do(ctx, http.MethodPut, "http://"+o.targets[seq%nt]+"/v1/services/"+svc+"/instances/"+ids[seq%int64(len(ids))]+"/heartbeat", nil, expect(http.StatusOK))
	}
	size := rep.BatchSize
	batches := make([][]byte, (len(ids)+size-1)/size)
	for i := range batches {
		var items []map[string]string
		for _, id := range ids[i*size : min((i+1)*size, len(ids))] {
			items = append(items, map[string]string{"service": svc, "id": id})
		}
		batches[i], _ = json.Marshal(map[string]any{"instances": items})
	}
	var renewed atomic.Int64
	batch := func(ctx context.Context, _ int, seq int64) (int, error) {
		return 0, b.h.do(ctx, http.MethodPut, "http://"+o.targets[seq%nt]+"/v1/heartbeats", batches[seq%int64(len(batches))], func(status int, body []byte) error {
			if status != http.StatusOK {
				return statusErr(status, body)
			}
			var out struct {
				Results []struct {
					TTL *int64 `json:"ttl"`
				} `json:"results"`
			}
			if err := json.Unmarshal(body, &out); err != nil {
				return err
			}
			for _, r := range out.Results {
				if r.TTL == nil {
					return fmt.Errorf("an instance was not renewed")
				}
			}
			renewed.Add(int64(len(out.Results)))
			return nil
		})
	}
	rep.Renewals = map[string]float64{}
	for _, phase := range []struct {
		name string
		op   loadgen.Op
	}{{"single", single}, {"batch", batch}} {
		b.logf("heartbeats: %s, concurrency %d, %s", phase.name, o.concurrency, b.bound())
		res, err := loadgen.Run(ctx, loadgen.Config{Concurrency: o.concurrency, Duration: o.duration, Count: o.count, Warmup: o.warmup}, phase.op)
		if res == nil {
			return err
		}
		st := loadgen.FromResult(res, nil)
		rep.Phases[phase.name] = st
		perOp := 1.0
		if phase.name == "batch" {
			perOp = float64(size)
		}
		rep.Renewals[phase.name] = st.OpsPerSec * perOp
		if err != nil {
			return err
		}
	}
	return nil
}
