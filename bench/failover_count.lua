-- bench/failover.sh's detector: a count per key in a RocksDB store (one
-- entry per distinct key: the store the failover moves), changelogged; it
-- copies to fo-out only the records whose value starts with "probe"
-- (bench/failover_probe.c's), so that their arrival times the failover.
return {
  name = "bench-failover",
  inputs = { "fo-in" },
  outputs = { "fo-out" },
  stores = { counts = tide.kv() },
  process = function(rec, ctx)
    local counts = ctx.stores.counts
    counts:put(rec.key, (counts:get(rec.key) or 0) + 1)
    if rec.value:sub(1, 5) == "probe" then ctx:emit("fo-out", rec.key, rec.value) end
  end,
}
