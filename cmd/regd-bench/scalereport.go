package main

import (
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/regd/regd/internal/loadgen"
)

// targetTitles names issue 17's targets in its order; million is put
// together by scripts/scale.sh from several regd-bench runs.
var targetTitles = map[string]string{
	"liveness": "1. Sustained liveness",
	"fanout":   "2. Fan-out",
	"expiry":   "3. Mass expiry",
	"million":  "4. A million records",
	"snapshot": "4. Snapshot",
	"cost":     "5. Per-request cost",
}

var targetOrder = []string{"liveness", "fanout", "expiry", "million", "snapshot", "cost"}

// runScaleReport renders scale results (files of --json objects) as
// Markdown sections, in the order.
func runScaleReport(args []string, stdout, stderr io.Writer) int {
	level, rs, code := readResults("scale-report", args, stderr, func(r *scaleResult) bool { return r.Target != "" })
	if code >= 0 {
		return code
	}
	slices.SortStableFunc(rs, func(a, b *scaleResult) int {
		return slices.Index(targetOrder, a.Target) - slices.Index(targetOrder, b.Target)
	})
	writeScaleMarkdown(stdout, rs, level)
	return exitOK
}

// writeScaleMarkdown renders each result as one section.
func writeScaleMarkdown(w io.Writer, rs []*scaleResult, level int) {
	h := strings.Repeat("#", max(level, 1))
	for _, r := range rs {
		title := targetTitles[r.Target]
		if title == "" {
			title = r.Target
		}
		if r.Variant != "" {
			title += ": " + r.Variant
		}
		if r.Smoke {
			title += " (smoke run)"
		}
		fmt.Fprintf(w, "%s %s\n\n", h, title)
		if r.Smoke {
			fmt.Fprintf(w, "> **Smoke run**: smaller than the issue's figures. It shows the tool and the method work; it is not the target's measurement.\n\n")
		}
		e := r.Env
		fmt.Fprintf(w, "Run %s UTC (%.0f s) on %s (%d CPUs, %d GiB), %s, %s", r.StartedAt.Format("2006-01-02 15:04"), r.Seconds, orDash(e.CPU), e.CPUs, e.MemoryGiB, orDash(e.Kernel), e.Go)
		if e.EtcdVersion != "" {
			fmt.Fprintf(w, ", etcd %s", e.EtcdVersion)
		}
		if v := r.Meta["regd_version"]; v != "" {
			fmt.Fprintf(w, ", %s", v)
		}
		fmt.Fprintf(w, "; load average at start %s; %d member(s) (%s); the load tool on the same machine.\n\n", orDash(e.LoadAvg), len(r.Targets), strings.Join(r.Members, ", "))

		if len(r.Goals) > 0 {
			fmt.Fprintln(w, "| figure | goal | measured | met |")
			fmt.Fprintln(w, "|---|---|---|---|")
			for _, g := range r.Goals {
				met := "-"
				if g.Met != nil {
					met = map[bool]string{true: "yes", false: "**no**"}[*g.Met]
					if r.Smoke {
						met += " (smoke)"
					}
				}
				fmt.Fprintf(w, "| %s | %s | %s | %s |\n", g.Name, g.Goal, g.Measured, met)
			}
			fmt.Fprintln(w)
		}
		switch {
		case r.Liveness != nil:
			writeLiveness(w, r.Liveness)
			writeSeries(w, r.Liveness.Series, append(slices.Clone(r.Members), "regd-bench"))
		case r.Fanout != nil:
			writeFanout(w, r.Fanout)
		case r.Expiry != nil:
			writeExpiry(w, r.Expiry)
		case r.Million != nil:
			writeMillion(w, r.Million, r.Snapshot)
		case r.Cost != nil:
			writeCost(w, r.Cost)
		}
		writePhases(w, r.Phases)
		fmt.Fprintf(w, "Command:\n\n```sh\n%s\n```\n\n", shellJoin(r.Command))
		if len(r.Meta) > 0 {
			for _, k := range slices.Sorted(maps.Keys(r.Meta)) {
				if k != "regd_version" {
					fmt.Fprintf(w, "- %s: `%s`\n", k, r.Meta[k])
				}
			}
			fmt.Fprintln(w)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(w, "- note: %s\n", n)
		}
		if len(r.Notes) > 0 {
			fmt.Fprintln(w)
		}
	}
}

// writePhases is the CPU and memory table: per phase, each server's and
// the tool's CPU in cores (CPU seconds per second) and RSS.
func writePhases(w io.Writer, ps []phase) {
	if len(ps) == 0 {
		return
	}
	var names []string
	for _, u := range ps[0].Servers {
		names = append(names, u.Name)
	}
	fmt.Fprintf(w, "CPU (cores: CPU seconds per second, from utime+stime) and RSS (at the end / highest sample), from /proc:\n\n")
	fmt.Fprintf(w, "| phase | s | %s | regd-bench |\n", strings.Join(names, " | "))
	fmt.Fprintf(w, "|---|--:|%s--:|\n", strings.Repeat("--:|", len(names)))
	cell := func(u loadgen.ProcUsage) string {
		if u.Missing {
			return "-"
		}
		return fmt.Sprintf("%.2f, %.0f/%.0f MiB", u.Cores, u.RSSEnd, u.RSSMax)
	}
	for _, p := range ps {
		var cells []string
		for _, u := range p.Servers {
			cells = append(cells, cell(u))
		}
		fmt.Fprintf(w, "| %s | %.1f | %s | %s |\n", p.Name, p.Seconds, strings.Join(cells, " | "), cell(p.Tool))
	}
	fmt.Fprintln(w)
}

// writeSeries is CPU and RSS over a long phase.
func writeSeries(w io.Writer, ps []loadgen.SeriesPoint, names []string) {
	if len(ps) == 0 {
		return
	}
	fmt.Fprintf(w, "Over the steady phase (cores over each step, RSS at its end):\n\n| s | %s |\n|--:|%s\n", strings.Join(names, " | "), strings.Repeat("--:|", len(names)))
	for _, p := range ps {
		var cells []string
		for i := range names {
			if i < len(p.Cores) {
				cells = append(cells, fmt.Sprintf("%.2f, %.0f MiB", p.Cores[i], p.RSS[i]))
			}
		}
		fmt.Fprintf(w, "| %.0f | %s |\n", p.At, strings.Join(cells, " | "))
	}
	fmt.Fprintln(w)
}

func writeHeartbeats(w io.Writer, rows map[string]heartbeatFigures, order []string) {
	fmt.Fprintln(w, "| heartbeats | mode | s | requests/s | instances renewed/s | p50 | p99 | max | request errors | item errors | late rounds | longest gap |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|---|---|--:|--:|")
	for _, name := range order {
		f, ok := rows[name]
		if !ok || f.Requests == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %.1f | %.0f | %s | %s | %s | %s | %s | %d | %s |\n", name, f.Mode, f.Seconds, f.RequestsPerS, f.RenewedPerS,
			fmtMs(f.Latency.P50), fmtMs(f.Latency.P99), fmtMs(f.Latency.Max), counts(f.RequestErrors), counts(f.ItemErrors), f.Late, fmtMs(f.MaxGapMs))
	}
	fmt.Fprintln(w)
}

func counts(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	return (&loadgen.Stats{Errors: m}).ErrorString()
}

func writeLiveness(w io.Writer, l *livenessResult) {
	fmt.Fprintf(w, "%d instances in %d services, TTL %d s, %s heartbeats every %s (%d instances a group); registered in %.1f s (%.0f/s).\n\n",
		l.Instances, l.Services, l.TTL, l.Mode, l.Interval, l.GroupSize, l.RegisterSeconds, l.RegisterPerSec)
	writeHeartbeats(w, map[string]heartbeatFigures{"during registration": l.DuringRegister, "steady (measured)": l.Steady}, []string{"during registration", "steady (measured)"})
	fmt.Fprintf(w, "False expiries: %d on the watch stream (%d events seen, %d reconnects), %d in the ledger.\n\n", l.FalseExpiriesSSE, l.MonitorEvents, l.MonitorReconnects, l.FalseExpiriesLedger)
	for _, ex := range l.Examples {
		fmt.Fprintf(w, "- %s\n", ex)
	}
	if len(l.Examples) > 0 {
		fmt.Fprintln(w)
	}
}

func writeFanout(w io.Writer, f *fanoutResult) {
	var per []string
	for _, m := range slices.Sorted(maps.Keys(f.PerMember)) {
		per = append(per, fmt.Sprintf("%s %d", m, f.PerMember[m]))
	}
	fmt.Fprintf(w, "%d %s subscribers (%s) from %d source address(es), all open in %.1f s; %d changes, one at a time.\n\n",
		f.Subscribers, f.Watch, strings.Join(per, ", "), f.SourceIPs, f.OpenSeconds, f.Changes)
	fmt.Fprintln(w, "| delay | p50 | p90 | p99 | max |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|")
	for _, row := range []struct {
		name string
		l    loadgen.Latency
	}{
		{"change sent → last subscriber has it (per change)", f.LastFromSend},
		{"change answered → last subscriber has it (per change)", f.LastFromResponse},
		{"change sent → each subscriber has it (every delivery)", f.Every},
	} {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", row.name, fmtMs(row.l.P50), fmtMs(row.l.P90), fmtMs(row.l.P99), fmtMs(row.l.Max))
	}
	fmt.Fprintf(w, "\nMissed %d, duplicates %d, reconnects or empty answers %d.\n\n", f.Missed, f.Duplicate, f.Reconnects)
	fmt.Fprintln(w, "| member | subscribers | RSS before | RSS with them | per subscriber |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|")
	for _, d := range f.RSS {
		fmt.Fprintf(w, "| %s | %d | %.0f MiB | %.0f MiB | %.1f KiB |\n", d.Member, d.Subscribers, d.BeforeMiB, d.AfterMiB, d.PerSubscriberKiB)
	}
	fmt.Fprintf(w, "| regd-bench (the subscribers' side) | %d | | | %.1f KiB |\n\n", f.Subscribers, f.ToolRSSPerSubscriberKiB)
}

func writeExpiry(w io.Writer, e *expiryResult) {
	fmt.Fprintf(w, "%d instances in %d services (TTL %d s, %s heartbeats every %s) stop heartbeating at once; %d others stay alive. Registered in %.1f s.\n\n",
		e.Instances, e.Services, e.TTL, e.Mode, e.Interval, e.Others, e.RegisterSeconds)
	fmt.Fprintln(w, "| | watch stream (/v1/watch) | ledger (/v1/expirations) |")
	fmt.Fprintln(w, "|---|--:|--:|")
	fmt.Fprintf(w, "| reported | %d | %d |\n| reported twice | %d | %d |\n| missing | %d | %d |\n| others reported | %d | %d |\n",
		e.SSEReported, e.LedgerReported, e.SSEDuplicates, e.LedgerDuplicate, e.SSEMissing, e.LedgerMissing, e.OthersExpiredSSE, e.OthersExpiredLedger)
	fmt.Fprintf(w, "| all reported, from the stop | %.1f s | %.1f s |\n", e.AllReportedSSESeconds, e.AllReportedLedgerSeconds)
	fmt.Fprintf(w, "| lag deadline → report p50 / p99 / max | %s / %s / %s | %s / %s / %s |\n",
		fmtMs(e.LagSSE.P50), fmtMs(e.LagSSE.P99), fmtMs(e.LagSSE.Max), fmtMs(e.LagLedger.P50), fmtMs(e.LagLedger.P99), fmtMs(e.LagLedger.Max))
	if l, k := e.LagServer, e.ServerDeadlineSkew; l != nil && k != nil {
		fmt.Fprintf(w, "| the server's lag, reported_at − deadline (regd_expiry_lag_seconds) p50 / p99 / max | | %s / %s / %s |\n", fmtMs(l.P50), fmtMs(l.P99), fmtMs(l.Max))
		fmt.Fprintf(w, "| the server's deadline − the client's, p50 / p99 / max | | %s / %s / %s |\n", fmtMs(k.P50), fmtMs(k.P99), fmtMs(k.Max))
	}
	fmt.Fprintln(w)
	var by []string
	for _, m := range slices.Sorted(maps.Keys(e.ReportedBy)) {
		by = append(by, fmt.Sprintf("%s %d", m, e.ReportedBy[m]))
	}
	fmt.Fprintf(w, "Reports: all %d counted by the members' `regd_expirations_total` %.1f s after the stop (polled every second); %.0f/s between the first and the last expired_at; reported by %s. Deadline = the client's last successful renewal + TTL; the ledger's report time is reported_at (when the leader wrote the entry) where the server has it, else expired_at (when the leader's reporter took the deletion up).\n\n",
		e.MetricReported, e.AllReportedMetricSeconds, e.ReportsPerSec, orDash(strings.Join(by, ", ")))
	if p := e.Probe; p != nil {
		fmt.Fprintln(w, "Meanwhile, on the other instances:")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| operation | ops/s | p50 | p99 | max | errors |")
		fmt.Fprintln(w, "|---|--:|--:|--:|--:|---|")
		for _, k := range slices.Sorted(maps.Keys(p.ByOp)) {
			b := p.ByOp[k]
			fmt.Fprintf(w, "| %s | %.0f | %s | %s | %s | %s |\n", k, b.OpsPerSec, fmtMs(b.Latency.P50), fmtMs(b.Latency.P99), fmtMs(b.Latency.Max), b.ErrorString())
		}
		k := e.OthersKeeper
		fmt.Fprintf(w, "| %s renewals of the others (per request) | %.1f | %s | %s | %s | %s |\n\n", k.Mode, k.RequestsPerS, fmtMs(k.Latency.P50), fmtMs(k.Latency.P99), fmtMs(k.Latency.Max), counts(k.RequestErrors))
	}
}

func writeMillion(w io.Writer, m *millionResult, sn *snapshotResult) {
	fmt.Fprintf(w, "%d instances in %d services registered over REST in %.1f s (%.0f/s, p50 %s, p99 %s, errors %s); %d listed afterwards.\n\n",
		m.Instances, m.Services, m.RegisterSeconds, m.RegisterPerSec, fmtMs(m.RegisterLatency.P50), fmtMs(m.RegisterLatency.P99), counts(m.RegisterErrors), m.Listed)
	if m.ListEmpty != nil && m.ListLoaded != nil {
		fmt.Fprintln(w, "| list of one service | lists/s | p50 | p90 | p99 | max | errors |")
		fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|---|")
		for _, row := range []struct {
			name string
			st   *loadgen.Stats
		}{{"empty registry", m.ListEmpty}, {"among all the others", m.ListLoaded}} {
			l := row.st.Latency
			fmt.Fprintf(w, "| %s | %.0f | %s | %s | %s | %s | %s |\n", row.name, row.st.OpsPerSec, fmtMs(l.P50), fmtMs(l.P90), fmtMs(l.P99), fmtMs(l.Max), row.st.ErrorString())
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "RSS per member populated: %s; after the restart: %s. Data dirs: %s.\n\n", mibList(m.RSSLoaded), mibList(m.RSSRestarted), mibList(m.DataDirMiB))
	if m.RestartCmdSeconds > 0 {
		fmt.Fprintf(w, "Restart: all members stopped (%.1f s), then started: the start command took %.1f s; every member ready %.1f s after it began; a member lists every instance after %.1f s.\n\n",
			m.StopSeconds, m.RestartCmdSeconds, m.RestartReadySeconds, m.RestartFullSeconds)
	}
	if sn != nil {
		fmt.Fprintf(w, "Snapshot (clientv3 Maintenance.SnapshotWithVersion from %s): %.1f MiB in %.1f s at revision %d; %d keys under /service/; bbolt file %.1f MiB (%.1f MiB in use).\n\n",
			sn.Endpoint, sn.SnapshotMiB, sn.SnapshotSecs, sn.Revision, sn.Keys, sn.DBSizeMiB, sn.DBInUseMiB)
	}
}

func writeCost(w io.Writer, c *costResult) {
	fmt.Fprintf(w, "Closed loop at %d clients; %d instances heartbeated and listed; the servers' idle CPU (%.3f cores, all members) subtracted. CPU per operation is the servers' CPU (all members) over the operations completed.\n\n", c.Concurrency, c.K, c.IdleCPUPerSec)
	fmt.Fprintln(w, "| system | operation | ops/s | p50 | p99 | server CPU per op | tool CPU per op | errors | note |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|---|---|")
	for _, r := range c.Rows {
		if r.Ops == 0 && r.Note != "" {
			fmt.Fprintf(w, "| %s | %s | - | - | - | - | - | - | %s |\n", r.System, r.Op, r.Note)
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %s | %s | %.1f µs | %.1f µs | %s | %s |\n", r.System, r.Op, r.OpsPerSec, fmtMs(r.Latency.P50), fmtMs(r.Latency.P99),
			r.ServerCPUPerOpUs, r.ToolCPUPerOpUs, counts(r.Errors), r.Note)
	}
	fmt.Fprintln(w)
	if len(c.Ratios) > 0 {
		fmt.Fprintln(w, "| operation | regd vs | ops/s ratio | CPU per op ratio |")
		fmt.Fprintln(w, "|---|---|--:|--:|")
		for _, q := range c.Ratios {
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", q.Op, q.Versus, times(q.OpsPerSec), times(q.CPUPerOp))
		}
		fmt.Fprintln(w)
	}
}

// shellJoin renders argv as a shell command line, argv[0] relative to the
// repository when it is inside one.
func shellJoin(argv []string) string {
	var parts []string
	for i, a := range argv {
		if i == 0 {
			if j := strings.Index(a, "/bin/"); j >= 0 {
				a = a[j+1:]
			} else {
				a = filepath.Base(a)
			}
		}
		if a == "" || strings.ContainsAny(a, " \t\"'$`\\|&;<>()*?[]{}!#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
