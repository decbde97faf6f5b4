--- bench/count_per_key.lua: examples/count_per_key.lua on the benchmark topics.
---
--- Counts records per key in a RocksDB store (every write also goes to the
--- changelog <application.id>.bench-count-per-key-counts-changelog) and emits
--- the running count, reading bench-in and writing bench-out-count, so that
--- bench/run.sh can set a stateful detector beside the stateless
--- bench/transform.lua and then time the restore of its store.
---
--- The generator's keys are distinct (the line number), so counting them
--- would only ever see 1: the key here is the first 2 letters of the value
--- instead (26^2 = 676 keys per task, 43,264 in all; 2M records give each
--- about 46), so that most records find a count to read and raise, as a
--- count per user or per account does. The store is per task (input
--- partition), so these are counts per key and partition, as a detector
--- without a repartition gets. bench/run.sh also runs a copy that keys on
--- the first 3 letters: 1.1M keys, each seen under twice.
return {
  name = "bench-count-per-key",
  description = "benchmark: count per key (first 2 letters of the value) in a RocksDB store",
  inputs = { "bench-in" },
  outputs = { "bench-out-count" },
  stores = { counts = tide.kv() },

  process = function(rec, ctx)
    local counts = ctx.stores.counts
    local key = rec.value:sub(1, 2)
    local n = (counts:get(key) or 0) + 1
    counts:put(key, n)
    ctx:emit("bench-out-count", key, tostring(n))
  end,
}
