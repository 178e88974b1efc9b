#!/usr/bin/env bash
# cluster3.sh: a three-member regd cluster on one machine (loopback only).
#
#   scripts/cluster3.sh start  [--dir DIR] [--tls]
#                                            build regd if needed, start m1 m2 m3,
#                                            wait until ready with one leader;
#                                            --tls: everything over TLS (see below)
#   scripts/cluster3.sh stop   [--dir DIR]   SIGTERM the followers, then the leader;
#                                            SIGKILL what is left after 15 s
#   scripts/cluster3.sh status [--dir DIR]   running/stopped, pid, addresses, leader
#
# Exit codes, as systemctl's and LSB init scripts': 0 done (status: at least
# one member runs; the lines say which); 3 status found no member running
# (or no cluster in DIR); 2 bad usage; 1 anything else failed (start did not
# get a ready cluster, stop could not stop a member, ...). stop on a cluster
# that is not running is done: 0.
#
# Works from any directory. Requires bash and curl; go when regd must be built.
#
# DIR (default $REGD_CLUSTER_DIR, else /tmp/regd-cluster3) holds everything:
#   DIR/bin/regd     the binary, rebuilt from this checkout when missing or
#                    older than any *.go, go.mod or go.sum of the checkout
#   DIR/mN.regd      member mN's data dir (etcd WAL, snapshots, bbolt)
#   DIR/mN.log       its output;  DIR/mN.pid  its pid while it runs
#   DIR/ports        the ports the cluster was created with; later commands
#                    on DIR use them, whatever the environment says
#   DIR/tls          with --tls: the cluster's CA (ca.crt, ca.key), each
#                    member's certificate (mN.crt, mN.key) and a client
#                    certificate for etcdctl (client.crt, client.key)
#
# --tls (needs openssl) makes a CA and certificates for 127.0.0.1 when DIR
# has none yet, and starts the members with https everywhere: the REST API
# (--http-cert-file), etcd's client URLs with client certificates required
# (--cert-file, --trusted-ca-file, --client-cert-auth) and its peer URLs
# with member certificates required (--peer-*). A cluster remembers: later
# commands on DIR use TLS when DIR/tls exists, and curl trusts DIR/tls/ca.crt.
# A cluster created without --tls cannot be switched to it (its members'
# peer URLs are stored in their data); use another DIR.
#
# Ports (client, peer, REST per member), defaults:
#   m1 2379 2380 8081   m2 22379 22380 8082   m3 32379 32380 8083
# Override them for a new DIR with either
#   REGD_CLUSTER_PORTS="c1,p1,h1 c2,p2,h2 c3,p3,h3"    all nine ports, or
#   REGD_CLUSTER_BASE_HTTP=9081                        REST ports 9081-9083 only.
#
# Other environment:
#   REGD_CLUSTER_TIMEOUT   seconds start waits for readiness (default 30)
#   REGD_CLUSTER_LOG_LEVEL regd's --log-level (default info)
#
# start prints "cluster3: mN pid P rest URL client URL" per member,
# "cluster3: leader mN", and "cluster3: mN data DIR/mN.regd log DIR/mN.log"
# per member: where its data and its output are. start on a running
# cluster says so and exits 1. When only some members run
# (one was killed or stopped by hand), start starts the missing ones, which
# rejoin from their data dirs. A member whose data dir exists starts with
# --initial-cluster-state existing, otherwise new.
set -euo pipefail

prog=cluster3
members=(m1 m2 m3)

die() {
	echo "$prog: $*" >&2
	exit 1
}

usage() {
	echo "usage: $0 start|stop|status [--dir DIR] [--tls]" >&2
	echo "exit codes: 0 done (status: a member runs), 3 status: no member runs, 2 bad usage, 1 failed" >&2
	exit 2
}

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$script_dir/.." && pwd)

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
dir=${REGD_CLUSTER_DIR:-/tmp/regd-cluster3}
want_tls=0
while [ $# -gt 0 ]; do
	case $1 in
	--tls)
		want_tls=1
		shift
		;;
	--dir)
		[ $# -ge 2 ] || usage
		dir=$2
		shift 2
		;;
	--dir=*)
		dir=${1#--dir=}
		shift
		;;
	*) usage ;;
	esac
done
case $cmd in start | stop | status) ;; *) usage ;; esac

command -v curl >/dev/null 2>&1 || die "curl is required (it polls /readyz and /v1/cluster); install curl and try again"

# status's exit code when no member runs (systemctl status: "inactive").
exit_not_running=3

if [ ! -d "$dir" ]; then
	case $cmd in
	stop)
		echo "$prog: not running (no cluster in $dir)"
		exit 0
		;;
	status)
		echo "$prog: not running (no cluster in $dir)"
		exit $exit_not_running
		;;
	esac
	mkdir -p "$dir" || die "cannot create $dir"
fi
dir=$(cd "$dir" && pwd)
bin=$dir/bin/regd
timeout=${REGD_CLUSTER_TIMEOUT:-30}
tls_dir=$dir/tls

# ---- TLS ----

# use_tls is decided once: by --tls on start, else by what DIR holds.
use_tls=0
if [ -f "$tls_dir/ca.crt" ]; then
	use_tls=1
elif [ "$want_tls" = 1 ] && [ "$cmd" = start ]; then
	for m in "${members[@]}"; do
		[ ! -d "$dir/$m.regd" ] || die "the cluster in $dir was created without --tls; its members' URLs are http in their data. Stop it and start with --tls in another --dir"
	done
	use_tls=1
fi
scheme=http
curl_tls=()
if [ "$use_tls" = 1 ]; then
	scheme=https
	curl_tls=(--cacert "$tls_dir/ca.crt")
fi

# make_certs creates DIR/tls: a CA, one certificate per member (server and
# client use: members present it to each other) and one for etcd clients.
# ECDSA P-256, valid for 127.0.0.1 and localhost. All or nothing: the files
# are made in a temporary directory that is renamed at the end.
make_certs() {
	[ -f "$tls_dir/ca.crt" ] && return 0
	command -v openssl >/dev/null 2>&1 || die "--tls needs openssl to make the cluster's certificates; install openssl, or start without --tls"
	echo "$prog: making a CA and certificates in $tls_dir"
	local tmp name
	tmp=$(mktemp -d "$dir/tls.tmp.XXXXXX") || die "cannot create a temporary directory in $dir"
	if ! (
		set -e
		cd "$tmp"
		umask 077
		openssl ecparam -name prime256v1 -genkey -noout -out ca.key
		openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=regd cluster3 CA" \
			-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt
		for name in "${members[@]}" client; do
			openssl ecparam -name prime256v1 -genkey -noout -out "$name.key"
			openssl req -new -key "$name.key" -subj "/CN=$name" -out "$name.csr"
			{
				echo "basicConstraints=CA:FALSE"
				echo "keyUsage=critical,digitalSignature"
				if [ "$name" = client ]; then
					echo "extendedKeyUsage=clientAuth"
				else
					echo "extendedKeyUsage=serverAuth,clientAuth"
					echo "subjectAltName=IP:127.0.0.1,DNS:localhost"
				fi
			} >"$name.ext"
			openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -sha256 \
				-extfile "$name.ext" -out "$name.crt"
		done
		rm -f ./*.csr ./*.ext ca.srl
		chmod 644 ./*.crt
	) >"$tmp.log" 2>&1; then
		cat "$tmp.log" >&2
		rm -rf "$tmp" "$tmp.log"
		die "openssl failed to make the certificates (output above)"
	fi
	rm -f "$tmp.log"
	mv "$tmp" "$tls_dir"
}

# ---- ports ----

load_ports() {
	local spec
	if [ -f "$dir/ports" ]; then
		spec=$(cat "$dir/ports")
	elif [ -n "${REGD_CLUSTER_PORTS:-}" ]; then
		spec=$REGD_CLUSTER_PORTS
	else
		local h=${REGD_CLUSTER_BASE_HTTP:-8081}
		spec="2379,2380,$h 22379,22380,$((h + 1)) 32379,32380,$((h + 2))"
	fi
	local triples
	read -r -a triples <<<"$spec"
	[ ${#triples[@]} -eq 3 ] || die "ports \"$spec\": want three client,peer,rest triples"
	client_port=() peer_port=() http_port=()
	local t c p h
	for t in "${triples[@]}"; do
		IFS=, read -r c p h <<<"$t"
		for x in "$c" "$p" "$h"; do
			[[ $x =~ ^[0-9]+$ ]] && [ "$x" -ge 1 ] && [ "$x" -le 65535 ] || die "ports \"$spec\": \"$t\" is not client,peer,rest"
		done
		client_port+=("$c") peer_port+=("$p") http_port+=("$h")
	done
	ports_spec=$spec
}

client_url() { echo "$scheme://127.0.0.1:${client_port[$1]}"; }
peer_url() { echo "$scheme://127.0.0.1:${peer_port[$1]}"; }
rest_url() { echo "$scheme://127.0.0.1:${http_port[$1]}"; }

# ---- processes ----

# pid_of prints member i's pid if it is running, else nothing (and removes a
# stale pid file). A zombie, or a pid reused by another program, is not it.
pid_of() {
	local f=$dir/${members[$1]}.pid pid state
	[ -f "$f" ] || return 0
	pid=$(cat "$f" 2>/dev/null || true)
	[[ $pid =~ ^[0-9]+$ ]] || return 0 # not ours: start_member replaces it
	if [ -d /proc ]; then
		state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1 || true)
		if [ -n "$state" ] && [ "$state" != Z ] &&
			tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--name ${members[$1]} "; then
			echo "$pid"
			return 0
		fi
	elif kill -0 "$pid" 2>/dev/null; then
		echo "$pid"
		return 0
	fi
	rm -f "$f"
}

http_code() { curl -s ${curl_tls[@]+"${curl_tls[@]}"} -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }

leader_seen_by() { # the leader's name as member i sees it, or nothing
	curl -s ${curl_tls[@]+"${curl_tls[@]}"} -m 2 "$(rest_url "$1")/v1/cluster" 2>/dev/null |
		sed -n 's/.*"leader":"\([^"]*\)".*/\1/p' || true
}

# ---- build ----

build() {
	local stale=
	if [ ! -x "$bin" ]; then
		stale="missing"
	elif [ -n "$(find "$root" \( -name '.*' -prune \) -o \( -name '*.go' -o -name go.mod -o -name go.sum \) -newer "$bin" -print -quit 2>/dev/null)" ]; then
		stale="older than the sources"
	fi
	[ -n "$stale" ] || return 0
	command -v go >/dev/null 2>&1 || die "$bin is $stale and go is not installed to build it"
	echo "$prog: building regd into $bin ($stale)"
	mkdir -p "$dir/bin"
	(cd "$root" && go build -buildvcs=false -o "$bin.tmp" ./cmd/regd) || die "go build failed in $root"
	mv -f "$bin.tmp" "$bin"
}

# ---- commands ----

start_member() {
	local i=$1 name=${members[$1]} state=new initial="" j
	for j in 0 1 2; do
		initial+="${initial:+,}${members[$j]}=$(peer_url "$j")"
	done
	[ -d "$dir/$name.regd" ] && state=existing
	local tls_flags=()
	if [ "$use_tls" = 1 ]; then
		local crt=$tls_dir/$name.crt key=$tls_dir/$name.key ca=$tls_dir/ca.crt
		tls_flags=(
			--http-cert-file "$crt" --http-key-file "$key"
			--cert-file "$crt" --key-file "$key" --trusted-ca-file "$ca" --client-cert-auth
			--peer-cert-file "$crt" --peer-key-file "$key" --peer-trusted-ca-file "$ca" --peer-client-cert-auth
		)
	fi
	rm -f "$dir/$name.pid"
	# setsid: own session, so the member survives this script and its
	# terminal; the shell writes its own pid, then execs regd under it. The
	# subshell makes init, not this script, the member's parent.
	(setsid nohup bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$dir/$name.pid" \
		"$bin" --name "$name" --data-dir "$dir/$name.regd" \
		--http-addr "127.0.0.1:${http_port[$i]}" \
		--listen-client-urls "$(client_url "$i")" --advertise-client-urls "$(client_url "$i")" \
		--listen-peer-urls "$(peer_url "$i")" --initial-advertise-peer-urls "$(peer_url "$i")" \
		--initial-cluster "$initial" --initial-cluster-state "$state" \
		--initial-cluster-token regd-cluster3 \
		--log-level "${REGD_CLUSTER_LOG_LEVEL:-info}" \
		${tls_flags[@]+"${tls_flags[@]}"} \
		>>"$dir/$name.log" 2>&1 </dev/null &)
	echo "$prog: started $name ($state) pid-file $dir/$name.pid log $dir/$name.log"
}

cmd_start() {
	load_ports
	local i running=() stopped=()
	for i in 0 1 2; do
		if [ -n "$(pid_of "$i")" ]; then running+=("$i"); else stopped+=("$i"); fi
	done
	if [ ${#stopped[@]} -eq 0 ]; then
		echo "$prog: already running in $dir (pids $(cat "$dir"/m?.pid | tr '\n' ' ')); use '$0 stop --dir $dir' first" >&2
		exit 1
	fi
	build
	[ "$use_tls" = 0 ] || make_certs
	# A brand-new cluster that fails to start is removed again, so the next
	# start (say, on other ports) begins from scratch, not half-bootstrapped.
	fresh=1
	for i in 0 1 2; do
		[ ! -d "$dir/${members[$i]}.regd" ] || fresh=0
	done
	[ -f "$dir/ports" ] || echo "$ports_spec" >"$dir/ports"
	for i in "${stopped[@]}"; do
		start_member "$i"
	done
	# Wait until every member is ready and all agree on a leader.
	local deadline=$((SECONDS + timeout)) leader ok l name
	while :; do
		for i in "${stopped[@]}"; do
			name=${members[$i]}
			if [ ! -f "$dir/$name.pid" ]; then
				continue # the launcher has not written it yet
			fi
			if [ -z "$(pid_of "$i")" ]; then
				echo "$prog: $name exited during start; the end of $dir/$name.log:" >&2
				tail -n 15 "$dir/$name.log" >&2 || true
				abort_start
			fi
		done
		ok=1 leader=
		for i in 0 1 2; do
			if [ "$(http_code "$(rest_url "$i")/readyz")" != 200 ]; then
				ok=0
				break
			fi
			l=$(leader_seen_by "$i")
			if [ -z "$l" ] || { [ -n "$leader" ] && [ "$l" != "$leader" ]; }; then
				ok=0
				break
			fi
			leader=$l
		done
		[ $ok = 1 ] && break
		if [ $SECONDS -ge $deadline ]; then
			echo "$prog: the cluster did not become ready with one leader within ${timeout}s; see $dir/m?.log" >&2
			abort_start
		fi
		sleep 0.2
	done
	for i in 0 1 2; do
		echo "$prog: ${members[$i]} pid $(pid_of "$i") rest $(rest_url "$i") client $(client_url "$i")"
	done
	echo "$prog: leader $leader"
	for i in 0 1 2; do
		echo "$prog: ${members[$i]} data $dir/${members[$i]}.regd log $dir/${members[$i]}.log"
	done
	if [ "$use_tls" = 1 ]; then
		echo "$prog: tls: curl --cacert $tls_dir/ca.crt $(rest_url 0)/v1/services"
		echo "$prog: tls: etcdctl --endpoints $(client_url 0) --cacert $tls_dir/ca.crt --cert $tls_dir/client.crt --key $tls_dir/client.key get --prefix /service/"
	fi
}

# abort_start stops what this start began, so a failed start leaves no
# half-started members behind.
abort_start() {
	local i pid
	for i in "${stopped[@]}"; do
		pid=$(pid_of "$i")
		[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
		rm -f "$dir/${members[$i]}.pid"
	done
	if [ "$fresh" = 1 ]; then
		rm -rf "$dir"/m?.regd "$dir/ports"
	fi
	exit 1
}

# term_and_wait sends SIGTERM to the given members and waits for them to
# exit; after 15 s (regd's shutdown is bounded by its 10 s
# --shutdown-timeout) the ones left get SIGKILL.
term_and_wait() {
	local i pid deadline=$((SECONDS + 15)) left
	for i in "$@"; do
		pid=$(pid_of "$i")
		[ -n "$pid" ] || continue
		echo "$prog: stopping ${members[$i]} (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
	done
	while :; do
		left=0
		for i in "$@"; do
			[ -n "$(pid_of "$i")" ] && left=1
		done
		[ $left = 0 ] && return 0
		if [ $SECONDS -ge $deadline ]; then
			for i in "$@"; do
				pid=$(pid_of "$i")
				if [ -n "$pid" ]; then
					echo "$prog: ${members[$i]} (pid $pid) did not exit within 15s of SIGTERM; sending SIGKILL" >&2
					kill -KILL "$pid" 2>/dev/null || true
				fi
			done
			return 0
		fi
		sleep 0.1
	done
}

cmd_stop() {
	load_ports
	local i leader= running=() followers=() lead=()
	for i in 0 1 2; do
		if [ -n "$(pid_of "$i")" ]; then
			running+=("$i")
			[ -n "$leader" ] || leader=$(leader_seen_by "$i")
		fi
	done
	if [ ${#running[@]} -eq 0 ]; then
		echo "$prog: not running"
		exit 0
	fi
	# Followers first, then the leader: a leader stopping while the others
	# stop too would wait out etcd's request timeout (7 s) trying to hand
	# leadership to a member that is going away; alone, it skips that.
	for i in "${running[@]}"; do
		if [ "${members[$i]}" = "$leader" ]; then lead+=("$i"); else followers+=("$i"); fi
	done
	[ ${#followers[@]} -eq 0 ] || term_and_wait "${followers[@]}"
	[ ${#lead[@]} -eq 0 ] || term_and_wait "${lead[@]}"
	for i in 0 1 2; do
		rm -f "$dir/${members[$i]}.pid"
	done
	echo "$prog: stopped"
}

cmd_status() {
	if [ ! -f "$dir/ports" ]; then
		echo "$prog: not running (no cluster in $dir)"
		exit $exit_not_running
	fi
	load_ports
	local i pid leader= running=0
	for i in 0 1 2; do
		pid=$(pid_of "$i")
		if [ -n "$pid" ]; then
			printf '%s running pid %s rest %s client %s\n' "${members[$i]}" "$pid" "$(rest_url "$i")" "$(client_url "$i")"
			running=$((running + 1))
			[ -n "$leader" ] || leader=$(leader_seen_by "$i")
		else
			printf '%s stopped rest %s client %s\n' "${members[$i]}" "$(rest_url "$i")" "$(client_url "$i")"
		fi
	done
	echo "leader ${leader:-none}"
	if [ $running = 0 ]; then
		echo "$prog: not running (no member of the cluster in $dir runs)"
		exit $exit_not_running
	fi
}

"cmd_$cmd"
