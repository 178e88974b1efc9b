#!/usr/bin/env bash
# scale.sh: the scale targets of issue 17, each one bounded command on a
# fresh three-member cluster (scripts/cluster3.sh on free loopback ports,
# data in a temporary directory), with the load tool on the same machine.
#
#   scripts/scale.sh [TARGET...]       default: every target, in this order
#
#   liveness   100,000 instances (1,000 services), TTL 10 s, batch heartbeats
#              every 3 s, for 10 minutes: false expiries, heartbeat p99,
#              CPU and RSS per member                          (~15 min)
#   fanout     10,000 SSE subscribers on one member, then spread over three;
#              the same with blocking queries: change → last subscriber,
#              RSS per subscriber                         (4 runs, ~3 min each)
#   expiry     100,000 instances stop heartbeating at once: each reported
#              once, within TTL + 2 min?  lag; REST p99 of others meanwhile
#                                                              (~5-20 min)
#   million    1,000,000 instances in 10,000 services: time to register, RSS,
#              list p99 vs empty, snapshot size, restart-to-ready  (~15 min)
#   cost       server CPU per operation: regd's REST API, etcd's JSON gateway
#              and native etcd gRPC on the same members, 64 clients (~6 min)
#   report     no run: only rebuild docs/scale.md from the results there are
#
# SCALE_SMOKE=1 runs every target at a small size (a few minutes in all):
# it shows the tool and the method work, and its results say "smoke run".
#
# Each run writes one JSON result into SCALE_RESULTS (default docs/scale/),
# replacing that target's previous one; then docs/scale.md (SCALE_OUT) is
# rebuilt from every result there, with docs/scale/notes.md (hand-written
# analysis) appended. Every process started here is stopped on exit.
#
# Sizes (environment; defaults full / smoke):
#   SCALE_INSTANCES        liveness instances          100000 / 5000
#   SCALE_SERVICES         liveness services           1000   / 50
#   SCALE_DURATION         liveness duration           10m    / 60s
#   SCALE_MODE             heartbeat mode              auto (batch when the server has it)
#   SCALE_TTL              liveness, expiry: TTL (s)   10
#   SCALE_INTERVAL         liveness, expiry: heartbeat interval   3s
#   SCALE_SUBSCRIBERS      fanout subscribers          10000  / 2000
#   SCALE_CHANGES          fanout changes              10     / 5
#   SCALE_EXPIRY           expiry instances            100000 / 5000
#   SCALE_MILLION          million instances           1000000 / 20000
#   SCALE_MILLION_SERVICES million services            10000  / 200
#   SCALE_COST_DURATION    cost: measured time per op  10s    / 2s
#   SCALE_COST_WARMUP      cost: warm-up per op        2s     / 1s
#   SCALE_FANOUT_MEMBERS   fanout variants' members    "1 3"
#   SCALE_FANOUT_WATCH     fanout variants' kinds      "sse blocking"
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
GO=${GO:-go}
smoke=${SCALE_SMOKE:-0}
if [ "$smoke" = 1 ]; then
	d_inst=5000 d_svc=50 d_dur=60s d_subs=2000 d_changes=5 d_exp=5000 d_mil=20000 d_milsvc=200 d_cost=2s d_warm=1s
else
	d_inst=100000 d_svc=1000 d_dur=10m d_subs=10000 d_changes=10 d_exp=100000 d_mil=1000000 d_milsvc=10000 d_cost=10s d_warm=2s
fi
INSTANCES=${SCALE_INSTANCES:-$d_inst}
SERVICES=${SCALE_SERVICES:-$d_svc}
DURATION=${SCALE_DURATION:-$d_dur}
MODE=${SCALE_MODE:-auto}
TTL=${SCALE_TTL:-10}
INTERVAL=${SCALE_INTERVAL:-3s}
SUBSCRIBERS=${SCALE_SUBSCRIBERS:-$d_subs}
CHANGES=${SCALE_CHANGES:-$d_changes}
EXPIRY=${SCALE_EXPIRY:-$d_exp}
MILLION=${SCALE_MILLION:-$d_mil}
MILLION_SERVICES=${SCALE_MILLION_SERVICES:-$d_milsvc}
COST_DURATION=${SCALE_COST_DURATION:-$d_cost}
COST_WARMUP=${SCALE_COST_WARMUP:-$d_warm}
FANOUT_MEMBERS=${SCALE_FANOUT_MEMBERS:-"1 3"}
FANOUT_WATCH=${SCALE_FANOUT_WATCH:-"sse blocking"}
results=${SCALE_RESULTS:-$root/docs/scale}
out=${SCALE_OUT:-$root/docs/scale.md}

all_targets=(liveness fanout expiry million cost)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
	case " ${all_targets[*]} report " in *" $t "*) ;; *)
		echo "scale: unknown target '$t'; one of: ${all_targets[*]}" >&2
		exit 2
		;;
	esac
done

say() { echo "scale: $*" >&2; }

# secs: whole seconds of a Go duration such as 90s, 10m, 1h, 1500ms.
secs() {
	case $1 in
	*ms) echo $(((${1%ms} + 999) / 1000)) ;;
	*s) echo "${1%s}" ;;
	*m) echo $((${1%m} * 60)) ;;
	*h) echo $((${1%h} * 3600)) ;;
	*) say "cannot read the duration '$1' (use e.g. 90s, 10m)"; exit 2 ;;
	esac
}

work=$(mktemp -d "${TMPDIR:-/tmp}/regd-scale.XXXXXX")
cluster="$root/scripts/cluster3.sh"
dir="" # the running cluster's directory

stop_cluster() {
	if [ -n "$dir" ]; then
		"$cluster" stop --dir "$dir" >&2 || true
		dir=""
	fi
}
cleanup() {
	local code=$?
	stop_cluster
	if [ $code -ne 0 ]; then
		say "failed (exit $code); logs kept in $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The servers get room for the subscribers (regd caps watch streams per
# client IP and connections), and an expiry ledger that keeps every report
# of the mass expiry.
export REGD_CLUSTER_LOG_LEVEL=warn
export REGD_MAX_WATCHES_PER_CLIENT=$((SUBSCRIBERS + 1000))
export REGD_MAX_CONNS=$((SUBSCRIBERS + 2000))
export REGD_EXPIRY_RETENTION=$((EXPIRY + 20000))
cluster_env="REGD_MAX_WATCHES_PER_CLIENT=$REGD_MAX_WATCHES_PER_CLIENT REGD_MAX_CONNS=$REGD_MAX_CONNS REGD_EXPIRY_RETENTION=$REGD_EXPIRY_RETENTION REGD_CLUSTER_LOG_LEVEL=warn"

say "building bin/regd and bin/regd-bench"
mkdir -p bin "$results"
commit=$(git describe --always --dirty 2>/dev/null || echo unknown)
"$GO" build -ldflags "-X main.version=$commit" -o bin/regd ./cmd/regd
"$GO" build -o bin/regd-bench ./cmd/regd-bench
regd_version=$(bin/regd --version 2>/dev/null | head -n1 || echo unknown)

# Ports below the ephemeral range, checked free, none handed out twice.
taken=" "
pick_port() {
	local p
	for _ in $(seq 1 500); do
		p=$((10000 + RANDOM % 20000))
		case $taken in *" $p "*) continue ;; esac
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			taken+="$p "
			echo "$p"
			return 0
		fi
	done
	say "found no free port"
	return 1
}

# start_cluster NAME: a fresh cluster in $work/NAME; sets TARGETS, ETCD,
# PIDS (in member order) and dir. A port taken between the check and the
# start (other programs pick free ports too) makes cluster3.sh fail and
# clean up; then it tries other ports, three times at most.
start_cluster() {
	dir=$work/$1
	local ports m c p h attempt
	mkdir -p "$dir/bin"
	# cluster3.sh builds into DIR/bin unless the binary is there and newer
	# than the sources: hand it the one just built.
	cp bin/regd "$dir/bin/regd"
	for attempt in 1 2 3; do
		ports="" TARGETS="" ETCD=""
		for m in 1 2 3; do
			c=$(pick_port) p=$(pick_port) h=$(pick_port)
			ports+="$c,$p,$h "
			TARGETS+="${TARGETS:+,}127.0.0.1:$h"
			ETCD+="${ETCD:+,}http://127.0.0.1:$c"
		done
		if REGD_CLUSTER_PORTS="${ports% }" "$cluster" start --dir "$dir" >&2; then
			PIDS=$(cat "$dir"/m1.pid),$(cat "$dir"/m2.pid),$(cat "$dir"/m3.pid)
			return 0
		fi
		say "$1: the cluster did not start (attempt $attempt); trying other ports"
	done
	dir=""
	return 1
}

# run_bench NAME BOUND_SECONDS ARGS...: regd-bench ARGS against the
# running cluster into $results/NAME.json, killed if it outlives its own
# --max-duration by two minutes.
run_bench() {
	local name=$1 bound=$2
	shift 2
	local res=$results/$name.json tmp=$work/$name.json
	local -a cmd=(bin/regd-bench "$@" --targets "$TARGETS" --etcd "$ETCD" --pids "$PIDS"
		--max-duration "${bound}s" --cleanup=false --json
		--meta "regd_version=$regd_version" --meta "commit=$commit"
		--meta "cluster=scripts/cluster3.sh, 3 members on loopback, $cluster_env")
	say "$name: ${cmd[*]}"
	local t0=$SECONDS rc=0
	timeout --kill-after=30s $((bound + 120)) "${cmd[@]}" >"$tmp" 2>"$work/$name.log" || rc=$?
	tail -n 3 "$work/$name.log" | sed 's/^/    /' >&2
	if [ -s "$tmp" ]; then
		mv "$tmp" "$res"
		say "$name: done in $((SECONDS - t0))s (exit $rc) -> $res"
	else
		say "$name: FAILED in $((SECONDS - t0))s (exit $rc), no result; see $work/$name.log"
		failed=$((failed + 1))
	fi
}

failed=0
for target in "${targets[@]}"; do
	case $target in
	liveness)
		start_cluster liveness
		run_bench liveness $((INSTANCES / 200 + $(secs "$DURATION") + 180)) \
			liveness --instances "$INSTANCES" --services "$SERVICES" --duration "$DURATION" --heartbeat-mode "$MODE" \
			--ttl "$TTL" --interval "$INTERVAL"
		stop_cluster
		;;
	fanout)
		for watch in $FANOUT_WATCH; do
			for members in $FANOUT_MEMBERS; do
				start_cluster "fanout-$watch-$members"
				all=$TARGETS allpids=$PIDS
				if [ "$members" = 1 ]; then
					TARGETS=${all%%,*} PIDS=${allpids%%,*}
				fi
				run_bench "fanout-$watch-$members" $((SUBSCRIBERS / 100 + CHANGES * 35 + 180)) \
					fanout --watch "$watch" --subscribers "$SUBSCRIBERS" --changes "$CHANGES"
				TARGETS=$all PIDS=$allpids
				stop_cluster
			done
		done
		;;
	expiry)
		start_cluster expiry
		run_bench expiry $((EXPIRY / 200 + 600)) \
			expiry --instances "$EXPIRY" --services "$SERVICES" --heartbeat-mode "$MODE" \
			--ttl "$TTL" --interval "$INTERVAL"
		stop_cluster
		;;
	million)
		# A restart replays every record before a member is ready: far
		# beyond cluster3.sh's default 30 s at these sizes (400,000 on
		# this machine did not make it), so the restart step gets time.
		export REGD_CLUSTER_TIMEOUT=${REGD_CLUSTER_TIMEOUT:-600}
		start_cluster million
		run_bench million $((MILLION / 250 + 1200)) \
			million --instances "$MILLION" --services "$MILLION_SERVICES" --register-concurrency 128 \
			--data-dirs "$dir/m1.regd,$dir/m2.regd,$dir/m3.regd" \
			--stop-cmd "'$cluster' stop --dir '$dir'" --start-cmd "'$cluster' start --dir '$dir'"
		stop_cluster
		;;
	report) ;;
	cost)
		start_cluster cost
		run_bench cost 900 \
			cost --duration "$COST_DURATION" --warmup "$COST_WARMUP" --subscribers 1000
		stop_cluster
		;;
	esac
done

# docs/scale.md from every result there is, in the issue's order.
shopt -s nullglob
files=()
for f in liveness fanout-sse-1 fanout-sse-3 fanout-blocking-1 fanout-blocking-3 expiry million cost; do
	[ -f "$results/$f.json" ] && files+=("$results/$f.json")
done
for f in "$results"/*.json; do
	case " ${files[*]} " in *" $f "*) ;; *) files+=("$f") ;; esac
done
if [ ${#files[@]} -eq 0 ]; then
	say "no results in $results"
	exit 1
fi
tmp_out=$(mktemp "${TMPDIR:-/tmp}/scale.md.XXXXXX")
{
	cat <<'EOF'
# Scale

Generated by `scripts/scale.sh` from the results in [scale/](scale/) (one JSON
object per run, as `regd-bench --json` printed it); re-run rather than edit.
Hand-written analysis lives in [scale/notes.md](scale/notes.md), appended at
the end. A section marked **smoke run** was run smaller than the issue's
figures: it shows the tool works, not what the target asks.

## How each target is run

Every target is one command, bounded in time (regd-bench's `--max-duration`,
and `timeout` around it), on a fresh three-member cluster started by
`scripts/cluster3.sh` on free loopback ports, with the load tool on the same
two cores. The cluster is started with room for the load:
`REGD_MAX_WATCHES_PER_CLIENT` and `REGD_MAX_CONNS` above the subscriber
count (regd caps watch streams and blocking queries per client IP, and open
connections), and `REGD_EXPIRY_RETENTION` above the mass expiry's size so
the ledger keeps every report.

| target | command | what is measured, and how |
|---|---|---|
| 1. sustained liveness | `scripts/scale.sh liveness` | `regd-bench liveness`: registers the instances, then keeps each alive with a heartbeat every 3 s, in groups of 1,000 (one `PUT /v1/heartbeats` per group when the server has it, else one request per instance: the result says which), each group on its own slot of the 3 s schedule. False expiries: `expire` events of these instances on one `/v1/watch` stream, and ledger entries (`/v1/expirations`); beside them the longest gap between two successful renewals of one instance as the client saw it (below the TTL, an expiry is the server's fault). Latency per request. |
| 2. fan-out | `scripts/scale.sh fanout` | `regd-bench fanout`: opens the subscribers (SSE streams, or blocking queries `?index=N&wait=60s`), one goroutine and a 2–4 KiB read buffer each on HTTP/1.1 connections of their own (fasthttp), on one member or round-robin over three; then registers one instance in the watched service at a time and records when each subscriber has it. Per change: send → last subscriber. RSS per subscriber: each member's RSS (median of three samples) before and after opening, over its subscribers. Blocking queries get a settling pause (2 s + 1 s per 2,000), since nothing tells a client that its query is held. |
| 3. mass expiry | `scripts/scale.sh expiry` | `regd-bench expiry`: registers the instances and 1,000 others, keeps all alive, then stops the first group's heartbeats at once. Done when one `/v1/watch` stream has shown every `expire` and the members' `regd_expirations_total` counts every report; then every instance's ledger entry is read service by service (exactly once; none of the others). Lag = `expired_at` − (the client's last successful renewal + TTL). Meanwhile 8 clients list the others' services and heartbeat the others. |
| 4. a million records | `scripts/scale.sh million` | `regd-bench million`: one 1,000-instance service listed (16 clients, 10 s) on the empty registry; the million registered over REST (128 clients over the three members); the list again; each member's RSS and data dir; a snapshot through clientv3 (`Maintenance.SnapshotWithVersion`, what `etcdctl snapshot save` does); then `cluster3.sh stop` and `start`: from the start until every member answers `/readyz`, and until one lists every instance again. |
| 5. per-request cost | `scripts/scale.sh cost` | `regd-bench cost`: each operation closed loop at 64 clients for 10 s after a 2 s warm-up, against regd's REST API, etcd's JSON gateway and native etcd gRPC (clientv3: Grant+Put, KeepAliveOnce, Get of the range, Watch) on the same members. Server CPU = the members' utime+stime over the measured time, minus their idle CPU, over the operations. The SSE row: CPU of registrations into a watched service (1,000 subscribers) beyond the same registrations unwatched, per event delivered. |

CPU comes from `/proc/<pid>/stat` (utime+stime) and memory from
`/proc/<pid>/status` (VmRSS) of each member, sampled every second and at
every phase boundary; the tool reports its own the same way (`regd-bench`
column), since it shares the cores. `SCALE_SMOKE=1 scripts/scale.sh` runs
everything small.

## Results

EOF
	bin/regd-bench scale-report --heading 3 "${files[@]}"
	if [ -f "$results/notes.md" ]; then
		echo "## Notes"
		echo
		cat "$results/notes.md"
	fi
} >"$tmp_out"
mv "$tmp_out" "$out"
say "wrote $out from ${#files[@]} result(s); $failed run(s) failed"
[ "$failed" -eq 0 ]
