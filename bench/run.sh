#!/bin/sh
# bench/run.sh TIDE BENCHDIR: tide against plain librdkafka programs, in one run.
#
# Starts `TIDE broker` (librdkafka's mock cluster) in its own process, loads
# 2,000,000 records of 100 random lowercase letters into bench-in with
# `TIDE produce`, then measures, in this order and against the same data,
# in three interleaved rounds:
#
#   plain_consume    hand-written C consumer, batch API, sums every value byte
#   tide read        bench/read_values.lua: reads every value, counts bytes
#   plain_transform  hand-written C text transformer -> bench-out-c
#   tide transform   bench/transform.lua, the same logic -> bench-out-tide
#   tide dsl         bench/transform_dsl.lua, the same in the DSL -> bench-out-dsl
#
# and prints each step's median rate, each process's peak RSS and the two
# ratios tide is held to. BENCHDIR holds the compiled plain programs (`make bench` builds
# them); bench/gen.c is compiled here into BENCHDIR.
#
# Then, against the same broker, `TIDE run DIR` (the supervisor, one worker
# process per detector):
#
#   host_1, host_n   a folder of 1, then BENCH_FLEET (10) copies of
#                    read_values.lua, each its own detector and consumer group
#                    on bench-in: the aggregate rate while all of them run, and
#                    each worker's RSS while busy and idle after
#                    (bench/fleet.lua watches the admin API and /proc); in
#                    ROUNDS rounds, the median rate reported
#   latency          a host on an empty folder; a detector that copies
#                    bench-lat-in (already loaded) to bench-lat-out-K is
#                    renamed into the folder: the time from the rename to its
#                    first record on the output topic, BENCH_LATENCY_RUNS (5)
#                    times, each with a fresh host, detector, topic and group
#                    (bench/first_record.c renames and reads; it is built here
#                    with the Makefile's rule for bench programs)
#
# State stores (BENCH_STATE=0 skips them):
#
#   tide_count       in each round, right after tide_dsl: bench/count_per_key.lua,
#                    a count per key (the first 2 letters of the value: 676
#                    keys per task, about 46 records each) in a RocksDB store,
#                    every write changelogged to
#                    <application.id>.bench-count-per-key-counts-changelog (one
#                    application.id per round), the running count emitted to
#                    bench-out-count: its rate beside tide transform's
#   tide_count_cold  a copy keyed on the first 3 letters (made in the run's
#                    temporary directory): 17,576 keys per task, 1.1M in all,
#                    under 2 records each, so about half the reads find no
#                    key and most of the rest miss the 16 MiB record cache,
#                    which holds about a quarter of them: what RocksDB reads
#                    cost
#   restore          after the rounds, the same detector again with the last
#   restore_cold     round's application.id (so its changelog, and its input
#                    already consumed), an empty
#                    state.dir: every task restores its store from the start
#                    of the changelog the count run wrote (one entry per input
#                    record: 2M entries over 43k keys, and over 1.1M keys for
#                    the cold copy); the rate from the first "restoring store" log
#                    line to the last "task restored" one. It is stopped with
#                    SIGTERM once every task is restored (--idle-timeout-ms
#                    counts from the assignment, restore included, so it
#                    cannot end this step by itself).
#
# Every step is bounded (timeout 300, and the plain programs stop themselves
# after 120 s); the whole run takes about 80 s on 2 cores, plus the state
# section. Exit status: 0 when every
# step ran, 1 when one failed (its log tail is shown). Missing a target is
# reported, not an error: this is a measurement, not a test.
#
# Then bench/failover.sh (its own broker): failover after kill -9 with 0 and
# 1 standby replicas on a store of 2M entries, and a worker's restart with
# and without static membership (BENCH_FAILOVER=0 skips it).
#
# Then bench/avro.sh (its own broker, after this one is stopped): reading
# every field of a 10-field Avro record against the same detector on JSON
# (BENCH_AVRO=0 skips it; it runs alone as `sh bench/avro.sh TIDE`). Then
# bench/eos.sh: exactly_once_v2 against at_least_once, and a restore after
# kill -9 under exactly_once_v2 (BENCH_EOS=0 skips it; `sh bench/eos.sh TIDE`).
#
# BENCH_RECORDS overrides the record count (for a quick smoke run),
# BENCH_ROUNDS the number of rounds (default 3); BENCH_KEEP=1 keeps the
# logs and result lines of every step instead of deleting them.
# BENCH_FLEET sets the number of detectors in the big folder (default 10; 0
# skips the `tide run DIR` section), BENCH_LATENCY_RUNS the number of drop-in
# measurements (default 5). BENCH_STATE=0 skips the state section.
# BENCH_ONLY runs only the sections it names (space- or comma-separated):
# read (plain_consume, tide read), transform (plain_transform, tide
# transform), dsl, state, fleet (tide run DIR), latency (drop-in), avro,
# eos, failover;
# e.g. BENCH_ONLY=transform for the transformer's rows alone.
#
# Every plain and tide run is also timed from the shell, from its exec to
# its exit, as a user times a job: it starts, joins its group, reads (and
# for the transformers produces, every output acknowledged before exit),
# commits (tide), leaves and exits. The report holds both to the same
# targets: steady state (each program's own clock, first record to last
# acknowledgement) and process start to exit.

set -u

if [ $# -ne 2 ]; then
	echo "usage: sh bench/run.sh TIDE BENCHDIR" >&2
	exit 2
fi
TIDE=$1
BENCHDIR=$2
RECORDS=${BENCH_RECORDS:-2000000}
VALUE_BYTES=100
# The mock broker keeps about 5 MiB per partition and silently drops the
# oldest records past that: 2M records of ~110 bytes need 64 partitions.
# The output topics overflow after a round or two; nothing reads them, and
# the cap bounds the broker's memory.
PARTITIONS=64
STEP_TIMEOUT=300
ROUNDS=${BENCH_ROUNDS:-3}
FLEET=${BENCH_FLEET:-10}
LATENCY_RUNS=${BENCH_LATENCY_RUNS:-5}
STATE=${BENCH_STATE:-1}
AVRO=${BENCH_AVRO:-1}
EOS=${BENCH_EOS:-1}
FAILOVER=${BENCH_FAILOVER:-1}
ONLY=$(echo "${BENCH_ONLY:-}" | tr ',' ' ')
# want SECTION: is SECTION to run (BENCH_ONLY empty: all are)?
want() {
	[ -z "$ONLY" ] && return 0
	for w in $ONLY; do [ "$w" = "$1" ] && return 0; done
	return 1
}
want fleet || FLEET=0
want latency || LATENCY_RUNS=0
want state || STATE=0
want avro || AVRO=0
want eos || EOS=0
want failover || FAILOVER=0
# The state section's application.id, hence its changelog topic, which the
# broker is told to create: the mock cannot create topics through the Admin
# API and would auto-create it with 4 partitions, where a changelog needs
# the input's 64. The detector and store names are those of
# bench/count_per_key.lua.
STATE_APP=bench-state-$$
STATE_DETECTOR=bench-count-per-key
# One application.id per round, hence one changelog topic per round; the
# cold copy's are named after its own detector.
COLD_DETECTOR=$STATE_DETECTOR-cold
state_changelog() { echo "$STATE_APP-$1.$STATE_DETECTOR-counts-changelog"; }
cold_changelog() { echo "$STATE_APP-cold-$1.$COLD_DETECTOR-counts-changelog"; }
# The longest the restore step waits for every task to be restored.
RESTORE_WAIT_S=120
# Records in bench-lat-in, what the drop-in detector finds waiting, and the
# partitions of it and of the drop-in output topics.
LAT_RECORDS=1000
LAT_PARTITIONS=4
# How long a host's workers sit idle, caught up, before their RSS is read.
IDLE_S=5

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench.XXXXXX") || exit 1
broker_pid=
host_pid=
failed=0

cleanup() {
	# A host first: its workers die with it (they ask for SIGTERM then).
	if [ -n "$host_pid" ]; then
		kill -9 "$host_pid" 2>/dev/null
		wait "$host_pid" 2>/dev/null
	fi
	if [ -n "$broker_pid" ]; then
		kill "$broker_pid" 2>/dev/null
		wait "$broker_pid" 2>/dev/null
	fi
	if [ -n "${BENCH_KEEP:-}" ]; then
		say "bench: logs kept in $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
# dash runs the EXIT trap only on exit, so turn signals into an exit.
trap 'exit 130' INT TERM HUP

say() { printf '%s\n' "$*" >&2; }

# The last lines of a failed step's log, so the failure explains itself.
show_log() {
	say "--- last lines of $(basename "$1"):"
	tail -n 15 "$1" >&2
	say "---"
}

now_ms() { date +%s%3N; }

# json_num FILE FIELD: the first numeric FIELD of the JSON line(s) in FILE
# (no jq here; the lines are flat objects written by our own programs).
json_num() {
	sed -n "s/.*\"$2\": *\(-\{0,1\}[0-9][0-9.eE+-]*\).*/\1/p" "$1" | head -n 1
}
json_str() {
	sed -n "s/.*\"$2\": *\"\([^\"]*\)\".*/\1/p" "$1" | head -n 1
}

for f in "$TIDE" "$BENCHDIR/plain_consume" "$BENCHDIR/plain_transform"; do
	if [ ! -x "$f" ]; then
		say "bench: $f is missing; run 'make bench'"
		exit 1
	fi
done
if [ "$FLEET" -gt 0 ] && ! luajit -e 'require("cjson")' 2>/dev/null; then
	say "bench: the tide run DIR section needs luajit and lua-cjson (make deps)"
	exit 1
fi

# ---------------------------------------------------------------- broker
: >"$tmp/broker.out"
# The drop-in measurement reads bench-lat-in and writes a fresh output topic
# each time; all of them exist from the start, as topics in production do.
lat_topics="--topic bench-lat-in:$LAT_PARTITIONS"
k=1
while [ $k -le "$LATENCY_RUNS" ]; do
	lat_topics="$lat_topics --topic bench-lat-out-$k:$LAT_PARTITIONS"
	k=$((k + 1))
done
state_topics=
if [ "$STATE" != 0 ]; then
	state_topics="--topic bench-out-count:$PARTITIONS"
	r=1
	while [ $r -le "$ROUNDS" ]; do
		state_topics="$state_topics --topic $(state_changelog $r):$PARTITIONS"
		state_topics="$state_topics --topic $(cold_changelog $r):$PARTITIONS"
		r=$((r + 1))
	done
fi
# shellcheck disable=SC2086 # lat_topics and state_topics are lists of words
"$TIDE" broker --topic "bench-in:$PARTITIONS" --topic "bench-out-c:$PARTITIONS" \
	--topic "bench-out-tide:$PARTITIONS" --topic "bench-out-dsl:$PARTITIONS" $lat_topics $state_topics \
	>"$tmp/broker.out" 2>"$tmp/broker.err" &
broker_pid=$!

# Its first stdout line is the bootstrap address; wait for a whole line.
addr=
i=0
while [ $i -lt 100 ]; do
	if [ "$(wc -l <"$tmp/broker.out")" -ge 1 ]; then
		addr=$(head -n 1 "$tmp/broker.out")
		break
	fi
	if ! kill -0 "$broker_pid" 2>/dev/null; then
		break
	fi
	sleep 0.1
	i=$((i + 1))
done
case $addr in
127.0.0.1:[0-9]*) ;;
*)
	say "bench: the broker gave no bootstrap address within 10 s (got '$addr')"
	show_log "$tmp/broker.err"
	exit 1
	;;
esac

# ---------------------------------------------------------------- load
if ! ${CC:-cc} -O2 -o "$BENCHDIR/gen" "$here/gen.c"; then
	say "bench: cannot compile $here/gen.c"
	exit 1
fi
say "bench: broker at $addr; loading $RECORDS records of $VALUE_BYTES bytes into bench-in ($PARTITIONS partitions)"
# Distinct keys spread the records evenly over the partitions (see gen.c).
t0=$(now_ms)
"$BENCHDIR/gen" "$RECORDS" "$VALUE_BYTES" : |
	timeout "$STEP_TIMEOUT" "$TIDE" produce bench-in -b "$addr" --key-separator : \
		>"$tmp/produce.out" 2>"$tmp/produce.err"
rc=$?
load_ms=$(($(now_ms) - t0))
if [ $rc -ne 0 ]; then
	say "bench: tide produce failed (exit $rc)"
	show_log "$tmp/produce.err"
	exit 1
fi
# The drop-in detector's input, and one marker record at the head of each of
# its output topics: the reader that waits for the first output prints the
# marker first, which tells it is reading before the detector lands.
if [ "$LATENCY_RUNS" -gt 0 ]; then
	"$BENCHDIR/gen" "$LAT_RECORDS" "$VALUE_BYTES" : |
		timeout 60 "$TIDE" produce bench-lat-in -b "$addr" --key-separator : \
			>"$tmp/produce-lat.out" 2>"$tmp/produce-lat.err"
	rc=$?
	k=1
	while [ $rc -eq 0 ] && [ $k -le "$LATENCY_RUNS" ]; do
		p=0
		while [ $p -lt $LAT_PARTITIONS ]; do
			echo "{\"value\": \"marker\", \"partition\": $p}"
			p=$((p + 1))
		done | timeout 60 "$TIDE" produce "bench-lat-out-$k" -b "$addr" --json \
			>>"$tmp/produce-lat.out" 2>>"$tmp/produce-lat.err"
		rc=$?
		k=$((k + 1))
	done
	if [ $rc -ne 0 ]; then
		say "bench: loading the drop-in topics failed (exit $rc)"
		show_log "$tmp/produce-lat.err"
		exit 1
	fi
fi

# ---------------------------------------------------------------- measure
# One run of a step leaves <step>.<round>.json holding its result line; a
# failed run leaves none. Rates on a shared 2-core machine with the broker
# in the loop vary by +-20% from run to run, so the five steps run in
# ROUNDS interleaved rounds and the report takes each step's median.

run_plain() { # STEP ROUND PROGRAM ARGS...
	run=$1.$2
	say "bench: $1 (round $2 of $ROUNDS)"
	shift 2
	t0=$(now_ms)
	timeout "$STEP_TIMEOUT" "$@" >"$tmp/$run.out" 2>"$tmp/$run.err"
	rc=$?
	t1=$(now_ms)
	if [ $rc -eq 0 ] && grep -q '"rate"' "$tmp/$run.out"; then
		grep '"rate"' "$tmp/$run.out" | tail -n 1 >"$tmp/$run.json"
		echo "wall ${run%.*} $((t1 - t0))" >"$tmp/$run.wall"
	else
		say "bench: $run failed (exit $rc)"
		show_log "$tmp/$run.err"
		failed=1
	fi
}

run_tide() { # STEP ROUND DETECTOR
	run=$1.$2
	say "bench: $1 (round $2 of $ROUNDS)"
	# A fresh application.id, hence consumer group, reads from the start.
	t0=$(now_ms)
	timeout "$STEP_TIMEOUT" "$TIDE" run "$3" -b "$addr" -D "application.id=bench-$1-$$-$2" \
		--count "$RECORDS" >"$tmp/$run.out" 2>"$tmp/$run.err"
	rc=$?
	t1=$(now_ms)
	# The result is the "stopped" log line on stderr.
	grep '"msg": *"stopped"' "$tmp/$run.err" | tail -n 1 >"$tmp/$run.json"
	if [ $rc -ne 0 ] || [ -z "$(json_num "$tmp/$run.json" rate)" ]; then
		say "bench: $run failed (exit $rc)"
		show_log "$tmp/$run.err"
		rm -f "$tmp/$run.json"
		failed=1
	else
		echo "wall $1 $((t1 - t0))" >"$tmp/$run.wall"
	fi
}

# The stateful detector (BENCH_STATE=0 skips it) runs in each round right
# after the stateless transformer it is compared with, under the same
# conditions; each round has its own application.id, changelog and state.dir.
run_count() { # ROUND [cold]
	step=tide_count app=$STATE_APP-$1 detector=$here/count_per_key.lua
	if [ "${2:-}" = cold ]; then
		step=tide_count_cold app=$STATE_APP-cold-$1 detector=$cold
	fi
	say "bench: $step (round $1 of $ROUNDS): $(basename "$detector"), a RocksDB store and its changelog"
	run=$step.$1
	timeout "$STEP_TIMEOUT" "$TIDE" run "$detector" -b "$addr" \
		-D "application.id=$app" -D "state.dir=$tmp/state-$run" --count "$RECORDS" \
		>"$tmp/$run.out" 2>"$tmp/$run.err"
	rc=$?
	grep '"msg": *"stopped"' "$tmp/$run.err" | tail -n 1 >"$tmp/$run.json"
	# A worker that cannot write its changelog stops at once, "stopped" with
	# no records: only a run over every record counts.
	if [ $rc -ne 0 ] || [ -z "$(json_num "$tmp/$run.json" rate)" ] ||
		[ "$(json_num "$tmp/$run.json" records_in)" != "$RECORDS" ]; then
		say "bench: $run failed (exit $rc)"
		show_log "$tmp/$run.err"
		rm -f "$tmp/$run.json"
		failed=1
		return 1
	fi
}

# The cold copy: the same detector keyed on 3 letters, under its own name.
# Both names must be the ones the broker made changelog topics for (the
# mock would make a missing one with 4 partitions).
cold=$tmp/count_per_key_cold.lua
sed -e 's/rec\.value:sub(1, 2)/rec.value:sub(1, 3)/' \
	-e "s/name = \"$STATE_DETECTOR\"/name = \"$COLD_DETECTOR\"/" \
	"$here/count_per_key.lua" >"$cold"
if [ "$STATE" != 0 ] && { ! grep -q "name = \"$STATE_DETECTOR\"" "$here/count_per_key.lua" ||
	! grep -q "name = \"$COLD_DETECTOR\"" "$cold" || ! grep -q 'sub(1, 3)' "$cold"; }; then
	say "bench: $here/count_per_key.lua is not named $STATE_DETECTOR or does not key on"
	say "bench: rec.value:sub(1, 2); the state section is skipped"
	failed=1
	STATE=0
fi

round=1
count_ok=
cold_ok=
while [ $round -le "$ROUNDS" ]; do
	if want read; then
		run_plain plain_consume $round "$BENCHDIR/plain_consume" "$addr" bench-in "$RECORDS"
		run_tide tide_read $round "$here/read_values.lua"
	fi
	if want transform; then
		run_plain plain_transform $round "$BENCHDIR/plain_transform" "$addr" bench-in bench-out-c "$RECORDS"
		run_tide tide_transform $round "$here/transform.lua"
	fi
	want dsl && run_tide tide_dsl $round "$here/transform_dsl.lua"
	if [ "$STATE" != 0 ]; then
		run_count $round && count_ok=$round
		run_count $round cold && cold_ok=$round
	fi
	round=$((round + 1))
done

# ---------------------------------------------------------------- tide run DIR
# The supervisor: one worker process per detector file in a folder. Each step
# leaves <step>.res holding its result lines; a failed step leaves none.

# wait_log FILE SED_EXPR: the first match of a host's log, waiting up to 15 s
# while the host lives; empty when none came.
wait_log() {
	i=0
	while [ $i -lt 150 ]; do
		m=$(sed -n "$2" "$1" | head -n 1)
		if [ -n "$m" ]; then
			echo "$m"
			return 0
		fi
		kill -0 "$host_pid" 2>/dev/null || return 1
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

# start_host STEP DIR: `TIDE run DIR` on our broker, admin server on a free
# port; sets host_pid and port (empty when it did not come up).
start_host() {
	# A fresh application.id, hence consumer groups, reads from the start.
	"$TIDE" run "$2" -b "$addr" -D admin.port=0 -D "application.id=bench-$1-$$" \
		>"$tmp/$1.out" 2>"$tmp/$1.err" &
	host_pid=$!
	port=$(wait_log "$tmp/$1.err" \
		's/.*admin server listening on http:\/\/127\.0\.0\.1:\([0-9][0-9]*\)\/.*/\1/p')
	# The folder is watched once this is logged.
	[ -n "$port" ] && wait_log "$tmp/$1.err" '/watching .* for detectors/p' >/dev/null
}

# stop_host: SIGTERM (every worker commits and leaves its group), bounded by
# 30 s, then SIGKILL. Returns the host's exit status.
stop_host() {
	[ -n "$host_pid" ] || return 0
	kill "$host_pid" 2>/dev/null
	i=0
	while kill -0 "$host_pid" 2>/dev/null && [ $i -lt 300 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	kill -9 "$host_pid" 2>/dev/null
	wait "$host_pid" 2>/dev/null
	rc=$?
	host_pid=
	return $rc
}

step_failed() { # STEP REASON
	say "bench: $1 failed ($2)"
	show_log "$tmp/$1.err"
	rm -f "$tmp/$1.res"
	failed=1
}

# run_host STEP N ROUND: N copies of read_values.lua, each under its own
# name, in one folder, one host: every one reads all of bench-in in its own
# group. Leaves STEP.ROUND.res.
run_host() {
	say "bench: tide run DIR, $2 detector(s) on bench-in (round $3 of $ROUNDS)"
	run=$1.$3
	dir="$tmp/$run.d"
	mkdir -p "$dir"
	k=1
	while [ $k -le "$2" ]; do
		sed "s/^  name = \"read-values\",/  name = \"read-values-$k\",/" "$here/read_values.lua" \
			>"$dir/read-values-$k.lua"
		if ! grep -q "name = \"read-values-$k\"" "$dir/read-values-$k.lua"; then
			say "bench: cannot rename the detector in $here/read_values.lua"
			failed=1
			return
		fi
		k=$((k + 1))
	done
	if ! start_host "$run" "$dir"; then
		stop_host
		step_failed "$run" "the host did not come up"
		return
	fi
	# Polls the admin API every 100 ms until all are assigned, then until
	# all are done; then IDLE_S s idle. The supervisor's RSS is read then.
	timeout "$STEP_TIMEOUT" luajit "$here/fleet.lua" watch "$port" "$2" "$RECORDS" 240 "$IDLE_S" \
		>"$tmp/$run.watch" 2>>"$tmp/$run.err"
	rc=$?
	sup_rss=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$host_pid/status" 2>/dev/null)
	sed "s/^\([a-z]*\) /\1 $1 /" "$tmp/$run.watch" >"$tmp/$run.res"
	echo "sup $1 ${sup_rss:--}" >>"$tmp/$run.res"
	stop_host
	hrc=$?
	if [ $rc -ne 0 ]; then
		step_failed "$run" "watching the admin API: exit $rc"
	elif [ $hrc -ne 0 ]; then
		step_failed "$run" "the host exited $hrc"
	elif grep -q '"level": *"\(warn\|error\)"' "$tmp/$run.err"; then
		# a restarted worker, say, would be measured twice: say so
		say "bench: $run: the host logged warnings or errors:"
		grep '"level": *"\(warn\|error\)"' "$tmp/$run.err" | head -n 5 >&2
	fi
}

# run_latency K: a host on an empty folder; a detector copying bench-lat-in
# to bench-lat-out-K is renamed into it. first_record (bench/first_record.c)
# reads bench-lat-out-K until it has its markers, renames the file into the
# folder and times the wait for the next record: the detector's first output.
run_latency() {
	step=latency.$1
	say "bench: drop-in to first output record (run $1 of $LATENCY_RUNS)"
	dir="$tmp/$step.d"
	mkdir -p "$dir"
	if ! start_host "$step" "$dir"; then
		stop_host
		step_failed "$step" "the host did not come up"
		return
	fi
	# Written beside (a hidden file is no detector), then renamed into place.
	cat >"$dir/.lat-$1.tmp" <<LUA
return {
  name = "bench-lat-$1",
  inputs = { "bench-lat-in" },
  outputs = { "bench-lat-out-$1" },
  process = function(rec, ctx)
    ctx:emit("bench-lat-out-$1", rec.key, rec.value)
  end,
}
LUA
	timeout 60 "$BENCHDIR/first_record" "$addr" "bench-lat-out-$1" "$LAT_PARTITIONS" \
		"$dir/.lat-$1.tmp" "$dir/lat-$1.lua" 30000 >"$tmp/$step.first" 2>>"$tmp/$step.err"
	rc=$?
	stop_host
	hrc=$?
	ms=$(json_num "$tmp/$step.first" ms)
	if [ $rc -ne 0 ] || [ -z "$ms" ]; then
		step_failed "$step" "first_record exited $rc"
	elif [ $hrc -ne 0 ]; then
		step_failed "$step" "the host exited $hrc"
	else
		echo "lat $1 $ms" >"$tmp/$step.res"
	fi
}

if [ "$LATENCY_RUNS" -gt 0 ]; then
	# Built by the Makefile's rule for bench programs (the same librdkafka
	# as the plain programs); `make bench` does not list it itself.
	build_dir=$(cd "$BENCHDIR/.." && pwd)
	if ! make --no-print-directory -s -C "$here/.." BUILD="$build_dir" \
		"$build_dir/bench/first_record" >"$tmp/first_record.build" 2>&1 ||
		[ "$(cd "$BENCHDIR" && pwd)" != "$build_dir/bench" ]; then
		say "bench: cannot build first_record into $BENCHDIR; drop-in latency skipped"
		show_log "$tmp/first_record.build"
		LATENCY_RUNS=0
		failed=1
	fi
fi
if [ "$FLEET" -gt 0 ]; then
	round=1
	while [ $round -le "$ROUNDS" ]; do
		run_host host_1 1 $round
		run_host host_n "$FLEET" $round
		round=$((round + 1))
	done
fi
k=1
while [ $k -le "$LATENCY_RUNS" ]; do
	run_latency $k
	k=$((k + 1))
done

# ---------------------------------------------------------------- state
# The restore of each count's store (the count's and the cold copy's) from
# the changelog its last round wrote. Each leaves STEP.res; a failed step
# leaves none.

# ts_ms: the milliseconds of the day of each "ts" field on stdin.
ts_ms() {
	sed -n 's/.*"ts": *"[^"]*T\([0-9][0-9]\):\([0-9][0-9]\):\([0-9][0-9]\)\.\([0-9]*\)Z".*/\1 \2 \3 \4/p' |
		awk '{ printf "%d\n", (($1 * 60 + $2) * 60 + $3) * 1000 + $4 }'
}

# run_restore: the same detector, same application.id, an empty state.dir;
# waits until every task that had a changelog to read logged "task restored"
# (or RESTORE_WAIT_S), then SIGTERM. Leaves STEP.res: "restore STEP RECORDS
# TO_READ TASKS WALL_MS MAX_TASK_MS RSS_KB".
run_restore() { # STEP DETECTOR APPLICATION_ID
	step=$1
	say "bench: $step: $(basename "$2")'s store from its changelog (empty state dir)"
	# The idle timeout is a backstop only: it counts from the assignment.
	"$TIDE" run "$2" -b "$addr" -D "application.id=$3" \
		-D "state.dir=$tmp/state-$step" --idle-timeout-ms $((RESTORE_WAIT_S * 1000)) \
		>"$tmp/$step.out" 2>"$tmp/$step.err" &
	host_pid=$!
	i=0
	ok=
	while [ $i -lt $((RESTORE_WAIT_S * 10)) ]; do
		# Tasks start (and log "restoring store") before "partitions assigned".
		if grep -q '"msg": *"partitions assigned"' "$tmp/$step.err"; then
			n_start=$(grep '"msg": *"restoring store' "$tmp/$step.err" |
				sed -n 's/.*"partition": *\([0-9]*\).*/\1/p' | sort -u | wc -l)
			n_done=$(grep -c '"msg": *"task restored"' "$tmp/$step.err")
			if [ "$n_start" -gt 0 ] && [ "$n_done" -ge "$n_start" ]; then
				ok=1
				break
			fi
		fi
		kill -0 "$host_pid" 2>/dev/null || break
		sleep 0.1
		i=$((i + 1))
	done
	stop_host
	hrc=$?
	if [ -z "$ok" ]; then
		if [ $i -ge $((RESTORE_WAIT_S * 10)) ]; then
			step_failed "$step" "not every task restored within $RESTORE_WAIT_S s"
		else
			step_failed "$step" "tide exited $hrc before every task was restored"
		fi
		return 1
	fi
	[ $hrc -eq 0 ] || say "bench: $step: tide exited $hrc after the restore (SIGTERM)"
	to_read=$(sed -n 's/.*"msg": *"restoring store from its changelog: \([0-9]*\) record.*/\1/p' \
		"$tmp/$step.err" | awk '{ n += $1 } END { print n + 0 }')
	records=$(grep '"msg": *"task restored"' "$tmp/$step.err" |
		sed -n 's/.*"records": *"\{0,1\}\([0-9]*\).*/\1/p' | awk '{ n += $1 } END { print n + 0 }')
	max_task=$(grep '"msg": *"task restored"' "$tmp/$step.err" |
		sed -n 's/.*"elapsed_ms": *"\{0,1\}\([0-9]*\).*/\1/p' |
		awk '$1 > m { m = $1 } END { print m + 0 }')
	first=$(grep '"msg": *"restoring store' "$tmp/$step.err" | head -n 1 | ts_ms)
	last=$(grep '"msg": *"task restored"' "$tmp/$step.err" | tail -n 1 | ts_ms)
	wall=$((last - first))
	[ $wall -ge 0 ] || wall=$((wall + 86400000)) # past midnight
	rss=$(grep '"msg": *"stopped"' "$tmp/$step.err" | tail -n 1 |
		sed -n 's/.*"max_rss_kb": *\([0-9]*\).*/\1/p')
	echo "restore $step $records $to_read $n_start $wall $max_task ${rss:--}" >"$tmp/$step.res"
}

if [ "$STATE" != 0 ]; then
	[ -n "$count_ok" ] && run_restore restore "$here/count_per_key.lua" "$STATE_APP-$count_ok"
	[ -n "$cold_ok" ] && run_restore restore_cold "$cold" "$STATE_APP-cold-$cold_ok"
fi

# The broker holds every record of the run; its peak shows what the mock costs.
broker_rss_kb=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$broker_pid/status" 2>/dev/null)

# ---------------------------------------------------------------- report
field() { # RUN FIELD: the number, or "-" when absent
	v=$(json_num "$tmp/$1.json" "$2")
	echo "${v:--}"
}

rdk=
for f in "$tmp"/plain_*.json; do
	[ -f "$f" ] && rdk=$(json_str "$f" librdkafka) && break
done
# The librdkafka tide links: from `tide version`, else from its logs (it
# logs rd_kafka_version_str() at start).
tide_rdk=$({ "$TIDE" version; cat "$tmp"/tide_*.err "$tmp/broker.err"; } 2>/dev/null |
	sed -n 's/.*librdkafka[^0-9]*\([0-9][0-9.]*[0-9]\).*/\1/p' | head -n 1)

# One "res" line per successful run: step, rate, peak RSS, elapsed, records
# read and records produced (tide names them records_in and records_out).
{
	echo "records $RECORDS"
	echo "value_bytes $VALUE_BYTES"
	echo "partitions $PARTITIONS"
	echo "rounds $ROUNDS"
	echo "load_ms $load_ms"
	echo "rdk ${rdk:--}"
	echo "tide_rdk ${tide_rdk:--}"
	echo "broker_rss ${broker_rss_kb:--}"
	echo "fleet_n $FLEET"
	echo "latency_runs $LATENCY_RUNS"
	echo "only $(echo "${ONLY:-all}" | tr ' ' ',')"
	echo "idle_s $IDLE_S"
	echo "state $STATE"
	for f in "$tmp"/host_*.*.res "$tmp"/latency.*.res "$tmp"/restore*.res "$tmp"/*.wall; do
		[ -f "$f" ] && cat "$f"
	done
	for f in "$tmp"/*.json; do
		[ -f "$f" ] || continue
		run=$(basename "$f" .json)
		case $run in
		tide_*) in=records_in out=records_out ;;
		*) in=records out=produced ;;
		esac
		echo "res ${run%.*} $(field "$run" rate) $(field "$run" max_rss_kb)" \
			"$(field "$run" elapsed_ms) $(field "$run" $in) $(field "$run" $out)"
	done
} | awk '
	function mb(kb) { return kb == "-" ? "-" : sprintf("%.1f", kb / 1024) }
	# Was section sec run (BENCH_ONLY)?
	function wanted(sec) { return v["only"] == "all" || index("," v["only"] ",", "," sec ",") > 0 }
	# The median of the n values in a[1..n]; sorts a.
	function median(a, n,    i, j, t) {
		for (i = 2; i <= n; i++)
			for (j = i; j > 1 && a[j - 1] > a[j]; j--) {
				t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
			}
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function ratio(label, a, b, target,    r) {
		if (a == "" || b == "" || b == 0) {
			printf "  %-46s %6s  (target >= %.1f)\n", label, "n/a", target
			return
		}
		r = a / b
		printf "  %-46s %6.2f  (target >= %.1f)  %s\n", label, r, target,
			(r >= target ? "met" : "not met")
	}
	$1 == "res" {
		s = $2; k = ++n[s]
		rate[s, k] = $3 + 0; el[s, k] = $5 + 0; peak[s, k] = $4
		if ($6 != "-" && $6 + 0 != v["records"])
			warn[++nw] = sprintf("%s read %s records, expected %s", s, $6, v["records"])
		if ($7 != "-") { out[s] = $7; if (!(s in outmin) || $7 + 0 < outmin[s]) outmin[s] = $7 + 0 }
		next
	}
	# tide run DIR: "fleet STEP N RECORDS_IN_WINDOW WINDOW_MS RECORDS_BEFORE ASSIGN_MS",
	# "worker STEP NAME PID BUSY_RSS_KB HWM_KB IDLE_RSS_KB API_RSS_BYTES",
	# "sup STEP RSS_KB" (see bench/fleet.lua), "lat RUN MS" (bench/first_record.c)
	$1 == "fleet" {
		s = $2; fn[s] = $3
		if ($5 > 0) { k = ++nfl[s]; frate[s, k] = $4 * 1000 / $5; fwin[s, k] = $5 }
		next
	}
	$1 == "worker" {
		s = $2; k = ++nwk[s]
		wbusy[s, k] = $5; whwm[s, k] = $6; widle[s, k] = $7
		next
	}
	$1 == "sup" { if ($3 != "-" && $3 + 0 > sup[$2] + 0) sup[$2] = $3; next }
	# "wall STEP MS": one run of a plain or tide step from exec to exit
	$1 == "wall" { k = ++nwall[$2]; wall[$2, k] = $3 + 0; next }
	$1 == "lat" { lat[++nlat] = $3 / 1000; next }
	# "restore STEP RECORDS TO_READ TASKS WALL_MS MAX_TASK_MS RSS_KB" (the state section)
	$1 == "restore" {
		rs_n[$2] = $3; rs_read[$2] = $4; rs_tasks[$2] = $5; rs_wall[$2] = $6; rs_max[$2] = $7
		rs_rss[$2] = $8
		next
	}
	{ v[$1] = $2 }
	END {
		printf "\ntide bench: %d records of %d bytes on %d partitions, mock broker on 127.0.0.1\n",
			v["records"], v["value_bytes"], v["partitions"]
		printf "librdkafka %s (plain programs), %s (tide)\n", v["rdk"],
			v["tide_rdk"] == "-" ? "not found in its logs" : v["tide_rdk"]
		printf "loaded by tide produce in %.1f s; %s\n\n", v["load_ms"] / 1000,
			v["rounds"] == 1 ? "one round" : "each figure is the median of " v["rounds"] " rounds"
		printf "  %-30s %10s %13s %7s %12s %11s\n", "", "records/s", "range (M/s)", "time s",
			"start-exit s", "peak RSS MB"
		split("plain_consume tide_read plain_transform tide_transform tide_dsl", order, " ")
		name["plain_consume"] = "plain C consumer (batch API)"
		name["tide_read"] = "tide read_values.lua"
		name["plain_transform"] = "plain C text transformer"
		name["tide_transform"] = "tide transform.lua"
		name["tide_dsl"] = "tide transform_dsl.lua (DSL)"
		section["plain_consume"] = section["tide_read"] = "read"
		section["plain_transform"] = section["tide_transform"] = "transform"
		section["tide_dsl"] = "dsl"
		for (i = 1; i <= 5; i++)
			if (n[order[i]] || wanted(section[order[i]])) rate_row(order[i], name[order[i]])
		printf "  %-30s %10s %13s %7s %12s %11s\n", "mock broker (tide broker)", "", "", "", "",
			mb(v["broker_rss"])
		printf "  (time: first record to last one, or to the last output acknowledged; start-exit:\n"
		printf "  from exec to exit, as a user times a job; peak RSS: median of the rounds)\n\n"
		if (wanted("read")) {
			ratio("tide read_values / plain consumer", med["tide_read"], med["plain_consume"], 0.9)
			# the same record count: the ratio of the rates is that of the times
			ratio("  the same, process start to exit", medwall["plain_consume"], medwall["tide_read"], 1.0)
		}
		if (wanted("transform")) {
			ratio("tide transformer / plain transformer", med["tide_transform"], med["plain_transform"], 1.0)
			ratio("  the same, process start to exit", medwall["plain_transform"],
				medwall["tide_transform"], 1.0)
			rss_target("tide transformer peak RSS over plain C", "tide_transform", "plain_transform", 20)
		}
		if (wanted("dsl"))
			ratio("DSL transformer / hand-written", med["tide_dsl"], med["tide_transform"], 0.9)
		if (("tide_dsl" in out) && ("tide_transform" in out) && outmin["tide_dsl"] != outmin["tide_transform"])
			warn[++nw] = sprintf("the DSL transformer emitted %d records, the hand-written one %d",
				outmin["tide_dsl"], outmin["tide_transform"])
		# Both transformers see the same fixed data, so they must emit as many.
		if (("plain_transform" in out) && ("tide_transform" in out) &&
		    outmin["plain_transform"] != outmin["tide_transform"])
			warn[++nw] = sprintf("the transformers emitted %d (plain) and %d (tide) records",
				outmin["plain_transform"], outmin["tide_transform"])
		if (v["fleet_n"] > 0) fleet_report()
		if (nlat || v["latency_runs"] > 0) latency_report()
		if (v["state"] != 0) state_report()
		for (i = 1; i <= nw; i++)
			printf "  warning: %s\n", warn[i]
	}
	# "median/max" in MB of field f (wbusy, whwm, widle) over the workers of s
	function rss_of(s, f,    k, n, a, x) {
		n = 0
		for (k = 1; k <= nwk[s]; k++) {
			x = f == "busy" ? wbusy[s, k] : f == "hwm" ? whwm[s, k] : widle[s, k]
			if (x != "-") a[++n] = x / 1024
		}
		if (!n) return "-"
		median(a, n)
		if (n == 1) return sprintf("%.1f", a[1])
		return sprintf("%.1f/%.1f", median(a, n), a[n])
	}
	function rss_max(s, f,    k, m, x) {
		m = -1
		for (k = 1; k <= nwk[s]; k++) {
			x = f == "hwm" ? whwm[s, k] : widle[s, k]
			if (x != "-" && x + 0 > m) m = x + 0
		}
		return m
	}
	# One row of a table: step s over its rounds (median rate, its range,
	# median time, median time from exec to exit, median peak RSS), or
	# "failed"; sets med[s], medwall[s] and rss[s].
	function rate_row(s, label,    a, b, c, d, k, nc, w) {
		if (!n[s]) {
			printf "  %-30s %10s\n", label, "failed"
			return
		}
		nc = 0
		for (k = 1; k <= n[s]; k++) {
			a[k] = rate[s, k]; b[k] = el[s, k]
			if (peak[s, k] != "-") d[++nc] = peak[s, k] + 0
		}
		for (k = 1; k <= nwall[s]; k++) c[k] = wall[s, k]
		med[s] = median(a, n[s])
		if (nwall[s]) medwall[s] = median(c, nwall[s])
		if (nc) rss[s] = median(d, nc)
		w = nwall[s] ? sprintf("%.2f", medwall[s] / 1000) : "-"
		printf "  %-30s %10.0f %13s %7.2f %12s %11s\n", label, med[s],
			sprintf("%.2f-%.2f", a[1] / 1e6, a[n[s]] / 1e6), median(b, n[s]) / 1000, w,
			nc ? mb(rss[s]) : "-"
	}
	# The peak RSS of step s against that of step base plus `extra` MB.
	function rss_target(label, s, base, extra,    d) {
		if (!(s in rss) || !(base in rss)) {
			printf "  %-46s %6s  (target <= %d MB)\n", label, "n/a", extra
			return
		}
		d = (rss[s] - rss[base]) / 1024
		printf "  %-46s %+5.0f MB  (target <= %d MB)  %s\n", label, d, extra,
			(d <= extra ? "met" : "not met")
	}
	# The rate of a restore step: records over the wall time from the first
	# "restoring store" log line to the last "task restored" one.
	function restore_rate(t) { return rs_wall[t] > 0 ? rs_n[t] * 1000 / rs_wall[t] : 0 }
	function restore_row(t, label, count) {
		if (restore_rate(t) > 0)
			printf "  %-30s %10.0f %13s %7.2f %12s %11s\n", label, restore_rate(t), "",
				rs_wall[t] / 1000, "", mb(rs_rss[t])
		else
			printf "  %-30s %10s\n", label, (n[count] ? "failed" : "not run")
	}
	function restore_ratio(t, label,    r) {
		r = restore_rate(t)
		if (r <= 0) {
			printf "  %-46s %6s  (target >= 200k/s)\n", label, "n/a"
			return
		}
		printf "  %-46s %6.0fk/s (target >= 200k/s)  %s\n", label, r / 1000,
			(r >= 200000 ? "met" : "not met")
		printf "    (%d records over %d tasks; the slowest task took %.2f s: %.0f records/s)\n",
			rs_n[t], rs_tasks[t], rs_max[t] / 1000, (rs_max[t] > 0 ? rs_n[t] * 1000 / rs_max[t] : 0)
		if (rs_n[t] != rs_read[t])
			warn[++nw] = sprintf("%s read %d records of the %d it announced", t, rs_n[t], rs_read[t])
		if (rs_n[t] != v["records"])
			warn[++nw] = sprintf("%s: the changelog held %d records, expected %d (one per input record)",
				t, rs_n[t], v["records"])
	}
	function state_report(    s) {
		printf "\nstate stores: bench/count_per_key.lua counts per key (the first 2 letters of\n"
		printf "the value: 676 keys per task, about %d records each) in a RocksDB store, every\n", v["records"] / 43264
		printf "write changelogged; the cold copy keys on 3 letters (1.1M keys, %.1f records\n", v["records"] / 1124864
		printf "each); then each on an empty state dir restores its store from its changelog\n\n"
		printf "  %-30s %10s %13s %7s %12s %11s\n", "", "records/s", "range (M/s)", "time s",
			"", "peak RSS MB"
		s = "tide_count"
		rate_row(s, "tide count_per_key.lua")
		if (n["tide_count_cold"]) rate_row("tide_count_cold", "  the same, cold keys")
		restore_row("restore", "restore from the changelog", s)
		restore_row("restore_cold", "  the same, cold keys", "tide_count_cold")
		printf "\n"
		ratio("tide count_per_key / tide transform", med[s], med["tide_transform"], 0.5)
		if (n["tide_count_cold"])
			printf "  %-46s %6.2f  (1.1M keys: most reads go to RocksDB)\n",
				"  the same, cold keys", med["tide_count_cold"] / med["tide_transform"]
		restore_ratio("restore", "changelog restore, records/s")
		restore_ratio("restore_cold", "  the same, cold keys")
		if (("tide_count" in out) && out["tide_count"] + 0 != v["records"])
			warn[++nw] = sprintf("tide count_per_key emitted %d records, expected %d",
				out["tide_count"], v["records"])
	}
	function fleet_report(    i, k, s, r, label, m, a, b) {
		printf "\ntide run DIR: one worker process per detector; each detector reads all of\n"
		printf "bench-in in its own consumer group; rates are medians of %s, RSS per worker\n",
			v["rounds"] == 1 ? "one round" : v["rounds"] " rounds"
		printf "in MB, median/max over the workers of every round\n\n"
		printf "  %-26s %10s %12s %10s %7s %10s %10s %10s %7s\n", "", "records/s", "range (M/s)",
			"per det.", "time s", "busy RSS", "peak RSS", "idle RSS", "host MB"
		split("host_1 host_n", order, " ")
		label["host_1"] = "1 detector"
		label["host_n"] = v["fleet_n"] " detectors (aggregate)"
		for (i = 1; i <= 2; i++) {
			s = order[i]
			if (!nfl[s]) {
				printf "  %-26s %10s\n", label[s], "failed"
				continue
			}
			for (k = 1; k <= nfl[s]; k++) { a[k] = frate[s, k]; b[k] = fwin[s, k] }
			r[s] = median(a, nfl[s])
			printf "  %-26s %10.0f %12s %10.0f %7.2f %10s %10s %10s %7s\n", label[s], r[s],
				sprintf("%.2f-%.2f", a[1] / 1e6, a[nfl[s]] / 1e6), r[s] / fn[s],
				median(b, nfl[s]) / 1000, rss_of(s, "busy"), rss_of(s, "hwm"), rss_of(s, "idle"),
				sup[s] == "-" || sup[s] == "" ? "-" : sprintf("%.1f", sup[s] / 1024)
		}
		printf "  (time: from every detector assigned to the last one done; busy: largest VmRSS\n"
		printf "  seen while reading, every 100 ms; peak: VmHWM; idle: VmRSS %s s after the last\n", v["idle_s"]
		printf "  record; host: the supervisor process)\n\n"
		if (("host_1" in r) && ("host_n" in r))
			printf "  %-46s %6.2f\n", v["fleet_n"] " detectors / 1 detector, aggregate records/s",
				r["host_n"] / r["host_1"]
		m = rss_max("host_n", "idle")
		if (rss_max("host_1", "idle") > m) m = rss_max("host_1", "idle")
		if (m >= 0)
			printf "  %-46s %6.1f MB  (target <= 20 MB)  %s\n",
				"idle worker RSS, largest", m / 1024,
				(m / 1024 <= 20 ? "met" : "not met")
	}
	# `tide run DIR` on an empty folder, a detector dropped in: the time to
	# its first output record (bench/first_record.c), median over the runs.
	function latency_report(    i, a, m) {
		printf "\n"
		if (!nlat) {
			printf "  %-46s %6s\n", "file dropped in -> first output record", "failed"
			return
		}
		for (i = 1; i <= nlat; i++) a[i] = lat[i]
		m = median(a, nlat)
		printf "  %-46s %6.3f s   (target <= 0.3 s)  %s\n", "file dropped in -> first output record, median",
			m, (m <= 0.3 ? "met" : "not met")
		printf "  %-46s %s\n", "", sprintf("min %.3f s, max %.3f s over %d runs", a[1], a[nlat], nlat)
	}'

# ---------------------------------------------------------------- avro
# avro, eos and failover each run on a broker of their own: this one goes
# first (it holds every record of the run).
stop_broker() {
	[ -n "$broker_pid" ] || return 0
	kill "$broker_pid" 2>/dev/null
	wait "$broker_pid" 2>/dev/null
	broker_pid=
}

if [ "$AVRO" != 0 ]; then
	stop_broker
	sh "$here/avro.sh" "$TIDE" || failed=1
fi

# ---------------------------------------------------------------- exactly-once
if [ "$EOS" != 0 ]; then
	stop_broker
	sh "$here/eos.sh" "$TIDE" || failed=1
fi

# ---------------------------------------------------------------- failover
# kill -9 of an instance with 0 and 1 standby replicas, and of a worker with
# and without static membership (BENCH_FAILOVER=0 skips it; it runs alone as
# `sh bench/failover.sh TIDE BENCHDIR`), on a broker of its own.
if [ "$FAILOVER" != 0 ]; then
	stop_broker
	sh "$here/failover.sh" "$TIDE" "$BENCHDIR" || failed=1
fi

exit $failed
