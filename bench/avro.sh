#!/bin/sh
# bench/avro.sh TIDE: reading every field of a 10-field Avro record against
# the same detector on JSON (bench/read_avro.lua, bench/read_json.lua), in
# one run on a development broker of its own; make bench runs it after
# bench/run.sh, and it runs alone too.
#
# Loads BENCH_AVRO_RECORDS (default 1,000,000: the JSON copy, about 170 bytes
# a record, must fit the mock's 5 MiB per partition) into bench-avro (Avro in
# the wire format, by `tide produce --avro`, schema id 1 from
# bench/schemas/1.avsc, no registry: the detector reads the same folder) and
# bench-json (the same records as JSON), then runs each detector over its
# topic in BENCH_ROUNDS (3) interleaved rounds and reports the median rates,
# their ratio and the target (Avro >= 1.5x JSON).
set -u
if [ $# -ne 1 ]; then
	echo "usage: sh bench/avro.sh TIDE" >&2
	exit 2
fi
TIDE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
RECORDS=${BENCH_AVRO_RECORDS:-1000000}
ROUNDS=${BENCH_ROUNDS:-3}
PARTITIONS=64
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench-avro.XXXXXX") || exit 1
broker_pid=
cleanup() {
	[ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
	[ -n "${BENCH_KEEP:-}" ] && say "bench avro: kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
. "$here/lib.sh"

"$TIDE" broker --topic "bench-avro:$PARTITIONS" --topic "bench-json:$PARTITIONS" \
	>"$tmp/broker.out" 2>"$tmp/broker.err" &
broker_pid=$!
wait_broker avro

# The same records for both topics: key|{10 fields as JSON}
cat >"$tmp/gen.lua" <<'LUA'
local n = tonumber(arg[1])
local cur = { "EUR", "USD", "GBP", "CHF" }
local cty = { "FR", "DE", "GB", "US", "ES", "IT" }
for i = 1, n do
  io.write(("k%d|{\"id\":%d,\"card\":\"card-%06d\",\"amount\":%.2f,\"currency\":\"%s\",\"country\":\"%s\",\"merchant\":\"merchant-%04d\",\"time\":%d,\"online\":%s,\"score\":%.3f,\"count\":%d}\n"):format(
    i, 1000000000 + i, i % 100000, (i * 37 % 500000) / 100, cur[i % 4 + 1], cty[i % 6 + 1],
    i % 5000, 1700000000000 + i * 1000, i % 3 == 0 and "true" or "false", (i % 1000) / 1000, i % 100))
end
LUA
luajit "$tmp/gen.lua" "$RECORDS" >"$tmp/records.txt" || exit 1
say "bench avro: loading $RECORDS records into bench-avro (Avro) and bench-json (JSON)"
(cd "$here" && timeout 600 "$TIDE" produce bench-avro -b "$addr" --key-separator '|' \
	--avro schemas/1.avsc <"$tmp/records.txt" >/dev/null 2>"$tmp/produce-avro.err") ||
	{ say "bench avro: loading Avro failed"; tail -n 5 "$tmp/produce-avro.err" >&2; exit 1; }
timeout 600 "$TIDE" produce bench-json -b "$addr" --key-separator '|' <"$tmp/records.txt" \
	>/dev/null 2>"$tmp/produce-json.err" ||
	{ say "bench avro: loading JSON failed"; tail -n 5 "$tmp/produce-json.err" >&2; exit 1; }
rm -f "$tmp/records.txt"

failed=0
run() { # STEP ROUND DETECTOR
	say "bench avro: $1 (round $2 of $ROUNDS)"
	timeout "${BENCH_STEP_TIMEOUT:-300}" "$TIDE" run "$here/$3" -b "$addr" -D "application.id=bench-$1-$$-$2" \
		--count "$RECORDS" >"$tmp/$1.$2.out" 2>"$tmp/$1.$2.err"
	rc=$?
	line=$(grep '"msg": *"stopped"' "$tmp/$1.$2.err" | tail -n 1)
	rate=$(printf '%s' "$line" | sed -n 's/.*"rate": *"\{0,1\}\([0-9.]*\).*/\1/p')
	in=$(printf '%s' "$line" | sed -n 's/.*"records_in": *"\{0,1\}\([0-9]*\).*/\1/p')
	dlq=$(printf '%s' "$line" | sed -n 's/.*"dlq": *"\{0,1\}\([0-9]*\).*/\1/p')
	if [ $rc -ne 0 ] || [ -z "$rate" ] || [ "$in" != "$RECORDS" ] || [ "${dlq:-0}" != 0 ]; then
		say "bench avro: $1 round $2 failed (exit $rc, records_in ${in:-?}, dlq ${dlq:-?})"
		tail -n 10 "$tmp/$1.$2.err" >&2
		failed=1
		return
	fi
	echo "$1 $rate" >>"$tmp/rates"
}
r=1
while [ $r -le "$ROUNDS" ]; do
	run avro $r read_avro.lua
	run json $r read_json.lua
	r=$((r + 1))
done
[ -f "$tmp/rates" ] || exit 1
say "bench avro: decoding alone (bench/avro_micro.lua)"
build=$(dirname "$TIDE")
LUA_PATH="$here/../scripts/?.lua;$here/../scripts/?/init.lua;;" LUA_CPATH="$build/lua/?.so;;" \
	luajit "$here/avro_micro.lua" "$here/schemas/1.avsc" >"$tmp/micro" 2>&1 || { cat "$tmp/micro" >&2; failed=1; }
awk -v records="$RECORDS" '
	function median(a, n,    i, j, t) {
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	{ k = ++n[$1]; r[$1, k] = $2 + 0 }
	END {
		printf "\nAvro against JSON: %d records of a 10-field record, every field read, medians of %d rounds\n\n", records, n["avro"]
		for (s = 1; s <= 2; s++) {
			name = s == 1 ? "avro" : "json"
			for (k = 1; k <= n[name]; k++) a[k] = r[name, k]
			m[name] = n[name] ? median(a, n[name]) : 0
			printf "  %-36s %10.0f records/s  (%.2f-%.2f M/s)\n", "tide " (name == "avro" ? "read_avro.lua (Avro)" : "read_json.lua (JSON)"), m[name], a[1] / 1e6, a[n[name]] / 1e6
		}
		if (m["json"] > 0) {
			x = m["avro"] / m["json"]
			printf "\n  %-36s %6.2f  (target >= 1.5)  %s\n", "Avro / JSON, records/s", x, (x >= 1.5 ? "met" : "not met")
		}
	}' "$tmp/rates"
printf '\nDecoding alone, no Kafka (bench/avro_micro.lua):\n'
cat "$tmp/micro"
exit $failed
