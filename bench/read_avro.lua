-- Reads every field of a 10-field Avro record (bench/schemas/1.avsc): the
-- same work as bench/read_json.lua, on Avro in the wire format.
local sum = 0
return {
  name = "read-avro",
  inputs = { "bench-avro" },
  serde = "avro",
  process = function(rec)
    local v = rec.value
    sum = sum + v.id + #v.card + v.amount + #v.currency + #v.country + #v.merchant + v.time
      + (v.online and 1 or 0) + v.score + v.count
  end,
}
