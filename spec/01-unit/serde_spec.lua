local ffi = require("ffi")
local serde = require("tide.serde")
local tffi = require("tide.ffi")

local function decode(name, s)
  local sd = serde.new(name, tffi.api)
  if s == nil then return sd.decode(nil, -1, "value") end
  return sd.decode(ffi.cast("const char *", s), #s, "value")
end

describe("serdes", function()
  it("string passes valid UTF-8 and refuses invalid bytes with a DecodeError", function()
    assert.equal("héllo", decode("string", "héllo"))
    local ok, err = pcall(decode, "string", "bad \255 byte")
    assert.is_false(ok)
    assert.equal("DecodeError", err.class)
    assert.matches("not valid UTF%-8", err.message)
  end)

  it("bytes keeps any byte", function()
    assert.equal("\0\255\1", decode("bytes", "\0\255\1"))
  end)

  it("a null value is nil with every serde", function()
    for _, name in ipairs({ "string", "bytes", "json" }) do
      assert.is_nil(decode(name, nil))
    end
  end)

  it("json decodes objects and maps null to tide.null", function()
    local v = decode("json", '{"a": 1, "b": [1, 2], "c": null}')
    assert.same({ 1, 2 }, v.b)
    assert.equal(1, v.a)
    assert.equal(serde.null, v.c)
  end)

  it("json refuses invalid documents and invalid numbers", function()
    for _, bad in ipairs({ "{not json", "NaN", "[Infinity]", "0x10" }) do
      local ok, err = pcall(decode, "json", bad)
      assert.is_false(ok, bad)
      assert.equal("DecodeError", err.class, bad)
      assert.matches("not valid JSON", err.message)
    end
  end)

  it("json refuses a number too large for a double, which would be Infinity", function()
    -- what the README promises: Infinity is refused however it is written
    for _, bad in ipairs({ "1e999", '{"amount": -1e999}', "[1, 2E+400]", "1" .. ("0"):rep(400),
      '{"a": {"b": [0, 5e308]}}' }) do
      local ok, err = pcall(decode, "json", bad)
      assert.is_false(ok, bad)
      assert.equal("DecodeError", err.class, bad)
      assert.matches("not valid JSON: .*too large for a double", err.message)
      assert.is_false((pcall(serde.json.decode, bad)), "tide.json.decode " .. bad)
    end
    -- large and tiny numbers that a double holds still decode
    assert.same({ 1e300, 1e-400, 1.5e3 }, decode("json", "[1e300, 1e-400, 1.5e3]"))
  end)

  it("encodes per serde and refuses what it cannot encode", function()
    local s = serde.new("string", tffi.api)
    assert.equal("42", s.encode(42, "value"))
    assert.equal("émile", s.encode("émile", "key"))
    assert.has_error(function() s.encode({}, "value") end)
    -- half of "é": what a 'string' reader would refuse is refused here already
    local ok, err = pcall(s.encode, ("émile"):sub(1, 1), "key")
    assert.is_false(ok)
    assert.matches("key is not valid UTF%-8", err)
    assert.equal("\255", serde.new("bytes", tffi.api).encode("\255", "value"))
    local j = serde.new("json", tffi.api)
    assert.equal('{"a":1}', j.encode({ a = 1 }, "value"))
    assert.equal('"x"', j.encode("x", "value"))
    assert.is_nil(j.encode(nil, "value"))
    assert.has_error(function() j.encode({ f = print }, "value") end)
  end)
end)
