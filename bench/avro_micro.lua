-- The cost of decoding alone, without Kafka: ns per record to decode a
-- 10-field record (bench/schemas/1.avsc) and read one or every field, Avro
-- (tide.avro) against JSON (lua-cjson, as the json serde). Run by
-- bench/avro.sh with tide's scripts and tide.core on the path.
local ffi = require("ffi")
local avro = require("tide.avro")
local cjson = require("cjson")

local f = assert(io.open(arg[1] or "bench/schemas/1.avsc"))
local schema = avro.schema(f:read("*a"))
f:close()
local v = { id = 1000000001, card = "card-000123", amount = 1234.5, currency = "EUR", country = "FR",
  merchant = "merchant-0042", time = 1700000000000, online = true, score = 0.5, count = 7 }
local bytes = avro.encoder(schema)(v, 1)
local dec = avro.decoder(schema)
local ab = ffi.new("char[?]", #bytes)
ffi.copy(ab, bytes, #bytes)
local js = cjson.encode(v)
local jb = ffi.new("char[?]", #js)
ffi.copy(jb, js, #js)

local N = 2000000
local function time(label, fn)
  fn(N / 10) -- warm up (the JIT)
  local t0 = os.clock()
  local s = fn(N)
  print(("  %-44s %6.0f ns/record"):format(label, (os.clock() - t0) / N * 1e9))
  return s
end
local function all(r)
  return r.id + #r.card + r.amount + #r.currency + #r.country + #r.merchant + r.time
    + (r.online and 1 or 0) + r.score + r.count
end
time("Avro (" .. #bytes .. " bytes), every field", function(n)
  local s = 0
  for _ = 1, n do s = s + all(dec(ab + 5, #bytes - 5)) end
  return s
end)
time("Avro, one field", function(n)
  local s = 0
  for _ = 1, n do s = s + dec(ab + 5, #bytes - 5).amount end
  return s
end)
time("JSON (" .. #js .. " bytes), every field", function(n)
  local s = 0
  for _ = 1, n do s = s + all(cjson.decode(ffi.string(jb, #js))) end
  return s
end)
time("JSON, one field", function(n)
  local s = 0
  for _ = 1, n do s = s + cjson.decode(ffi.string(jb, #js)).amount end
  return s
end)
