-- make chaos, the stateful detector: counts records per key in a store
-- (changelogged) and writes "SEQ:COUNT|vVERSION" for each, where SEQ is the
-- input record's number within its key. Under exactly-once COUNT equals SEQ
-- for every output; a replay under at-least-once makes it higher.
local VERSION = 1

return {
  name = "chaos-count",
  inputs = { "chaos-in" },
  outputs = { "chaos-counts" },
  stores = { counts = tide.kv() },
  process = function(rec, ctx)
    local counts = ctx.stores.counts
    local n = (counts:get(rec.key) or 0) + 1
    counts:put(rec.key, n)
    local seq = rec.value:match(":(%d+)$")
    ctx:emit("chaos-counts", rec.key, seq .. ":" .. n .. "|v" .. VERSION)
  end,
}
