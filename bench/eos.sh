#!/bin/sh
# bench/eos.sh TIDE: what exactly_once_v2 costs and what it restores, on a
# development broker of its own; make bench runs it after bench/run.sh, and
# it runs alone too.
#
# 1. The transformer (bench/transform.lua) over BENCH_EOS_RECORDS (default
#    1,000,000) records under exactly_once_v2 and under at_least_once, each at
#    its default commit interval (100 ms and 5 s), in BENCH_ROUNDS (3)
#    interleaved rounds: the ratio of the median rates (target >= 0.8; Kafka
#    Streams loses about 10-30% at 100 ms).
# 2. Restore after kill -9 under exactly_once_v2: a count per key over
#    BENCH_EOS_KEYS (default 1,000,000) distinct keys (1M store entries),
#    killed once every input is counted; then a restart, whose "task
#    restored" lines say how many changelog records it read. Target: within
#    2x of the changelog records written since the last checkpoint (the
#    changelog's end minus the checkpoint file's offsets), not the whole
#    changelog. (The mock keeps no transactional offsets, so the restart
#    would read its inputs again from the start: it is stopped once it has
#    restored.)
set -u
if [ $# -ne 1 ]; then
	echo "usage: sh bench/eos.sh TIDE" >&2
	exit 2
fi
TIDE=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
RECORDS=${BENCH_EOS_RECORDS:-1000000}
KEYS=${BENCH_EOS_KEYS:-1000000}
ROUNDS=${BENCH_ROUNDS:-3}
PARTITIONS=64
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tide-bench-eos.XXXXXX") || exit 1
broker_pid=
tide_pid=
cleanup() {
	[ -n "$tide_pid" ] && kill -9 "$tide_pid" 2>/dev/null
	[ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
	[ -n "${BENCH_KEEP:-}" ] && say "bench eos: kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
. "$here/lib.sh"

# The count's internal topics exist up front with the inputs' partition count
# (the mock cannot create them through the Admin API).
"$TIDE" broker --topic "bench-in:$PARTITIONS" --topic "bench-out-tide:$PARTITIONS" \
	--topic "eos-keys:$PARTITIONS" --topic "eos-counts:$PARTITIONS" \
	--topic "bench-eos-restore.eos-count-counts-changelog:$PARTITIONS" \
	--topic "bench-eos-restore.eos-count-dlq:$PARTITIONS" \
	>"$tmp/broker.out" 2>"$tmp/broker.err" &
broker_pid=$!
wait_broker eos

say "bench eos: loading $RECORDS records into bench-in and $KEYS keys into eos-keys"
awk -v n="$RECORDS" 'BEGIN { for (i = 1; i <= n; i++) printf "k%d|value %d of about a hundred bytes, half of them with an a in them, padded out to size\n", i % 1000, i }' |
	timeout 600 "$TIDE" produce bench-in -b "$addr" --key-separator '|' >/dev/null 2>"$tmp/produce.err" ||
	{ say "bench eos: loading bench-in failed"; tail -n 5 "$tmp/produce.err" >&2; exit 1; }
awk -v n="$KEYS" 'BEGIN { for (i = 1; i <= n; i++) printf "key-%07d|x\n", i }' |
	timeout 600 "$TIDE" produce eos-keys -b "$addr" --key-separator '|' >/dev/null 2>"$tmp/produce-keys.err" ||
	{ say "bench eos: loading eos-keys failed"; tail -n 5 "$tmp/produce-keys.err" >&2; exit 1; }

field() { # FIELD LINE: a number field of a JSON log line
	printf '%s' "$2" | sed -n "s/.*\"$1\": *\"\{0,1\}\([0-9.]*\).*/\1/p"
}

failed=0
transform() { # GUARANTEE ROUND
	say "bench eos: transformer, $1 (round $2 of $ROUNDS)"
	timeout "${BENCH_STEP_TIMEOUT:-300}" "$TIDE" run "$here/transform.lua" -b "$addr" \
		-D "application.id=bench-eos-$1-$$-$2" -D "processing.guarantee=$1" \
		-D "state.dir=$tmp/state-$1-$2" --count "$RECORDS" >/dev/null 2>"$tmp/$1.$2.err"
	rc=$?
	line=$(grep '"msg": *"stopped"' "$tmp/$1.$2.err" | tail -n 1)
	rate=$(field rate "$line")
	in=$(field records_in "$line")
	if [ $rc -ne 0 ] || [ -z "$rate" ] || [ "$in" != "$RECORDS" ]; then
		say "bench eos: $1 round $2 failed (exit $rc, records_in ${in:-?})"
		tail -n 10 "$tmp/$1.$2.err" >&2
		failed=1
		return
	fi
	echo "$1 $rate" >>"$tmp/rates"
}
r=1
while [ $r -le "$ROUNDS" ]; do
	transform exactly_once_v2 $r
	transform at_least_once $r
	r=$((r + 1))
done

# 2. Restore after kill -9.
cat >"$tmp/count.lua" <<'LUA'
return {
  name = "eos-count", inputs = { "eos-keys" }, outputs = { "eos-counts" },
  stores = { counts = tide.kv() },
  process = function(rec, ctx)
    local n = (ctx.stores.counts:get(rec.key) or 0) + 1
    ctx.stores.counts:put(rec.key, n)
  end,
}
LUA
state="$tmp/state-restore"
app=bench-eos-restore
changelog="$app.eos-count-counts-changelog"
count_changelog() { # records on the changelog
	timeout 300 "$TIDE" consume "$changelog" -b "$addr" --from-beginning --idle-timeout-ms 1000 2>/dev/null | wc -l
}
await_changelog() { # N: wait until the changelog holds N records (or fail)
	waited=0
	while [ "$(count_changelog)" -lt "$1" ]; do
		waited=$((waited + 1))
		if [ $waited -gt 150 ] || ! kill -0 "$tide_pid" 2>/dev/null; then
			say "bench eos: the count did not write $1 changelog records"
			tail -n 10 "$tmp/count.err" >&2
			exit 1
		fi
	done
}
say "bench eos: counting $KEYS keys under exactly_once_v2 (a store of $KEYS entries)"
"$TIDE" run "$tmp/count.lua" -b "$addr" -D "application.id=$app" -D processing.guarantee=exactly_once_v2 \
	-D "state.dir=$state" >/dev/null 2>"$tmp/count.err" &
tide_pid=$!
await_changelog "$KEYS"
# Then updates of those keys, killed in the middle of them (once the
# checkpoint, written once a second, shows a quarter of them): what it does
# not cover is what a restart must read.
more=$KEYS
awk -v n="$more" -v k="$KEYS" 'BEGIN { for (i = 1; i <= n; i++) printf "key-%07d|x\n", (i * 7919) % k + 1 }' |
	"$TIDE" produce eos-keys -b "$addr" --key-separator '|' >/dev/null 2>"$tmp/produce-more.err" &
feeder=$!
checkpointed() {
	awk '$1 == "counts" { s += $3 } END { print s + 0 }' "$state/$app/eos-count/checkpoint" 2>/dev/null || echo 0
}
waited=0
while [ "$(checkpointed)" -lt $((KEYS + more / 4)) ]; do
	sleep 0.05
	waited=$((waited + 1))
	if [ $waited -gt 6000 ] || ! kill -0 "$tide_pid" 2>/dev/null; then
		say "bench eos: no checkpoint past $((KEYS + more / 4))"
		exit 1
	fi
done
kill -9 "$tide_pid"
wait "$tide_pid" 2>/dev/null
tide_pid=
wait "$feeder"
# Changelog records at or past the checkpoint's offset of their partition.
timeout 300 "$TIDE" consume "$changelog" -b "$addr" --from-beginning --json --idle-timeout-ms 1000 \
	>"$tmp/changelog.jsonl" 2>/dev/null
written=$(wc -l <"$tmp/changelog.jsonl")
since=$(awk '
	FNR == NR { if ($1 == "counts") ck[$2] = $3; next }
	{
		p = $0; sub(/.*"partition": */, "", p); sub(/[^0-9].*/, "", p)
		o = $0; sub(/.*"offset": */, "", o); sub(/[^0-9].*/, "", o)
		if (o + 0 >= (p in ck ? ck[p] : 0)) n++
	}
	END { print n + 0 }' "$state/$app/eos-count/checkpoint" "$tmp/changelog.jsonl")
say "bench eos: restarting after kill -9 ($written changelog records, $since past the checkpoint)"
"$TIDE" run "$tmp/count.lua" -b "$addr" -D "application.id=$app" -D processing.guarantee=exactly_once_v2 \
	-D "state.dir=$state" >/dev/null 2>"$tmp/restart.err" &
tide_pid=$!
waited=0
while ! grep -q 'Restoration took' "$tmp/restart.err" 2>/dev/null; do
	sleep 0.2
	waited=$((waited + 1))
	if [ $waited -gt 600 ] || ! kill -0 "$tide_pid" 2>/dev/null; then
		say "bench eos: the restart did not restore"
		tail -n 10 "$tmp/restart.err" >&2
		failed=1
		break
	fi
done
kill -9 "$tide_pid" 2>/dev/null
wait "$tide_pid" 2>/dev/null
tide_pid=
restored=$(grep '"task restored"' "$tmp/restart.err" | sed -n 's/.*"records": *\([0-9]*\).*/\1/p' |
	awk '{ s += $1 } END { print s + 0 }')
ms=$(grep 'Restoration took' "$tmp/restart.err" | sed -n 's/.*"elapsed_ms": *\([0-9]*\).*/\1/p' | tail -n 1)

[ -f "$tmp/rates" ] || exit 1
awk -v records="$RECORDS" -v written="$written" -v since="$since" -v restored="$restored" \
	-v ms="${ms:-0}" -v keys="$KEYS" '
	function median(a, n,    i, j, t) {
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	{ k = ++n[$1]; r[$1, k] = $2 + 0 }
	END {
		printf "\nexactly_once_v2: the transformer over %d records, medians of %d rounds, each guarantee at its default commit interval\n\n", records, n["exactly_once_v2"]
		split("exactly_once_v2 at_least_once", names, " ")
		for (s = 1; s <= 2; s++) {
			name = names[s]
			for (k = 1; k <= n[name]; k++) a[k] = r[name, k]
			m[name] = n[name] ? median(a, n[name]) : 0
			printf "  %-36s %10.0f records/s  (%.2f-%.2f M/s)\n", "tide transform.lua, " name, m[name], a[1] / 1e6, a[n[name]] / 1e6
		}
		if (m["at_least_once"] > 0) {
			x = m["exactly_once_v2"] / m["at_least_once"]
			verdict = x >= 0.8 ? "met" : "not met"
			printf "\n  %-36s %6.2f  (target >= 0.8)  %s\n", "exactly_once_v2 / at_least_once", x, verdict
		}
		printf "\nRestore after kill -9 under exactly_once_v2, a store of %d entries:\n\n", keys
		printf "  %-44s %d\n", "changelog records", written
		printf "  %-44s %d\n", "  past the last checkpoint", since
		printf "  %-44s %d  (in %d ms)\n", "  restored by the restart", restored, ms
		ok = restored <= 2 * (since > 0 ? since : 1) && restored < written
		ratio = since > 0 ? sprintf("%.2f", restored / since) : "-"
		verdict = ok ? "met" : "not met"
		printf "  %-44s %s  (target <= 2, and not the whole changelog)  %s\n", "restored / past the checkpoint", ratio, verdict
	}' "$tmp/rates"
exit $failed
