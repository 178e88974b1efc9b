#!/usr/bin/env bash
# scripts/bench.sh: what `make bench` runs.
#
# Builds bin/regd and bin/regd-bench, starts a 1-node and then a 3-node regd
# cluster on free loopback ports (data in a temp dir), runs every workload
# at each concurrency against regd's REST API and, side by side, against
# plain etcd through the JSON gateway of the same embedded members, and
# writes docs/benchmarks.md. Every process it starts is stopped on exit.
#
# Knobs (environment):
#   BENCH_DURATION     measured time per system and cell     (default 5s)
#   BENCH_WARMUP       unmeasured lead-in per system and cell (default 1s)
#   BENCH_CONCURRENCY  concurrencies                          (default "1 16 64")
#   BENCH_WORKLOADS    workloads       (default "register heartbeat list notify mixed")
#   BENCH_SIZES        cluster sizes   (default "1 3")
#   BENCH_K            instances for heartbeat, list, mixed  (default 1000)
#   BENCH_SUBSCRIBERS  watch streams for notify               (default 64)
#   BENCH_OUT          the report                             (default docs/benchmarks.md)
#   BENCH_FRESH        1: a new cluster for every workload (default 0: one
#                      long-lived cluster per size, as in production, so
#                      later cells run on nodes that have seen earlier load)
#   GO                 the go command                         (default go)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

GO=${GO:-go}
DURATION=${BENCH_DURATION:-5s}
WARMUP=${BENCH_WARMUP:-1s}
CONCURRENCY=${BENCH_CONCURRENCY:-"1 16 64"}
WORKLOADS=${BENCH_WORKLOADS:-"register heartbeat list notify mixed"}
SIZES=${BENCH_SIZES:-"1 3"}
K=${BENCH_K:-1000}
SUBSCRIBERS=${BENCH_SUBSCRIBERS:-64}
OUT=${BENCH_OUT:-docs/benchmarks.md}
FRESH=${BENCH_FRESH:-0}

# seconds of a Go duration such as 5s, 1500ms, 2m (whole seconds, rounded up).
secs() {
	local d=$1
	case $d in
	*ms) echo $(((${d%ms} + 999) / 1000)) ;;
	*s) echo "${d%s}" ;;
	*m) echo $((${d%m} * 60)) ;;
	*) echo "bench: cannot read duration '$d' (use e.g. 5s, 1500ms, 2m)" >&2; exit 2 ;;
	esac
}
dur_s=$(secs "$DURATION")
warm_s=$(secs "$WARMUP")

read -r -a sizes <<<"$SIZES"
read -r -a workloads <<<"$WORKLOADS"
read -r -a concs <<<"$CONCURRENCY"
cells=$((${#sizes[@]} * ${#workloads[@]} * ${#concs[@]}))
# Per cell: both systems' warmup + measured time, plus setup, notify's drain
# and cleanup (a register cell at concurrency 64 leaves thousands of
# instances to deregister); per cluster: start and stop.
per_cell=$((2 * (dur_s + warm_s) + 8))
starts=${#sizes[@]}
if [ "$FRESH" = 1 ]; then
	starts=$((${#sizes[@]} * ${#workloads[@]}))
fi
estimate=$((cells * per_cell + starts * 15))
# Each cell is capped by --max-duration (plus at most 60s of cleanup per system).
max_cell=$((2 * (dur_s + warm_s) + 90))
echo "bench: ${cells} cells (sizes: ${SIZES}; workloads: ${WORKLOADS}; concurrency: ${CONCURRENCY}), ${DURATION} each per system"
echo "bench: estimated time $((estimate / 60))m$((estimate % 60))s; hard bound $(((cells * (max_cell + 120) + starts * 90) / 60))m"

work=$(mktemp -d "${TMPDIR:-/tmp}/regd-bench.XXXXXX")
pids=()

stop_pids() {
	local pid
	for pid in "$@"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "$@"; do
		for _ in $(seq 1 150); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
}

cleanup() {
	local code=$?
	if [ ${#pids[@]} -gt 0 ]; then
		stop_pids "${pids[@]}"
	fi
	if [ $code -ne 0 ] && [ -d "$work" ]; then
		echo "bench: failed (exit $code); node logs and results kept in $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench: building bin/regd and bin/regd-bench"
mkdir -p bin
"$GO" build -o bin/regd ./cmd/regd
"$GO" build -o bin/regd-bench ./cmd/regd-bench

# free_port sets REPLY to a loopback port nothing listens on and that this
# script has not handed out yet. regd checks its ports itself and exits at
# once, naming the flag, if one was taken in between.
taken=" "
free_port() {
	local p
	for _ in $(seq 1 500); do
		p=$((20000 + RANDOM % 40000))
		case $taken in *" $p "*) continue ;; esac
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			taken+="$p "
			REPLY=$p
			return 0
		fi
	done
	echo "bench: found no free port" >&2
	return 1
}

mkdir -p "$work/results"
commands=$work/commands.txt
: >"$commands"

# start_cluster N starts N regd nodes forming one cluster and sets TARGETS,
# ETCD and cluster_pids.
start_cluster() {
	local n=$1 i initial=""
	local token="bench-$$-$n-$RANDOM"
	local -a http client peer
	for i in $(seq 1 "$n"); do
		free_port; http[i]=$REPLY
		free_port; client[i]=$REPLY
		free_port; peer[i]=$REPLY
		initial+="${initial:+,}m$i=http://127.0.0.1:${peer[i]}"
	done
	TARGETS="" ETCD="" cluster_pids=()
	for i in $(seq 1 "$n"); do
		local dir="$work/n$n/m$i"
		mkdir -p "$dir"
		local -a cmd=(bin/regd --name "m$i" --data-dir "$dir/data"
			--http-addr "127.0.0.1:${http[i]}" --dns-addr ""
			--listen-client-urls "http://127.0.0.1:${client[i]}" --advertise-client-urls "http://127.0.0.1:${client[i]}"
			--listen-peer-urls "http://127.0.0.1:${peer[i]}" --initial-advertise-peer-urls "http://127.0.0.1:${peer[i]}"
			--initial-cluster "$initial" --initial-cluster-token "$token" --log-level warn)
		echo "${cmd[*]} &" >>"$commands"
		"${cmd[@]}" >"$dir/regd.log" 2>&1 &
		pids+=($!)
		cluster_pids+=($!)
		TARGETS+="${TARGETS:+,}127.0.0.1:${http[i]}"
		ETCD+="${ETCD:+,}http://127.0.0.1:${client[i]}"
	done
	sleep 1
	for pid in "${cluster_pids[@]}"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "bench: a regd node exited at start; its log:" >&2
			cat "$work"/n"$n"/m*/regd.log >&2
			exit 1
		fi
	done
}

stop_cluster() {
	stop_pids "${cluster_pids[@]}"
	local keep=() pid c
	for pid in "${pids[@]}"; do
		for c in "${cluster_pids[@]}"; do
			[ "$pid" = "$c" ] && continue 2
		done
		keep+=("$pid")
	done
	pids=("${keep[@]+"${keep[@]}"}")
}

start_time=$(date +%s)
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
failed=0
for size in "${sizes[@]}"; do
	for wi in "${!workloads[@]}"; do
		w=${workloads[wi]}
		if [ "$FRESH" = 1 ] || [ "$wi" -eq 0 ]; then
			echo "bench: starting a ${size}-node cluster"
			start_cluster "$size"
			echo "# ${size}-node cluster: REST ${TARGETS}; etcd ${ETCD}" >>"$commands"
		fi
		for c in "${concs[@]}"; do
			res="$work/results/${size}-node-${w}-c${c}.json"
			cmd=(bin/regd-bench --targets "$TARGETS" --etcd "$ETCD" --label "${size}-node"
				--concurrency "$c" --duration "$DURATION" --warmup "$WARMUP"
				--k "$K" --subscribers "$SUBSCRIBERS" --wait-ready 60s
				--max-duration "${max_cell}s" --json "$w")
			echo "${cmd[*]}" >>"$commands"
			printf 'bench: %s-node %-9s c=%-3s ... ' "$size" "$w" "$c"
			t0=$(date +%s)
			if "${cmd[@]}" >"$res" 2>>"$work/regd-bench.log"; then
				echo "done in $(($(date +%s) - t0))s"
			else
				echo "FAILED in $(($(date +%s) - t0))s (see below)"
				failed=$((failed + 1))
				tail -n 5 "$work/regd-bench.log" | sed 's/^/    /'
				[ -s "$res" ] || rm -f "$res"
			fi
			sleep 1 # let cleanup's deregistrations settle before the next cell
		done
		if [ "$FRESH" = 1 ] || [ "$wi" -eq $((${#workloads[@]} - 1)) ]; then
			stop_cluster
		fi
	done
done
elapsed=$(($(date +%s) - start_time))

shopt -s nullglob
results=("$work"/results/*.json)
if [ ${#results[@]} -eq 0 ]; then
	echo "bench: no results" >&2
	exit 1
fi
# In run order: 1-node before 3-node, workloads and concurrencies as given.
ordered=()
for size in "${sizes[@]}"; do
	for w in "${workloads[@]}"; do
		for c in "${concs[@]}"; do
			f="$work/results/${size}-node-${w}-c${c}.json"
			[ -f "$f" ] && ordered+=("$f")
		done
	done
done

etcd_version=$(grep -o '"etcd_version":"[^"]*"' "${ordered[0]}" | cut -d'"' -f4 || true)
cpu_model=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
mem_kb=$(grep -m1 MemTotal /proc/meminfo 2>/dev/null | awk '{print $2}' || echo 0)

tmp_out=$(mktemp "${TMPDIR:-/tmp}/benchmarks.md.XXXXXX")
{
	cat <<EOF
# regd benchmarks

Generated by \`make bench\` (\`scripts/bench.sh\`) on $(date -u '+%Y-%m-%d %H:%M UTC') in ${elapsed}s.
Re-run it rather than editing the tables; the section "What limits each
workload" is for people to fill in from the numbers.

Every cell runs the workload against regd's REST API and then the same
operations against plain etcd through the JSON gateway (\`/v3/lease/grant\`,
\`/v3/kv/put\`, \`/v3/lease/keepalive\`, \`/v3/kv/range\`, \`/v3/watch\`) that the
same embedded etcd members serve on their client URLs, so both run on the same
machine, the same members and the same data directories. Load comes from one
\`regd-bench\` process on the same machine, closed loop (each worker waits for
its answer), over keep-alive HTTP/1.1 connections of fasthttp's client
(\`internal/loadgen\`: next to no allocation per request in steady state, the
same for both systems; watch streams of **notify** use net/http); requests go to the
nodes round-robin. The twin's keys live under \`/BENCH/\`, outside the range
regd's view watches, so regd does no work for them.

Capacity (100,000 live instances, 10,000 watchers, mass expiry, a million
records) and the servers' CPU per operation beside native etcd gRPC are
measured by \`scripts/scale.sh\` into [scale.md](scale.md).

## Machine

| | |
|---|---|
| CPU | ${cpu_model:-unknown} ($(nproc) CPUs) |
| memory | $((mem_kb / 1024 / 1024)) GiB |
| kernel | $(uname -sr) |
| Go | $("$GO" version | sed 's/^go version //') |
| regd | $(bin/regd --version 2>/dev/null || echo unknown) |
| etcd | ${etcd_version:-unknown} (embedded) |
| load average at start | ${load_at_start} |

## How it was run

\`BENCH_DURATION=${DURATION} BENCH_WARMUP=${WARMUP} BENCH_CONCURRENCY="${CONCURRENCY}" BENCH_K=${K} BENCH_SUBSCRIBERS=${SUBSCRIBERS} BENCH_FRESH=${FRESH} make bench\`
(ports are picked at random on each run; ${failed} cell(s) failed). With
BENCH_FRESH=0 each cluster size is one long-lived cluster and the cells run
in the order below, so later cells run on nodes that have served the earlier
ones; with 1, every workload gets a new cluster.

\`\`\`sh
$(cat "$commands")
\`\`\`

Workloads: **register** registers a new instance per operation (etcd: lease
grant + put, two calls); **heartbeat** renews one of K=${K} pre-registered
instances round-robin (etcd: lease keepalive); **list** lists one service of
K=${K} instances (etcd: range over its prefix); **notify** holds ${SUBSCRIBERS}
watch streams on one service while registrations run, and measures the delay
from each registration's response to each subscriber's event (negative when
the event came first; etcd: \`/v3/watch\`); **mixed** is 80% heartbeat, 15%
list, 5% register (into a second service, so the listed one keeps K
instances). Latencies are from a log-linear histogram (under 1% error).

## Results

EOF
	bin/regd-bench report --heading 3 "${ordered[@]}"
	cat <<'EOF'
## What limits each workload

_To be filled in by a person from the numbers above and a profile
(`perf top -p <pid>`, or a CPU profile of a node). Say for each
what saturates (CPU of the node or of the load generator, raft/fsync, the
in-process etcd client, JSON encoding, locks), and how the ratio moves with
concurrency and cluster size._

- **register**: _..._
- **heartbeat**: _..._
- **list**: _..._
- **notify**: _..._
- **mixed**: _..._

Note: the load generator shares the machine with the nodes, so at high
concurrency it competes with them for CPU; compare ratios rather than
absolute numbers, and repeat on a quiet machine before drawing conclusions.

## Raw results

<details><summary>one JSON object per cell, as printed by <code>regd-bench --json</code></summary>

```json
EOF
	cat "${ordered[@]}"
	cat <<'EOF'
```

</details>
EOF
} >"$tmp_out"
mkdir -p "$(dirname "$OUT")"
mv "$tmp_out" "$OUT"
echo "bench: wrote $OUT (${elapsed}s; ${failed} failed cell(s))"
if [ "$failed" -gt 0 ]; then
	exit 1
fi
