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
#   scripts/cluster3.sh add NAME [--ports C,P,H] [--dir DIR]
#                                            add member NAME to the running cluster the
#                                            safe way: announce it as a learner
#                                            (regd members add), start it with the
#                                            flags that printed, wait until it is
#                                            ready, promote it (regd members promote)
#   scripts/cluster3.sh remove NAME [--dir DIR]
#                                            remove member NAME (regd members remove,
#                                            through another member; refused if the
#                                            cluster would lose its quorum), stop it
#                                            if it runs here, and move its data dir
#                                            aside to NAME.regd.removed
#
# Replacing a dead member (docs/operations.md): `remove m3`, then `add m4`.
# Ports of an added member: --ports client,peer,rest, or for NAME mN (N>3)
# client N*10000+2379, peer N*10000+2380, REST 8080+N (m4: 42379 42380 8084).
# Added members are remembered in DIR/NAME.added (their ports) and started,
# stopped and listed with the others; a removed founder (m1-m3) is marked
# DIR/NAME.removed and not started again. add is not available with --tls
# (the certificates are made for m1-m3 only).
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
	echo "       $0 add NAME [--ports CLIENT,PEER,REST] [--dir DIR] | remove NAME [--dir DIR]" >&2
	echo "exit codes: 0 done (status: a member runs), 3 status: no member runs, 2 bad usage, 1 failed" >&2
	exit 2
}

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$script_dir/.." && pwd)

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
target=
case $cmd in
add | remove)
	[ $# -ge 1 ] || usage
	target=$1
	shift
	[[ $target =~ ^[A-Za-z0-9._-]{1,64}$ ]] || die "member name \"$target\": want 1-64 characters of A-Z a-z 0-9 . _ -"
	;;
esac
target_ports=
dir=${REGD_CLUSTER_DIR:-/tmp/regd-cluster3}
want_tls=0
while [ $# -gt 0 ]; do
	case $1 in
	--ports)
		[ $# -ge 2 ] || usage
		target_ports=$2
		shift 2
		;;
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
case $cmd in start | stop | status | add | remove) ;; *) usage ;; esac

command -v curl >/dev/null 2>&1 || die "curl is required (it polls /readyz and /v1/cluster); install curl and try again"

# status's exit code when no member runs (systemctl status: "inactive").
exit_not_running=3

if [ ! -d "$dir" ]; then
	case $cmd in
	add | remove)
		die "no cluster in $dir; start one first"
		;;
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
	# members and the port arrays go together: the founders m1-m3 that
	# were not removed, then the members added later (DIR/NAME.added).
	members=() client_port=() peer_port=() http_port=()
	founders_initial=""
	local t c p h k=0 f name
	for t in "${triples[@]}"; do
		check_triple "$t" "ports \"$spec\""
		IFS=, read -r c p h <<<"$t"
		name=m$((k + 1))
		k=$((k + 1))
		founders_initial+="${founders_initial:+,}$name=$scheme://127.0.0.1:$p"
		[ ! -f "$dir/$name.removed" ] || continue
		members+=("$name") client_port+=("$c") peer_port+=("$p") http_port+=("$h")
	done
	ports_spec=$spec
	for f in "$dir"/*.added; do
		[ -f "$f" ] || continue
		name=$(basename "$f" .added)
		t=$(cat "$f")
		check_triple "$t" "$f"
		IFS=, read -r c p h <<<"$t"
		members+=("$name") client_port+=("$c") peer_port+=("$p") http_port+=("$h")
	done
}

check_triple() { # check_triple "c,p,h" "where it came from"
	local c p h x
	IFS=, read -r c p h <<<"$1"
	for x in "$c" "$p" "$h"; do
		[[ $x =~ ^[0-9]+$ ]] && [ "$x" -ge 1 ] && [ "$x" -le 65535 ] || die "$2: \"$1\" is not client,peer,rest"
	done
}

index_of() { # index_of NAME: its index in members, or nothing
	local i
	for i in "${!members[@]}"; do
		[ "${members[$i]}" != "$1" ] || echo "$i"
	done
}

client_url() { echo "$scheme://127.0.0.1:${client_port[$1]}"; }
peer_url() { echo "$scheme://127.0.0.1:${peer_port[$1]}"; }
rest_url() { echo "$scheme://127.0.0.1:${http_port[$1]}"; }
# DNS (UDP and TCP) listens 520 above the REST port: 8601-8603 for the
# founders, beside a dev-mode regd's 8600.
dns_addr() { echo "127.0.0.1:$((${http_port[$1]} + 520))"; }

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
	local i=$1 name=${members[$1]} state=new initial=$founders_initial
	[ -d "$dir/$name.regd" ] && state=existing
	if [ -f "$dir/$name.added" ]; then
		# Joined a running cluster: what `regd members add` printed.
		initial=$(cat "$dir/$name.initial")
		state=existing
	fi
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
		--http-addr "127.0.0.1:${http_port[$i]}" --dns-addr "$(dns_addr "$i")" \
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
	for i in "${!members[@]}"; do
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
	for i in "${!members[@]}"; do
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
		for i in "${!members[@]}"; do
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
	for i in "${!members[@]}"; do
		echo "$prog: ${members[$i]} pid $(pid_of "$i") rest $(rest_url "$i") client $(client_url "$i")"
	done
	echo "$prog: leader $leader"
	for i in "${!members[@]}"; do
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
	for i in "${!members[@]}"; do
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
	for i in "${!members[@]}"; do
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
	for i in "${!members[@]}"; do
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

# ---- membership (regd's command line) ----

# regd_client runs the regd binary as a client against the running members
# other than $1 (a name, or nothing).
regd_client() {
	local skip=$1 i eps=""
	shift
	for i in "${!members[@]}"; do
		[ "${members[$i]}" != "$skip" ] || continue
		[ -n "$(pid_of "$i")" ] || continue
		eps+="${eps:+,}$(rest_url "$i")"
	done
	[ -n "$eps" ] || die "no member of the cluster in $dir runs; start it first"
	local tls=()
	[ "$use_tls" = 0 ] || tls=(--cacert "$tls_dir/ca.crt")
	"$bin" "$@" --endpoints "$eps" ${tls[@]+"${tls[@]}"}
}

# json_field KEY: the first "KEY": "value" of regd's indented JSON on stdin.
json_field() { sed -n "s/^ *\"$1\": \"\([^\"]*\)\".*/\1/p" | head -n 1; }

cmd_add() {
	load_ports
	[ "$use_tls" = 0 ] || die "add is not available for a --tls cluster: its certificates are made for m1-m3 only"
	[ -z "$(index_of "$target")" ] || die "$target is a member of the cluster in $dir already"
	[ ! -e "$dir/$target.regd" ] || die "$dir/$target.regd exists; a new member starts from an empty data dir"
	local ports=$target_ports n
	if [ -z "$ports" ]; then
		[[ $target =~ ^m([0-9]+)$ ]] && n=${BASH_REMATCH[1]} && [ "$n" -ge 4 ] && [ "$n" -le 5 ] ||
			die "give $target's ports with --ports CLIENT,PEER,REST (defaults exist for m4 and m5 only)"
		ports="$((n * 10000 + 2379)),$((n * 10000 + 2380)),$((8080 + n))"
	fi
	check_triple "$ports" "--ports"
	build
	local c p h peer out id deadline=$((SECONDS + timeout))
	IFS=, read -r c p h <<<"$ports"
	peer="$scheme://127.0.0.1:$p"
	# etcd refuses a change until the members have been connected for 5 s
	# after a start ("unhealthy cluster"): retry until the timeout.
	while ! out=$(regd_client "" members add "$target" "$peer" --learner -w json 2>&1); do
		[ $SECONDS -lt $deadline ] || die "regd members add $target failed: $out"
		sleep 1
	done
	id=$(json_field id <<<"$out")
	json_field initial_cluster <<<"$out" >"$dir/$target.initial"
	echo "$ports" >"$dir/$target.added"
	echo "$prog: added $target (ID $id) as a learner; starting it"
	load_ports
	local i
	i=$(index_of "$target")
	start_member "$i"
	while [ "$(http_code "$(rest_url "$i")/readyz")" != 200 ]; do
		if [ -f "$dir/$target.pid" ] && [ -z "$(pid_of "$i")" ]; then
			tail -n 15 "$dir/$target.log" >&2 || true
			die "$target exited during start (the end of $dir/$target.log above); remove it with '$0 remove $target --dir $dir'"
		fi
		[ $SECONDS -lt $deadline ] || die "$target did not become ready within ${timeout}s; see $dir/$target.log"
		sleep 0.2
	done
	# A learner is promoted once it has caught up with the leader.
	while ! out=$(regd_client "" members promote "$id" 2>&1); do
		[ $SECONDS -lt $deadline ] || die "regd members promote $id failed: $out"
		sleep 0.5
	done
	echo "$prog: $target pid $(pid_of "$i") rest $(rest_url "$i") client $(client_url "$i"): promoted to a voting member"
	echo "$prog: $target data $dir/$target.regd log $dir/$target.log"
}

cmd_remove() {
	load_ports
	local i id out
	i=$(index_of "$target")
	[ -n "$i" ] || die "$target is not a member of the cluster in $dir"
	out=$(regd_client "$target" members -w json) || die "regd members failed: $out"
	id=$(awk -v want="$target" '
		/"name":/ { name = $2; gsub(/[",]/, "", name) }
		/"id":/ { id = $2; gsub(/[",]/, "", id); if (name == want) { print id; exit } }' <<<"$out")
	[ -n "$id" ] || die "$target is not in the cluster's member list"
	# Through the other members: the quorum rule may refuse (409, final).
	# A 503 (no leader yet after the member died, a change that did not
	# apply in time) is retried until the timeout; a retry of a removal that
	# did apply answers 404.
	local deadline=$((SECONDS + timeout))
	while ! out=$(regd_client "$target" members remove "$id" 2>&1); do
		if [[ $out == *"HTTP 404"* ]]; then
			break
		fi
		[[ $out == *"HTTP 503"* ]] && [ $SECONDS -lt $deadline ] || die "regd members remove $target ($id) failed: $out"
		sleep 1
	done
	echo "$prog: removed $target (ID $id) from the cluster"
	if [ -n "$(pid_of "$i")" ]; then
		term_and_wait "$i" # it stops by itself once removed; this makes sure
	fi
	rm -f "$dir/$target.pid" "$dir/$target.added" "$dir/$target.initial"
	if [ -d "$dir/$target.regd" ]; then
		mv "$dir/$target.regd" "$dir/$target.regd.removed.$(date +%s)"
	fi
	case $target in m1 | m2 | m3) touch "$dir/$target.removed" ;; esac
	echo "$prog: moved its data dir aside; $target is not started again"
}

"cmd_$cmd"
