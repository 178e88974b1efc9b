package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/regd/regd/internal/regdtest"
)

// TestSmoke runs every workload for a second against a one-node cluster and
// its embedded member's JSON gateway: the tool works end to end, both
// systems complete operations, and the JSON output is what report reads.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member and runs load for several seconds")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	dir := t.TempDir()
	files := make([]string, len(workloads))
	// The workloads run side by side (each has its own services) to keep
	// the test short whatever -parallel is; their figures disturb each
	// other, which a smoke test does not mind.
	errs := make([]error, len(workloads))
	var wg sync.WaitGroup
	for i, w := range workloads {
		files[i] = filepath.Join(dir, w+".json")
		wg.Go(func() { errs[i] = smoke(t, m, w, files[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", workloads[i], err)
		}
	}
	if t.Failed() {
		return
	}

	t.Run("report", func(t *testing.T) {
		var out, errb bytes.Buffer
		if code := run(context.Background(), append([]string{"report"}, files...), &out, &errb); code != exitOK {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		for _, w := range workloads {
			if !strings.Contains(out.String(), "| "+w+" ") {
				t.Errorf("report lacks a %s row:\n%s", w, out.String())
			}
		}
	})

	t.Run("table", func(t *testing.T) {
		var out, errb bytes.Buffer
		args := []string{"--targets", m.HTTPAddr, "--etcd", m.ClientURL, "--count", "20", "--k", "10", "list"}
		if code := run(context.Background(), args, &out, &errb); code != exitOK {
			t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
		}
		for _, want := range []string{"system", "regd ", "etcd ", "regd/etcd: ops/s"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("table lacks %q:\n%s", want, out.String())
			}
		}
	})
}

// smoke runs workload w for a second, checks its JSON output and writes it
// to file.
func smoke(t *testing.T, m *regdtest.Member, w, file string) error {
	var out, errb bytes.Buffer
	args := []string{
		"--targets", m.HTTPAddr, "--etcd", m.ClientURL,
		"--duration", "1s", "--concurrency", "4", "--k", "50", "--subscribers", "4",
		"--max-duration", "30s", "--drain", "3s", "--label", "smoke", "--json", w,
	}
	if code := run(context.Background(), args, &out, &errb); code != exitOK {
		return fmt.Errorf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	var rep report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return fmt.Errorf("JSON output does not parse: %v\n%s", err, out.String())
	}
	var problems []string
	switch {
	case rep.Workload != w || rep.Regd == nil || rep.Etcd == nil || rep.Ratio == nil:
		return fmt.Errorf("incomplete report: %s", out.String())
	case rep.Regd.Ops == 0 || rep.Etcd.Ops == 0:
		problems = append(problems, "no operations")
	case rep.Regd.OpsPerSec <= 0 || rep.Etcd.OpsPerSec <= 0 || rep.Ratio.OpsPerSec <= 0:
		problems = append(problems, "no throughput")
	case w == "notify" && (rep.Regd.Registrations == 0 || rep.Etcd.Registrations == 0):
		problems = append(problems, "no registrations")
	case w == "mixed" && (len(rep.Regd.ByOp) != 3 || len(rep.Etcd.ByOp) != 3):
		problems = append(problems, "mixed without its three operations")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: %s", strings.Join(problems, ", "), out.String())
	}
	t.Logf("%s: regd %.0f ops/s, etcd %.0f ops/s, errors regd %s etcd %s",
		w, rep.Regd.OpsPerSec, rep.Etcd.OpsPerSec, rep.Regd.ErrorString(), rep.Etcd.ErrorString())
	return os.WriteFile(file, out.Bytes(), 0o644)
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"nosuch"},
		{"--concurrency", "0", "list"},
		{"--duration", "0", "list"},
		{"--ttl", "1", "register"},
		{"--service", "a/b", "register"},
		{"list", "extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != exitUsage {
			t.Errorf("%q: exit %d, want %d (%s)", args, code, exitUsage, errb.String())
		}
	}
	// Flags after the workload are accepted.
	o, err := parseArgs([]string{"heartbeat", "--k", "7", "--etcd", "127.0.0.1:2379/"}, &bytes.Buffer{})
	if err != nil || o.workload != "heartbeat" || o.k != 7 || o.etcd[0] != "http://127.0.0.1:2379" {
		t.Fatalf("parseArgs: %+v, %v", o, err)
	}
}

func TestScanners(t *testing.T) {
	id, ok := jsonStringField([]byte(`{"service":"s","id":"n42","address":"10.0.0.1:8080"}`), `"id":"`)
	if !ok || id != "n42" {
		t.Fatalf("jsonStringField: %q %v", id, ok)
	}
}
