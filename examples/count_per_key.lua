-- Counts records per key in a RocksDB store (durable: changelogged, restored
-- after a crash or when its partition moves to another tide), and emits the
-- running count.
---@type tide.Detector
return {
  name = "count-per-key",
  inputs = { "words" },
  outputs = { "counts" },
  stores = { counts = tide.kv() },

  process = function(rec, ctx)
    local counts = ctx.stores.counts
    local n = (counts:get(rec.key) or 0) + 1
    counts:put(rec.key, n)
    ctx:emit("counts", rec.key, tostring(n))
  end,
}
