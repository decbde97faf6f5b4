-- The Avro codec (core/avro_codec.c on avro-c, scripts/tide/avro.lua): every
-- Avro type as the Lua value the README promises, schema evolution, and
-- bytes that do not match the schema.
local ffi = require("ffi")
local avro = require("tide.avro")
local cluster = require("helpers.cluster")

local ALL_V1 = cluster.read_file(cluster.spec_dir .. "/fixtures/avro/all_types_v1.avsc")
local ALL_V2 = cluster.read_file(cluster.spec_dir .. "/fixtures/avro/all_types_v2.avsc")

local function decode(dec, bytes)
  return dec(ffi.cast("const char *", bytes), #bytes)
end

local function sample()
  return { id = 1700000000001, card = "card-1", amount = 1234.5, count = 3, score = 0.25,
    online = true, raw = "\0\255\1", digest = "abcd", kind = "TRANSFER", tags = { "a", "b" },
    limits = { day = 1000, month = 20000 }, country = "FR", time = 1700000000000, price = 99.95,
    merchant = { name = "M1", mcc = 5411 }, items = { { sku = "x", qty = 2 }, { sku = "y", qty = 1 } } }
end

describe("avro", function()
  local v1 = avro.schema(ALL_V1)

  it("reads every Avro type back as the Lua value written", function()
    local v = sample()
    local bytes = avro.encoder(v1)(v, -1)
    assert.same(v, decode(avro.decoder(v1), bytes))
    -- null in a union is nil: the optional fields are absent
    v.country, v.merchant = nil, nil
    local back = decode(avro.decoder(v1), avro.encoder(v1)(v, -1))
    assert.is_nil(back.country)
    assert.is_nil(back.merchant)
    assert.same(v, back)
  end)

  it("writes the wire format's header: a zero byte and the schema id, big-endian", function()
    local bytes = avro.encoder(v1)(sample(), 0x01020304)
    assert.equal("\0\1\2\3\4", bytes:sub(1, 5))
    assert.same(sample(), decode(avro.decoder(v1), bytes:sub(6)))
  end)

  it("maps decimals to numbers and keeps timestamps in milliseconds", function()
    local back = decode(avro.decoder(v1), avro.encoder(v1)(sample(), -1))
    assert.equal(99.95, back.price)
    assert.equal(1700000000000, back.time)
    local s = avro.schema('{"type":"fixed","name":"D","size":3,"logicalType":"decimal","precision":6,"scale":3}')
    assert.equal(-1.5, decode(avro.decoder(s), avro.encoder(s)(-1.5, -1)))
    -- 9.999 does not fit decimal(3, 3)
    local small = avro.schema('{"type":"bytes","logicalType":"decimal","precision":3,"scale":3}')
    local ok, err = pcall(avro.encoder(small), 9.999, -1, "value.price")
    assert.is_false(ok)
    assert.matches("value.price: 9.999 does not fit the Avro decimal%(3, 3%)", err)
  end)

  it("reads old data with a newer reader schema: added fields take their defaults", function()
    local v2 = avro.schema(ALL_V2)
    local old = avro.encoder(v1)(sample(), -1)
    local back = decode(avro.decoder(v1, v2), old)
    assert.equal("web", back.channel)
    assert.same({ level = 1, flags = { "new" } }, back.risk)
    assert.is_nil(back.note)
    assert.is_nil(back.score) -- removed in v2
    assert.equal(3, back.count) -- int, read as long
    assert.equal("card-1", back.card)
    -- each record gets its own copy of a table default
    back.risk.flags[1] = "changed"
    assert.same({ "new" }, decode(avro.decoder(v1, v2), old).risk.flags)
    -- new data with the old schema: v2 dropped v1's score, which has no
    -- default in v1, so v1 cannot read it (the Avro spec's rule)
    local ok, err = pcall(avro.decoder, v2, v1)
    assert.is_false(ok)
    assert.matches("field 'score' of shop.Payment is not in the writer schema and has no default", err)
  end)

  it("reads new data with an older reader schema: fields it does not know are skipped", function()
    local w = avro.schema('{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"new","type":"string"},{"name":"b","type":"string"}]}')
    local r = avro.schema('{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"}]}')
    assert.same({ a = 7, b = "x" }, decode(avro.decoder(w, r), avro.encoder(w)({ a = 7, new = "n", b = "x" }, -1)))
  end)

  it("refuses a reader field the writer lacks when it has no default", function()
    local r = avro.schema('{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"int"}]}')
    local w = avro.schema('{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}')
    local ok, err = pcall(avro.decoder, w, r)
    assert.is_false(ok)
    assert.matches("field 'b' of R is not in the writer schema and has no default", err)
  end)

  it("says why bytes do not match the schema", function()
    local dec = avro.decoder(v1)
    local bytes = avro.encoder(v1)(sample(), -1)
    local v, err = decode(dec, bytes:sub(1, 10))
    assert.is_nil(v)
    assert.matches("the bytes do not match the schema: they end before the value does", err)
    v, err = decode(dec, bytes .. "\0")
    assert.is_nil(v)
    assert.matches("bytes left over after the value", err)
    -- a string that claims 2^40 bytes in a record of 6 is refused, not allocated
    local s = avro.schema('"string"')
    v, err = decode(avro.decoder(s), "\128\128\128\128\128\128\2xy")
    assert.is_nil(v)
    assert.matches("do not match the schema", err)
  end)

  it("names the field a value does not fit", function()
    local enc = avro.encoder(v1)
    local function fails(mutate, pattern)
      local v = sample()
      mutate(v)
      local ok, err = pcall(enc, v, -1, "value")
      assert.is_false(ok)
      assert.matches(pattern, err)
    end
    fails(function(v) v.amount = "12" end, 'value.amount must be a number %(Avro double%), got the string "12"')
    fails(function(v) v.count = 1.5 end, "value.count must be an integer %(Avro int%)")
    fails(function(v) v.kind = "GOLD" end, "value.kind must be one of CARD, TRANSFER, CASH")
    fails(function(v) v.card = nil end, "value.card is missing")
    fails(function(v) v.digest = "abc" end, "value.digest must be a string of 4 bytes")
    fails(function(v) v.items[2].qty = "1" end, "value.items%[%].qty must be an integer")
    fails(function(v) v.limits = { [1] = 5 } end, "value.limits must be string keys")
  end)

  it("reads recursive schemas", function()
    local s = avro.schema([[{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},
      {"name":"kids","type":{"type":"array","items":"Node"}}]}]])
    local tree = { v = 1, kids = { { v = 2, kids = {} }, { v = 3, kids = { { v = 4, kids = {} } } } } }
    assert.same(tree, decode(avro.decoder(s), avro.encoder(s)(tree, -1)))
  end)

  it("refuses a schema that is not one", function()
    assert.has_error(function() avro.schema('{"type":"record","name":"R"}') end)
    assert.has_error(function() avro.schema("not json") end)
    assert.has_error(function() avro.schema('{"type":"recrod","name":"R","fields":[]}') end)
  end)
end)
