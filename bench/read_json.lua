-- Reads every field of the same 10-field record as bench/read_avro.lua,
-- written as JSON.
local sum = 0
return {
  name = "read-json",
  inputs = { "bench-json" },
  serde = "json",
  process = function(rec)
    local v = rec.value
    sum = sum + v.id + #v.card + v.amount + #v.currency + #v.country + #v.merchant + v.time
      + (v.online and 1 or 0) + v.score + v.count
  end,
}
