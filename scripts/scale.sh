#!/usr/bin/env bash
# scale.sh: the scale run. A three-member cluster on this machine gets
# SCALE_INSTANCES instances (default 100000) across SCALE_SERVICES services
# (default 1000); it measures the time to register them, each member's RSS,
# the list latency of one 1000-instance service with and without all the
# others present, and restart-to-ready with that data. Writes docs/scale.md
# (SCALE_OUT to change). Loopback only; stops everything it started.
#
#   scripts/scale.sh            (about 5 minutes on a 2-core machine)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
instances=${SCALE_INSTANCES:-100000}
services=${SCALE_SERVICES:-1000}
out=${SCALE_OUT:-$root/docs/scale.md}
dir=$(mktemp -d /tmp/regd-scale.XXXXXX)
cluster="$root/scripts/cluster3.sh"

cleanup() {
	"$cluster" stop --dir "$dir" >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT

say() { echo "scale: $*" >&2; }

# Ports below the ephemeral range, checked free.
pick_port() {
	local p
	while :; do
		p=$((10000 + RANDOM % 20000))
		if ! (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}
ports=""
http=()
for m in 1 2 3; do
	c=$(pick_port) p=$(pick_port) h=$(pick_port)
	ports+="$c,$p,$h "
	http+=("127.0.0.1:$h")
done
export REGD_CLUSTER_PORTS="${ports% }"
export REGD_CLUSTER_LOG_LEVEL=warn
targets=$(IFS=,; echo "${http[*]}")

say "building"
(cd "$root" && go build -o bin/regd-bench ./cmd/regd-bench)
bench="$root/bin/regd-bench"

rss_mib() { # member → RSS in MiB
	local pid
	pid=$(cat "$dir/$1.pid")
	echo $(( $(ps -o rss= -p "$pid") / 1024 ))
}

list_p99() { # label → "ops/s p50 p99" of listing a 1000-instance service
	"$bench" list --targets "$targets" --k 1000 --concurrency 16 --duration 10s \
		--warmup 2s --skip-etcd --json --label "$1" |
		python3 -c 'import json,sys; r=json.load(sys.stdin)["regd"]; l=r["latency_ms"]; print("%.0f %.2f %.2f" % (r["ops_per_sec"], l["p50"], l["p99"]))'
}

say "starting the cluster in $dir"
"$cluster" start --dir "$dir" >&2

say "list of one 1000-instance service, empty registry"
read -r empty_ops empty_p50 empty_p99 < <(list_p99 empty)

say "registering $instances instances across $services services"
start=$(date +%s.%N)
"$bench" populate --targets "$targets" --count "$instances" --services "$services" \
	--ttl 3600 --concurrency 64 --duration 0 --warmup 0 --max-duration 20m \
	--skip-etcd --json --label populate > "$dir/populate.json"
end=$(date +%s.%N)
read -r pop_ops pop_p99 pop_errs < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["regd"]; print("%.0f %.2f %d" % (r["ops_per_sec"], r["latency_ms"]["p99"], sum((r.get("errors") or {}).values())))' "$dir/populate.json")
pop_secs=$(python3 -c "print(f'{$end-$start:.1f}')")
count=$(curl -s "http://${http[0]}/v1/services" | python3 -c 'import json,sys; print(sum(s["instances"] for s in json.load(sys.stdin)["services"]))')

rss_loaded=()
for m in m1 m2 m3; do rss_loaded+=("$(rss_mib $m)"); done

say "list of one 1000-instance service among $count instances"
read -r loaded_ops loaded_p50 loaded_p99 < <(list_p99 loaded)

say "restarting the cluster"
"$cluster" stop --dir "$dir" >&2
t0=$(date +%s.%N)
"$cluster" start --dir "$dir" >&2
t1=$(date +%s.%N)
# Ready means every member serves the whole registry again.
until [ "$(curl -s "http://${http[2]}/v1/services" | python3 -c 'import json,sys; print(sum(s["instances"] for s in json.load(sys.stdin)["services"]))' 2>/dev/null)" = "$count" ]; do
	sleep 0.2
done
t2=$(date +%s.%N)
restart_ready=$(python3 -c "print(f'{$t1-$t0:.1f}')")
restart_full=$(python3 -c "print(f'{$t2-$t0:.1f}')")
rss_restarted=()
for m in m1 m2 m3; do rss_restarted+=("$(rss_mib $m)"); done
du_mib=$(du -sm "$dir/m1.regd" | cut -f1)

cat > "$out" <<EOF
# Scale run

Produced by \`scripts/scale.sh\` on $(date -u +%Y-%m-%d): a three-member cluster on one
machine ($(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),
$(go version | cut -d' ' -f3)), the load tool on the same cores.

| measure | value |
|---|---|
| instances registered | $count in $services services (asked: $instances) |
| time to register them (64 concurrent clients, spread over the 3 members) | ${pop_secs} s (${pop_ops} registrations/s, p99 ${pop_p99} ms, errors: ${pop_errs}) |
| RSS per member with the data | m1 ${rss_loaded[0]} MiB, m2 ${rss_loaded[1]} MiB, m3 ${rss_loaded[2]} MiB |
| data dir size (m1) | ${du_mib} MiB |
| list of one 1000-instance service, empty registry | ${empty_ops} lists/s, p50 ${empty_p50} ms, p99 ${empty_p99} ms |
| the same among all the others | ${loaded_ops} lists/s, p50 ${loaded_p50} ms, p99 ${loaded_p99} ms |
| restart (all three stopped, then started): to ready | ${restart_ready} s |
| restart: until a member lists all instances again | ${restart_full} s |
| RSS per member after the restart | m1 ${rss_restarted[0]} MiB, m2 ${rss_restarted[1]} MiB, m3 ${rss_restarted[2]} MiB |

Lists run at concurrency 16 for 10 s after a 2 s warm-up
(\`regd-bench list --k 1000 --concurrency 16 --duration 10s\`), spread over the three members.
EOF
say "wrote $out"
cat "$out"
