package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/regd/regd/internal/loadgen"
)

// finish ends a workload that makes its own report (checks, lifecycle,
// the scale targets): the report as JSON (--json, indented when indent)
// or as table prints it, then the run's error, if any, on stderr; the
// result is the exit code. The report is printed also when the run
// failed: what was measured before the failure is kept.
func finish(o *options, stdout, stderr io.Writer, rep any, indent bool, table func(io.Writer), runErr error) int {
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		if indent {
			enc.SetIndent("", "  ")
		}
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "regd-bench: %v\n", err)
			return exitFailed
		}
	} else {
		table(stdout)
	}
	if runErr != nil {
		fmt.Fprintf(stderr, "regd-bench: %v\n", runErr)
		return exitFailed
	}
	return exitOK
}

func writeJSON(w io.Writer, rep *report) error {
	enc := json.NewEncoder(w)
	return enc.Encode(rep)
}

// writeTable prints the short human summary of one run.
func writeTable(w io.Writer, rep *report) {
	fmt.Fprintf(w, "%s\n", describe(rep))
	if rep.EtcdPrefix != "" {
		fmt.Fprintf(w, "regd %s | plain etcd %s via its JSON gateway, keys under %s (etcd %s)\n",
			strings.Join(rep.Targets, ","), strings.Join(rep.EtcdTargets, ","), rep.EtcdPrefix, orDash(rep.EtcdVersion))
	} else {
		fmt.Fprintf(w, "regd %s\n", strings.Join(rep.Targets, ","))
	}
	if rep.Workload == "notify" {
		fmt.Fprintf(w, "ops = events delivered; latencies = delay from a registration's response to a subscriber's event\n(negative: the event came first); 'from_send' = delay from sending the registration; 'register' = the registrations\n")
	}
	fmt.Fprintln(w)
	const rowFmt = "%-12s %9v %10v %9v %9v %9v %9v\n"
	fmt.Fprintf(w, rowFmt, "system", "ops", "ops/s", "p50", "p90", "p99", "max")
	row := func(name string, s *loadgen.Stats) {
		fmt.Fprintf(w, rowFmt, name, s.Ops, fmt.Sprintf("%.1f", s.OpsPerSec),
			loadgen.FormatMs(s.Latency.P50), loadgen.FormatMs(s.Latency.P90), loadgen.FormatMs(s.Latency.P99), loadgen.FormatMs(s.Latency.Max))
	}
	var errLines []string
	for _, sys := range []struct {
		name string
		s    *loadgen.Stats
	}{{"regd", rep.Regd}, {"etcd", rep.Etcd}} {
		if sys.s == nil {
			continue
		}
		row(sys.name, sys.s)
		for _, k := range slices.Sorted(maps.Keys(sys.s.ByOp)) {
			row("  "+k, sys.s.ByOp[k])
		}
		errLines = append(errLines, fmt.Sprintf("%s errors: %s", sys.name, sys.s.ErrorString()))
		if sys.s.Early > 0 {
			errLines[len(errLines)-1] += fmt.Sprintf(" (%d of %d events arrived before the registration's response)", sys.s.Early, sys.s.Ops)
		}
		for _, k := range slices.Sorted(maps.Keys(sys.s.ErrorSamples)) {
			errLines = append(errLines, fmt.Sprintf("  e.g. %s: %s", k, sys.s.ErrorSamples[k]))
		}
	}
	fmt.Fprintln(w)
	for _, l := range errLines {
		fmt.Fprintln(w, l)
	}
	if r := rep.Ratio; r != nil {
		fmt.Fprintf(w, "regd/etcd: ops/s %s (%s), p50 %s, p99 %s (%s)\n",
			times(r.OpsPerSec), better(r.OpsPerSec >= 1, "regd"), times(r.P50), times(r.P99), better(r.P99 <= 1, "regd"))
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

// times renders a ratio; 0 means there is none.
func times(r float64) string {
	if r <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", r)
}

func better(ok bool, who string) string {
	if ok {
		return who + " faster"
	}
	return who + " slower"
}

func describe(rep *report) string {
	parts := []string{rep.Workload, fmt.Sprintf("concurrency %d", rep.Concurrency)}
	if rep.K > 0 {
		parts = append(parts, fmt.Sprintf("k %d", rep.K))
	}
	if rep.Subscribers > 0 {
		parts = append(parts, fmt.Sprintf("%d subscribers", rep.Subscribers))
	}
	bound := rep.Duration
	if rep.Count > 0 {
		bound += fmt.Sprintf(" or %d ops", rep.Count)
	}
	if rep.Warmup != "" {
		bound += " after " + rep.Warmup + " warmup"
	}
	parts = append(parts, bound)
	if rep.Label != "" {
		parts = append([]string{rep.Label}, parts...)
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
