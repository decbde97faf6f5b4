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
#
# and prints each step's median rate, each process's peak RSS and the two
# ratios tide is held to. BENCHDIR holds the compiled plain programs (`make bench` builds
# them); bench/gen.c is compiled here into BENCHDIR.
#
# Every step is bounded (timeout 300, and the plain programs stop themselves
# after 120 s); the whole run takes about a minute. Exit status: 0 when every
# step ran, 1 when one failed (its log tail is shown). Missing a target is
# reported, not an error: this is a measurement, not a test.
#
# BENCH_RECORDS overrides the record count (for a quick smoke run),
# BENCH_ROUNDS the number of rounds (default 3); BENCH_KEEP=1 keeps the
# logs and result lines of every step instead of deleting them.

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

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench.XXXXXX") || exit 1
broker_pid=
failed=0

cleanup() {
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

# ---------------------------------------------------------------- broker
: >"$tmp/broker.out"
"$TIDE" broker --topic "bench-in:$PARTITIONS" --topic "bench-out-c:$PARTITIONS" \
	--topic "bench-out-tide:$PARTITIONS" >"$tmp/broker.out" 2>"$tmp/broker.err" &
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

# ---------------------------------------------------------------- measure
# One run of a step leaves <step>.<round>.json holding its result line; a
# failed run leaves none. Rates on a shared 2-core machine with the broker
# in the loop vary by +-20% from run to run, so the four steps run in
# ROUNDS interleaved rounds and the report takes each step's median.

run_plain() { # STEP ROUND PROGRAM ARGS...
	run=$1.$2
	say "bench: $1 (round $2 of $ROUNDS)"
	shift 2
	timeout "$STEP_TIMEOUT" "$@" >"$tmp/$run.out" 2>"$tmp/$run.err"
	rc=$?
	if [ $rc -eq 0 ] && grep -q '"rate"' "$tmp/$run.out"; then
		grep '"rate"' "$tmp/$run.out" | tail -n 1 >"$tmp/$run.json"
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
	timeout "$STEP_TIMEOUT" "$TIDE" run "$3" -b "$addr" -D "application.id=bench-$1-$$-$2" \
		--count "$RECORDS" >"$tmp/$run.out" 2>"$tmp/$run.err"
	rc=$?
	# The result is the "stopped" log line on stderr.
	grep '"msg": *"stopped"' "$tmp/$run.err" | tail -n 1 >"$tmp/$run.json"
	if [ $rc -ne 0 ] || [ -z "$(json_num "$tmp/$run.json" rate)" ]; then
		say "bench: $run failed (exit $rc)"
		show_log "$tmp/$run.err"
		rm -f "$tmp/$run.json"
		failed=1
	fi
}

round=1
while [ $round -le "$ROUNDS" ]; do
	run_plain plain_consume $round "$BENCHDIR/plain_consume" "$addr" bench-in "$RECORDS"
	run_tide tide_read $round "$here/read_values.lua"
	run_plain plain_transform $round "$BENCHDIR/plain_transform" "$addr" bench-in bench-out-c "$RECORDS"
	run_tide tide_transform $round "$here/transform.lua"
	round=$((round + 1))
done

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
			printf "  %-38s %6s  (target >= %.1f)\n", label, "n/a", target
			return
		}
		r = a / b
		printf "  %-38s %6.2f  (target >= %.1f)  %s\n", label, r, target,
			(r >= target ? "ok" : "BELOW TARGET")
	}
	$1 == "res" {
		s = $2; k = ++n[s]
		rate[s, k] = $3 + 0; el[s, k] = $5 + 0
		if ($4 != "-" && $4 + 0 > rss[s]) rss[s] = $4 + 0
		if ($6 != "-" && $6 + 0 != v["records"])
			warn[++nw] = sprintf("%s read %s records, expected %s", s, $6, v["records"])
		if ($7 != "-") { out[s] = $7; if (!(s in outmin) || $7 + 0 < outmin[s]) outmin[s] = $7 + 0 }
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
		printf "  %-30s %10s %15s %8s %12s\n", "", "records/s", "range (M/s)", "time s", "peak RSS MB"
		split("plain_consume tide_read plain_transform tide_transform", order, " ")
		name["plain_consume"] = "plain C consumer (batch API)"
		name["tide_read"] = "tide read_values.lua"
		name["plain_transform"] = "plain C text transformer"
		name["tide_transform"] = "tide transform.lua"
		for (i = 1; i <= 4; i++) {
			s = order[i]
			if (!n[s]) {
				printf "  %-30s %10s %15s %8s %12s\n", name[s], "failed", "", "", ""
				continue
			}
			for (k = 1; k <= n[s]; k++) { a[k] = rate[s, k]; b[k] = el[s, k] }
			med[s] = median(a, n[s])
			printf "  %-30s %10.0f %15s %8.2f %12s\n", name[s], med[s],
				sprintf("%.2f-%.2f", a[1] / 1e6, a[n[s]] / 1e6), median(b, n[s]) / 1000, mb(rss[s])
		}
		printf "  %-30s %10s %15s %8s %12s\n\n", "mock broker (tide broker)", "", "", "", mb(v["broker_rss"])
		ratio("tide read_values / plain consumer", med["tide_read"], med["plain_consume"], 0.9)
		ratio("tide transformer / plain transformer", med["tide_transform"], med["plain_transform"], 1.0)
		# Both transformers see the same fixed data, so they must emit as many.
		if (("plain_transform" in out) && ("tide_transform" in out) &&
		    outmin["plain_transform"] != outmin["tide_transform"])
			warn[++nw] = sprintf("the transformers emitted %d (plain) and %d (tide) records",
				outmin["plain_transform"], outmin["tide_transform"])
		for (i = 1; i <= nw; i++)
			printf "  warning: %s\n", warn[i]
	}'

exit $failed
