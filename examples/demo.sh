#!/bin/sh
# `make run`: the text transformer on the development broker, step by step.
# Everything runs on 127.0.0.1 and stops by itself.
set -eu
TIDE=${1:-build/tide}
DIR=$(mktemp -d /tmp/tide-demo.XXXXXX)
BROKER_PID=
cleanup() {
	[ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true
	rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Start a development broker (librdkafka's mock cluster) in its own process"
"$TIDE" broker --topic text-input:4 --topic text-output:4 >"$DIR/addr" 2>"$DIR/broker.log" &
BROKER_PID=$!
i=0
while [ ! -s "$DIR/addr" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
ADDR=$(head -n 1 "$DIR/addr")
echo "broker at $ADDR"

step "2. Produce some lines to text-input (key:value)"
cat >"$DIR/input" <<'LINES'
1:all streams flow to the sea
2:hello world
3:tide turns records into alerts
4:lua at c speed
5:kafka streams, but in a folder
6:nothing to see here
LINES
cat "$DIR/input"
"$TIDE" produce text-input -b "$ADDR" --key-separator : <"$DIR/input"

step "3. Run examples/text_transformer.lua (keeps values with an 'a', upper-cases them)"
cat examples/text_transformer.lua
echo
echo "tide run examples/text_transformer.lua -b $ADDR   (its JSON logs follow)"
"$TIDE" run examples/text_transformer.lua -b "$ADDR" -D application.id=demo \
	--idle-timeout-ms 1500 2>&1 | cut -c1-200

step "4. Read text-output back"
"$TIDE" consume text-output -b "$ADDR" --from-beginning --idle-timeout-ms 1000 --json

step "Done. Try it yourself:"
cat <<HELP
  build/tide broker --topic text-input:4 &          # prints its address
  build/tide run examples/text_transformer.lua -b ADDR
  echo "a banana" | build/tide produce text-input -b ADDR
  build/tide consume text-output -b ADDR --from-beginning
HELP
