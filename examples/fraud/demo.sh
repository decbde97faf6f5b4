#!/bin/sh
# `make demo`: the fraud diamond in one tide host, on a development broker,
# with the status page. Runs until Ctrl-C (or DEMO_SECONDS, for a bounded run).
# Everything is on 127.0.0.1.
set -eu
TIDE=${1:-build/tide}
PORT=${ADMIN_PORT:-8642}
WORK=$(mktemp -d /tmp/tide-fraud-demo.XXXXXX)
APP=fraud-demo
BROKER_PID= HOST_PID=
cleanup() {
	[ -n "$HOST_PID" ] && kill "$HOST_PID" 2>/dev/null && wait "$HOST_PID" 2>/dev/null
	[ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null
	true
}
trap cleanup EXIT
trap 'exit 0' INT TERM
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "A development broker in its own process"
# The pipeline's topics, and the changelogs of the stores the DSL detectors
# (amount_spike, velocity, new_country) keep their per-card state in.
"$TIDE" broker --topic auths-raw:4 --topic auths:4 --topic alerts:4 --topic notifications:4 \
	--topic "$APP.amount_spike-baselines-changelog:4" --topic "$APP.velocity-recent-changelog:4" \
	--topic "$APP.new_country-countries-changelog:4" \
	>"$WORK/addr" 2>"$WORK/broker.log" &
BROKER_PID=$!
i=0
while [ ! -s "$WORK/addr" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
ADDR=$(head -n 1 "$WORK/addr")
echo "broker at $ADDR"

step "The detectors, copied to a folder you can play with: $WORK/detectors"
mkdir -p "$WORK/detectors"
cp examples/fraud/*.lua "$WORK/detectors/"
ls "$WORK/detectors"

step "tide run $WORK/detectors (one worker per detector)"
# The broker is new, so the stores start empty too: a state directory of its
# own, rather than one that remembers the cards of the last demo.
"$TIDE" run "$WORK/detectors" -b "$ADDR" -D application.id="$APP" -D admin.port="$PORT" \
	-D state.dir="$WORK/state" 2>"$WORK/host.log" &
HOST_PID=$!
i=0
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -gt 300 ] || ! kill -0 "$HOST_PID" 2>/dev/null; then
		echo "the host did not become ready; its log:" >&2
		tail -20 "$WORK/host.log" >&2
		exit 1
	fi
	sleep 0.1
done
echo "all detectors running"

step "Feed 3000 synthetic card authorisations (with fraud patterns and malformed records)"
luajit examples/fraud/tools/generator.lua 3000 7 | "$TIDE" produce auths-raw --json -b "$ADDR"

step "Notifications so far"
"$TIDE" consume notifications -b "$ADDR" --from-beginning --idle-timeout-ms 2000 | head -8
echo "..."

cat <<HELP

  Status page:  http://127.0.0.1:$PORT/        (metrics: /metrics, API: /api/detectors)
  Host log:     $WORK/host.log

  Try it while it runs:
    cp examples/text_transformer.lua $WORK/detectors/        # a new detector starts
    \$EDITOR $WORK/detectors/velocity.lua                     # save: hot swap; break it: old version stays
    rm $WORK/detectors/new_country.lua                       # stops, leaves its group
    luajit examples/fraud/tools/generator.lua 3000 8 | $TIDE produce auths-raw --json -b $ADDR

  Ctrl-C stops everything.
HELP
if [ -n "${DEMO_SECONDS:-}" ]; then
	sleep "$DEMO_SECONDS"
else
	wait "$HOST_PID"
fi
