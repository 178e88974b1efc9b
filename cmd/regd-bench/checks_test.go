package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/regd/regd/internal/regdtest"
)

// TestSmokeChecks runs the checks workload briefly against a one-node
// cluster: two sizes are measured, and every instance whose endpoint fails
// is reported once with cause check_failed.
func TestSmokeChecks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member and runs load")
	}
	c := regdtest.StartCluster(t, 1)
	m := c.Members[0]
	var out, errb bytes.Buffer
	args := []string{"--targets", m.HTTPAddr, "--interval", "1s", "--duration", "1s", "--k", "10", "--instances", "20",
		"--count", "5", "--max-duration", "60s", "--json", "checks"}
	if code := run(context.Background(), args, &out, &errb); code != exitOK {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
	var rep checksReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(rep.Steps) != 2 || rep.Steps[0].Instances != 10 || rep.Steps[1].Instances != 20 || rep.Steps[1].Seen <= 0 {
		t.Fatalf("steps %+v", rep.Steps)
	}
	if f := rep.Failure; f == nil || f.Reported != 5 || f.Causes != "check_failed:5" || f.P50Ms <= 0 {
		t.Fatalf("failure phase %+v", rep.Failure)
	}
	t.Log(out.String())
}
