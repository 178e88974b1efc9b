package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regd/regd/internal/regdtest"
)

// TestScaleSmoke runs every scale workload at a tiny size against a
// one-node cluster and its embedded member: the tool completes each, its
// JSON is what scale-report reads, and the figures that must hold on any
// healthy cluster do (nothing missed, nothing expired early, every mass
// expiry reported once).
func TestScaleSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member and runs load for several seconds")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	common := []string{"--targets", m.HTTPAddr, "--etcd", m.ClientURL, "--json", "--max-duration", "60s", "--sample-interval", "100ms"}
	runs := map[string][]string{
		"liveness": {"liveness", "--instances", "60", "--services", "3", "--batch-size", "20", "--ttl", "3", "--interval", "1s", "--duration", "2s"},
		"sse":      {"fanout", "--subscribers", "12", "--changes", "3", "--change-gap", "0s", "--source-ips", "3"},
		"blocking": {"fanout", "--watch", "blocking", "--subscribers", "6", "--changes", "2", "--change-gap", "200ms"},
		"expiry":   {"expiry", "--instances", "40", "--services", "4", "--others", "6", "--ttl", "2", "--interval", "500ms", "--hold", "1s", "--concurrency", "2", "--expiry-wait", "40s"},
		"million":  {"million", "--instances", "80", "--services", "4", "--k", "10", "--concurrency", "2", "--duration", "300ms", "--warmup", "0s"},
		"cost": {"cost", "--ops", "register,heartbeat,batch,list,list-gzip,sse", "--systems", "regd,etcd,native", "--duration", "300ms", "--warmup", "0s",
			"--idle", "100ms", "--k", "20", "--subscribers", "3", "--concurrency", "4"},
	}
	dir := t.TempDir()
	var (
		mu    sync.Mutex
		files []string
		wg    sync.WaitGroup
	)
	results := map[string]*scaleResult{}
	for name, args := range runs {
		wg.Go(func() {
			var out, errb bytes.Buffer
			code := run(context.Background(), append(args, common...), &out, &errb)
			if code != exitOK {
				t.Errorf("%s: exit %d\nstdout: %s\nstderr: %s", name, code, out.String(), errb.String())
				return
			}
			var r scaleResult
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Errorf("%s: JSON output does not parse: %v\n%s", name, err, out.String())
				return
			}
			file := filepath.Join(dir, name+".json")
			if err := os.WriteFile(file, out.Bytes(), 0o644); err != nil {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			results[name] = &r
			files = append(files, file)
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for name, r := range results {
		if !r.Smoke || len(r.Goals) == 0 || len(r.Phases) == 0 || r.Members[0] != m.Name {
			t.Errorf("%s: smoke %v, %d goals, %d phases, members %v", name, r.Smoke, len(r.Goals), len(r.Phases), r.Members)
		}
		// The server runs in this process: its figures are marked
		// missing, the tool's are there.
		if p := r.Phases[0]; !p.Servers[0].Missing || p.Tool.Missing || p.Tool.RSSEnd <= 0 {
			t.Errorf("%s: phase %+v", name, p)
		}
	}
	if l := results["liveness"].Liveness; l.FalseExpiriesSSE != 0 || l.FalseExpiriesLedger != 0 || l.Steady.Renewed == 0 || l.Mode == "" {
		t.Errorf("liveness: %+v", l)
	}
	for _, name := range []string{"sse", "blocking"} {
		f := results[name].Fanout
		if f.Missed != 0 || f.Duplicate != 0 || len(f.PerChange) != f.Changes || f.LastFromSend.Max <= 0 {
			t.Errorf("%s: %+v", name, f)
		}
	}
	if e := results["expiry"].Expiry; e.SSEReported != 40 || e.LedgerReported != 40 || e.SSEDuplicates+e.LedgerDuplicate+e.OthersExpiredSSE+e.OthersExpiredLedger != 0 ||
		e.MetricReported != 40 || e.LagLedger.Max <= 0 || e.Probe == nil || e.Probe.Ops == 0 {
		t.Errorf("expiry: %+v; notes %q", e, results["expiry"].Notes)
	}
	if mr := results["million"].Million; mr.Listed < 90 || mr.ListEmpty.Ops == 0 || mr.ListLoaded.Ops == 0 || results["million"].Snapshot == nil {
		t.Errorf("million: %+v", mr)
	}
	rows := map[string]costRow{}
	for _, row := range results["cost"].Cost.Rows {
		rows[row.System+" "+row.Op] = row
	}
	for _, k := range []string{"regd register", "regd heartbeat", "regd list", "regd list-gzip", "regd sse", "etcd register", "etcd list", "native register", "native heartbeat", "native list", "native sse"} {
		if rows[k].Ops == 0 {
			t.Errorf("cost: no %s operations: %+v", k, rows[k])
		}
	}
	if _, ok := rows["regd batch"]; !ok {
		t.Error("cost: no batch row (measured, or saying why not)")
	}

	var out, errb bytes.Buffer
	if code := run(context.Background(), append([]string{"scale-report", "--heading", "3"}, files...), &out, &errb); code != exitOK {
		t.Fatalf("scale-report: exit %d: %s", code, errb.String())
	}
	md := out.String()
	for _, want := range []string{"### 1. Sustained liveness", "### 2. Fan-out: sse", "### 2. Fan-out: blocking", "### 3. Mass expiry", "### 4. A million records", "### 5. Per-request cost", "(smoke run)", "| figure | goal | measured | met |"} {
		if !strings.Contains(md, want) {
			t.Errorf("scale-report lacks %q", want)
		}
	}
	if i, j := strings.Index(md, "1. Sustained"), strings.Index(md, "5. Per-request"); i > j {
		t.Error("scale-report is not in the issue's order")
	}
}

func TestScaleArgs(t *testing.T) {
	o, err := parseArgs([]string{"liveness", "--targets", "a:1"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	// The figures are the defaults, and the run is bounded.
	if o.instances != 100000 || o.services != 1000 || o.ttl != 10 || o.interval != 3*time.Second || o.duration != 10*time.Minute || o.maxDuration < 12*time.Minute {
		t.Fatalf("liveness defaults: %+v", o)
	}
	o, err = parseArgs([]string{"fanout", "--targets", "a:1"}, &bytes.Buffer{})
	if err != nil || o.subscribers != 10000 || o.watchMode != "sse" {
		t.Fatalf("fanout defaults: %+v, %v", o, err)
	}
	o, err = parseArgs([]string{"million", "--targets", "a:1", "--ttl", "20", "--pids", "7,8"}, &bytes.Buffer{})
	if err != nil || o.instances != 1000000 || o.services != 10000 || o.ttl != 20 || len(o.pids) != 2 {
		t.Fatalf("million: %+v, %v", o, err)
	}
	for _, args := range [][]string{
		{"liveness", "--interval", "10s"}, // not below the TTL
		{"liveness", "--batch-size", "1001"},
		{"liveness", "--heartbeat-mode", "fast"},
		{"fanout", "--watch", "poll"},
		{"fanout", "--source-ips", "0"},
		{"cost", "--systems", "native"}, // needs --etcd
		{"cost", "--ops", "teleport"},
		{"snapshot"}, // needs --etcd
		{"expiry", "--pids", "x"},
	} {
		if _, err := parseArgs(append(args, "--targets", "a:1"), &bytes.Buffer{}); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

func TestSumCounter(t *testing.T) {
	text := []byte(`# HELP regd_expirations_total Instances reported expired.
# TYPE regd_expirations_total counter
regd_expirations_total{service="bench-x-d0"} 14
regd_expirations_total{service="bench-x-d1"} 3
regd_expirations_total{service="other"} 100
regd_expirations_totally{service="bench-x-d2"} 5
regd_expiry_report_lag_seconds_count 117
`)
	if n := sumCounter(text, "regd_expirations_total", "service", "bench-x-d"); n != 17 {
		t.Fatalf("sum %d, want 17", n)
	}
}

func TestFanoutState(t *testing.T) {
	f := newFanoutState(2, 3)
	now := time.Now()
	f.record(0, 0, now)
	f.record(0, 0, now) // twice to one subscriber: a duplicate, not a delivery
	f.record(0, 1, now)
	f.record(5, 1, now) // not a change of this run
	select {
	case <-f.complete[0]:
		t.Fatal("change 0 complete with 2 of 3 subscribers")
	default:
	}
	f.record(0, 2, now)
	<-f.complete[0]
	if f.dups.Load() != 1 || f.delivered[0].Load() != 3 || f.delivered[1].Load() != 0 {
		t.Fatalf("dups %d delivered %d %d", f.dups.Load(), f.delivered[0].Load(), f.delivered[1].Load())
	}
	for id, want := range map[string]int{"c0": 0, "c12": 12, "seed": -1, "c": -1, "cx": -1, "k3": -1} {
		if got := changeIndex(id); got != want {
			t.Errorf("changeIndex(%q) = %d, want %d", id, got, want)
		}
	}
}

func TestBodiesAndCommand(t *testing.T) {
	var b struct {
		Instances []struct{ Service, ID string } `json:"instances"`
	}
	body := batchBody([]*inst{{service: "s", id: "a"}, {service: "t", id: "b"}})
	if err := json.Unmarshal(body, &b); err != nil || len(b.Instances) != 2 || b.Instances[1].Service != "t" || b.Instances[1].ID != "b" {
		t.Fatalf("batch body %s: %+v %v", body, b, err)
	}
	var r struct {
		Address string `json:"address"`
		TTL     int    `json:"ttl"`
	}
	if err := json.Unmarshal(regBody("10.0.0.1:80", 10), &r); err != nil || r.Address != "10.0.0.1:80" || r.TTL != 10 {
		t.Fatalf("register body: %+v %v", r, err)
	}
	got := shellJoin([]string{"/work/x/bin/regd-bench", "fanout", "--meta", "cluster=a b", "--x", "it's"})
	if want := `bin/regd-bench fanout --meta 'cluster=a b' --x 'it'\''s'`; got != want {
		t.Fatalf("shellJoin: %s, want %s", got, want)
	}
}
