# bench/lib.sh: what avro.sh, eos.sh and failover.sh share. Sourced
# (. "$here/lib.sh") once $tmp is set.

say() { printf '%s\n' "$*" >&2; }

# wait_broker NAME: the address a `tide broker` started with its standard
# output in $tmp/broker.out prints first, into $addr, within 10 s; or exit 1
# ("bench NAME: no broker").
wait_broker() {
	i=0
	addr=
	while [ $i -lt 100 ] && [ -z "$addr" ]; do
		addr=$(head -n 1 "$tmp/broker.out" 2>/dev/null)
		[ -n "$addr" ] || sleep 0.1
		i=$((i + 1))
	done
	case $addr in 127.0.0.1:[0-9]*) ;; *) say "bench $1: no broker"; exit 1 ;; esac
}
