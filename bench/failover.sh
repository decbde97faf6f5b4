#!/bin/sh
# bench/failover.sh TIDE BENCHDIR: how long work stops when a process dies,
# on a development broker of its own; make bench runs it after bench/run.sh.
#
#   failover    two `tide run DIR` instances share bench/failover_count.lua
#               (a count per key in a RocksDB store) over BENCH_FAILOVER_RECORDS
#               (2,000,000) records with distinct keys: a store of 2M entries,
#               about 1M on each instance. Once both are settled, and the one
#               to kill has committed its partitions to their end, it is killed (kill -9 of its whole process group) and the time to
#               the survivor's first output from the killed one's partitions
#               is measured (bench/failover_probe.c), with num.standby.replicas
#               0 (the survivor restores the moved tasks' whole changelog) and
#               1 (it restores only the tail past its standby copy). The
#               survivor's "Restoration took" line says what it restored.
#   restart     one instance on BENCH_FAILOVER_SMALL (100,000) records; its
#               worker is killed (kill -9) once its partitions are committed,
#               and the supervisor restarts it: the
#               time to its first output, with static membership
#               (group.instance.id=auto, the default) and without (none).
#
# Every other setting is tide's default (session.timeout.ms 10 s, which a
# failover waits for; commit.interval.ms 5 s). Bounded: each step times out.
# BENCH_KEEP=1 keeps the logs. Exit 0 when every step ran.
set -u
if [ $# -ne 2 ]; then
	echo "usage: sh bench/failover.sh TIDE BENCHDIR" >&2
	exit 2
fi
TIDE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
BENCHDIR=$(cd "$2" && pwd)
RECORDS=${BENCH_FAILOVER_RECORDS:-2000000}
SMALL=${BENCH_FAILOVER_SMALL:-100000}
PARTITIONS=32
DETECTOR=bench-failover
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench-failover.XXXXXX") || exit 1
pids=
failed=0
. "$here/lib.sh"
cleanup() {
	for p in $pids; do kill -9 -- "-$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
	[ -n "${BENCH_KEEP:-}" ] && say "bench failover: kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

[ -x "$BENCHDIR/failover_probe" ] || { say "bench failover: failover_probe is missing; run 'make bench'"; exit 1; }
${CC:-cc} -O2 -o "$BENCHDIR/gen" "$here/gen.c" || { say "bench failover: cannot compile gen.c"; exit 1; }

changelog() { echo "$1.$DETECTOR-counts-changelog:$PARTITIONS"; }
setsid "$TIDE" broker --topic "fo-in:$PARTITIONS" --topic "fo-out:$PARTITIONS" \
	--topic "fs-in:$PARTITIONS" --topic "$(changelog bench-fo-0)" --topic "$(changelog bench-fo-1)" \
	--topic "$(changelog bench-fs-auto)" --topic "$(changelog bench-fs-none)" \
	>"$tmp/broker.out" 2>"$tmp/broker.err" &
broker=$!
pids="$broker"
wait_broker failover

say "bench failover: loading $RECORDS records with distinct keys into fo-in, $SMALL into fs-in"
"$BENCHDIR/gen" "$RECORDS" 8 : | timeout 300 "$TIDE" produce fo-in -b "$addr" --key-separator : \
	>/dev/null 2>"$tmp/produce.err" || { say "bench failover: loading failed"; exit 1; }
"$BENCHDIR/gen" "$SMALL" 8 : | timeout 120 "$TIDE" produce fs-in -b "$addr" --key-separator : \
	>/dev/null 2>"$tmp/produce-small.err" || { say "bench failover: loading failed"; exit 1; }

# start NAME APP INPUT [-D k=v]...: a `tide run DIR` instance in a process
# group of its own; sets $inst_pid and $inst_port.
start() {
	name=$1 app=$2 input=$3
	shift 3
	mkdir -p "$tmp/$name/dir"
	sed "s/\"fo-in\"/\"$input\"/" "$here/failover_count.lua" >"$tmp/$name/dir/failover_count.lua"
	setsid "$TIDE" run "$tmp/$name/dir" -b "$addr" -D "application.id=$app" -D admin.port=0 \
		-D "state.dir=$tmp/$name/state" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
	inst_pid=$!
	pids="$pids $inst_pid"
	inst_port=
	i=0
	while [ $i -lt 200 ] && [ -z "$inst_port" ]; do
		inst_port=$(sed -n 's/.*admin server listening on http:\/\/127\.0\.0\.1:\([0-9]*\)\/.*/\1/p' \
			"$tmp/$name.err" | head -n 1)
		[ -n "$inst_port" ] || sleep 0.05
		i=$((i + 1))
	done
	[ -n "$inst_port" ]
}

stop() { kill -TERM "$1" 2>/dev/null; i=0; while kill -0 "$1" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done; }

# failover REPLICAS: prints "failover REPLICAS MS RESTORED RESTORE_MS"
failover() {
	r=$1
	start "a$r" "bench-fo-$r" fo-in -D "num.standby.replicas=$r" || return 1
	a_pid=$inst_pid a_port=$inst_port
	start "b$r" "bench-fo-$r" fo-in -D "num.standby.replicas=$r" || return 1
	b_pid=$inst_pid b_port=$inst_port
	say "bench failover: $r standby replica(s): waiting for both instances to settle"
	out=$(timeout 600 luajit "$here/failover.lua" settled 540 "$RECORDS" "$r" "$a_port" "$b_port") ||
		return 1
	set -- $out
	parts=$1
	mark=$(wc -l <"$tmp/b$r.err")
	"$BENCHDIR/failover_probe" "$addr" fo-in fo-out "$parts" "-$a_pid" 180000 \
		"bench-fo-$r.$DETECTOR" >"$tmp/probe$r.json" \
		2>"$tmp/probe$r.err" || { cat "$tmp/probe$r.err" >&2; return 1; }
	ms=$(sed -n 's/.*"ms":\([0-9]*\).*/\1/p' "$tmp/probe$r.json")
	# the survivor's restore of the moved tasks: every "task restored" line
	# since the kill (none when its copies were up to date)
	timeout 300 luajit "$here/failover.lua" alone 240 "$b_port" >/dev/null || return 1
	set -- $(tail -n "+$((mark + 1))" "$tmp/b$r.err" | grep '"msg":"task restored"' |
		sed -n 's/.*"records":\([0-9]*\),"elapsed_ms":\([0-9]*\).*/\1 \2/p' |
		awk '{ n += $1; if ($2 > t) t = $2 } END { printf "%d %d", n, t }')
	restored=$1 took=$2
	kill_ms=$(sed -n 's/.*"kill_wall_ms":\([0-9]*\).*/\1/p' "$tmp/probe$r.json")
	out_ms=$(sed -n 's/.*"out_wall_ms":\([0-9]*\).*/\1/p' "$tmp/probe$r.json")
	split=$(luajit "$here/failover.lua" split "$tmp/b$r.err" "$mark" "$kill_ms" "$out_ms")
	stop "$b_pid"
	echo "failover $r $ms $restored $took $split"
}

# restart MODE (auto|none): prints "restart MODE MS"
restart() {
	start "s-$1" "bench-fs-$1" fs-in -D "group.instance.id=$1" || return 1
	s_pid=$inst_pid
	mode=$1
	out=$(timeout 300 luajit "$here/failover.lua" settled 240 "$SMALL" 0 "$inst_port") || return 1
	set -- $out
	parts=$1 worker=$2
	"$BENCHDIR/failover_probe" "$addr" fs-in fo-out "$parts" "$worker" 180000 \
		"bench-fs-$mode.$DETECTOR" >"$tmp/probe-$mode.json" \
		2>"$tmp/probe-$mode.err" || { cat "$tmp/probe-$mode.err" >&2; return 1; }
	stop "$s_pid"
	echo "restart $mode $(sed -n 's/.*"ms":\([0-9]*\).*/\1/p' "$tmp/probe-$mode.json")"
}

{
	failover 0 || { say "bench failover: the failover without standbys failed"; failed=1; }
	failover 1 || { say "bench failover: the failover with a standby failed"; failed=1; }
	restart auto || { say "bench failover: the restart as a static member failed"; failed=1; }
	restart none || { say "bench failover: the restart as a dynamic member failed"; failed=1; }
} >"$tmp/results"

awk -v records="$RECORDS" -v small="$SMALL" '
	$1 == "failover" { f[$2] = $3; rs[$2] = $4; rt[$2] = $5; gd[$2] = $6; ga[$2] = $7 }
	$1 == "restart" { s[$2] = $3 }
	function sec(ms) { return ms == "" ? "failed" : sprintf("%.1f s", ms / 1000) }
	END {
		printf "\nfailover: kill -9 of an instance until the survivor'"'"'s first output from its tasks;\n"
		printf "a store of %d entries (about half on each of two instances), default settings\n", records
		printf "(session.timeout.ms 10 s)\n\n"
		printf "  %-22s %9s %11s %14s %22s\n", "", "failover", "to assigned", "then to output",
			"restored by survivor"
		for (r = 0; r <= 1; r++)
			printf "  %-22s %9s %11s %14s %22s\n", r " standby replica" (r == 1 ? "" : "s"), sec(f[r]),
				gd[r] == "-" ? "-" : sec(gd[r]), ga[r] == "-" ? "-" : sec(ga[r]),
				rs[r] == "" ? "-" : sprintf("%d in %.1f s", rs[r], rt[r] / 1000)
		printf "  (to assigned: the group noticing the death (session.timeout.ms) and the\n"
		printf "  rebalance; then: restoring and processing the first record; restored:\n"
		printf "  changelog records the survivor read for the moved tasks, and its slowest\n"
		printf "  task'"'"'s restore time)\n"
		printf "\nrestart: kill -9 of a worker until its restart'"'"'s first output (%d records)\n\n", small
		printf "  %-36s %10s\n", "static membership (group.instance.id=auto)", sec(s["auto"])
		printf "  %-36s %10s\n", "dynamic membership (none)", sec(s["none"])
		printf "  (the development broker ignores group.instance.id in classic groups: both\n"
		printf "  wait for the dead member'"'"'s session; a real Kafka hands a static member its\n"
		printf "  partitions back at once)\n"
	}' "$tmp/results"
exit $failed
