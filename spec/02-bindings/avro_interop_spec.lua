-- Interoperability with avsc (npm), an Avro implementation of its own:
-- records avsc writes are read by tide and records tide writes are read by
-- avsc, field for field, in the wire format, across schema evolution.
-- avsc is pinned in spec/avro (make deps installs it).
local ffi = require("ffi")
local cjson = require("cjson").new()
local avro = require("tide.avro")
local cluster = require("helpers.cluster")

local FIX = cluster.spec_dir .. "/fixtures/avro/"
local V1, V2 = FIX .. "all_types_v1.avsc", FIX .. "all_types_v2.avsc"
local BYTES = { raw = true, digest = true } -- bytes and fixed fields: latin1 in JSON

local function avsc(args, input)
  local dir = cluster.new("avsc").dir
  cluster.write_file(dir .. "/in", input)
  local cmd = ("node %s/avro/avsc.mjs %s < %s/in > %s/out 2> %s/err"):format(cluster.spec_dir,
    args, dir, dir, dir)
  local ok = os.execute(cmd)
  assert(ok == 0 or ok == true, "avsc failed: " .. (cluster.read_file(dir .. "/err") or ""))
  return cluster.read_file(dir .. "/out")
end

local function lines(text)
  local out = {}
  for l in text:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

local function b64decode(s)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  s = s:gsub("[^%w%+/=]", "")
  return (s:gsub(".", function(c)
    if c == "=" then return "" end
    local n = alphabet:find(c, 1, true) - 1
    local bits = ""
    for i = 5, 0, -1 do bits = bits .. (math.floor(n / 2 ^ i) % 2) end
    return bits
  end):gsub("%d%d%d?%d?%d?%d?%d?%d?", function(b)
    if #b ~= 8 then return "" end
    return string.char(tonumber(b, 2))
  end))
end

local function b64encode(s)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  return ((s:gsub(".", function(c)
    local bits, b = "", c:byte()
    for i = 7, 0, -1 do bits = bits .. (math.floor(b / 2 ^ i) % 2) end
    return bits
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(b)
    if #b < 6 then return "" end
    local n = tonumber(b, 2) + 1
    return alphabet:sub(n, n)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end

-- JSON's latin1 strings (code points 0-255) <-> bytes
local function to_bytes(s)
  return (s:gsub("[\194\195][\128-\191]", function(c)
    return string.char((c:byte(1) - 192) * 64 + c:byte(2) - 128)
  end))
end
local function to_latin1(s)
  return (s:gsub("[\128-\255]", function(c)
    local b = c:byte()
    return string.char(192 + math.floor(b / 64), 128 + b % 64)
  end))
end

--- A record from JSON as tide holds it: null as nil, bytes as bytes.
local function from_json(t)
  local r = {}
  for k, v in pairs(t) do
    if v ~= cjson.null then r[k] = BYTES[k] and to_bytes(v) or v end
  end
  if r.merchant == nil then r.merchant = nil end
  return r
end

local function schema(path) return avro.schema(cluster.read_file(path)) end

local function read_with(writer, reader, b64)
  local bytes = b64decode(b64)
  assert.equal(0, bytes:byte(1), "magic byte")
  local v, err = avro.decoder(writer, reader)(ffi.cast("const char *", bytes) + 5, #bytes - 5)
  assert(v, err)
  return v, bytes
end

describe("Avro interoperability with avsc", function()
  local input = cluster.read_file(FIX .. "records_v1.jsonl")
  local expected
  before_each(function()
    expected = {}
    for i, l in ipairs(lines(input)) do expected[i] = from_json(cjson.decode(l)) end
  end)

  it("reads what avsc writes, field for field, with the schema id of the header", function()
    local out = lines(avsc("encode " .. V1 .. " 7", input))
    assert.equal(#expected, #out)
    for i, b64 in ipairs(out) do
      local v, bytes = read_with(schema(V1), nil, b64)
      assert.equal("\0\0\0\0\7", bytes:sub(1, 5))
      assert.same(expected[i], v)
    end
  end)

  it("reads what avsc wrote with v1 through the v2 reader schema (defaults for added fields)", function()
    for i, b64 in ipairs(lines(avsc("encode " .. V1 .. " 1", input))) do
      local v = read_with(schema(V1), schema(V2), b64)
      local want = expected[i]
      want.score = nil
      want.channel, want.risk = "web", { level = 1, flags = { "new" } }
      assert.same(want, v)
    end
  end)

  it("writes what avsc reads, field for field, with its own schema and through v2", function()
    local v1 = schema(V1)
    local enc = avro.encoder(v1)
    local b64 = {}
    for i, r in ipairs(expected) do b64[i] = b64encode(enc(r, 3)) end
    local same = lines(avsc("decode " .. V1, table.concat(b64, "\n") .. "\n"))
    local evolved = lines(avsc("decode " .. V1 .. " " .. V2, table.concat(b64, "\n") .. "\n"))
    assert.equal(#expected, #same)
    for i, line in ipairs(same) do
      local got = cjson.decode(line)
      assert.same(expected[i], from_json(got))
      local ev = cjson.decode(evolved[i])
      assert.equal("web", ev.channel)
      assert.same({ level = 1, flags = { "new" } }, ev.risk)
      assert.equal(expected[i].card, ev.card)
      assert.is_nil(ev.score)
    end
  end)

  it("writes v2 records that avsc reads back unchanged", function()
    local v2 = schema(V2)
    local r = expected[1]
    r.score, r.channel, r.note, r.risk = nil, "app", "hi", { level = 3, flags = { "a", "b" } }
    local line = lines(avsc("decode " .. V2, b64encode(avro.encoder(v2)(r, 9)) .. "\n"))[1]
    local got = from_json(cjson.decode(line))
    assert.same(r, got)
    -- the bytes of a field survive both ways
    assert.equal(to_latin1("\0\255\1"), cjson.decode(line).raw)
  end)
end)
