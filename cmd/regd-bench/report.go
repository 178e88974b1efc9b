package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/regd/regd/internal/loadgen"
)

// runReport renders --json results (files holding one or more objects) as
// the Markdown tables of docs/benchmarks.md, one section per label.
func runReport(args []string, stdout, stderr io.Writer) int {
	level, reps, code := readResults[report]("report", args, stderr, nil)
	if code >= 0 {
		return code
	}
	writeMarkdown(stdout, reps, level)
	return exitOK
}

// readResults parses a report command's arguments ([--heading N] FILE...)
// and decodes every JSON object of the files, each checked by valid (nil:
// any). code is the exit code to return at once, or -1 to go on.
func readResults[T any](cmd string, args []string, stderr io.Writer, valid func(*T) bool) (level int, out []*T, code int) {
	fs := flag.NewFlagSet("regd-bench "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	lvl := fs.Int("heading", 2, "Markdown heading `level` of each section")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil, exitOK
		}
		return 0, nil, exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprintf(stderr, "regd-bench %s: give one or more files of --json results\n", cmd)
		return 0, nil, exitUsage
	}
	for _, name := range fs.Args() {
		b, err := os.ReadFile(name)
		if err != nil {
			fmt.Fprintf(stderr, "regd-bench %s: %v\n", cmd, err)
			return 0, nil, exitFailed
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		for {
			r := new(T)
			err := dec.Decode(r)
			if errors.Is(err, io.EOF) {
				break
			}
			if err == nil && valid != nil && !valid(r) {
				err = errors.New("not a result of this kind")
			}
			if err != nil {
				fmt.Fprintf(stderr, "regd-bench %s: %s: %v\n", cmd, name, err)
				return 0, nil, exitFailed
			}
			out = append(out, r)
		}
	}
	return *lvl, out, -1
}

func writeMarkdown(w io.Writer, reps []*report, level int) {
	var labels []string
	byLabel := map[string][]*report{}
	for _, r := range reps {
		if _, ok := byLabel[r.Label]; !ok {
			labels = append(labels, r.Label)
		}
		byLabel[r.Label] = append(byLabel[r.Label], r)
	}
	h := strings.Repeat("#", max(level, 1))
	for _, label := range labels {
		rs := byLabel[label]
		title := label
		if title == "" {
			title = "results"
		}
		fmt.Fprintf(w, "%s %s\n\n", h, title)
		fmt.Fprintln(w, "| workload | conc. | regd ops/s | etcd ops/s | ops/s regd/etcd | regd p50 | etcd p50 | regd p99 | etcd p99 | p99 regd/etcd | errors regd | errors etcd |")
		fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|")
		var extra []string
		for _, r := range rs {
			name := r.Workload
			if r.Workload == "notify" {
				name += " ¹"
			}
			if r.Workload == "mixed" {
				name += " ²"
			}
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				name, r.Concurrency,
				opsCell(r.Regd), opsCell(r.Etcd), ratioCell(r.Ratio, true),
				latCell(r.Regd, 50), latCell(r.Etcd, 50),
				latCell(r.Regd, 99), latCell(r.Etcd, 99), ratioCell(r.Ratio, false),
				errCell(r.Regd), errCell(r.Etcd))
			for _, sys := range []struct {
				name string
				s    *loadgen.Stats
			}{{"regd", r.Regd}, {"etcd", r.Etcd}} {
				if sys.s == nil || len(sys.s.ByOp) == 0 {
					continue
				}
				var parts []string
				for _, k := range slices.Sorted(maps.Keys(sys.s.ByOp)) {
					b := sys.s.ByOp[k]
					parts = append(parts, fmt.Sprintf("%s %.0f/s p50 %s p99 %s", k, b.OpsPerSec, loadgen.FormatMs(b.Latency.P50), loadgen.FormatMs(b.Latency.P99)))
				}
				line := fmt.Sprintf("%s c=%d %s: %s", r.Workload, r.Concurrency, sys.name, strings.Join(parts, "; "))
				if r.Workload == "notify" {
					line += fmt.Sprintf("; %d registrations × %d subscribers, %d missed, %d early", sys.s.Registrations, sys.s.Subscribers, sys.s.Missed, sys.s.Early)
				}
				extra = append(extra, line)
			}
			for _, n := range r.Notes {
				extra = append(extra, fmt.Sprintf("%s c=%d: note: %s", r.Workload, r.Concurrency, n))
			}
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "¹ notify: ops/s is events delivered per second (registrations × subscribers); p50/p99 are the delay from a registration's response to each subscriber's event.")
		fmt.Fprintln(w, "² mixed: 80% heartbeat, 15% list, 5% register; latencies over all operations.")
		if len(extra) > 0 {
			fmt.Fprintln(w)
			fmt.Fprintln(w, "Per operation:")
			fmt.Fprintln(w)
			for _, e := range extra {
				fmt.Fprintf(w, "- %s\n", e)
			}
		}
		fmt.Fprintln(w)
	}
}

func opsCell(s *loadgen.Stats) string {
	if s == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f", s.OpsPerSec)
}

func latCell(s *loadgen.Stats, p int) string {
	if s == nil || s.Ops == 0 {
		return "-"
	}
	if p == 50 {
		return loadgen.FormatMs(s.Latency.P50)
	}
	return loadgen.FormatMs(s.Latency.P99)
}

func ratioCell(r *ratio, ops bool) string {
	if r == nil {
		return "-"
	}
	if ops {
		return times(r.OpsPerSec)
	}
	return times(r.P99)
}

func errCell(s *loadgen.Stats) string {
	if s == nil {
		return "-"
	}
	return s.ErrorString()
}
