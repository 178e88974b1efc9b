package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/regd/regd/internal/regdtest"
)

// TestSmokeLifecycle runs the drain and heartbeats workloads briefly
// against a one-node cluster: every drain with the wait is confirmed by
// every stream, and both heartbeat phases renew instances.
func TestSmokeLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member and runs load")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	for _, tc := range []struct {
		workload string
		phases   []string
	}{{"drain", []string{"patch", "patch+wait_observed"}}, {"heartbeats", []string{"single", "batch"}}} {
		var out, errb bytes.Buffer
		args := []string{"--targets", m.HTTPAddr, "--duration", "1s", "--count", "6", "--concurrency", "2", "--k", "50",
			"--batch", "20", "--subscribers", "4", "--max-duration", "60s", "--json", tc.workload}
		if code := run(context.Background(), args, &out, &errb); code != exitOK {
			t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", tc.workload, code, out.String(), errb.String())
		}
		var rep lifecycleReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("%s: %v\n%s", tc.workload, err, out.String())
		}
		for _, p := range tc.phases {
			if st := rep.Phases[p]; st == nil || st.Ops == 0 || st.TotalErrors() != 0 {
				t.Fatalf("%s: phase %s: %+v\n%s", tc.workload, p, st, out.String())
			}
		}
		if tc.workload == "heartbeats" && (rep.Renewals["single"] <= 0 || rep.Renewals["batch"] <= rep.Phases["batch"].OpsPerSec) {
			t.Fatalf("renewals %v", rep.Renewals)
		}
		if tc.workload == "drain" && strings.Contains(strings.Join(rep.Notes, " "), "before every subscriber") {
			t.Fatalf("notes: %v", rep.Notes)
		}
		t.Logf("%s: %s", tc.workload, out.String())
	}
}
